//! The gRPC services a node serves (besides the internal raft service in [`crate::raft`]).
//!
//! - [`ledger`] — the public `tally.v1.LedgerService`: validation, writes through group
//!   commit, linearizable reads.
//! - [`admin`] — `tally.v1.AdminService`: a node's local view of its shards.
//! - [`batcher`] — group commit of concurrent requests into one Raft entry.
//! - [`status`] — cluster conditions as `tonic::Status` with stable codes and leader hints.
//! - [`pulse`] — the leader's timer that expires pending transfers when no batch flows.

pub mod admin;
pub mod batcher;
pub mod ledger;
pub mod pulse;
pub mod status;
