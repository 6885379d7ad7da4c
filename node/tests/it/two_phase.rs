// Included once per store by `ledger_suite!` in main.rs.
//
// TigerBeetle's documented two-phase examples (docs/coding/two-phase-transfers.md) as a
// table: after every step, account A's debits and account B's credits must read exactly
// as the documentation's table says. A starts with w = 7 pending and x = 11 posted debits,
// B with y = 7 pending and z = 11 posted credits.

use tally_node::ledger::{CreateTransferStatus as S, Transfer};

use crate::support::*;

const A: u128 = 1;
const B: u128 = 2;
const W: u128 = 7;
const X: u128 = 11;

enum Step {
    /// Apply a transfer, expect a status, then expect (A.debits_pending, A.debits_posted,
    /// B.credits_pending, B.credits_posted).
    Apply(Transfer, S, (u128, u128, u128, u128)),
    /// Move cluster time forward.
    Advance(u64),
    /// Run an expiry pulse; expect how many expired and the sums afterwards.
    Pulse(usize, (u128, u128, u128, u128)),
}

use Step::{Advance, Apply, Pulse};

fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let reserved = (W + 123, X, W + 123, X);
    vec![
        ("post full pending amount", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(post(11, 10, 123), S::Created, (W, X + 123, W, X + 123)),
        ]),
        ("post full pending amount with AMOUNT_MAX", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(post(11, 10, u128::MAX), S::Created, (W, X + 123, W, X + 123)),
        ]),
        ("post partial pending amount releases the remainder", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(post(11, 10, 100), S::Created, (W, X + 100, W, X + 100)),
            Apply(post(12, 10, 23), S::PendingTransferAlreadyPosted, (W, X + 100, W, X + 100)),
        ]),
        ("post zero releases everything and moves nothing", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(post(11, 10, 0), S::Created, (W, X, W, X)),
        ]),
        ("void pending transfer", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(void(11, 10), S::Created, (W, X, W, X)),
            Apply(post(12, 10, u128::MAX), S::PendingTransferAlreadyVoided, (W, X, W, X)),
        ]),
        ("void with the full amount spelled out", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(Transfer { amount: 124, ..void(11, 10) }, S::ExceedsPendingTransferAmount, reserved),
            Apply(Transfer { amount: 122, ..void(11, 10) }, S::PendingTransferHasDifferentAmount, reserved),
            Apply(Transfer { amount: 123, ..void(12, 10) }, S::Created, (W, X, W, X)),
        ]),
        ("post after post fails", vec![
            Apply(pending(10, A, B, 123, 0), S::Created, reserved),
            Apply(post(11, 10, u128::MAX), S::Created, (W, X + 123, W, X + 123)),
            Apply(void(12, 10), S::PendingTransferAlreadyPosted, (W, X + 123, W, X + 123)),
        ]),
        ("expiry returns the amount at timestamp + timeout", vec![
            Apply(pending(10, A, B, 123, 5), S::Created, reserved),
            Advance(4),
            Pulse(0, reserved),
            Advance(2),
            Pulse(1, (W, X, W, X)),
            Apply(post(11, 10, u128::MAX), S::PendingTransferExpired, (W, X, W, X)),
            Apply(void(12, 10), S::PendingTransferExpired, (W, X, W, X)),
        ]),
        ("a post after the timeout fails even before the sweep runs", vec![
            Apply(pending(10, A, B, 123, 1), S::Created, reserved),
            Advance(1),
            // The apply's own sweep expires the transfer first; either way it is expired.
            Apply(post(11, 10, u128::MAX), S::PendingTransferExpired, (W, X, W, X)),
        ]),
        ("a post before the timeout succeeds and cancels the expiry", vec![
            Apply(pending(10, A, B, 123, 5), S::Created, reserved),
            Advance(4),
            Apply(post(11, 10, 23), S::Created, (W, X + 23, W, X + 23)),
            Advance(10),
            Pulse(0, (W, X + 23, W, X + 23)),
        ]),
    ]
}

fn sums(ledger: &Ledger<super::Store>) -> (u128, u128, u128, u128) {
    let a = ledger.account(A);
    let b = ledger.account(B);
    (a.debits_pending, a.debits_posted, b.credits_pending, b.credits_posted)
}

