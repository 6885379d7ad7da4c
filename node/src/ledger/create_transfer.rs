//! Creating one single-phase or pending transfer: TigerBeetle's `create_transfer`, check for
//! check, in its order. Posting and voiding are in [`post_void`](super::post_void).

use tally_proto::limits::TIMESTAMP_MAX;

use super::store::{Expiry, LedgerStore};
use super::transfer::NANOS_PER_SECOND;
use super::{
    Account, AccountFlags, AccountId, CreateTransferStatus as Status, PendingStatus, StateMachine,
    Transfer, TransferFlags, TransferId,
};

/// `Err` of the checked paths: the status and, for `Exists`, the existing timestamp.
pub(super) type Failure = (Status, Option<u64>);

pub(super) fn fail<T>(status: Status) -> Result<T, Failure> {
    Err((status, None))
}

impl<S: LedgerStore> StateMachine<S> {
    /// Validates and applies `t`. Returns the status and the timestamp to report.
    pub(super) fn create_transfer(&mut self, timestamp_event: u64, t: &Transfer) -> (Status, u64) {
        assert!(timestamp_event > self.store.timestamp_last());
        match self.create_transfer_checked(timestamp_event, t) {
            Ok(timestamp) => (Status::Created, timestamp),
            Err((status, timestamp)) => (status, timestamp.unwrap_or(timestamp_event)),
        }
    }

    fn create_transfer_checked(
        &mut self,
        timestamp_event: u64,
        t: &Transfer,
    ) -> Result<u64, Failure> {
        if t.flags.has_reserved_bits() {
            return fail(Status::ReservedFlag);
        }
        if t.id == TransferId::ZERO {
            return fail(Status::IdMustNotBeZero);
        }
        if t.id == TransferId::MAX {
            return fail(Status::IdMustNotBeIntMax);
        }
        if let Some(existing) = self.store.transfer(t.id) {
            return Err(self.transfer_exists(t, &existing));
        }
        if self.store.transfer_failed(t.id) {
            return fail(Status::IdAlreadyFailed);
        }
        if t.flags.resolves_pending() {
            return self.post_or_void_pending_transfer(timestamp_event, t);
        }
        transfer_shape_check(t)?;
        let dr =
            self.store.account(t.debit_account_id).ok_or((Status::DebitAccountNotFound, None))?;
        let cr =
            self.store.account(t.credit_account_id).ok_or((Status::CreditAccountNotFound, None))?;
        if dr.ledger != cr.ledger {
            return fail(Status::AccountsMustHaveTheSameLedger);
        }
        if t.ledger != dr.ledger {
            return fail(Status::TransferMustHaveTheSameLedgerAsAccounts);
        }
        let timestamp = self.transfer_timestamp(timestamp_event, t, Some((&dr, &cr)))?;
        assert!(timestamp > dr.timestamp && timestamp > cr.timestamp);
        if dr.flags.contains(AccountFlags::CLOSED) {
            return fail(Status::DebitAccountAlreadyClosed);
        }
        if cr.flags.contains(AccountFlags::CLOSED) {
            return fail(Status::CreditAccountAlreadyClosed);
        }
        let amount = balancing_amount(t, &dr, &cr);
        amount_check(t, amount, timestamp, &dr, &cr)?;
        self.transfer_apply(t, amount, timestamp, &dr, &cr);
        Ok(timestamp)
    }

    /// The timestamp a new transfer gets: the event's own, or for an imported transfer its
    /// client-given one once it is shown not to regress. `accounts` is `Some` for transfers
    /// that name their accounts, whose creation the import must postdate.
    pub(super) fn transfer_timestamp(
        &self,
        timestamp_event: u64,
        t: &Transfer,
        accounts: Option<(&Account, &Account)>,
    ) -> Result<u64, Failure> {
        if !t.flags.contains(TransferFlags::IMPORTED) {
            assert_eq!(t.timestamp, 0);
            return Ok(timestamp_event);
        }
        assert!(t.timestamp > 0, "the batch loop checked the range");
        if t.timestamp <= self.store.transfer_timestamp_max()
            || self.store.account_timestamp_exists(t.timestamp)
        {
            return fail(Status::ImportedEventTimestampMustNotRegress);
        }
        if let Some((dr, cr)) = accounts {
            if t.timestamp <= dr.timestamp {
                return fail(Status::ImportedEventTimestampMustPostdateDebitAccount);
            }
            if t.timestamp <= cr.timestamp {
                return fail(Status::ImportedEventTimestampMustPostdateCreditAccount);
            }
            if t.timeout != 0 {
                return fail(Status::ImportedEventTimeoutMustBeZero);
            }
        }
        Ok(t.timestamp)
    }

