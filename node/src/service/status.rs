//! Cluster and transport conditions as `tonic::Status`, with stable, greppable codes.
//!
//! Every message starts with `TALLY:<Code>:`. Business outcomes are never here: they are
//! per-event statuses inside an OK reply.
//!
//! | condition | gRPC code | message code | metadata | client action |
//! |---|---|---|---|---|
//! | malformed request | `INVALID_ARGUMENT` | `InvalidRequest` | | fix the request |
//! | not the leader | `UNAVAILABLE` | `NotLeader` | `tally-leader-id`, `tally-leader-addr` | resend there |
//! | leader changed mid-write; or a split request's part failed after others may have applied ([`partial`]) | `UNAVAILABLE` | `OutcomeUnknown` | as above | resend, same ids |
//! | a read's leader not confirmed by a majority | `UNAVAILABLE` | `NoQuorum` | | another node, later |
//! | this replica's Raft stopped (I/O error, shutdown); a held write may still commit | `UNAVAILABLE` | `Stopped` | | another node, same ids |
//! | queue full | `RESOURCE_EXHAUSTED` | `Overloaded` | `tally-retry-after-ms` | back off, resend |
//! | request timeout in the node | `DEADLINE_EXCEEDED` | `Timeout` | | resend, same ids |
//! | the node could not reach the node it forwards to | `UNAVAILABLE` | `Unreachable` | | resend, same ids |
//! | whole batch refused by the ledger | `FAILED_PRECONDITION` | `BatchRefused` | | see message |
//! | routed request with an event of another shard | `INVALID_ARGUMENT` | `WrongShard` | | fix the routing |
//! | routed request for a shard this node does not host | `NOT_FOUND` | `UnknownShard` | | fix the routing |
//!
//! Any of these on a request split into parts after another part may have applied also
//! carries `tally-outcome: unknown` ([`partial`]).

use tally_proto::routing::{OUTCOME_METADATA_KEY, OUTCOME_UNKNOWN};
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::batcher::SubmitError;
use crate::convert::RequestError;
use crate::raft::node::{LeaderHint, ReplicaError};

/// Metadata key of the leader's node id.
pub const LEADER_ID_KEY: &str = "tally-leader-id";
/// Metadata key of the leader's gRPC address.
pub const LEADER_ADDR_KEY: &str = "tally-leader-addr";
/// Metadata key of the suggested wait before a retry, in milliseconds.
pub const RETRY_AFTER_MS_KEY: &str = "tally-retry-after-ms";
/// Metadata key marking an admin request one node forwarded to another (value `1`): the
/// receiver answers it itself or refuses it (`NotLeader`), never forwards it again.
pub const FORWARDED_KEY: &str = "tally-forwarded";
/// Suggested wait after `Overloaded`, in milliseconds.
pub const OVERLOADED_RETRY_AFTER_MS: u64 = 5;

/// A malformed request.
#[must_use]
pub fn invalid(e: &RequestError) -> Status {
    Status::invalid_argument(format!("TALLY:InvalidRequest: {e}"))
}

/// A request Tally cannot serve as asked, with the reason.
#[must_use]
pub fn invalid_because(reason: &str) -> Status {
    Status::invalid_argument(format!("TALLY:InvalidRequest: {reason}"))
}

fn with_hint(mut status: Status, hint: &LeaderHint) -> Status {
    if let Some(id) = hint.id {
        status.metadata_mut().insert(LEADER_ID_KEY, MetadataValue::from(id));
    }
    if let Some(addr) = hint.addr.as_deref().and_then(|a| MetadataValue::try_from(a).ok()) {
        status.metadata_mut().insert(LEADER_ADDR_KEY, addr);
    }
    status
}

/// `message` as a request forwarded by this node (marked with [`FORWARDED_KEY`]), bounded by
/// `timeout`.
#[must_use]
pub fn forwarded<T>(message: T, timeout: std::time::Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request.metadata_mut().insert(FORWARDED_KEY, MetadataValue::from(1_u64));
    request
}

/// Whether `request` was forwarded by another node (see [`forwarded`]).
#[must_use]
pub fn was_forwarded<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_KEY)
}

/// Whether `status` is a `NotLeader` answer (then [`leader_addr`] may say where to go).
#[must_use]
pub fn is_not_leader(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().starts_with("TALLY:NotLeader")
}

/// The leader address a status carries, if any.
#[must_use]
pub fn leader_addr(status: &Status) -> Option<String> {
    let addr = status.metadata().get(LEADER_ADDR_KEY)?.to_str().ok()?;
    (!addr.is_empty()).then(|| addr.to_owned())
}

/// A routed request (`tally-shard`) holding an event of another shard, or naming no shard
/// this node hosts.
#[must_use]
pub fn wrong_shard(reason: &str) -> Status {
    Status::invalid_argument(format!("TALLY:WrongShard: {reason}"))
}

