//! Tally benchmarks.
//!
//! Layout:
//! - `benches/` — criterion micro-benchmarks (ledger apply, proto codec, RocksDB apply,
//!   group-commit batcher). Results and the machine are recorded in `bench/RESULTS.md`.
//! - `src/bin/tally-bench.rs` — the load generator: a loyalty population, workloads in a
//!   closed or open loop against Tally (and PostgreSQL side by side), HDR latencies, a JSON
//!   report, PNG charts, and verification of everything that was acknowledged.
//! - [`population`] — the accounts of a run and their ids; [`scenario`] — the workloads;
//!   [`target`] — Tally and PostgreSQL behind one interface; [`driver`] — closed and open
//!   loop; [`model`] — the sequential model and the checks; [`report`], [`chart`] — output;
//!   [`local`] — `--local`'s throwaway cluster.
//! - [`workload`] — deterministic batch generators for the in-process micro-benchmarks.

pub mod chart;
pub mod driver;
pub mod local;
pub mod model;
pub mod population;
pub mod report;
pub mod scenario;
pub mod target;
pub mod workload;

/// Why a benchmark run could not go on (as opposed to a verification failure, which is
/// reported in the results).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A Tally request failed for good.
    #[error("tally: {0}")]
    Client(#[from] tally_client::ClientError),
    /// A PostgreSQL error.
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A file or process error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The population could not be set up, or the target could not be started.
    #[error("setup: {0}")]
    Setup(String),
}

/// The server's own message where there is one (tokio-postgres prints only "db error").
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
