//! Resolving a pending transfer: post it (in full with amount `u128::MAX`, or in part) or
//! void it, exactly once. TigerBeetle's `post_or_void_pending_transfer`, in its order.
//!
//! The reservation is always released in full; a partial post moves only `amount` and the
//! remainder returns to the debit account. A closed account accepts only voids.

use super::create_transfer::{Failure, add, fail};
use super::internal;
use super::store::{Expiry, LedgerStore};
use super::{
    AccountFlags, AccountId, CreateTransferStatus as Status, PendingStatus, StateMachine, Transfer,
    TransferFlags, TransferId,
};

impl<S: LedgerStore> StateMachine<S> {
    pub(super) fn post_or_void_pending_transfer(
        &mut self,
        timestamp_event: u64,
        t: &Transfer,
    ) -> Result<u64, Failure> {
        assert!(t.flags.resolves_pending());
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
        let exclusive = TransferFlags::PENDING
            | TransferFlags::BALANCING_DEBIT
            | TransferFlags::BALANCING_CREDIT
            | TransferFlags::CLOSING_DEBIT
            | TransferFlags::CLOSING_CREDIT;
        if (post && void) || t.flags.intersects(exclusive) {
            return fail(Status::FlagsAreMutuallyExclusive);
        }
        if t.pending_id == TransferId::ZERO {
            return fail(Status::PendingIdMustNotBeZero);
        }
        if t.pending_id == TransferId::MAX {
            return fail(Status::PendingIdMustNotBeIntMax);
        }
        if t.pending_id == t.id {
            return fail(Status::PendingIdMustBeDifferent);
        }
        if t.timeout != 0 {
            return fail(Status::TimeoutReservedForPendingTransfer);
        }
        let p = self.store.transfer(t.pending_id).ok_or((Status::PendingTransferNotFound, None))?;
        if !p.flags.contains(TransferFlags::PENDING) {
            return fail(Status::PendingTransferNotPending);
        }
        let leg = reserved_leg_check(t, &p, post)?;
        pending_match_check(t, &p)?;
        let amount = resolved_amount(t, &p)?;
        self.pending_still_open_check(timestamp_event, &p)?;
        let timestamp = self.transfer_timestamp(timestamp_event, t, None)?;
        // Not `timestamp_event`: a pending transfer imported earlier in the same batch
        // may carry a client timestamp above this event's tick; an imported post's own
        // timestamp is above every stored transfer's, a tick above every earlier batch's.
        assert!(p.timestamp < timestamp);
        let dr =
            self.store.account(p.debit_account_id).expect("a pending transfer's account exists");
        let cr =
            self.store.account(p.credit_account_id).expect("a pending transfer's account exists");
        assert!(timestamp > dr.timestamp && timestamp > cr.timestamp);
        // Tally's post of a leg completes a cross-shard transaction already decided (its
        // primary's part applied): an account closed since the leg reserved its units takes
        // it like a void, or the transaction would stay half applied.
        if !void && !leg && dr.flags.contains(AccountFlags::CLOSED) {
            return fail(Status::DebitAccountAlreadyClosed);
        }
        if !void && !leg && cr.flags.contains(AccountFlags::CLOSED) {
            return fail(Status::CreditAccountAlreadyClosed);
        }
        let stored = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: t.pending_id,
            user_data_128: if t.user_data_128 > 0 { t.user_data_128 } else { p.user_data_128 },
            user_data_64: if t.user_data_64 > 0 { t.user_data_64 } else { p.user_data_64 },
            user_data_32: if t.user_data_32 > 0 { t.user_data_32 } else { p.user_data_32 },
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags,
            timestamp,
        };
        self.write_transfer_insert(&stored);
        if let Some(expires_at) = p.expires_at() {
            self.write_expiry_remove(Expiry { expires_at, pending_timestamp: p.timestamp });
        }
        let status = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        self.write_pending_status(p.timestamp, status);
        let (dr_new, cr_new) = resolve(&p, post, amount, dr, cr);
        self.write_account_update(&dr, &dr_new);
        self.write_account_update(&cr, &cr_new);
        self.write_history(&dr_new, timestamp);
        self.write_history(&cr_new, timestamp);
        Ok(timestamp)
    }

    /// Fails if the pending transfer was already resolved, or its timeout has passed (even if
    /// the expiry sweep has not reached it yet).
    fn pending_still_open_check(&self, timestamp_event: u64, p: &Transfer) -> Result<(), Failure> {
        match self.store.pending_status(p.timestamp).expect("a pending transfer has a status") {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return fail(Status::PendingTransferAlreadyPosted),
            PendingStatus::Voided => return fail(Status::PendingTransferAlreadyVoided),
            PendingStatus::Expired => {
                assert!(p.expires_at().is_some_and(|at| at <= timestamp_event));
                return fail(Status::PendingTransferExpired);
            }
        }
        if p.expires_at().is_some_and(|expires_at| expires_at <= timestamp_event) {
            return fail(Status::PendingTransferExpired);
        }
        Ok(())
    }

    /// Releases an expired pending transfer (the expiry sweep). No transfer is created, so
    /// no history is recorded, as in TigerBeetle.
    pub(super) fn expire_one(&mut self, expiry: Expiry) {
        assert!(self.undo.is_none(), "expiry never runs inside a chain");
        let p =
            self.store.transfer_at(expiry.pending_timestamp).expect("expiring a stored transfer");
        assert!(p.flags.contains(TransferFlags::PENDING));
        assert_eq!(p.expires_at(), Some(expiry.expires_at));
        assert_eq!(self.store.pending_status(p.timestamp), Some(PendingStatus::Pending));
        let dr =
            self.store.account(p.debit_account_id).expect("a pending transfer's account exists");
        let cr =
            self.store.account(p.credit_account_id).expect("a pending transfer's account exists");
        let (dr_new, cr_new) = resolve(&p, false, p.amount, dr, cr);
        self.write_account_update(&dr, &dr_new);
        self.write_account_update(&cr, &cr_new);
        self.write_pending_status(p.timestamp, PendingStatus::Expired);
        self.write_expiry_remove(expiry);
    }
}

