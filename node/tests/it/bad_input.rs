// Included once per store by `ledger_suite!` in main.rs.
//
// Bad input: zero and max ids, reserved flags, overflowing amounts, mutually exclusive
// flags, oversized batches and out-of-range cluster times. Each bad event gets its own
// precise status, and the good events around it are applied as if it were not there.

use tally_node::ledger::{
    Account, AccountFlags, BatchError, CreateAccountStatus as A, CreateTransferStatus as S,
    Transfer, TransferFlags,
};
use tally_proto::limits::{BATCH_EVENTS_MAX, TIMESTAMP_MAX};

use crate::support::*;

fn ledger() -> Ledger<super::Store> {
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[member(1), plain(2), plain(3), plain(4)]);
    assert_eq!(ledger.transfer(transfer(1, 2, 1, 100)), S::Created);
    assert_eq!(ledger.transfer(pending(2, 2, 3, 10, 0)), S::Created);
    ledger
}

/// Zero and all-ones ids are refused wherever an id is required.
#[test]
fn zero_and_max_ids_are_refused() {
    let mut ledger = ledger();
    assert_eq!(ledger.create_accounts(&[plain(0), plain(u128::MAX)]), [A::IdMustNotBeZero, A::IdMustNotBeIntMax]);
    let results = ledger.create_transfers(&[
        transfer(0, 2, 3, 1),
        transfer(u128::MAX, 2, 3, 1),
        transfer(10, 0, 3, 1),
        transfer(11, u128::MAX, 3, 1),
        transfer(12, 2, 0, 1),
        transfer(13, 2, u128::MAX, 1),
        post(14, 0, 1),
        post(15, u128::MAX, 1),
    ]);
    assert_eq!(results, [
        S::IdMustNotBeZero,
        S::IdMustNotBeIntMax,
        S::DebitAccountIdMustNotBeZero,
        S::DebitAccountIdMustNotBeIntMax,
        S::CreditAccountIdMustNotBeZero,
        S::CreditAccountIdMustNotBeIntMax,
        S::PendingIdMustNotBeZero,
        S::PendingIdMustNotBeIntMax,
    ]);
    ledger.audit();
}

/// Every undefined flag bit is refused, alone or with valid flags.
#[test]
fn every_reserved_flag_bit_is_refused() {
    let mut ledger = ledger();
    for bit in 9..16 {
        let flags = TransferFlags::from_bits_retain(1 << bit) | TransferFlags::PENDING;
        assert_eq!(ledger.transfer(Transfer { flags, ..transfer(100 + bit, 2, 3, 1) }), S::ReservedFlag, "bit {bit}");
    }
    for bit in 6..16 {
        let flags = AccountFlags::from_bits_retain(1 << bit) | AccountFlags::HISTORY;
        assert_eq!(ledger.create_accounts(&[account(100 + bit, flags)]), [A::ReservedFlag], "bit {bit}");
    }
    ledger.audit();
}

/// Posts and voids combine with no other kind flag; an account has at most one limit.
#[test]
fn mutually_exclusive_flags_are_refused() {
    let mut ledger = ledger();
    let others = [
        TransferFlags::VOID_PENDING_TRANSFER,
        TransferFlags::PENDING,
        TransferFlags::BALANCING_DEBIT,
        TransferFlags::BALANCING_CREDIT,
        TransferFlags::CLOSING_DEBIT,
        TransferFlags::CLOSING_CREDIT,
    ];
    for (index, other) in others.into_iter().enumerate() {
        let id = 200 + index as u128;
        let posting = Transfer { flags: TransferFlags::POST_PENDING_TRANSFER | other, ..post(id, 2, 1) };
        assert_eq!(ledger.transfer(posting), S::FlagsAreMutuallyExclusive, "post | {other:?}");
        let other = if other == TransferFlags::VOID_PENDING_TRANSFER { TransferFlags::POST_PENDING_TRANSFER } else { other };
        let voiding = Transfer { flags: TransferFlags::VOID_PENDING_TRANSFER | other, ..void(id + 100, 2) };
        assert_eq!(ledger.transfer(voiding), S::FlagsAreMutuallyExclusive, "void | {other:?}");
    }
    let both = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    assert_eq!(ledger.create_accounts(&[account(300, both)]), [A::FlagsAreMutuallyExclusive]);
    // The pending transfer is untouched by all of that.
    assert_eq!(ledger.transfer(post(400, 2, u128::MAX)), S::Created);
    ledger.audit();
}

