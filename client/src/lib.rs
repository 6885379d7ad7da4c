//! `tally-client`: the Rust client library for Tally.
//!
//! Layout:
//! - [`loyalty`] — builders for the loyalty operations (earn, redeem with optional item
//!   stock, expire) as the `tally.v1` transfers, linked where they must succeed together.
//! - [`batch`] — a batch builder that keeps linked chains whole and enforces
//!   `BATCH_EVENTS_MAX` with a clear error.
//! - [`client`] — the connection: leader discovery and redirect, retries that resend the
//!   same ids (safe by idempotency), per-attempt timeouts and a per-call deadline.
//! - [`error`] — [`ClientError`].

pub mod batch;
pub mod client;
pub mod error;
pub mod loyalty;

pub use client::{Client, ClientBuilder, RetryCause, account_succeeded, transfer_succeeded};
pub use error::ClientError;

pub use tally_proto::{limits, v1};
