//! Tally benchmarks.
//!
//! Layout:
//! - `benches/ledger_apply.rs` — criterion: ledger apply throughput on one core, in memory
//!   (simple transfers, pending + post pairs, linked pairs), 8190-event batches over 1M
//!   accounts. Results and the machine are recorded in `bench/RESULTS.md`.
//! - [`workload`] — deterministic batch generators shared by the benches (and, later, the
//!   `tally-bench` load generator).

pub mod workload;