/// Every documented step leaves the accounts exactly as TigerBeetle's table says.
#[test]
fn tigerbeetle_two_phase_examples() {
    for (name, steps) in scenarios() {
        let mut ledger = Ledger::new(super::new_store());
        ledger.create_accounts(&[plain(A), plain(B)]);
        assert_eq!(ledger.create_transfers(&[pending(1, A, B, W, 0), transfer(2, A, B, X)]), [S::Created; 2]);
        assert_eq!(sums(&ledger), (W, X, W, X));
        for (index, step) in steps.into_iter().enumerate() {
            match step {
                Apply(transfer, status, expected) => {
                    assert_eq!(ledger.transfer(transfer), status, "{name}: step {index}");
                    assert_eq!(sums(&ledger), expected, "{name}: step {index}");
                }
                Advance(seconds) => ledger.advance_seconds(seconds),
                Pulse(expired, expected) => {
                    assert_eq!(ledger.machine.pulse(ledger.now).unwrap(), expired, "{name}: step {index}");
                    assert_eq!(sums(&ledger), expected, "{name}: step {index}");
                }
            }
            ledger.audit();
        }
    }
}

/// A member with 100 credits and 70 debits cannot reserve 50: the pending transfer fails at
/// once ("pessimistic pending transfers").
#[test]
fn pessimistic_pending_transfer_fails_up_front() {
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[member(1), plain(2)]);
    assert_eq!(ledger.create_transfers(&[transfer(1, 2, 1, 100), transfer(2, 1, 2, 70)]), [S::Created; 2]);
    assert_eq!(ledger.transfer(pending(3, 1, 2, 50, 0)), S::ExceedsCredits);
    assert_eq!(ledger.transfer(pending(4, 1, 2, 30, 0)), S::Created);
    // The reservation counts: nothing more can be spent, posted or pending.
    assert_eq!(ledger.transfer(transfer(5, 1, 2, 1)), S::ExceedsCredits);
    assert_eq!(ledger.transfer(void(6, 4)), S::Created);
    assert_eq!(ledger.transfer(transfer(7, 1, 2, 30)), S::Created);
    ledger.audit();
}

/// The node schedules pulses from `next_expiry`; it tracks the earliest live timeout.
#[test]
fn next_expiry_tracks_the_earliest_live_timeout() {
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[plain(A), plain(B)]);
    assert_eq!(ledger.machine.next_expiry(), None);
    let results = ledger.create_transfers_full(&[pending(10, A, B, 1, 30), pending(11, A, B, 1, 10)]);
    let expected = results[1].timestamp + 10 * SECOND_NS;
    assert_eq!(ledger.machine.next_expiry(), Some(expected));
    assert_eq!(ledger.transfer(void(12, 11)), S::Created);
    assert_eq!(ledger.machine.next_expiry(), Some(results[0].timestamp + 30 * SECOND_NS));
    ledger.audit();
}

/// The expiry sweep is bounded per apply; a pending transfer whose time has passed but that
/// the sweep has not reached yet still cannot be posted, and a later pulse releases it.
#[test]
fn expired_but_not_yet_swept_cannot_be_posted() {
    use tally_proto::limits::EXPIRIES_PER_APPLY_MAX;
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[plain(A), plain(B)]);
    let first: Vec<Transfer> =
        (0..u128::from(EXPIRIES_PER_APPLY_MAX)).map(|i| pending(1_000 + i, A, B, 1, 1)).collect();
    assert!(ledger.create_transfers(&first).iter().all(|s| *s == S::Created));
    assert_eq!(ledger.transfer(pending(10, A, B, 5, 1)), S::Created);
    ledger.advance_seconds(2);
    // This apply's sweep expires the first EXPIRIES_PER_APPLY_MAX; transfer 10 is left.
    assert_eq!(ledger.transfer(post(11, 10, u128::MAX)), S::PendingTransferExpired);
    assert_eq!(ledger.account(A).debits_pending, 5, "not swept yet");
    assert_eq!(ledger.machine.pulse(ledger.now).unwrap(), 1);
    assert_eq!(ledger.account(A).debits_pending, 0);
    assert_eq!(ledger.transfer(void(12, 10)), S::PendingTransferExpired);
    ledger.audit();
}