/// Amounts that would overflow any of the four sums are refused with the right status, and
/// nothing moves.
#[test]
fn overflowing_amounts_are_refused() {
    let mut ledger = ledger();
    let before = ledger.machine.digest();
    let half = u128::MAX / 2 + 1;
    assert_eq!(ledger.transfer(transfer(10, 3, 4, half)), S::Created);
    let results = ledger.create_transfers(&[
        transfer(11, 3, 4, half),
        transfer(12, 1, 4, u128::MAX),
        pending(13, 2, 4, u128::MAX, 0),
        pending(14, 4, 3, u128::MAX, 0),
    ]);
    assert_eq!(results, [
        S::OverflowsDebitsPosted,
        S::OverflowsCreditsPosted,
        S::OverflowsDebitsPending,
        S::OverflowsCreditsPending,
    ]);
    assert_ne!(ledger.machine.digest(), before);
    assert_eq!(ledger.sums(3), (0, half, 10, 0));
    assert_eq!(ledger.sums(4), (0, 0, 0, half));
    ledger.audit();
}

/// Bad events are refused one by one; the good events of the same batch all apply.
#[test]
fn a_bad_event_does_not_disturb_its_batch() {
    let mut ledger = ledger();
    let results = ledger.create_transfers(&[
        transfer(10, 1, 2, 30),
        transfer(0, 1, 2, 1),
        transfer(11, 1, 2, 1_000),
        transfer(12, 2, 99, 1),
        transfer(13, 1, 3, 30),
        Transfer { flags: TransferFlags::from_bits_retain(1 << 12), ..transfer(14, 1, 2, 1) },
        transfer(15, 1, 2, 40),
    ]);
    assert_eq!(results, [
        S::Created,
        S::IdMustNotBeZero,
        S::ExceedsCredits,
        S::CreditAccountNotFound,
        S::Created,
        S::ReservedFlag,
        S::Created,
    ]);
    assert_eq!(ledger.sums(1), (0, 100, 0, 100));
    ledger.audit();
}

/// A batch over `BATCH_EVENTS_MAX` is refused whole with a clear error; nothing applies.
#[test]
fn oversized_batch_is_refused_whole() {
    let mut ledger = ledger();
    let before = ledger.machine.digest();
    let events = BATCH_EVENTS_MAX as usize + 1;
    let batch: Vec<Transfer> = (0..events as u128).map(|i| transfer(1_000 + i, 2, 3, 1)).collect();
    let error = ledger.machine.create_transfers(ledger.now, &batch).unwrap_err();
    assert_eq!(error, BatchError::TooManyEvents { events, max: BATCH_EVENTS_MAX });
    assert!(error.to_string().contains("batch_events_max is 8190"), "{error}");
    let accounts: Vec<Account> = (0..events as u128).map(|i| plain(1_000 + i)).collect();
    assert!(ledger.machine.create_accounts(ledger.now, &accounts).is_err());
    assert_eq!(ledger.machine.digest(), before);
    // Exactly the limit is accepted.
    let results = ledger.machine.create_transfers(ledger.now, &batch[..events - 1]).unwrap();
    assert!(results.iter().all(|r| r.status == S::Created));
    ledger.audit();
}

/// A cluster time that leaves no room for the batch's timestamps is refused whole.
#[test]
fn cluster_time_out_of_range_is_refused() {
    let mut ledger = ledger();
    let before = ledger.machine.digest();
    let error = ledger.machine.create_transfers(TIMESTAMP_MAX, &[transfer(10, 2, 3, 1)]).unwrap_err();
    assert_eq!(error, BatchError::ClusterTimeOutOfRange { cluster_time_ns: TIMESTAMP_MAX });
    assert!(ledger.machine.pulse(u64::MAX).is_err());
    assert_eq!(ledger.machine.digest(), before);
}

/// A leader whose clock is behind cannot make timestamps go backwards (I7).
#[test]
fn timestamps_increase_even_when_cluster_time_goes_back() {
    let mut ledger = ledger();
    let late = ledger.machine.create_transfers(ledger.now + 10 * SECOND_NS, &[transfer(10, 2, 3, 1)]).unwrap();
    let early = ledger.machine.create_transfers(ledger.now, &[transfer(11, 2, 3, 1), transfer(12, 2, 3, 1)]).unwrap();
    assert!(early[0].timestamp > late[0].timestamp);
    assert_eq!(early[1].timestamp, early[0].timestamp + 1);
    ledger.audit();
}
