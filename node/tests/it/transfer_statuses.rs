// Included once per store by `ledger_suite!` in main.rs; `new_store()` comes from there.
//
// One case per `CreateTransferStatus`: each case builds the situation, applies one batch and
// checks the status of one event in it. `every_transfer_status_has_a_case` proves that the
// table reaches every status the enum defines.

use std::collections::BTreeSet;

use tally_node::ledger::{
    AccountFlags, CreateTransferStatus as S, Transfer, TransferFlags, TransferId,
};
use tally_proto::limits::TIMESTAMP_MAX;

use crate::support::*;

type L = Ledger<super::Store>;

struct Case {
    expect: S,
    /// Extra state beyond `base()`, applied before the batch.
    setup: fn(&mut L),
    batch: fn(&L) -> Vec<Transfer>,
    /// Which event of the batch shows `expect`.
    index: usize,
}

/// Accounts 1 (member, funded with 100), 2 (plain), 3 (ledger 2), 4 (credits must not
/// exceed debits), 6/7 (for closing), 8..=16 (plain, for overflow cases); transfer 50
/// (2 -> 1, 100, user data 1/2/3), pending 80 (2 -> 1, 10).
fn base(ledger: &mut L) {
    let mut accounts = vec![member(1), plain(2), account(3, AccountFlags::empty()), account(4, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)];
    accounts[2].ledger = 2;
    accounts.extend((6..=16).map(plain));
    assert!(ledger.create_accounts(&accounts).iter().all(|s| *s == tally_node::ledger::CreateAccountStatus::Created));
    let funding = Transfer { user_data_128: 1, user_data_64: 2, user_data_32: 3, ..transfer(50, 2, 1, 100) };
    assert_eq!(ledger.create_transfers(&[funding, pending(80, 2, 1, 10, 0)]), vec![S::Created, S::Created]);
}

fn nothing(_: &mut L) {}

fn one(t: Transfer) -> Vec<Transfer> {
    vec![t]
}

fn imported(mut t: Transfer, timestamp: u64) -> Transfer {
    t.flags |= TransferFlags::IMPORTED;
    t.timestamp = timestamp;
    t
}

fn funding_again() -> Transfer {
    Transfer { user_data_128: 1, user_data_64: 2, user_data_32: 3, ..transfer(50, 2, 1, 100) }
}

