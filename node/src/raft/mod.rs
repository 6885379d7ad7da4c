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
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            Op::CreateAccounts { requests, .. } => {
                write!(f, "create_accounts({} requests)", requests.len())
            }
            Op::CreateTransfers { requests, .. } => {
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
