//! Pending transfers expire when their shard applies something at or after their expiry.
//! With no traffic nothing would be applied, so the leader checks every
//! `pulse_interval_ms` whether the earliest expiry has passed and, if so, proposes a
//! `Pulse` entry. Followers do nothing: their state machines expire the same transfers
//! when they apply the leader's pulse.

use std::time::Duration;

use tokio::sync::watch;

use super::batcher::cluster_time_now_ns;
use super::ticks::Ticks;
use crate::raft::node::Replica;
use crate::raft::{Command, Op};

/// Runs until `stop` changes.
pub async fn run(replica: Replica, interval: Duration, stop: watch::Receiver<bool>) {
    let mut ticks = Ticks::new(interval, stop);
    while ticks.next().await {
        if !replica.is_leader() {
            continue;
        }
        let now = cluster_time_now_ns();
        let due = replica.ledger.read().machine.next_expiry().is_some_and(|at| at <= now);
        if due {
            let command = Command { cluster_time_ns: now, op: Op::Pulse };
            if let Err(e) = replica.write(command).await {
                tracing::debug!(error = %e, "pulse not committed");
            }
        }
    }
}
