//! Replication: openraft on RocksDB. The only module that names openraft types.
//!
//! Layout:
//! - this file — the type configuration, the replicated [`Command`] and its reply.
//! - [`log_store`] — the Raft log, vote and committed id in RocksDB, written by one writer
//!   thread per node and made durable by one fsync thread that covers every shard's
//!   written appends at once (group fsync).
//! - [`state_machine`] — applies committed commands to the ledger; checkpoints the applied
//!   state with its applied log id in one atomic RocksDB write every
//!   `raft.checkpoint_writes` ledger writes (a restart replays the log from there);
//!   snapshots.
//! - [`network`] — the client side of the internal `tally.raft.v1` service.
//! - [`service`] — the server side of `tally.raft.v1`.
//! - [`node`] — starting a shard's Raft, leadership queries, writes and linearizable reads.

pub mod log_store;
pub mod network;
pub mod node;
pub mod service;
pub mod state_machine;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Tally's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandReply,
);

/// A Raft node id (a node, not a shard; each shard's group uses the node ids).
pub type NodeId = u64;

/// What one Raft entry asks every replica's state machine to do.
///
/// `cluster_time_ns` is read from the leader's clock when the entry is proposed; replicas
/// apply with this value and never read their own clock, so apply is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The leader's wall clock at proposal, nanoseconds since the Unix epoch.
    pub cluster_time_ns: u64,
    /// The operation.
    pub op: Op,
}

/// The operation of a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Creates accounts. `events` holds the 128-byte records (`storage::records`) of
    /// several client requests back to back; `requests` holds each request's event count.
    /// Every request is applied as its own batch, so a linked chain never crosses requests.
    CreateAccounts {
        /// Event count of each request, in order.
        requests: Vec<u32>,
        /// The events' records.
        #[serde(with = "serde_bytes")]
        events: Vec<u8>,
    },
    /// Creates transfers; layout as `CreateAccounts`.
    CreateTransfers {
        /// Event count of each request, in order.
        requests: Vec<u32>,
        /// The events' records.
        #[serde(with = "serde_bytes")]
        events: Vec<u8>,
    },
    /// Expires due pending transfers; proposed by the leader when nothing else flows.
    Pulse,
    // Variants are encoded by position (postcard): new ones go last, so the entries of an
    // older log decode unchanged (`ops_encode_as_the_logs_on_disk_hold_them`).
    /// As `CreateAccounts`, each request judged imported or not by `imported` (one per
    /// request; `None`: by its own first event, as `CreateAccounts` does). Proposed only
    /// for a part of a request split over shards whose first event's `imported` flag
    /// differs from the whole request's first (docs/SHARDING.md §1).
    CreateAccountsJudged {
        /// Event count of each request, in order.
        requests: Vec<u32>,
        /// How each request is judged, in order.
        imported: Vec<Option<bool>>,
        /// The events' records.
        #[serde(with = "serde_bytes")]
        events: Vec<u8>,
    },
    /// As `CreateAccountsJudged`, for transfers.
    CreateTransfersJudged {
        /// Event count of each request, in order.
        requests: Vec<u32>,
        /// How each request is judged, in order.
        imported: Vec<Option<bool>>,
        /// The events' records.
        #[serde(with = "serde_bytes")]
        events: Vec<u8>,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            Op::CreateAccounts { requests, .. } | Op::CreateAccountsJudged { requests, .. } => {
                write!(f, "create_accounts({} requests)", requests.len())
            }
            Op::CreateTransfers { requests, .. } | Op::CreateTransfersJudged { requests, .. } => {
                write!(f, "create_transfers({} requests)", requests.len())
            }
            Op::Pulse => write!(f, "pulse"),
        }
    }
}

/// One event's outcome: `(timestamp, status code)`.
pub type EventOutcome = (u64, u32);

/// One request's outcome: one [`EventOutcome`] per event, or why the whole request was
/// refused with nothing applied (e.g. the leader's clock is out of range).
pub type RequestOutcome = Result<Vec<EventOutcome>, String>;

/// What applying a [`Command`] returned to the node that proposed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// One outcome per request of the command, in order (empty for a pulse).
    pub requests: Vec<RequestOutcome>,
}

/// The openraft handle of one shard's group.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;

/// Encodes a value for the wire or the disk (postcard).
///
/// # Errors
/// Never for the types used here; reported as an I/O error to keep callers uniform.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_stdvec(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// The bytes are not a valid encoding of `T`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of each operation as a log on disk holds them: a change of encoding would
    /// leave a node unable to read the entries it wrote before.
    #[test]
    fn ops_encode_as_the_logs_on_disk_hold_them() {
        let command = |op| encode(&Command { cluster_time_ns: 300, op }).unwrap();
        let (requests, events) = (vec![1, 2], vec![7, 8, 9]);
        let old: [(Op, &[u8]); 3] = [
            (
                Op::CreateAccounts { requests: requests.clone(), events: events.clone() },
                &[0xac, 0x02, 0, 2, 1, 2, 3, 7, 8, 9],
            ),
            (
                Op::CreateTransfers { requests: requests.clone(), events: events.clone() },
                &[0xac, 0x02, 1, 2, 1, 2, 3, 7, 8, 9],
            ),
            (Op::Pulse, &[0xac, 0x02, 2]),
        ];
        for (op, bytes) in old {
            assert_eq!(command(op.clone()), bytes, "{op:?}");
            let decoded: Command = decode(bytes).unwrap();
            assert_eq!(decoded.op, op);
        }
        let imported = vec![Some(true), None];
        let judged = Op::CreateTransfersJudged { requests, imported, events };
        assert_eq!(command(judged.clone()), [0xac, 0x02, 4, 2, 1, 2, 2, 1, 1, 0, 3, 7, 8, 9]);
        assert_eq!(decode::<Command>(&command(judged.clone())).unwrap().op, judged);
    }
}
