//! Every write the state machine makes goes through here, for two reasons:
//!
//! 1. **Linked chains roll back as a unit.** While a chain is open, each write records its
//!    inverse in an undo log; when the chain breaks, the log is replayed backwards. Outside a
//!    chain nothing is recorded, so the common unlinked transfer pays nothing.
//! 2. **Points are conserved (invariant I1).** Each account write adds its change to a
//!    per-ledger tally; at the end of every apply the debit and credit tallies must match,
//!    or the process stops before the state can be persisted.

use super::store::{Expiry, LedgerStore};
use super::{
    Account, AccountBalance, AccountId, PendingStatus, StateMachine, Transfer, TransferId,
};

/// The inverse of one write.
#[derive(Clone, Copy, Debug)]
pub(super) enum Undo {
    AccountRemove(AccountId),
    AccountRestore(Account),
    TransferRemove(TransferId),
    PendingStatusRemove(u64),
    PendingStatusRestore(u64, PendingStatus),
    ExpiryRemove(Expiry),
    ExpiryInsert(Expiry),
    AccountTransferPop(AccountId, u64),
    BalancePop(AccountId, u64),
}

/// Net change of one apply to one ledger's four sums, in wrapping arithmetic: a transfer
/// changes a debit sum and the matching credit sum by the same amount, so after any number
/// of balanced writes each pair of tallies is equal.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LedgerMovement {
    ledger: u32,
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

impl<S: LedgerStore> StateMachine<S> {
    pub(super) fn scope_open(&mut self) {
        assert!(self.undo.is_none(), "chains do not nest");
        let mut log = std::mem::take(&mut self.undo_spare);
        log.clear();
        self.undo = Some(log);
    }

    /// Keeps the chain's writes.
    pub(super) fn scope_persist(&mut self) {
        self.undo_spare = self.undo.take().expect("a chain is open");
    }

    /// Rolls the chain's writes back, newest first.
    pub(super) fn scope_discard(&mut self) {
        let mut log = self.undo.take().expect("a chain is open");
        while let Some(undo) = log.pop() {
            self.undo_one(undo);
        }
        self.undo_spare = log;
    }

    fn undo_one(&mut self, undo: Undo) {
        match undo {
            Undo::AccountRemove(id) => self.store.account_remove(id),
            Undo::AccountRestore(old) => {
                let current = self.store.account(old.id).expect("restoring an existing account");
                self.movement_add(&current, &old);
                self.store.account_update(&old);
            }
            Undo::TransferRemove(id) => self.store.transfer_remove(id),
            Undo::PendingStatusRemove(timestamp) => self.store.pending_status_remove(timestamp),
            Undo::PendingStatusRestore(timestamp, status) => {
                self.store.pending_status_set(timestamp, status);
            }
            Undo::ExpiryRemove(expiry) => self.store.expiry_remove(expiry),
            Undo::ExpiryInsert(expiry) => self.store.expiry_insert(expiry),
            Undo::AccountTransferPop(id, timestamp) => {
                self.store.account_transfer_pop(id, timestamp);
            }
            Undo::BalancePop(id, timestamp) => self.store.balance_pop(id, timestamp),
        }
    }

    fn record(&mut self, undo: Undo) {
        if let Some(log) = &mut self.undo {
            log.push(undo);
        }
    }

    pub(super) fn write_account_insert(&mut self, account: &Account) {
        assert!(account.debits_pending == 0 && account.debits_posted == 0);
        assert!(account.credits_pending == 0 && account.credits_posted == 0);
        self.store.account_insert(account);
        self.record(Undo::AccountRemove(account.id));
    }

    /// Replaces `old` with `new` if they differ. Asserts invariant I2 on the result.
    pub(super) fn write_account_update(&mut self, old: &Account, new: &Account) {
        assert_eq!(old.id, new.id);
        assert_eq!(old.ledger, new.ledger);
        if old == new {
            return;
        }
        assert!(new.within_limits(), "balance flags violated: {new:?}");
        self.movement_add(old, new);
        self.store.account_update(new);
        self.record(Undo::AccountRestore(*old));
    }

    pub(super) fn write_transfer_insert(&mut self, transfer: &Transfer) {
        self.store.transfer_insert(transfer);
        self.record(Undo::TransferRemove(transfer.id));
        for account in [transfer.debit_account_id, transfer.credit_account_id] {
            self.store.account_transfer_append(account, transfer.timestamp);
            self.record(Undo::AccountTransferPop(account, transfer.timestamp));
        }
    }

    pub(super) fn write_pending_status(&mut self, pending_timestamp: u64, status: PendingStatus) {
        let undo = match self.store.pending_status(pending_timestamp) {
            None => Undo::PendingStatusRemove(pending_timestamp),
            Some(old) => Undo::PendingStatusRestore(pending_timestamp, old),
        };
        self.store.pending_status_set(pending_timestamp, status);
        self.record(undo);
    }

    pub(super) fn write_expiry_insert(&mut self, expiry: Expiry) {
        self.store.expiry_insert(expiry);
        self.record(Undo::ExpiryRemove(expiry));
    }

    pub(super) fn write_expiry_remove(&mut self, expiry: Expiry) {
        self.store.expiry_remove(expiry);
        self.record(Undo::ExpiryInsert(expiry));
    }

    /// Records the balance after a transfer, for accounts that keep history.
    pub(super) fn write_history(&mut self, account: &Account, timestamp: u64) {
        if account.flags.contains(super::AccountFlags::HISTORY) {
            let balance: AccountBalance = account.balance_at(timestamp);
            self.store.balance_append(account.id, &balance);
            self.record(Undo::BalancePop(account.id, timestamp));
        }
    }

    fn movement_add(&mut self, old: &Account, new: &Account) {
        let index = match self.movement.iter().position(|m| m.ledger == new.ledger) {
            Some(index) => index,
            None => {
                self.movement.push(LedgerMovement { ledger: new.ledger, ..Default::default() });
                self.movement.len() - 1
            }
        };
        let tally = &mut self.movement[index];
        let delta = |before: u128, after: u128| after.wrapping_sub(before);
        tally.debits_pending =
            tally.debits_pending.wrapping_add(delta(old.debits_pending, new.debits_pending));
        tally.debits_posted =
            tally.debits_posted.wrapping_add(delta(old.debits_posted, new.debits_posted));
        tally.credits_pending =
            tally.credits_pending.wrapping_add(delta(old.credits_pending, new.credits_pending));
        tally.credits_posted =
            tally.credits_posted.wrapping_add(delta(old.credits_posted, new.credits_posted));
    }

    /// Asserts that this apply moved as many points into debits as into credits, per ledger
    /// and per phase (invariant I1), then clears the tally.
    pub(super) fn movement_check(&mut self) {
        for tally in self.movement.drain(..) {
            assert_eq!(tally.debits_pending, tally.credits_pending, "I1 pending: {tally:?}");
            assert_eq!(tally.debits_posted, tally.credits_posted, "I1 posted: {tally:?}");
        }
    }
}
