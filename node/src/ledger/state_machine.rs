//! The state machine: applies one batch of events at one cluster time, deterministically.
//!
//! Apply is a function of (state, batch, cluster time). The cluster time is proposed by the
//! shard leader; the state machine never reads a clock. Timestamps are handed out one per
//! event (and one per expired pending transfer) from
//! `max(cluster_time_ns, timestamp_last + 1)` upwards, so they are unique and strictly
//! increasing per shard even if a new leader's clock is behind (invariant I7).
//!
//! Each apply first expires the pending transfers that are due (at most
//! `EXPIRIES_PER_APPLY_MAX`), then runs the events in order. Linked chains are applied as a
//! unit through the undo log in [`scope`](super::scope).

use std::fmt;

use tally_proto::limits::{BATCH_EVENTS_MAX, EXPIRIES_PER_APPLY_MAX, TIMESTAMP_MAX};

use super::scope::{LedgerMovement, Undo};
use super::status::BatchStatus;
use super::store::{Expiry, LedgerStore};
use super::{
    Account, AccountFlags, CreateAccountResult, CreateAccountStatus, CreateTransferResult,
    CreateTransferStatus, EventResult, Transfer, TransferFlags,
};

/// Events whose memory the store is asked to warm at once ([`LedgerStore::warm_transfers`]):
/// enough independent lookups for the CPU to overlap their cache misses, few enough that
/// what they bring in (a few hundred cache lines) is still in the core's L2 cache when the
/// events are applied right after.
const WARM_EVENTS: usize = 64;

