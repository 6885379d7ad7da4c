//! Every protocol and ledger limit, in one place.
//!
//! Names carry their unit last (`*_bytes_max`, `*_events_max`). The `const` assertions at the
//! bottom tie the limits together: a request of `BATCH_EVENTS_MAX` events of the largest
//! possible encoding, and a reply of `QUERY_RESULTS_MAX` results, fit in one gRPC message.
//! If you raise a limit and the build breaks here, the wire cannot carry it.

/// Events (accounts, transfers or ids) in one create or lookup request, and in one ledger
/// batch. TigerBeetle's figure for its 1 MiB message. Larger requests are refused whole
/// with `INVALID_ARGUMENT`; nothing in them is applied.
pub const BATCH_EVENTS_MAX: u32 = 8190;

/// Swaps in one `SwapBatch` request: two transfers each, so a batch is at most one ledger
/// batch of transfers. A larger request is refused whole with `INVALID_ARGUMENT`.
pub const SWAPS_PER_REQUEST_MAX: u32 = BATCH_EVENTS_MAX / 2;

/// Results returned by one `GetAccountTransfers` / `GetAccountBalances` query. A larger
/// `limit` is refused at the edge; page with `timestamp_min` / `timestamp_max` instead.
pub const QUERY_RESULTS_MAX: u32 = 8190;

/// Largest gRPC message (request or reply) a node accepts or sends, in bytes.
pub const GRPC_MESSAGE_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Largest message of the internal replication service (`tally.raft.v1`), in bytes: one
/// AppendEntries carries at most `RAFT_ENTRIES_PER_MESSAGE_MAX` entries of at most
/// `RAFT_ENTRY_BYTES_MAX` each.
pub const RAFT_MESSAGE_BYTES_MAX: u32 = 128 * 1024 * 1024;

/// Largest HTTP/2 frame a node accepts (`SETTINGS_MAX_FRAME_SIZE`, the protocol's default is
/// 16 KiB): a replication message of several MiB then arrives in a few frames, not hundreds.
pub const HTTP2_FRAME_BYTES_MAX: u32 = 1024 * 1024;

/// HTTP/2 flow-control window a node grants each stream it receives, in bytes: a whole
/// AppendEntries of full entries is sent without waiting for a window update.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 flow-control window a node grants each connection it receives, in bytes (shared by
/// the streams of one peer or client connection).
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Streams a peer or client may reset before this node has accepted them, at once, on one
/// connection; one more and the node closes the connection (`ENHANCE_YOUR_CALM`, HTTP/2
/// "rapid reset" protection). h2's default is 20: between nodes at 16 shards, with the CPU
/// saturated and replication calls timing out (a timed-out call resets its stream), it was
/// reached, and closing the one connection a node pair shares cut every shard's
/// replication, heartbeats and forwarded requests at once (bench/RESULTS.md, 2026-12-05).
pub const HTTP2_PENDING_ACCEPT_RESETS_MAX: usize = 1024;

/// Largest encoded Raft entry: a full batch of the largest records plus framing.
pub const RAFT_ENTRY_BYTES_MAX: u32 = BATCH_EVENTS_MAX * 128 + BATCH_EVENTS_MAX * 5 + 1024;

/// Raft entries in one AppendEntries message (the node's `raft.append_entries_max` may be
/// set lower, never higher).
pub const RAFT_ENTRIES_PER_MESSAGE_MAX: u32 = 64;

/// Bytes of snapshot data in one `InstallSnapshot` chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u32 = 1024 * 1024;

/// Largest snapshot a node accepts, in bytes (its shard's whole ledger).
pub const SNAPSHOT_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// Pending transfers expired by one apply, before the batch's own events. The rest wait for
/// the next apply; until then a post or void of them already fails with `pending_transfer_expired`.
pub const EXPIRIES_PER_APPLY_MAX: u32 = 8190;

/// Largest valid timestamp, in nanoseconds since the epoch (the top bit is never used, as in
/// TigerBeetle). Timestamps are 1..=TIMESTAMP_MAX.
pub const TIMESTAMP_MAX: u64 = (1 << 63) - 1;

/// Largest value of a 16-bit field (`code`, `flags`) carried in a protobuf `uint32`.
pub const U16_FIELD_MAX: u32 = 0xFFFF;

/// Encoded size of a `Uint128` field: tag + length + (tag + fixed64) * 2.
pub const UINT128_FIELD_BYTES_MAX: u32 = 1 + 1 + 2 * (1 + 8);
/// Encoded size of a `uint64` field at its largest: tag + 10-byte varint.
pub const U64_FIELD_BYTES_MAX: u32 = 1 + 10;
/// Encoded size of a `uint32` field at its largest: tag + 5-byte varint.
pub const U32_FIELD_BYTES_MAX: u32 = 1 + 5;
/// Framing of one element of a repeated message field: tag + 2-byte length (< 16 KiB).
pub const REPEATED_ELEMENT_FRAMING_BYTES_MAX: u32 = 1 + 2;

/// Largest encoding of one `Transfer` or `Account` message body (both have six 128-bit
/// fields, two 64-bit fields and five 32-bit fields).
pub const EVENT_ENCODED_BYTES_MAX: u32 =
    6 * UINT128_FIELD_BYTES_MAX + 2 * U64_FIELD_BYTES_MAX + 5 * U32_FIELD_BYTES_MAX;

/// Largest encoding of one `CreateTransferResult` / `CreateAccountResult` message body
/// (a negative enum value would take 10 bytes; ours are all small and positive).
pub const RESULT_ENCODED_BYTES_MAX: u32 = U64_FIELD_BYTES_MAX + 1 + 10;

/// Largest encoding of one `AccountBalance` message body.
pub const BALANCE_ENCODED_BYTES_MAX: u32 = U64_FIELD_BYTES_MAX + 4 * UINT128_FIELD_BYTES_MAX;