/// A routed request for a shard this node does not host.
#[must_use]
pub fn unknown_shard(shard: u32, shards: u32) -> Status {
    Status::not_found(format!(
        "TALLY:UnknownShard: shard {shard} is not hosted here (the cluster has data shards \
         1..={shards})"
    ))
}

/// A replica-level failure.
#[must_use]
pub fn replica(e: &ReplicaError) -> Status {
    match e {
        ReplicaError::NotLeader(hint) => {
            with_hint(Status::unavailable(format!("TALLY:NotLeader: {e}")), hint)
        }
        ReplicaError::OutcomeUnknown(hint) => with_hint(
            Status::unavailable(format!(
                "TALLY:OutcomeUnknown: {e}; resend the same request (ids are idempotency keys)"
            )),
            hint,
        ),
        ReplicaError::NoQuorum(_) => Status::unavailable(format!("TALLY:NoQuorum: {e}")),
        ReplicaError::Stopped(_) => Status::unavailable(format!("TALLY:Stopped: {e}")),
    }
}

/// The status of a request split over several parts (shards, or a cross-shard
/// transaction's steps) that failed with `part`'s error while other parts may have
/// applied: an answer that would read as a refusal (`NotLeader`, `Overloaded`, `NoQuorum`;
/// and `Stopped`, which clients read as an open outcome anyway, since a stopping replica
/// answers it also for an entry already appended) becomes `OutcomeUnknown` (its metadata
/// kept, so a leader hint still redirects); any other status keeps its code and message.
/// Either way it carries `tally-outcome: unknown` ([`OUTCOME_METADATA_KEY`]), so a client
/// never reads it as "refused, nothing applied".
#[must_use]
pub fn partial(part: Status) -> Status {
    let unknown = MetadataValue::from_static(OUTCOME_UNKNOWN);
    let nothing_done = ["TALLY:NotLeader", "TALLY:Overloaded", "TALLY:NoQuorum", "TALLY:Stopped"];
    if !nothing_done.iter().any(|code| part.message().starts_with(code)) {
        let mut part = part;
        part.metadata_mut().insert(OUTCOME_METADATA_KEY, unknown);
        return part;
    }
    let mut status = Status::unavailable(format!(
        "TALLY:OutcomeUnknown: a part of the request failed ({}) after others may have \
         applied; resend the same request (ids are idempotency keys)",
        part.message()
    ));
    *status.metadata_mut() = part.metadata().clone();
    status.metadata_mut().remove(RETRY_AFTER_MS_KEY);
    status.metadata_mut().insert(OUTCOME_METADATA_KEY, unknown);
    status
}

/// The status a node answers for a call it forwarded to `peer` that failed with `status`.
/// A status the peer itself answered (`TALLY:`-prefixed) passes unchanged. Any other came
/// from the transport or the gRPC layers between the two nodes, and the forwarded call may
/// have applied: a deadline that ran out (tonic's `CANCELLED` "Timeout expired", on this
/// node's channel or the peer's server) becomes `DEADLINE_EXCEEDED` `TALLY:Timeout`; any
/// other (no connection, a connection that broke mid-call, an HTTP/2 error, a reply that
/// did not decode) `UNAVAILABLE` `TALLY:Unreachable`, the transport's status in the
/// message. So a caller never takes a bare transport status for a failure of the node it
/// called (a client sets such a node aside for a while), nor one that says "nothing done"
/// (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`) for a final answer.
#[must_use]
pub fn forward_failed(peer: &str, status: Status) -> Status {
    if status.message().starts_with("TALLY:") {
        return status;
    }
    let expired = crate::raft::network::caused_by_timeout(&status)
        || status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired";
    if expired {
        return Status::deadline_exceeded(format!(
            "TALLY:Timeout: no answer from {peer}, forwarded to, within the time left for \
             the request; it may still apply; resend it with the same ids to learn its outcome"
        ));
    }
    Status::unavailable(format!(
        "TALLY:Unreachable: forwarding to {peer} failed ({:?}: {}); the request may have \
         applied there; resend it with the same ids to learn its outcome",
        status.code(),
        status.message()
    ))
}

/// A group-commit failure.
#[must_use]
pub fn submit(e: &SubmitError) -> Status {
    match e {
        SubmitError::Overloaded { .. } => {
            let mut status = Status::resource_exhausted(format!("TALLY:Overloaded: {e}"));
            status
                .metadata_mut()
                .insert(RETRY_AFTER_MS_KEY, MetadataValue::from(OVERLOADED_RETRY_AFTER_MS));
            status
        }
        SubmitError::Replica(r) => replica(r),
        SubmitError::Closed => Status::unavailable(format!("TALLY:Stopped: {e}")),
    }
}