fn cases() -> Vec<Case> {
    let c = |expect, setup, batch, index| Case { expect, setup, batch, index };
    vec![
        c(S::Created, nothing, |_| one(transfer(100, 2, 1, 10)), 0),
        c(S::LinkedEventFailed, nothing, |_| vec![linked(transfer(100, 2, 1, 1)), transfer(0, 2, 1, 1)], 0),
        c(S::LinkedEventChainOpen, nothing, |_| one(linked(transfer(100, 2, 1, 1))), 0),
        c(S::ImportedEventExpected, nothing, |l| vec![imported(transfer(100, 2, 1, 1), l.now - 1), transfer(101, 2, 1, 1)], 1),
        c(S::ImportedEventNotExpected, nothing, |l| vec![transfer(100, 2, 1, 1), imported(transfer(101, 2, 1, 1), l.now - 1)], 1),
        c(S::TimestampMustBeZero, nothing, |_| one(Transfer { timestamp: 5, ..transfer(100, 2, 1, 1) }), 0),
        c(S::ImportedEventTimestampOutOfRange, nothing, |_| one(imported(transfer(100, 2, 1, 1), 0)), 0),
        c(S::ImportedEventTimestampMustNotAdvance, nothing, |_| one(imported(transfer(100, 2, 1, 1), TIMESTAMP_MAX)), 0),
        c(S::ReservedFlag, nothing, |_| one(Transfer { flags: TransferFlags::from_bits_retain(1 << 15), ..transfer(100, 2, 1, 1) }), 0),
        c(S::IdMustNotBeZero, nothing, |_| one(transfer(0, 2, 1, 1)), 0),
        c(S::IdMustNotBeIntMax, nothing, |_| one(transfer(u128::MAX, 2, 1, 1)), 0),
        c(S::ExistsWithDifferentFlags, nothing, |_| one(Transfer { flags: TransferFlags::PENDING, ..funding_again() }), 0),
        c(S::ExistsWithDifferentPendingId, nothing, |_| one(Transfer { pending_id: TransferId(9), ..funding_again() }), 0),
        c(S::ExistsWithDifferentTimeout, nothing, |_| one(Transfer { timeout: 9, ..funding_again() }), 0),
        c(S::ExistsWithDifferentDebitAccountId, nothing, |_| one(Transfer { debit_account_id: tally_node::ledger::AccountId(8), ..funding_again() }), 0),
        c(S::ExistsWithDifferentCreditAccountId, nothing, |_| one(Transfer { credit_account_id: tally_node::ledger::AccountId(8), ..funding_again() }), 0),
        c(S::ExistsWithDifferentAmount, nothing, |_| one(Transfer { amount: 99, ..funding_again() }), 0),
        c(S::ExistsWithDifferentUserData128, nothing, |_| one(Transfer { user_data_128: 9, ..funding_again() }), 0),
        c(S::ExistsWithDifferentUserData64, nothing, |_| one(Transfer { user_data_64: 9, ..funding_again() }), 0),
        c(S::ExistsWithDifferentUserData32, nothing, |_| one(Transfer { user_data_32: 9, ..funding_again() }), 0),
        c(S::ExistsWithDifferentLedger, nothing, |_| one(Transfer { ledger: 2, ..funding_again() }), 0),
        c(S::ExistsWithDifferentCode, nothing, |_| one(Transfer { code: 2, ..funding_again() }), 0),
        c(S::Exists, nothing, |_| one(funding_again()), 0),
        c(S::IdAlreadyFailed, |l| assert_eq!(l.transfer(transfer(60, 1, 2, 1000)), S::ExceedsCredits), |_| one(transfer(60, 1, 2, 1)), 0),
        c(S::FlagsAreMutuallyExclusive, nothing, |_| one(Transfer { flags: TransferFlags::POST_PENDING_TRANSFER | TransferFlags::PENDING, ..post(100, 80, 1) }), 0),
        c(S::DebitAccountIdMustNotBeZero, nothing, |_| one(transfer(100, 0, 1, 1)), 0),
        c(S::DebitAccountIdMustNotBeIntMax, nothing, |_| one(transfer(100, u128::MAX, 1, 1)), 0),
        c(S::CreditAccountIdMustNotBeZero, nothing, |_| one(transfer(100, 2, 0, 1)), 0),
        c(S::CreditAccountIdMustNotBeIntMax, nothing, |_| one(transfer(100, 2, u128::MAX, 1)), 0),
        c(S::AccountsMustBeDifferent, nothing, |_| one(transfer(100, 2, 2, 1)), 0),
        c(S::PendingIdMustBeZero, nothing, |_| one(Transfer { pending_id: TransferId(80), ..transfer(100, 2, 1, 1) }), 0),
        c(S::PendingIdMustNotBeZero, nothing, |_| one(post(100, 0, 1)), 0),
        c(S::PendingIdMustNotBeIntMax, nothing, |_| one(post(100, u128::MAX, 1)), 0),
        c(S::PendingIdMustBeDifferent, nothing, |_| one(post(100, 100, 1)), 0),
        c(S::TimeoutReservedForPendingTransfer, nothing, |_| one(Transfer { timeout: 1, ..transfer(100, 2, 1, 1) }), 0),
        c(S::ClosingTransferMustBePending, nothing, |_| one(Transfer { flags: TransferFlags::CLOSING_DEBIT, ..transfer(100, 2, 1, 1) }), 0),
        c(S::LedgerMustNotBeZero, nothing, |_| one(Transfer { ledger: 0, ..transfer(100, 2, 1, 1) }), 0),
        c(S::CodeMustNotBeZero, nothing, |_| one(Transfer { code: 0, ..transfer(100, 2, 1, 1) }), 0),
        c(S::DebitAccountNotFound, nothing, |_| one(transfer(100, 99, 1, 1)), 0),
        c(S::CreditAccountNotFound, nothing, |_| one(transfer(100, 2, 99, 1)), 0),
        c(S::AccountsMustHaveTheSameLedger, nothing, |_| one(transfer(100, 2, 3, 1)), 0),
        c(S::TransferMustHaveTheSameLedgerAsAccounts, nothing, |_| one(Transfer { ledger: 2, ..transfer(100, 2, 1, 1) }), 0),
        c(S::PendingTransferNotFound, nothing, |_| one(post(100, 999, 1)), 0),
        c(S::PendingTransferNotPending, nothing, |_| one(post(100, 50, 1)), 0),
        c(S::PendingTransferReserved, pending_leg, |_| one(post(100, LEG, 1)), 0),
        c(S::PendingTransferHasDifferentDebitAccountId, nothing, |_| one(Transfer { debit_account_id: tally_node::ledger::AccountId(8), ..post(100, 80, 1) }), 0),
        c(S::PendingTransferHasDifferentCreditAccountId, nothing, |_| one(Transfer { credit_account_id: tally_node::ledger::AccountId(8), ..post(100, 80, 1) }), 0),
        c(S::PendingTransferHasDifferentLedger, nothing, |_| one(Transfer { ledger: 2, ..post(100, 80, 1) }), 0),
        c(S::PendingTransferHasDifferentCode, nothing, |_| one(Transfer { code: 2, ..post(100, 80, 1) }), 0),
        c(S::ExceedsPendingTransferAmount, nothing, |_| one(post(100, 80, 11)), 0),
        c(S::PendingTransferHasDifferentAmount, nothing, |_| one(Transfer { amount: 5, ..void(100, 80) }), 0),
        c(S::PendingTransferAlreadyPosted, |l| assert_eq!(l.transfer(post(81, 80, u128::MAX)), S::Created), |_| one(post(100, 80, 1)), 0),
        c(S::PendingTransferAlreadyVoided, |l| assert_eq!(l.transfer(void(81, 80)), S::Created), |_| one(post(100, 80, 1)), 0),
        c(S::PendingTransferExpired, |l| { assert_eq!(l.transfer(pending(83, 2, 1, 5, 1)), S::Created); l.advance_seconds(2); }, |_| one(post(100, 83, u128::MAX)), 0),
        c(S::ImportedEventTimestampMustNotRegress, nothing, |_| one(imported(transfer(100, 2, 1, 1), 1)), 0),
        c(S::ImportedEventTimestampMustPostdateDebitAccount, |l| assert_eq!(l.create_accounts(&[plain(20)])[0], tally_node::ledger::CreateAccountStatus::Created), |l| one(imported(transfer(100, 20, 2, 1), l.account(20).timestamp - 1)), 0),
        c(S::ImportedEventTimestampMustPostdateCreditAccount, |l| assert_eq!(l.create_accounts(&[plain(20)])[0], tally_node::ledger::CreateAccountStatus::Created), |l| one(imported(transfer(100, 2, 20, 1), l.account(20).timestamp - 1)), 0),
        c(S::ImportedEventTimeoutMustBeZero, nothing, |l| one(imported(pending(100, 2, 1, 1, 5), l.now - 1)), 0),
        c(S::DebitAccountAlreadyClosed, |l| assert_eq!(l.transfer(Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT, ..transfer(90, 6, 7, 0) }), S::Created), |_| one(transfer(100, 6, 7, 1)), 0),
        c(S::CreditAccountAlreadyClosed, |l| assert_eq!(l.transfer(Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT, ..transfer(90, 6, 7, 0) }), S::Created), |_| one(transfer(100, 6, 7, 1)), 0),
        c(S::OverflowsDebitsPending, |l| assert_eq!(l.transfer(pending(90, 8, 9, 10, 0)), S::Created), |_| one(pending(100, 8, 10, u128::MAX, 0)), 0),
        c(S::OverflowsCreditsPending, |l| assert_eq!(l.transfer(pending(90, 8, 9, 10, 0)), S::Created), |_| one(pending(100, 10, 9, u128::MAX, 0)), 0),
        c(S::OverflowsDebitsPosted, |l| assert_eq!(l.transfer(transfer(90, 11, 12, 10)), S::Created), |_| one(transfer(100, 11, 13, u128::MAX)), 0),
        c(S::OverflowsCreditsPosted, |l| assert_eq!(l.transfer(transfer(90, 11, 12, 10)), S::Created), |_| one(transfer(100, 14, 12, u128::MAX)), 0),
        c(S::OverflowsDebits, |l| assert_eq!(l.transfer(pending(90, 8, 9, 10, 0)), S::Created), |_| one(transfer(100, 8, 15, u128::MAX - 5)), 0),
        c(S::OverflowsCredits, |l| assert_eq!(l.transfer(pending(90, 8, 9, 10, 0)), S::Created), |_| one(transfer(100, 16, 9, u128::MAX - 5)), 0),
        c(S::OverflowsTimeout, |l| l.now = TIMESTAMP_MAX - 4_000_000_000_000_000_000, |_| one(pending(100, 2, 1, 1, u32::MAX)), 0),
        c(S::ExceedsCredits, nothing, |_| one(transfer(100, 1, 2, 1000)), 0),
        c(S::ExceedsDebits, nothing, |_| one(transfer(100, 2, 4, 1)), 0),
        c(S::SliceDry, spread_stock, |_| one(transfer(100, SPREAD, 2, 1)), 0),
    ]
}

