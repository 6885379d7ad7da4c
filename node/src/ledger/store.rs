//! The storage trait the state machine reads and writes through.
//!
//! The state machine owns every rule; a store only keeps records and indexes. That is why
//! the trait is made of plain gets, puts and ordered scans, and why rollback of a failed
//! linked chain lives in the state machine (an undo log replayed through the `*_remove`
//! methods) rather than in each store. Every implementation must pass the same
//! conformance tests (`tests/it/store_conformance.rs`) and the same ledger tests.
//!
//! Ordering guarantees a store must give, because they reach the output:
//! - `transfer_insert` is called with strictly increasing timestamps; `transfer_remove` only
//!   undoes the newest insert.
//! - `account_transfer_append` is called for both accounts of the transfer just inserted
//!   (the newest), and `account_transfer_pop` only before that transfer is removed.
//!   `balance_append` is called per account with increasing timestamps; `balance_pop` only
//!   undoes the newest.
//! - `expiry_due` yields entries ordered by `(expires_at, pending_timestamp)`.
//! - the `visit_*` methods yield in the order their doc states, for state digests.

use std::ops::ControlFlow;

use super::{Account, AccountBalance, AccountId, PendingStatus, Transfer, TransferId};

/// A pending transfer's entry in the expiry index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry {
    /// Cluster time at which the transfer expires, nanoseconds.
    pub expires_at: u64,
    /// The pending transfer's timestamp (its key in the pending-status table).
    pub pending_timestamp: u64,
}

/// Records and indexes of one shard's ledger.
pub trait LedgerStore {
    /// The account with `id`.
    fn account(&self, id: AccountId) -> Option<Account>;
    /// Adds a new account; its id and timestamp are not yet present.
    fn account_insert(&mut self, account: &Account);
    /// Replaces an existing account (same id and timestamp).
    fn account_update(&mut self, account: &Account);
    /// Removes an account (undo of `account_insert` only).
    fn account_remove(&mut self, id: AccountId);
    /// Whether some account has exactly this timestamp.
    fn account_timestamp_exists(&self, timestamp: u64) -> bool;
    /// The largest account timestamp, or 0.
    fn account_timestamp_max(&self) -> u64;

    /// The transfer with `id`.
    fn transfer(&self, id: TransferId) -> Option<Transfer>;
    /// The transfer with exactly this timestamp.
    fn transfer_at(&self, timestamp: u64) -> Option<Transfer>;
    /// Adds a transfer whose timestamp is above every stored transfer's.
    fn transfer_insert(&mut self, transfer: &Transfer);
    /// Removes the newest transfer (undo of `transfer_insert` only).
    fn transfer_remove(&mut self, id: TransferId);
    /// The largest transfer timestamp, or 0.
    fn transfer_timestamp_max(&self) -> u64;

    /// Whether `id` belongs to a transfer that failed for a transient reason.
    fn transfer_failed(&self, id: TransferId) -> bool;
    /// Burns `id`: it failed for a transient reason and may never be created.
    fn transfer_failed_insert(&mut self, id: TransferId);

    /// The status of the pending transfer with this timestamp.
    fn pending_status(&self, pending_timestamp: u64) -> Option<PendingStatus>;
    /// Sets the status of the pending transfer with this timestamp.
    fn pending_status_set(&mut self, pending_timestamp: u64, status: PendingStatus);
    /// Forgets a pending status (undo of its first `pending_status_set` only).
    fn pending_status_remove(&mut self, pending_timestamp: u64);

    /// Adds an entry to the expiry index.
    fn expiry_insert(&mut self, expiry: Expiry);
    /// Removes an entry from the expiry index.
    fn expiry_remove(&mut self, expiry: Expiry);
    /// Appends to `out` up to `limit` entries with `expires_at <= now`, earliest first.
    fn expiry_due(&self, now: u64, limit: usize, out: &mut Vec<Expiry>);
    /// The earliest `expires_at` in the index.
    fn expiry_next(&self) -> Option<u64>;

    /// Records that the newest transfer, at `timestamp`, touched `account`.
    fn account_transfer_append(&mut self, account: AccountId, timestamp: u64);
    /// Undoes the newest `account_transfer_append` for `account`.
    fn account_transfer_pop(&mut self, account: AccountId, timestamp: u64);
    /// Visits the timestamps of transfers that touched `account`, within
    /// `timestamp_min..=timestamp_max`, ascending or (if `reversed`) descending, until
    /// `visit` breaks: in time proportional to the transfers visited plus a bounded number
    /// more, however many the account has outside the range (a client paging through a hot
    /// account's history must not make each page cost the whole history).
    fn account_transfers_scan(
        &self,
        account: AccountId,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    );

    /// Visits the transfers with a timestamp of at least `timestamp_min`, ascending, until
    /// `visit` breaks: in time proportional to the transfers visited (plus a search).
    fn transfers_scan(
        &self,
        timestamp_min: u64,
        visit: &mut dyn FnMut(&Transfer) -> ControlFlow<()>,
    );

    /// Records `account`'s balance after the transfer at `balance.timestamp`.
    fn balance_append(&mut self, account: AccountId, balance: &AccountBalance);
    /// Undoes the newest `balance_append` for `account`.
    fn balance_pop(&mut self, account: AccountId, timestamp: u64);
    /// `account`'s balance after the transfer at `timestamp`, if recorded.
    fn balance_at(&self, account: AccountId, timestamp: u64) -> Option<AccountBalance>;

    /// The last timestamp the state machine handed out (0 when new).
    fn timestamp_last(&self) -> u64;
    /// Sets the last timestamp handed out.
    fn timestamp_last_set(&mut self, timestamp: u64);

    /// A hint before `transfers` are applied, with no effect on the store's contents: reads
    /// what their apply reads first (their ids in the transfer index, their accounts, a
    /// pending transfer they resolve), all at once, so that the memory's latency is paid in
    /// parallel rather than one miss after another inside the apply loop. The default does
    /// nothing.
    fn warm_transfers(&self, transfers: &[Transfer]) {
        let _ = transfers;
    }

    /// Visits every account in ascending id order.
    fn visit_accounts(&self, visit: &mut dyn FnMut(&Account));
    /// Visits every transfer in ascending timestamp order.
    fn visit_transfers(&self, visit: &mut dyn FnMut(&Transfer));
    /// Visits every burnt transfer id in ascending order.
    fn visit_failed_ids(&self, visit: &mut dyn FnMut(TransferId));
    /// Visits every pending status in ascending pending-timestamp order.
    fn visit_pending_statuses(&self, visit: &mut dyn FnMut(u64, PendingStatus));
    /// Visits the expiry index in order.
    fn visit_expiries(&self, visit: &mut dyn FnMut(Expiry));
    /// Visits recorded balances by ascending account id, then ascending timestamp.
    fn visit_balances(&self, visit: &mut dyn FnMut(AccountId, &AccountBalance));
}
