//! `tallyd`: the Tally node.
//!
//! Layout:
//! - [`ledger`] — the pure, deterministic ledger state machine (TigerBeetle semantics) and
//!   its storage trait. No I/O.
//! - [`convert`] — the edge: `tally.v1` protobuf messages to ledger types and back, with
//!   request validation that names the offending event and field.
//!
//! Replication (openraft on RocksDB), the gRPC services and the `tallyd` binary build on
//! these; see `docs/ARCHITECTURE.md`.

pub mod convert;
pub mod ledger;