/// A spread account's slice (`docs/SHARDING.md` §2) that may not go below zero, empty.
const SPREAD: u128 = (0xFFFD << 112) | 7;

fn spread_stock(ledger: &mut L) {
    let slice = account(SPREAD, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    assert_eq!(ledger.create_accounts(&[slice]), vec![tally_node::ledger::CreateAccountStatus::Created]);
}

/// A transit account of Tally's cross-shard transactions (`ledger::internal`) and the id
/// of a pending leg that debits member 1 into it.
const TRANSIT: u128 = ((tally_node::ledger::internal::INTERNAL_ID_HI as u128) << 64) | 2;
const LEG: u128 = 0x1E6;

fn pending_leg(ledger: &mut L) {
    assert_eq!(ledger.create_accounts(&[plain(TRANSIT)]), vec![tally_node::ledger::CreateAccountStatus::Created]);
    assert_eq!(ledger.transfer(pending(LEG, 1, TRANSIT, 10, 0)), S::Created);
}

/// A leg of a cross-shard transaction (a pending transfer with an internal account) is
/// resolved only by the post or void with the id derived from it, as Tally sends them; any
/// other id is refused, burns nothing and changes nothing, whichever fields it carries.
#[test]
fn only_tallys_own_resolution_resolves_a_cross_shard_leg() {
    use tally_node::ledger::internal::{post_id, void_id};
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    pending_leg(&mut ledger);
    let before = ledger.sums(1);
    let (post_own, void_own) = (post_id(TransferId(LEG)).0, void_id(TransferId(LEG)).0);
    assert_eq!(ledger.transfer(void(100, LEG)), S::PendingTransferReserved);
    assert_eq!(ledger.transfer(post(101, LEG, u128::MAX)), S::PendingTransferReserved);
    // A mismatching field does not tell the leg's fields away: the reservation comes first.
    let named = Transfer { debit_account_id: tally_node::ledger::AccountId(8), ..post(102, LEG, 1) };
    assert_eq!(ledger.transfer(named), S::PendingTransferReserved);
    // The ids of the other kind of resolution are refused too.
    assert_eq!(ledger.transfer(void(post_own, LEG)), S::PendingTransferReserved);
    assert_eq!(ledger.transfer(post(void_own, LEG, u128::MAX)), S::PendingTransferReserved);
    assert_eq!(ledger.sums(1), before, "a refused resolution changes nothing");
    // Nothing was burnt: the same ids are free for other transfers.
    assert_eq!(ledger.transfer(transfer(100, 2, 1, 1)), S::Created);
    assert_eq!(ledger.transfer(post(post_own, LEG, u128::MAX)), S::Created);
    assert_eq!(ledger.transfer(void(void_own, LEG)), S::PendingTransferAlreadyPosted);
    let (debits_pending, debits_posted, _, _) = ledger.sums(1);
    assert_eq!((debits_pending, debits_posted), (before.0 - 10, before.1 + 10));
    // A leg between two client accounts is marked by the leg timeout instead.
    let marked = pending(LEG + 1, 2, 8, 5, tally_node::ledger::internal::LEG_TIMEOUT);
    assert_eq!(ledger.transfer(marked), S::Created);
    assert_eq!(ledger.transfer(void(103, LEG + 1)), S::PendingTransferReserved);
    assert_eq!(ledger.transfer(void(void_id(TransferId(LEG + 1)).0, LEG + 1)), S::Created);
    ledger.audit();
}

/// A post of a leg under the id Tally used before 2026-12-07 (the whole 128-bit hash,
/// outside today's reserved range) still applies, as a Raft log written by an earlier
/// build must replay to the same state; another id is still refused.
#[test]
fn a_leg_posted_under_the_earlier_id_applies_as_before() {
    use tally_node::ledger::internal::{is_reserved_transfer_id, post_ids};
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    pending_leg(&mut ledger);
    let before = ledger.sums(1);
    let [today, earlier] = post_ids(TransferId(LEG));
    assert!(is_reserved_transfer_id(today.0) && !is_reserved_transfer_id(earlier.0));
    assert_eq!(ledger.transfer(post(earlier.0 ^ 1, LEG, u128::MAX)), S::PendingTransferReserved);
    assert_eq!(ledger.transfer(post(earlier.0, LEG, u128::MAX)), S::Created);
    assert_eq!(ledger.transfer(post(today.0, LEG, u128::MAX)), S::PendingTransferAlreadyPosted);
    let (debits_pending, debits_posted, _, _) = ledger.sums(1);
    assert_eq!((debits_pending, debits_posted), (before.0 - 10, before.1 + 10));
    ledger.audit();
}

/// A client's post or void of a cross-shard pending transfer reaches its debit leg under
/// the id derived for a client's decision (`client_post_id`, `client_void_id`): applied
/// with every check a post or void has, in part too, and, unlike Tally's completion of a
/// leg, refused by a closed account; a completion id of the other kind is still reserved.
#[test]
fn a_clients_decision_reaches_a_cross_shard_pending_transfers_leg_by_its_own_ids() {
    use tally_node::ledger::internal::{client_post_id, client_void_id, post_id};
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    pending_leg(&mut ledger);
    let leg = TransferId(LEG);
    let before = ledger.sums(1);
    // The void's id does not post, nor the post's void.
    assert_eq!(ledger.transfer(post(client_void_id(leg).0, LEG, 4)), S::PendingTransferReserved);
    assert_eq!(ledger.transfer(void(client_post_id(leg).0, LEG)), S::PendingTransferReserved);
    // Checked as any post: more than reserved, a different ledger.
    assert_eq!(ledger.transfer(post(client_post_id(leg).0, LEG, 11)), S::ExceedsPendingTransferAmount);
    let other = Transfer { ledger: 2, ..post(client_post_id(leg).0, LEG, 4) };
    assert_eq!(ledger.transfer(other), S::PendingTransferHasDifferentLedger);
    assert_eq!(ledger.sums(1), before);
    // A post in part: 4 of 10 moved, the reservation released.
    assert_eq!(ledger.transfer(post(client_post_id(leg).0, LEG, 4)), S::Created);
    assert_eq!(ledger.transfer(post(client_post_id(leg).0, LEG, 4)), S::Exists);
    assert_eq!(ledger.transfer(void(client_void_id(leg).0, LEG)), S::PendingTransferAlreadyPosted);
    let (debits_pending, debits_posted, _, _) = ledger.sums(1);
    assert_eq!((debits_pending, debits_posted), (before.0 - 10, before.1 + 4));
    // Not on a credit leg (transit into a client's account): reserved for Tally.
    assert_eq!(ledger.transfer(pending(LEG + 3, TRANSIT, 7, 2, 0)), S::Created);
    assert_eq!(ledger.transfer(post(client_post_id(TransferId(LEG + 3)).0, LEG + 3, 1)), S::PendingTransferReserved);
    // Into a closed account, a client's post is refused where Tally's completion is not.
    assert_eq!(ledger.transfer(transfer(60, 2, 6, 9)), S::Created);
    assert_eq!(ledger.transfer(pending(LEG + 1, 6, TRANSIT, 3, 0)), S::Created);
    assert_eq!(ledger.transfer(pending(LEG + 2, 6, TRANSIT, 3, 0)), S::Created);
    let close = Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT, ..transfer(90, 6, 8, 0) };
    assert_eq!(ledger.transfer(close), S::Created);
    let client = post(client_post_id(TransferId(LEG + 1)).0, LEG + 1, u128::MAX);
    assert_eq!(ledger.transfer(client), S::DebitAccountAlreadyClosed);
    assert_eq!(ledger.transfer(void(client_void_id(TransferId(LEG + 1)).0, LEG + 1)), S::Created);
    assert_eq!(ledger.transfer(post(post_id(TransferId(LEG + 2)).0, LEG + 2, u128::MAX)), S::Created);
    ledger.audit();
}