/// The accounts after resolving `p`: the reservation released, `amount` posted if `post`,
/// and accounts closed by `p` reopened if it did not post.
fn resolve(
    p: &Transfer,
    post: bool,
    amount: u128,
    mut dr: super::Account,
    mut cr: super::Account,
) -> (super::Account, super::Account) {
    let release = |sum: u128| sum.checked_sub(p.amount).expect("the reservation is held");
    dr.debits_pending = release(dr.debits_pending);
    cr.credits_pending = release(cr.credits_pending);
    if post {
        assert!(amount <= p.amount);
        assert!(!p.flags.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT));
        dr.debits_posted = add(dr.debits_posted, amount);
        cr.credits_posted = add(cr.credits_posted, amount);
    } else {
        if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
            assert!(dr.flags.contains(AccountFlags::CLOSED));
            dr.flags.remove(AccountFlags::CLOSED);
        }
        if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
            assert!(cr.flags.contains(AccountFlags::CLOSED));
            cr.flags.remove(AccountFlags::CLOSED);
        }
    }
    (dr, cr)
}

/// Tally's rule (`internal`): a pending transfer with an internal account on either side
/// (or `LEG_TIMEOUT`) is a leg of a cross-shard transaction; only a post or void whose id
/// Tally derives from the leg's may resolve it: its own completion of a decided
/// transaction ([`internal::post_id`], [`internal::void_id`]; the result is `true`), or a
/// client's post or void of a cross-shard pending transfer, carried to its debit leg
/// ([`internal::client_post_id`], [`internal::client_void_id`], `false`: checked like any
/// other post or void; only on a leg from a client's account into an internal one). Checked before the pending transfer's fields are compared, so a
/// refused request learns nothing more about the leg. Whether `t` is Tally's completion of
/// a leg.
fn reserved_leg_check(t: &Transfer, p: &Transfer, post: bool) -> Result<bool, Failure> {
    if !internal::is_leg(p) {
        return Ok(false);
    }
    // A client's decision reaches only a pending transfer's debit leg (a client's account
    // into transit), never a credit leg or a leg between two client accounts.
    let debit_leg = internal::is_internal(p.credit_account_id.0)
        && !internal::is_internal(p.debit_account_id.0);
    match internal::derived_resolution(t, post) {
        Some(true) => Ok(true),
        Some(false) if debit_leg => Ok(false),
        _ => fail(Status::PendingTransferReserved),
    }
}