    /// Stores the transfer and moves the points. Every check has passed.
    fn transfer_apply(
        &mut self,
        t: &Transfer,
        amount: u128,
        timestamp: u64,
        dr: &Account,
        cr: &Account,
    ) {
        let stored = Transfer { amount, timestamp, ..*t };
        self.write_transfer_insert(&stored);
        let mut dr_new = *dr;
        let mut cr_new = *cr;
        if t.flags.contains(TransferFlags::PENDING) {
            dr_new.debits_pending = add(dr_new.debits_pending, amount);
            cr_new.credits_pending = add(cr_new.credits_pending, amount);
            self.write_pending_status(timestamp, PendingStatus::Pending);
            if let Some(expires_at) = stored.expires_at() {
                assert!(!t.flags.contains(TransferFlags::IMPORTED));
                self.write_expiry_insert(Expiry { expires_at, pending_timestamp: timestamp });
            }
        } else {
            dr_new.debits_posted = add(dr_new.debits_posted, amount);
            cr_new.credits_posted = add(cr_new.credits_posted, amount);
        }
        if t.flags.contains(TransferFlags::CLOSING_DEBIT) {
            dr_new.flags |= AccountFlags::CLOSED;
        }
        if t.flags.contains(TransferFlags::CLOSING_CREDIT) {
            cr_new.flags |= AccountFlags::CLOSED;
        }
        self.write_account_update(dr, &dr_new);
        self.write_account_update(cr, &cr_new);
        self.write_history(&dr_new, timestamp);
        self.write_history(&cr_new, timestamp);
    }

    /// Compares a resubmitted transfer with the stored one (TigerBeetle's
    /// `create_transfer_exists`): flags first, since they change what the rest means.
    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> Failure {
        assert_eq!(t.id, e.id);
        let status = if t.flags != e.flags {
            Status::ExistsWithDifferentFlags
        } else if t.pending_id != e.pending_id {
            Status::ExistsWithDifferentPendingId
        } else if t.timeout != e.timeout {
            Status::ExistsWithDifferentTimeout
        } else if t.flags.resolves_pending() {
            let pending =
                self.store.transfer(t.pending_id).expect("a resolved pending transfer exists");
            return super::post_void::post_or_void_exists(t, e, &pending);
        } else if t.debit_account_id != e.debit_account_id {
            Status::ExistsWithDifferentDebitAccountId
        } else if t.credit_account_id != e.credit_account_id {
            Status::ExistsWithDifferentCreditAccountId
        } else if amount_differs(t, e) {
            Status::ExistsWithDifferentAmount
        } else if t.user_data_128 != e.user_data_128 {
            Status::ExistsWithDifferentUserData128
        } else if t.user_data_64 != e.user_data_64 {
            Status::ExistsWithDifferentUserData64
        } else if t.user_data_32 != e.user_data_32 {
            Status::ExistsWithDifferentUserData32
        } else if t.ledger != e.ledger {
            Status::ExistsWithDifferentLedger
        } else if t.code != e.code {
            Status::ExistsWithDifferentCode
        } else {
            return (Status::Exists, Some(e.timestamp));
        };
        (status, None)
    }
}

/// For balancing transfers `amount` is an upper limit, so a resubmission matches any stored
/// amount up to it.
fn amount_differs(t: &Transfer, e: &Transfer) -> bool {
    if t.flags.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT) {
        t.amount < e.amount
    } else {
        t.amount != e.amount
    }
}