/// An account closed while a leg of a cross-shard transaction holds its units still takes
/// Tally's post of the leg (the transaction was decided and its primary's part applied),
/// on either side; anything else, a client's transfer or a post of an ordinary pending
/// transfer, is refused as before.
#[test]
fn tallys_post_of_a_leg_completes_into_an_account_closed_since() {
    use tally_node::ledger::internal::post_id;
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    assert_eq!(ledger.create_accounts(&[plain(TRANSIT)]), vec![tally_node::ledger::CreateAccountStatus::Created]);
    // A credit leg into 7 and a debit leg out of 6, then both accounts closed.
    assert_eq!(ledger.transfer(pending(LEG, TRANSIT, 7, 4, 0)), S::Created);
    assert_eq!(ledger.transfer(transfer(60, 2, 6, 9)), S::Created);
    assert_eq!(ledger.transfer(pending(LEG + 1, 6, TRANSIT, 3, 0)), S::Created);
    assert_eq!(ledger.transfer(pending(70, 2, 7, 1, 0)), S::Created);
    let close = |id, account, flag| Transfer { flags: TransferFlags::PENDING | flag, ..transfer(id, account, 8, 0) };
    assert_eq!(ledger.transfer(close(90, 6, TransferFlags::CLOSING_DEBIT)), S::Created);
    let close_credit = Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT, ..transfer(91, 8, 7, 0) };
    assert_eq!(ledger.transfer(close_credit), S::Created);
    assert_eq!(ledger.transfer(transfer(100, 2, 7, 1)), S::CreditAccountAlreadyClosed);
    assert_eq!(ledger.transfer(post(101, 70, u128::MAX)), S::CreditAccountAlreadyClosed);
    assert_eq!(ledger.transfer(post(post_id(TransferId(LEG)).0, LEG, u128::MAX)), S::Created);
    assert_eq!(ledger.transfer(post(post_id(TransferId(LEG + 1)).0, LEG + 1, u128::MAX)), S::Created);
    assert_eq!(ledger.sums(7).3, 4);
    assert_eq!(ledger.sums(6).1, 3);
    ledger.audit();
}