/// A post or void may leave accounts, ledger and code at zero; if given they must match.
fn pending_match_check(t: &Transfer, p: &Transfer) -> Result<(), Failure> {
    if t.debit_account_id != AccountId::ZERO && t.debit_account_id != p.debit_account_id {
        return fail(Status::PendingTransferHasDifferentDebitAccountId);
    }
    if t.credit_account_id != AccountId::ZERO && t.credit_account_id != p.credit_account_id {
        return fail(Status::PendingTransferHasDifferentCreditAccountId);
    }
    if t.ledger > 0 && t.ledger != p.ledger {
        return fail(Status::PendingTransferHasDifferentLedger);
    }
    if t.code > 0 && t.code != p.code {
        return fail(Status::PendingTransferHasDifferentCode);
    }
    Ok(())
}

/// The amount a post or void resolves: a void is always the full amount (0 means full); a
/// post is `amount`, with `u128::MAX` meaning the full pending amount.
fn resolved_amount(t: &Transfer, p: &Transfer) -> Result<u128, Failure> {
    let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let amount = match (void, t.amount) {
        (true, 0) | (false, u128::MAX) => p.amount,
        (_, amount) => amount,
    };
    if amount > p.amount {
        return fail(Status::ExceedsPendingTransferAmount);
    }
    if void && amount < p.amount {
        return fail(Status::PendingTransferHasDifferentAmount);
    }
    Ok(amount)
}

/// Compares a resubmitted post or void with the stored one (TigerBeetle's
/// `post_or_void_pending_transfer_exists`). Zero fields defaulted to the pending transfer's.
pub(super) fn post_or_void_exists(t: &Transfer, e: &Transfer, p: &Transfer) -> Failure {
    assert!(t.flags == e.flags && t.pending_id == e.pending_id && t.pending_id == p.id);
    let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let defaulted = |given: u128, full: u128| if given == full { p.amount } else { given };
    let amount_requested =
        if void { defaulted(t.amount, 0) } else { defaulted(t.amount, u128::MAX) };
    let or_pending = |given: u128, pending: u128| if given == 0 { pending } else { given };
    let status = if t.debit_account_id != AccountId::ZERO
        && t.debit_account_id != e.debit_account_id
    {
        Status::ExistsWithDifferentDebitAccountId
    } else if t.credit_account_id != AccountId::ZERO && t.credit_account_id != e.credit_account_id {
        Status::ExistsWithDifferentCreditAccountId
    } else if amount_requested != e.amount {
        Status::ExistsWithDifferentAmount
    } else if or_pending(t.user_data_128, p.user_data_128) != e.user_data_128 {
        Status::ExistsWithDifferentUserData128
    } else if or_pending(u128::from(t.user_data_64), u128::from(p.user_data_64))
        != u128::from(e.user_data_64)
    {
        Status::ExistsWithDifferentUserData64
    } else if or_pending(u128::from(t.user_data_32), u128::from(p.user_data_32))
        != u128::from(e.user_data_32)
    {
        Status::ExistsWithDifferentUserData32
    } else if t.ledger != 0 && t.ledger != e.ledger {
        Status::ExistsWithDifferentLedger
    } else if t.code != 0 && t.code != e.code {
        Status::ExistsWithDifferentCode
    } else {
        return (Status::Exists, Some(e.timestamp));
    };
    (status, None)
}