/// Why a whole batch was refused. Nothing of a refused batch is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// More events than `BATCH_EVENTS_MAX`.
    TooManyEvents {
        /// Events in the batch.
        events: usize,
        /// The limit.
        max: u32,
    },
    /// The proposed cluster time leaves no room for this batch's timestamps below
    /// `TIMESTAMP_MAX`.
    ClusterTimeOutOfRange {
        /// The proposed cluster time, nanoseconds.
        cluster_time_ns: u64,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyEvents { events, max } => {
                write!(f, "batch has {events} events; batch_events_max is {max}")
            }
            Self::ClusterTimeOutOfRange { cluster_time_ns } => write!(
                f,
                "cluster time {cluster_time_ns} ns leaves no room for the batch's timestamps \
                 below {TIMESTAMP_MAX}"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// Hands out the timestamps of one apply, one per event, strictly increasing.
#[derive(Debug)]
pub(super) struct Clock {
    next: u64,
}

impl Clock {
    /// The timestamp the next `tick` returns.
    pub(super) fn peek(&self) -> u64 {
        self.next
    }

    pub(super) fn tick(&mut self) -> u64 {
        let now = self.next;
        self.next = now.checked_add(1).expect("room was reserved in begin()");
        now
    }
}

/// The ledger of one shard: rules over a [`LedgerStore`].
#[derive(Debug)]
pub struct StateMachine<S> {
    pub(super) store: S,
    /// Undo log of the open linked chain; `None` when no chain is open.
    pub(super) undo: Option<Vec<Undo>>,
    /// The undo log's buffer between chains, to avoid allocating per chain.
    pub(super) undo_spare: Vec<Undo>,
    /// Net change of the current apply, per ledger, for the conservation assertion.
    pub(super) movement: Vec<LedgerMovement>,
    /// Scratch space for the expiry sweep.
    expiry_scratch: Vec<Expiry>,
}

/// A create event, as the batch loop sees it (and the service's edge, which answers some
/// events of a split request as the loop would).
pub(crate) trait BatchEvent {
    type Status: BatchStatus;
    fn linked(&self) -> bool;
    fn imported(&self) -> bool;
    fn timestamp(&self) -> u64;
}

impl BatchEvent for Account {
    type Status = CreateAccountStatus;
    fn linked(&self) -> bool {
        self.flags.contains(AccountFlags::LINKED)
    }
    fn imported(&self) -> bool {
        self.flags.contains(AccountFlags::IMPORTED)
    }
    fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

impl BatchEvent for Transfer {
    type Status = CreateTransferStatus;
    fn linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }
    fn imported(&self) -> bool {
        self.flags.contains(TransferFlags::IMPORTED)
    }
    fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

/// Whether `timestamp` is a valid object timestamp (1..=TIMESTAMP_MAX).
pub(super) fn timestamp_valid(timestamp: u64) -> bool {
    (1..=TIMESTAMP_MAX).contains(&timestamp)
}

impl<S: LedgerStore> StateMachine<S> {
    /// A state machine over `store` (empty, or recovered from disk).
    pub fn new(store: S) -> Self {
        Self {
            store,
            undo: None,
            undo_spare: Vec::new(),
            movement: Vec::new(),
            expiry_scratch: Vec::new(),
        }
    }

    /// The store, for reads.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for a persistence layer to drain what a batch wrote (between batches
    /// only; it must not change records).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    #[must_use]
    pub fn into_store(self) -> S {
        self.store
    }

    /// Applies a batch of account creations at `cluster_time_ns`; one result per event.
    ///
    /// # Errors
    /// The whole batch is refused, with nothing applied, if it is over `BATCH_EVENTS_MAX`
    /// or the cluster time leaves no room for its timestamps.
    pub fn create_accounts(
        &mut self,
        cluster_time_ns: u64,
        accounts: &[Account],
    ) -> Result<Vec<CreateAccountResult>, BatchError> {
        self.create_accounts_judged(cluster_time_ns, accounts, None)
    }

    /// As [`create_accounts`](Self::create_accounts), the batch judged imported or not by
    /// `imported` if given, else by its first event (TigerBeetle's rule): every event whose
    /// flag differs reads `imported_event_expected` or `imported_event_not_expected`. A
    /// part of a request split over shards is judged by the whole request's first event.
    ///
    /// # Errors
    /// As [`create_accounts`](Self::create_accounts).
    pub fn create_accounts_judged(
        &mut self,
        cluster_time_ns: u64,
        accounts: &[Account],
        imported: Option<bool>,
    ) -> Result<Vec<CreateAccountResult>, BatchError> {
        let mut clock = self.begin(cluster_time_ns, accounts.len())?;
        self.expire_due(&mut clock);
        let results = self.execute(
            accounts,
            imported,
            &mut clock,
            Self::create_account,
            |_, _| {},
            |_, _, _| {},
        );
        self.end(&clock);
        Ok(results)
    }

    /// Applies a batch of transfers at `cluster_time_ns`; one result per event.
    ///
    /// # Errors
    /// As [`create_accounts`](Self::create_accounts).
    pub fn create_transfers(
        &mut self,
        cluster_time_ns: u64,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, BatchError> {
        self.create_transfers_judged(cluster_time_ns, transfers, None)
    }

    /// As [`create_transfers`](Self::create_transfers), the batch judged imported or not
    /// as [`create_accounts_judged`](Self::create_accounts_judged) says.
    ///
    /// # Errors
    /// As [`create_accounts`](Self::create_accounts).
    pub fn create_transfers_judged(
        &mut self,
        cluster_time_ns: u64,
        transfers: &[Transfer],
        imported: Option<bool>,
    ) -> Result<Vec<CreateTransferResult>, BatchError> {
        let mut clock = self.begin(cluster_time_ns, transfers.len())?;
        self.expire_due(&mut clock);
        let results = self.execute(
            transfers,
            imported,
            &mut clock,
            Self::create_transfer,
            |machine, events| machine.store.warm_transfers(events),
            |machine, event, status| {
                if status.transient() {
                    machine.store.transfer_failed_insert(event.id);
                }
            },
        );
        self.end(&clock);
        Ok(results)
    }

    /// Applies no events, only the expiry of due pending transfers. The node proposes a
    /// pulse when [`next_expiry`](Self::next_expiry) has passed and no batch is flowing.
    /// Returns how many pending transfers expired.
    ///
    /// # Errors
    /// As [`create_accounts`](Self::create_accounts).
    pub fn pulse(&mut self, cluster_time_ns: u64) -> Result<usize, BatchError> {
        let mut clock = self.begin(cluster_time_ns, 0)?;
        let expired = self.expire_due(&mut clock);
        self.end(&clock);
        Ok(expired)
    }

    /// The earliest cluster time at which a pending transfer expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.store.expiry_next()
    }

    fn begin(&mut self, cluster_time_ns: u64, events: usize) -> Result<Clock, BatchError> {
        if events > BATCH_EVENTS_MAX as usize {
            return Err(BatchError::TooManyEvents { events, max: BATCH_EVENTS_MAX });
        }
        assert!(self.undo.is_none() && self.movement.is_empty());
        let last = self.store.timestamp_last();
        assert!(last <= TIMESTAMP_MAX);
        let start = cluster_time_ns.max(last + 1);
        // Room for every timestamp this apply may hand out, checked before anything moves.
        let room = u64::from(EXPIRIES_PER_APPLY_MAX) + events as u64;
        if start.checked_add(room).is_none_or(|end| end > TIMESTAMP_MAX) {
            return Err(BatchError::ClusterTimeOutOfRange { cluster_time_ns });
        }
        Ok(Clock { next: start })
    }

    fn end(&mut self, clock: &Clock) {
        assert!(self.undo.is_none(), "a chain is left open");
        self.movement_check();
        let last = clock.peek() - 1;
        assert!(last >= self.store.timestamp_last());
        self.store.timestamp_last_set(last);
    }

    /// The batch loop shared by accounts and transfers (TigerBeetle's `execute_create`).
    /// Before each run of [`WARM_EVENTS`] events it calls `warm` on them (a read-only hint,
    /// [`LedgerStore::warm_transfers`]). The batch is imported if `imported` says so, else
    /// if its first event is.
    fn execute<E: BatchEvent + Copy>(
        &mut self,
        events: &[E],
        imported: Option<bool>,
        clock: &mut Clock,
        create: fn(&mut Self, u64, &E) -> (E::Status, u64),
        warm: fn(&Self, &[E]),
        on_failure: fn(&mut Self, &E, E::Status),
    ) -> Vec<EventResult<E::Status>> {
        let mut results: Vec<EventResult<E::Status>> = Vec::with_capacity(events.len());
        // Timestamp of the batch's last event: imported timestamps must be below it.
        let batch_timestamp = clock.peek() + events.len() as u64 - 1;
        let batch_imported =
            imported.unwrap_or_else(|| events.first().is_some_and(BatchEvent::imported));
        let mut chain: Option<usize> = None;
        let mut chain_broken = false;
        for (index, event) in events.iter().enumerate() {
            if index % WARM_EVENTS == 0 {
                warm(self, &events[index..events.len().min(index + WARM_EVENTS)]);
            }
            let timestamp_event = clock.tick();
            let (status, timestamp) = 'result: {
                if event.linked() {
                    if chain.is_none() {
                        chain = Some(index);
                        assert!(!chain_broken);
                        self.scope_open();
                    }
                    if index == events.len() - 1 {
                        break 'result (E::Status::LINKED_EVENT_CHAIN_OPEN, timestamp_event);
                    }
                }
                if chain_broken {
                    break 'result (E::Status::LINKED_EVENT_FAILED, timestamp_event);
                }
                if let Some(status) = imported_check(event, batch_imported, batch_timestamp) {
                    break 'result (status, timestamp_event);
                }
                create(self, timestamp_event, event)
            };
            if status != E::Status::CREATED {
                if let Some(start) = chain
                    && !chain_broken
                {
                    chain_broken = true;
                    self.scope_discard();
                    for result in &mut results[start..index] {
                        result.status = E::Status::LINKED_EVENT_FAILED;
                    }
                }
                on_failure(self, event, status);
            }
            results.push(EventResult { timestamp, status });
            if chain.is_some() && (!event.linked() || status == E::Status::LINKED_EVENT_CHAIN_OPEN)
            {
                if !chain_broken {
                    self.scope_persist();
                }
                chain = None;
                chain_broken = false;
            }
        }
        assert!(chain.is_none() && !chain_broken);
        assert_eq!(results.len(), events.len());
        results
    }

    /// Expires the due pending transfers, each at its own timestamp. Returns how many.
    fn expire_due(&mut self, clock: &mut Clock) -> usize {
        let mut due = std::mem::take(&mut self.expiry_scratch);
        due.clear();
        self.store.expiry_due(clock.peek(), EXPIRIES_PER_APPLY_MAX as usize, &mut due);
        for expiry in &due {
            let timestamp = clock.tick();
            assert!(expiry.expires_at <= timestamp);
            self.expire_one(*expiry);
        }
        let expired = due.len();
        self.expiry_scratch = due;
        expired
    }
}

/// How `event` fails when its `imported` flag differs from its batch's.
pub(crate) fn imported_mismatch<E: BatchEvent>(event: &E) -> E::Status {
    if event.imported() {
        E::Status::IMPORTED_EVENT_NOT_EXPECTED
    } else {
        E::Status::IMPORTED_EVENT_EXPECTED
    }
}

/// The checks on `imported` and `timestamp` that come before the event's own checks.
fn imported_check<E: BatchEvent>(
    event: &E,
    batch_imported: bool,
    batch_timestamp: u64,
) -> Option<E::Status> {
    if batch_imported != event.imported() {
        return Some(imported_mismatch(event));
    }
    if event.imported() {
        if !timestamp_valid(event.timestamp()) {
            return Some(E::Status::IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE);
        }
        if event.timestamp() >= batch_timestamp {
            return Some(E::Status::IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE);
        }
    } else if event.timestamp() != 0 {
        return Some(E::Status::TIMESTAMP_MUST_BE_ZERO);
    }
    None
}
