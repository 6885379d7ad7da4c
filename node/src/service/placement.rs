//! Leader balancing: every shard has a preferred leader ([`Replica::preferred_leader`],
//! the `(shard - 1) mod n`-th voter by id), so leaders spread evenly over the nodes. Every
//! `raft.leader_balance_interval_ms`, a node hands each shard it leads but is not preferred
//! for to the preferred node, if that node's log is caught up (within
//! [`CAUGHT_UP_LAG_MAX`] entries): after a cluster is created (the first node wins every
//! first election) and after a node restarts, leadership returns where it belongs. A
//! preferred node that is down or behind is left alone.

use std::time::Duration;

use tokio::sync::watch;

use super::ticks::Ticks;
use crate::raft::node::{CAUGHT_UP_LAG_MAX, HANDOVER_WAIT, Replica};

/// Runs until `stop` changes; does nothing if `interval` is zero.
pub async fn run(replicas: Vec<Replica>, interval: Duration, stop: watch::Receiver<bool>) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = Ticks::new(interval, stop);
    while ticks.next().await {
        for replica in &replicas {
            if !replica.is_leader() {
                continue;
            }
            let Some(preferred) = replica.preferred_leader() else { continue };
            if !replica.caught_up_voters(CAUGHT_UP_LAG_MAX).contains(&preferred) {
                continue;
            }
            match replica.transfer_leader(preferred, HANDOVER_WAIT).await {
                Ok(()) => tracing::info!(shard = %replica.shard, to = preferred, "leader balanced"),
                Err(e) => {
                    tracing::debug!(shard = %replica.shard, to = preferred, error = %e, "leader balancing")
                }
            }
        }
    }
}