/// The checks on a new single-phase or pending transfer that need no stored state.
fn transfer_shape_check(t: &Transfer) -> Result<(), Failure> {
    if t.debit_account_id == AccountId::ZERO {
        return fail(Status::DebitAccountIdMustNotBeZero);
    }
    if t.debit_account_id == AccountId::MAX {
        return fail(Status::DebitAccountIdMustNotBeIntMax);
    }
    if t.credit_account_id == AccountId::ZERO {
        return fail(Status::CreditAccountIdMustNotBeZero);
    }
    if t.credit_account_id == AccountId::MAX {
        return fail(Status::CreditAccountIdMustNotBeIntMax);
    }
    if t.credit_account_id == t.debit_account_id {
        return fail(Status::AccountsMustBeDifferent);
    }
    if t.pending_id != TransferId::ZERO {
        return fail(Status::PendingIdMustBeZero);
    }
    if !t.flags.contains(TransferFlags::PENDING) {
        if t.timeout != 0 {
            return fail(Status::TimeoutReservedForPendingTransfer);
        }
        if t.flags.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT) {
            return fail(Status::ClosingTransferMustBePending);
        }
    }
    if t.ledger == 0 {
        return fail(Status::LedgerMustNotBeZero);
    }
    if t.code == 0 {
        return fail(Status::CodeMustNotBeZero);
    }
    Ok(())
}

/// The amount actually moved: `amount`, or for balancing transfers at most what the
/// accounts allow (never below zero).
fn balancing_amount(t: &Transfer, dr: &Account, cr: &Account) -> u128 {
    let mut amount = t.amount;
    if t.flags.contains(TransferFlags::BALANCING_DEBIT) {
        let dr_balance = dr.debits_posted.saturating_add(dr.debits_pending);
        amount = amount.min(dr.credits_posted.saturating_sub(dr_balance));
    }
    if t.flags.contains(TransferFlags::BALANCING_CREDIT) {
        let cr_balance = cr.credits_posted.saturating_add(cr.credits_pending);
        amount = amount.min(cr.debits_posted.saturating_sub(cr_balance));
    }
    amount
}

/// Overflow and balance-limit checks, in TigerBeetle's order.
fn amount_check(
    t: &Transfer,
    amount: u128,
    timestamp: u64,
    dr: &Account,
    cr: &Account,
) -> Result<(), Failure> {
    let overflows = |a: u128, b: u128| a.checked_add(b).is_none();
    if t.flags.contains(TransferFlags::PENDING) {
        if overflows(amount, dr.debits_pending) {
            return fail(Status::OverflowsDebitsPending);
        }
        if overflows(amount, cr.credits_pending) {
            return fail(Status::OverflowsCreditsPending);
        }
    }
    if overflows(amount, dr.debits_posted) {
        return fail(Status::OverflowsDebitsPosted);
    }
    if overflows(amount, cr.credits_posted) {
        return fail(Status::OverflowsCreditsPosted);
    }
    // Pending + posted of one side is itself proven not to overflow by earlier transfers.
    if overflows(amount, add(dr.debits_pending, dr.debits_posted)) {
        return fail(Status::OverflowsDebits);
    }
    if overflows(amount, add(cr.credits_pending, cr.credits_posted)) {
        return fail(Status::OverflowsCredits);
    }
    let timeout_ns = u64::from(t.timeout) * NANOS_PER_SECOND;
    if timestamp.checked_add(timeout_ns).is_none_or(|expires_at| expires_at > TIMESTAMP_MAX) {
        return fail(Status::OverflowsTimeout);
    }
    if dr.debits_exceed_credits(amount) {
        // A spread account's slice (the same id on every shard, `docs/SHARDING.md` §2):
        // other slices may still hold enough, so the id is not burnt and the node moves
        // units here and retries. A pure function of the id: deterministic.
        if tally_proto::routing::is_spread(dr.id.0) {
            return fail(Status::SliceDry);
        }
        return fail(Status::ExceedsCredits);
    }
    if cr.credits_exceed_debits(amount) {
        return fail(Status::ExceedsDebits);
    }
    Ok(())
}

/// Adds two balance amounts that earlier checks proved cannot overflow.
pub(super) fn add(a: u128, b: u128) -> u128 {
    a.checked_add(b).expect("overflow checks precede every balance change")
}
