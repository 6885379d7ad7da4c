//! `tallyd`: the Tally node.
//!
//! Layout:
//! - [`ledger`] — the pure, deterministic ledger state machine (TigerBeetle semantics) and
//!   its storage trait. No I/O.
//! - [`convert`] — the edge: `tally.v1` protobuf messages to ledger types and back, with
//!   request validation that names the offending event and field.
//! - [`config`] — the one typed configuration tree (file < env < flags) and its validation.
//! - [`storage`] — RocksDB: column families, key layout, the durable ledger store.
//! - [`raft`] — openraft on RocksDB; the only module that names openraft types.
//! - [`service`] — the gRPC services: public `tally.v1` ledger (routing by shard,
//!   forwarding), admin, group commit, leader balancing.
//! - [`shards_cli`] — `tallyd shards list|transfer-leader|set-replicas`.
//! - [`server`] — assembles one node: storage, raft, services, shutdown.
//! - [`dev`] — `tallyd dev`: a local three-process cluster on loopback.
//! - [`keygen`] — `tallyd keygen`: a new cluster key (`tally_proto::auth`).
//!
//! See `docs/ARCHITECTURE.md` for the request flow.

pub mod config;
pub mod convert;
pub mod dev;
pub mod keygen;
pub mod ledger;
pub mod raft;
pub mod server;
pub mod service;
pub mod shards_cli;
pub mod storage;