/// The node gave up waiting for the outcome after `request_timeout_ms`.
#[must_use]
pub fn timeout(after_ms: u64) -> Status {
    timeout_of("request_timeout_ms", after_ms)
}

/// The node gave up waiting for the outcome after the limit named `limit`.
#[must_use]
pub fn timeout_of(limit: &str, after_ms: u64) -> Status {
    Status::deadline_exceeded(format!(
        "TALLY:Timeout: no outcome within {limit} ({after_ms} ms); the request may still \
         apply; resend it with the same ids to learn its outcome"
    ))
}

/// The ledger refused a whole request (nothing applied).
#[must_use]
pub fn refused(reason: &str) -> Status {
    Status::failed_precondition(format!("TALLY:BatchRefused: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::node::LeaderHint;

    fn outcome(status: &Status) -> Option<&str> {
        status.metadata().get(OUTCOME_METADATA_KEY).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_forward_that_failed_between_the_nodes_reads_unreachable_or_timeout() {
        // Statuses no node answered (no TALLY: prefix): the transport's, tonic's, h2's.
        for bare in [
            Status::unavailable("tcp connect error: Connection refused (os error 111)"),
            Status::unknown("h2 protocol error: connection reset"),
            Status::cancelled("operation was canceled"),
            Status::internal("h2 protocol error: error reading a body from connection"),
            Status::resource_exhausted("h2 protocol error: ENHANCE_YOUR_CALM"),
            Status::out_of_range("Error, decoded message length too large"),
        ] {
            let code = bare.code();
            let s = forward_failed("127.0.0.1:7003", bare);
            assert_eq!(s.code(), tonic::Code::Unavailable, "{code:?}");
            assert!(s.message().starts_with("TALLY:Unreachable: "), "{}", s.message());
            assert!(s.message().contains("127.0.0.1:7003"), "{}", s.message());
            assert!(s.message().contains(&format!("{code:?}")), "{}", s.message());
        }
        // tonic's deadline, as the peer's server sends it and as tonic builds it from its
        // `TimeoutExpired` error on this node's channel.
        let from_channel = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        for expired in [Status::cancelled("Timeout expired"), from_channel] {
            let s = forward_failed("127.0.0.1:7003", expired);
            assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{s:?}");
            assert!(s.message().starts_with("TALLY:Timeout: "), "{}", s.message());
            assert!(s.message().contains("127.0.0.1:7003"), "{}", s.message());
        }
        // The peer's own answers pass unchanged, metadata and all.
        let hint = LeaderHint { id: Some(3), addr: Some("127.0.0.1:7003".to_owned()) };
        let answered = [
            replica(&ReplicaError::NotLeader(hint)),
            timeout(10_000),
            Status::invalid_argument("TALLY:InvalidRequest: amount 0"),
            submit(&SubmitError::Overloaded { queue_requests_max: 16_384 }),
        ];
        for peer_answer in answered {
            let (code, message) = (peer_answer.code(), peer_answer.message().to_owned());
            let meta = peer_answer.metadata().len();
            let s = forward_failed("127.0.0.1:7003", peer_answer);
            assert_eq!((s.code(), s.message()), (code, message.as_str()));
            assert_eq!(s.metadata().len(), meta, "metadata kept");
        }
    }

    #[test]
    fn a_part_that_did_nothing_makes_a_split_request_outcome_unknown() {
        let hint = LeaderHint { id: Some(2), addr: Some("127.0.0.1:7202".to_owned()) };
        let part = replica(&ReplicaError::NotLeader(hint));
        let whole = partial(part);
        assert_eq!(whole.code(), tonic::Code::Unavailable);
        assert!(whole.message().starts_with("TALLY:OutcomeUnknown:"), "{}", whole.message());
        assert!(whole.message().contains("TALLY:NotLeader"), "the part's error is named");
        assert_eq!(leader_addr(&whole).as_deref(), Some("127.0.0.1:7202"), "hint kept");
        let full = submit(&SubmitError::Overloaded { queue_requests_max: 8 });
        let whole = partial(full);
        assert!(whole.message().starts_with("TALLY:OutcomeUnknown:"), "{}", whole.message());
        assert!(whole.metadata().get(RETRY_AFTER_MS_KEY).is_none());
        assert_eq!(outcome(&whole), Some(OUTCOME_UNKNOWN));
        // A status that already allows for an applied part, or says what is wrong, keeps
        // its code and message, and is marked: other parts may have applied.
        for kept in [timeout(10_000), invalid_because("bad"), refused("clock")] {
            let whole = partial(kept.clone());
            assert_eq!((whole.code(), whole.message()), (kept.code(), kept.message()));
            assert_eq!(outcome(&whole), Some(OUTCOME_UNKNOWN), "{kept:?}");
            assert_eq!(outcome(&kept), None);
        }
    }
}
