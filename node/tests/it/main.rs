//! Integration tests of `tally-node`, one binary.
//!
//! The ledger suites are written once and instantiated per `LedgerStore` implementation by
//! `ledger_suite!`, so every store passes the same tests: the in-memory store and the
//! RocksDB-backed `DurableStore` (whose persistence `durability.rs` checks on top).
//! `cluster/` starts real `tallyd` processes on loopback.

// Test helpers are `pub` for the included suites, not for other crates.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod cli;
mod cluster;
mod durability;
mod support;
mod wire;

macro_rules! ledger_suite {
    ($($name:ident => $store:ty, $make:expr;)*) => {$(
        mod $name {
            pub type Store = $store;
            pub fn new_store() -> Store {
                $make
            }
            mod account_statuses {
                include!("account_statuses.rs");
            }
            mod transfer_statuses {
                include!("transfer_statuses.rs");
            }
            mod two_phase {
                include!("two_phase.rs");
            }
            mod bad_input {
                include!("bad_input.rs");
            }
            mod queries {
                include!("queries.rs");
            }
            mod properties {
                include!("properties.rs");
            }
            mod store_conformance {
                include!("store_conformance.rs");
            }
        }
    )*};
}

ledger_suite! {
    memory => tally_node::ledger::MemoryStore, tally_node::ledger::MemoryStore::new();
    durable => tally_node::storage::ledger_store::DurableStore,
        tally_node::storage::ledger_store::DurableStore::new(tally_node::storage::keys::ShardId(0));
}