/// A dry slice does not burn the transfer's id (the node refills the slice and resends);
/// an ordinary account's `exceeds_credits` does.
#[test]
fn a_dry_slice_leaves_the_id_free_for_a_retry() {
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    spread_stock(&mut ledger);
    assert_eq!(ledger.transfer(transfer(100, SPREAD, 2, 5)), S::SliceDry);
    assert_eq!(ledger.transfer(transfer(101, 2, SPREAD, 5)), S::Created);
    assert_eq!(ledger.transfer(transfer(100, SPREAD, 2, 5)), S::Created);
    assert_eq!(ledger.transfer(transfer(102, 1, 2, 1000)), S::ExceedsCredits);
    assert_eq!(ledger.transfer(transfer(102, 1, 2, 1)), S::IdAlreadyFailed);
    ledger.audit();
}

/// Every case produces exactly its status, and the ledger stays consistent afterwards.
#[test]
fn each_transfer_status_is_returned_in_its_situation() {
    for case in cases() {
        let mut ledger = Ledger::new(super::new_store());
        base(&mut ledger);
        (case.setup)(&mut ledger);
        let batch = (case.batch)(&ledger);
        let results = ledger.create_transfers(&batch);
        assert_eq!(results[case.index], case.expect, "case {:?}: all results {results:?}", case.expect);
        ledger.audit();
    }
}