/// Bytes a full create request or lookup reply takes at most.
pub const EVENTS_MESSAGE_BYTES_MAX: u32 =
    BATCH_EVENTS_MAX * (EVENT_ENCODED_BYTES_MAX + REPEATED_ELEMENT_FRAMING_BYTES_MAX);

/// Bytes a full query reply takes at most.
pub const QUERY_MESSAGE_BYTES_MAX: u32 =
    QUERY_RESULTS_MAX * (EVENT_ENCODED_BYTES_MAX + REPEATED_ELEMENT_FRAMING_BYTES_MAX);

const _: () = assert!(BATCH_EVENTS_MAX > 0 && QUERY_RESULTS_MAX > 0);
const _: () = assert!(EVENT_ENCODED_BYTES_MAX + REPEATED_ELEMENT_FRAMING_BYTES_MAX < 16_384);
const _: () = assert!(EVENTS_MESSAGE_BYTES_MAX <= GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(QUERY_MESSAGE_BYTES_MAX <= GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(
    BATCH_EVENTS_MAX * (RESULT_ENCODED_BYTES_MAX + REPEATED_ELEMENT_FRAMING_BYTES_MAX)
        <= GRPC_MESSAGE_BYTES_MAX
);
const _: () = assert!(
    QUERY_RESULTS_MAX * (BALANCE_ENCODED_BYTES_MAX + REPEATED_ELEMENT_FRAMING_BYTES_MAX)
        <= GRPC_MESSAGE_BYTES_MAX
);
// A full swap batch fits in one gRPC message: a `SwapRequest` has 8 `Uint128` fields,
// 2 u64 and 6 u32-sized fields (the rounding enum among them).
const _: () = assert!(
    SWAPS_PER_REQUEST_MAX as u64
        * (8 * UINT128_FIELD_BYTES_MAX
            + 2 * U64_FIELD_BYTES_MAX
            + 6 * U32_FIELD_BYTES_MAX
            + REPEATED_ELEMENT_FRAMING_BYTES_MAX) as u64
        <= GRPC_MESSAGE_BYTES_MAX as u64
);
// Expiry runs inside an apply, so it must not outgrow a batch.
const _: () = assert!(EXPIRIES_PER_APPLY_MAX <= BATCH_EVENTS_MAX);
const _: () = assert!(
    RAFT_ENTRIES_PER_MESSAGE_MAX as u64 * RAFT_ENTRY_BYTES_MAX as u64 + 4096
        <= RAFT_MESSAGE_BYTES_MAX as u64
);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX + 4096 <= RAFT_MESSAGE_BYTES_MAX);
// A pending timeout (u32 seconds) added to any valid timestamp cannot overflow a u64.
const _: () = assert!(TIMESTAMP_MAX.checked_add(u32::MAX as u64 * 1_000_000_000).is_some());

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1;

    fn uint128_max() -> Option<v1::Uint128> {
        Some(v1::Uint128 { lo: u64::MAX, hi: u64::MAX })
    }

    fn transfer_max() -> v1::Transfer {
        v1::Transfer {
            id: uint128_max(),
            debit_account_id: uint128_max(),
            credit_account_id: uint128_max(),
            amount: uint128_max(),
            pending_id: uint128_max(),
            user_data_128: uint128_max(),
            user_data_64: u64::MAX,
            user_data_32: u32::MAX,
            timeout: u32::MAX,
            ledger: u32::MAX,
            code: u32::MAX,
            flags: u32::MAX,
            timestamp: u64::MAX,
        }
    }

    /// The computed maximum is exactly what prost encodes for an all-ones event.
    #[test]
    fn event_encoded_bytes_max_is_exact() {
        assert_eq!(transfer_max().encoded_len(), EVENT_ENCODED_BYTES_MAX as usize);
        let account = v1::Account {
            id: uint128_max(),
            debits_pending: uint128_max(),
            debits_posted: uint128_max(),
            credits_pending: uint128_max(),
            credits_posted: uint128_max(),
            user_data_128: uint128_max(),
            user_data_64: u64::MAX,
            user_data_32: u32::MAX,
            reserved: u32::MAX,
            ledger: u32::MAX,
            code: u32::MAX,
            flags: u32::MAX,
            timestamp: u64::MAX,
        };
        assert_eq!(account.encoded_len(), EVENT_ENCODED_BYTES_MAX as usize);
        let balance = v1::AccountBalance {
            timestamp: u64::MAX,
            debits_pending: uint128_max(),
            debits_posted: uint128_max(),
            credits_pending: uint128_max(),
            credits_posted: uint128_max(),
        };
        assert_eq!(balance.encoded_len(), BALANCE_ENCODED_BYTES_MAX as usize);
    }

    /// A full batch of the largest possible transfers fits in one gRPC message.
    #[test]
    fn full_batch_fits_in_one_message() {
        let request = v1::CreateTransfersRequest {
            transfers: vec![transfer_max(); BATCH_EVENTS_MAX as usize],
        };
        let bytes = request.encoded_len();
        assert!(bytes <= EVENTS_MESSAGE_BYTES_MAX as usize, "{bytes}");
        assert!(bytes <= GRPC_MESSAGE_BYTES_MAX as usize, "{bytes}");
        let results = v1::CreateTransfersReply {
            results: vec![
                v1::CreateTransferResult {
                    timestamp: u64::MAX,
                    status:
                        v1::CreateTransferStatus::ImportedEventTimestampMustPostdateCreditAccount
                            as i32,
                };
                BATCH_EVENTS_MAX as usize
            ],
        };
        assert!(results.encoded_len() <= GRPC_MESSAGE_BYTES_MAX as usize);
    }
}
