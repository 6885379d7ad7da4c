//! What a call through [`Client`](crate::Client) can fail with.

use std::time::Duration;

/// Why a call returned no reply.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The builder's settings are unusable.
    #[error("client configuration: {0}")]
    Config(String),
    /// Refused before sending: empty or over `BATCH_EVENTS_MAX` events.
    #[error("request refused locally: {0}")]
    InvalidRequest(String),
    /// The cluster refused the request for good (malformed, not permitted, ...) and nothing
    /// of it applied. Not retried: resending it unchanged cannot succeed.
    #[error("rejected by the cluster ({code:?}): {message}")]
    Rejected {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message (starts with a stable `TALLY:<Code>`).
        message: String,
    },
    /// A create (or swap) ended with an error that does not say whether it applied, in
    /// whole or in part: `INTERNAL` or `DATA_LOSS` (also for a reply whose results do not
    /// match the request one to one, which is never handed over); a status a node marked
    /// `tally-outcome: unknown` (its request was split over shards and another part may
    /// have applied); or a refusal that depends on the cluster's state (e.g.
    /// `FAILED_PRECONDITION` `TALLY:BatchRefused`) answering a resend after an earlier
    /// attempt that may have applied (it timed out, lost its connection or read
    /// `OutcomeUnknown` or `Stopped`). (`TALLY:QuoteExpired` is final: `Rejected`.) Not retried. Learn the outcome by resending
    /// the same request (same ids: an applied event reads `exists`, one not applied is
    /// applied now, exactly once). A lookup that finds the ids shows they applied; one that
    /// does not find them settles nothing, since an earlier attempt may still be queued in
    /// a node or awaiting a cross-shard recovery. Never resend it under new ids, which
    /// could apply it twice.
    #[error(
        "outcome unknown after {attempts} attempts ({code:?}): {message}{}",
        earlier.as_ref().map(|e| format!("; an earlier attempt may have applied: {e}")).unwrap_or_default()
    )]
    OutcomeUnknown {
        /// The last attempt's gRPC code.
        code: tonic::Code,
        /// Its message (starts with a stable `TALLY:<Code>`).
        message: String,
        /// Attempts made.
        attempts: u32,
        /// The first earlier attempt that may have applied (its endpoint and error), if
        /// that is why the outcome is unknown.
        earlier: Option<String>,
    },
    /// No reply within the deadline. For a create, the outcome is UNKNOWN: some events may
    /// have applied. Resend the same request (same ids) to learn it; nothing applies twice.
    #[error(
        "no reply within the deadline of {deadline:?} after {attempts} attempts; last error: {last_error}"
    )]
    DeadlineExceeded {
        /// The configured deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last_error: String,
    },
}
