//! The ledger core: a deterministic state machine with TigerBeetle's semantics.
//!
//! This module does no I/O, reads no clock and no randomness, and imports no tokio, tonic
//! or rocksdb. Apply is a function of (state, batch, cluster time): the same batches at the
//! same cluster times give the same state and the same results on every replica, which
//! [`StateMachine::digest`] lets tests and replicas check.
//!
//! Layout, one concept per file:
//! - [`ids`] — `AccountId`, `TransferId`.
//! - [`internal`] — Tally's internal account ids and the ids that resolve their legs.
//! - [`account`] — `Account`, its flags and `AccountBalance`.
//! - [`transfer`] — `Transfer`, its flags and the pending-transfer life cycle.
//! - [`status`] — per-event result codes, TigerBeetle's names, values and precedence.
//! - [`filter`] — `AccountFilter` for the per-account queries.
//! - [`store`] — the `LedgerStore` trait; [`memory_store`] is the in-memory implementation,
//!   its hash maps [`split_map::SplitMap`]s (growth never stalls apply for long).
//! - `state_machine` — batches, timestamps, linked chains, expiry sweep.
//! - `create_account`, `create_transfer`, `post_void` — the rules for one event each.
//! - `scope` — every write, with undo for linked chains and the conservation tally.
//! - `query` — lookups and account queries; `digest` — the state hash.
//! - [`audit`] — recomputes every balance from the transfers, independently of apply.
//!
//! Failures come in two kinds, never mixed: a business outcome (`ExceedsCredits`) is a
//! status in the results; a broken invariant (a balance flag violated after a write,
//! unequal debit and credit movement) is an assertion that stops the process before the
//! state can be persisted.

pub mod account;
pub mod audit;
mod create_account;
mod create_transfer;
mod digest;
pub mod filter;
pub mod ids;
pub mod internal;
pub mod memory_store;
mod post_void;
mod query;
mod scope;
pub mod split_map;
mod state_machine;
pub mod status;
pub mod store;
pub mod transfer;

pub use account::{Account, AccountBalance, AccountFlags};
pub use filter::{AccountFilter, AccountFilterFlags, FilterError};
pub use ids::{AccountId, TransferId};
pub use memory_store::MemoryStore;
pub use query::{AccountQuery, QUERY_VISITS_PER_STEP};
pub use state_machine::{BatchError, StateMachine};
pub(crate) use state_machine::{BatchEvent, imported_mismatch};
pub use status::{
    CreateAccountResult, CreateAccountStatus, CreateTransferResult, CreateTransferStatus,
    EventResult,
};
pub use store::{Expiry, LedgerStore};
pub use transfer::{PendingStatus, Transfer, TransferFlags};