/// The table above has a case for every status the enum defines.
#[test]
fn every_transfer_status_has_a_case() {
    let covered: BTreeSet<u32> = cases().iter().map(|c| c.expect.code()).collect();
    let all: BTreeSet<u32> = S::PRECEDENCE.iter().map(|s| s.code()).collect();
    let missing: Vec<_> = all.difference(&covered).filter_map(|&c| S::from_code(c)).collect();
    assert!(missing.is_empty(), "statuses without a case: {missing:?}");
}

/// When an event breaks several rules, the one first in TigerBeetle's precedence wins.
#[test]
fn transfer_precedence_picks_the_first_rule_broken() {
    let table: Vec<(Transfer, S)> = vec![
        (Transfer { timestamp: 5, flags: TransferFlags::from_bits_retain(1 << 15), ..transfer(0, 0, 0, 1) }, S::TimestampMustBeZero),
        (Transfer { flags: TransferFlags::from_bits_retain(1 << 15), ..transfer(0, 0, 0, 1) }, S::ReservedFlag),
        (transfer(0, 0, 0, 1), S::IdMustNotBeZero),
        (Transfer { flags: TransferFlags::PENDING, amount: 1, ..funding_again() }, S::ExistsWithDifferentFlags),
        (Transfer { timeout: 1, amount: 1, ..funding_again() }, S::ExistsWithDifferentTimeout),
        (Transfer { amount: 1, user_data_64: 0, ..funding_again() }, S::ExistsWithDifferentAmount),
        (transfer(100, 0, 0, 1), S::DebitAccountIdMustNotBeZero),
        (transfer(100, 5, 5, 1), S::AccountsMustBeDifferent),
        (Transfer { pending_id: TransferId(80), timeout: 1, ledger: 0, ..transfer(100, 2, 1, 1) }, S::PendingIdMustBeZero),
        (Transfer { timeout: 1, ledger: 0, ..transfer(100, 2, 1, 1) }, S::TimeoutReservedForPendingTransfer),
        (Transfer { ledger: 0, code: 0, ..transfer(100, 98, 99, 1) }, S::LedgerMustNotBeZero),
        (transfer(100, 98, 99, 1), S::DebitAccountNotFound),
        (Transfer { ledger: 2, ..transfer(100, 2, 3, 1) }, S::AccountsMustHaveTheSameLedger),
        (Transfer { amount: 11, code: 7, ..post(100, 80, 11) }, S::PendingTransferHasDifferentCode),
        // Overflow of the debit side is checked before the credit side and the balance limits.
        (transfer(100, 2, 1, u128::MAX), S::OverflowsDebitsPosted),
        // Member 1 cannot give 1000 and account 4 cannot take it: the debit side wins.
        (transfer(100, 1, 4, 1000), S::ExceedsCredits),
    ];
    for (event, expect) in table {
        let mut ledger = Ledger::new(super::new_store());
        base(&mut ledger);
        assert_eq!(ledger.transfer(event), expect, "{event:?}");
    }
}

