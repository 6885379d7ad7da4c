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
    /// The cluster refused the request for good (malformed, not permitted, ...). Not
    /// retried: resending it unchanged cannot succeed.
    #[error("rejected by the cluster ({code:?}): {message}")]
    Rejected {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message (starts with a stable `TALLY:<Code>`).
        message: String,
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
