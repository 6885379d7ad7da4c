//! `tally-client`: the Rust client library for Tally.
//!
//! Layout:
//! - [`loyalty`] — builders for the loyalty operations (earn, redeem with optional item
//!   stock, expire) as the `tally.v1` transfers, linked where they must succeed together.
//! - [`batch`] — a batch builder that keeps linked chains whole and enforces
//!   `BATCH_EVENTS_MAX` with a clear error.
//!
//! The gRPC connection (leader discovery, retries with the same ids, deadlines) is built
//! on these when the replicated node lands; see the project README for what works today.

pub mod batch;
pub mod loyalty;

pub use tally_proto::{limits, v1};