/// A closed account is reported before any balance check on it.
#[test]
fn closed_account_precedes_exceeds_credits() {
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    let closing = Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT, ..transfer(90, 1, 2, 0) };
    assert_eq!(ledger.transfer(closing), S::Created);
    assert_eq!(ledger.transfer(transfer(100, 1, 2, 1000)), S::DebitAccountAlreadyClosed);
    // Voiding the closing transfer reopens the account; the balance check applies again.
    assert_eq!(ledger.transfer(void(91, 90)), S::Created);
    assert_eq!(ledger.transfer(transfer(101, 1, 2, 1000)), S::ExceedsCredits);
    assert_eq!(ledger.transfer(transfer(102, 1, 2, 100)), S::Created);
    ledger.audit();
}

/// An imported post may follow, in the same batch, the imported pending transfer it posts,
/// whose client timestamp lies above the post's own place in the batch's clock: created
/// (an assertion compared the pending transfer's timestamp with that place, so the batch
/// stopped every replica that applied it).
#[test]
fn an_imported_post_may_follow_its_pending_transfer_in_one_batch() {
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    // The batch's events take the clock's ticks `now`, `now + 1`, ...; imported timestamps
    // must lie below the last event's tick (`now + 4` for five events).
    let now = ledger.now;
    let filler = |id, timestamp| imported(transfer(id, 2, 1, 1), timestamp);
    let batch = [
        imported(pending(200, 2, 1, 5, 0), now + 2),
        imported(post(201, 200, u128::MAX), now + 3),
        filler(202, now + 10),
        filler(203, now + 11),
        filler(204, now + 12),
    ];
    let statuses = ledger.create_transfers(&batch);
    assert_eq!(&statuses[..2], &[S::Created, S::Created], "{statuses:?}");
    assert_eq!(&statuses[2..], &[S::ImportedEventTimestampMustNotAdvance; 3], "{statuses:?}");
    let stored = ledger.machine.lookup_transfers(&[TransferId(200), TransferId(201)]);
    assert_eq!(stored.iter().map(|t| t.timestamp).collect::<Vec<_>>(), vec![now + 2, now + 3]);
    // Account 1 had 100 posted credits and 10 pending (base); the 5 are posted.
    assert_eq!(ledger.sums(1), (0, 0, 10, 105));
    ledger.audit();
}

