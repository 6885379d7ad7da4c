//! The gRPC services a node serves (besides the internal raft service in [`crate::raft`]).
//!
//! - [`ledger`] — the public `tally.v1.LedgerService`: validation, routing by shard (and
//!   forwarding to other nodes), writes through group commit, linearizable reads.
//! - [`route`] — which shard each event of a request belongs to.
//! - [`spread`] — spread accounts: a slice on every shard, refilled from the others.
//! - [`admin`] — `tally.v1.AdminService`: a node's local view of its shards.
//! - [`batcher`] — group commit of concurrent requests into one Raft entry.
//! - [`xshard`] — cross-shard transactions: two phases built from ledger primitives,
//!   and their recovery.
//! - [`xpending`] — cross-shard pending transfers: their posts and voids carried to the
//!   debit leg, and the credit leg following it (expiry included).
//! - [`status`] — cluster conditions as `tonic::Status` with stable codes and leader hints.
//! - [`shard_map`] — the metadata group (shard 0): the versioned shard map and the
//!   reconciler that moves each shard's replicas where the map says.
//! - [`placement`] — leader balancing: each shard's leadership goes to its preferred node.
//! - [`pulse`] — the leader's timer that expires pending transfers when no batch flows.

pub mod admin;
pub mod batcher;
pub mod ledger;
pub mod placement;
pub mod pulse;
pub mod route;
pub mod shard_map;
pub mod spread;
pub mod status;
pub mod swap;
pub mod ticks;
pub mod xpending;
pub mod xshard;

/// Counters a node reports in `NodeStatus`, shared by the services that keep them.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Parts of ledger requests forwarded to another node's shard leader.
    pub forwarded: std::sync::atomic::AtomicU64,
    /// Cross-shard pending transfers whose expiry this node watches
    /// ([`xpending::Watch`], summed over its shards).
    pub pending_watched: std::sync::atomic::AtomicU64,
    /// Calls refused for want of the cluster key (`tally_proto::auth`).
    pub unauthenticated: std::sync::atomic::AtomicU64,
    /// Keyed calls refused as coming from a node of another protocol version.
    pub protocol_mismatch: std::sync::atomic::AtomicU64,
}

impl NodeCounters {
    /// Refuses `request`, a node-only call (`what`), unless it carries `key` from a node
    /// of this node's protocol version
    /// ([`ClusterKey::check`](tally_proto::auth::ClusterKey::check)); counts a refusal and
    /// logs it, with the caller's address, at the 1st, 2nd, 4th, 8th, ... refusal of its
    /// kind (a warning a flood of forged calls cannot turn into a flood of log lines).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` `TALLY:Unauthenticated`, or `UNAVAILABLE` `TALLY:ProtocolMismatch`.
    pub fn require_key<T>(
        &self,
        key: &tally_proto::auth::ClusterKey,
        request: &tonic::Request<T>,
        what: &str,
    ) -> Result<(), tonic::Status> {
        let check = key.check(request.metadata(), what);
        if let Err(status) = &check {
            let peer = request.remote_addr();
            let reason = status.message();
            let (counter, why) = if status.code() == tonic::Code::Unauthenticated {
                (
                    &self.unauthenticated,
                    "refused a call for want of the cluster key (a node given another key, or \
                     someone without it",
                )
            } else {
                (
                    &self.protocol_mismatch,
                    "refused a node's call of another protocol version (two versions in one \
                     cluster",
                )
            };
            let refused = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    peer = ?peer,
                    reason,
                    "{why}; logged at the 1st, 2nd, 4th, 8th, ... refusal)"
                );
            }
        }
        check
    }
}