/// A batch judged by a flag it does not start with (a part of a request split over shards,
/// judged by the whole request's first event): every event whose `imported` flag differs
/// from the judgement fails on it, and the others are applied as in a batch of their own
/// kind; without a judgement the first event decides, as before.
#[test]
fn a_batch_judged_imported_refuses_its_events_that_are_not() {
    let mut ledger = Ledger::new(super::new_store());
    base(&mut ledger);
    let now = ledger.now;
    let batch = [transfer(200, 2, 1, 1), imported(transfer(201, 2, 1, 2), now - 1), transfer(202, 2, 1, 4)];
    let results = ledger.machine.create_transfers_judged(now, &batch, Some(true)).expect("batch accepted");
    let statuses: Vec<S> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![S::ImportedEventExpected, S::Created, S::ImportedEventExpected]);
    assert_eq!(results[1].timestamp, now - 1, "the imported transfer keeps its own timestamp");
    ledger.now += SECOND_NS;
    // Account 1 had 100 posted credits (base): only the imported 2 moved.
    assert_eq!(ledger.sums(1), (0, 0, 10, 102));

    // Judged not imported: the imported event fails, the first applies.
    let now = ledger.now;
    let batch = [imported(transfer(300, 2, 1, 8), now - 1), transfer(301, 2, 1, 16)];
    let results = ledger.machine.create_transfers_judged(now, &batch, Some(false)).expect("batch accepted");
    let statuses: Vec<S> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![S::ImportedEventNotExpected, S::Created]);
    ledger.now += SECOND_NS;
    // No judgement: the first event (imported) decides, so the second fails.
    let now = ledger.now;
    let batch = [imported(transfer(400, 2, 1, 32), now - 1), transfer(401, 2, 1, 64)];
    let results = ledger.machine.create_transfers_judged(now, &batch, None).expect("batch accepted");
    let statuses: Vec<S> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![S::Created, S::ImportedEventExpected]);
    assert_eq!(ledger.sums(1), (0, 0, 10, 150));
    ledger.audit();
}
