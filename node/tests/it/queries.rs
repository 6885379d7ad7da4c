// Included once per store by `ledger_suite!` in main.rs.
//
// Lookups and the per-account queries: direction, order, limits, ranges, filters,
// invalid filters, and historical balances.

use tally_node::ledger::{
    AccountFilter, AccountFilterFlags as F, AccountFlags, AccountId, CreateTransferStatus as S,
    Transfer, TransferId,
};
use tally_proto::limits::QUERY_RESULTS_MAX;

use crate::support::*;

/// Account 1 keeps history. Transfers 10..=15 alternate 1 -> 2 and 2 -> 1, with
/// user_data_32 = id and code 1 or 2; transfer 16 is 2 -> 3 (not touching 1).
fn ledger() -> (Ledger<super::Store>, Vec<u64>) {
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[account(1, AccountFlags::HISTORY), plain(2), plain(3)]);
    let mut timestamps = Vec::new();
    for id in 10..=15_u128 {
        let (debit, credit) = if id % 2 == 0 { (1, 2) } else { (2, 1) };
        let t = Transfer { user_data_32: u32::try_from(id).unwrap(), code: 1 + u16::try_from(id % 2).unwrap(), ..transfer(id, debit, credit, id) };
        let result = ledger.create_transfers_full(&[t])[0];
        assert_eq!(result.status, S::Created);
        timestamps.push(result.timestamp);
    }
    assert_eq!(ledger.transfer(transfer(16, 2, 3, 1)), S::Created);
    (ledger, timestamps)
}

fn filter(flags: F) -> AccountFilter {
    AccountFilter { account_id: AccountId(1), limit: 100, flags, ..AccountFilter::default() }
}

fn ids(transfers: &[Transfer]) -> Vec<u128> {
    transfers.iter().map(|t| t.id.0).collect()
}

/// Debits, credits or both, oldest first or newest first.
#[test]
fn account_transfers_by_direction_and_order() {
    let (ledger, _) = ledger();
    let m = &ledger.machine;
    assert_eq!(ids(&m.get_account_transfers(&filter(F::DEBITS))), [10, 12, 14]);
    assert_eq!(ids(&m.get_account_transfers(&filter(F::CREDITS))), [11, 13, 15]);
    assert_eq!(ids(&m.get_account_transfers(&filter(F::DEBITS | F::CREDITS))), [10, 11, 12, 13, 14, 15]);
    assert_eq!(ids(&m.get_account_transfers(&filter(F::DEBITS | F::CREDITS | F::REVERSED))), [15, 14, 13, 12, 11, 10]);
    let account_3 = AccountFilter { account_id: AccountId(3), ..filter(F::CREDITS) };
    assert_eq!(ids(&m.get_account_transfers(&account_3)), [16]);
}

/// Limit, inclusive timestamp range, and field filters compose.
#[test]
fn account_transfers_limit_range_and_filters() {
    let (ledger, ts) = ledger();
    let m = &ledger.machine;
    let both = F::DEBITS | F::CREDITS;
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { limit: 2, ..filter(both) })), [10, 11]);
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { limit: 2, ..filter(both | F::REVERSED) })), [15, 14]);
    let range = AccountFilter { timestamp_min: ts[1], timestamp_max: ts[3], ..filter(both) };
    assert_eq!(ids(&m.get_account_transfers(&range)), [11, 12, 13]);
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { timestamp_min: ts[4], ..filter(both) })), [14, 15]);
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { timestamp_max: ts[0], ..filter(both) })), [10]);
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { code: 2, ..filter(both) })), [11, 13, 15]);
    assert_eq!(ids(&m.get_account_transfers(&AccountFilter { user_data_32: 12, ..filter(both) })), [12]);
    assert!(m.get_account_transfers(&AccountFilter { user_data_64: 1, ..filter(both) }).is_empty());
    // A limit above the maximum is capped, not refused, as in TigerBeetle.
    let huge = AccountFilter { limit: u32::MAX, ..filter(both) };
    assert!(huge.limit > QUERY_RESULTS_MAX);
    assert_eq!(m.get_account_transfers(&huge).len(), 6);
}

/// An invalid filter yields nothing (the gRPC edge says why; see wire.rs).
#[test]
fn invalid_filters_yield_nothing() {
    let (ledger, _) = ledger();
    let m = &ledger.machine;
    let both = F::DEBITS | F::CREDITS;
    let invalid = [
        AccountFilter { account_id: AccountId(0), ..filter(both) },
        AccountFilter { account_id: AccountId::MAX, ..filter(both) },
        AccountFilter { limit: 0, ..filter(both) },
        filter(F::REVERSED),
        AccountFilter { timestamp_min: 10, timestamp_max: 5, ..filter(both) },
        AccountFilter { timestamp_min: 1 << 63, ..filter(both) },
        AccountFilter { flags: F::from_bits_retain(1 << 9) | both, ..filter(both) },
    ];
    for f in invalid {
        assert!(f.validate().is_err(), "{f:?}");
        assert!(m.get_account_transfers(&f).is_empty(), "{f:?}");
        assert!(m.get_account_balances(&f).is_empty(), "{f:?}");
    }
}

/// A history account returns its balance right after each matching transfer; others none.
#[test]
fn account_balances_follow_each_transfer() {
    let (mut ledger, ts) = ledger();
    let balances = ledger.machine.get_account_balances(&filter(F::DEBITS | F::CREDITS));
    assert_eq!(balances.iter().map(|b| b.timestamp).collect::<Vec<_>>(), ts);
    let posted: Vec<(u128, u128)> = balances.iter().map(|b| (b.debits_posted, b.credits_posted)).collect();
    assert_eq!(posted, [(10, 0), (10, 11), (22, 11), (22, 24), (36, 24), (36, 39)]);
    let reversed = ledger.machine.get_account_balances(&AccountFilter { limit: 1, ..filter(F::CREDITS | F::REVERSED) });
    assert_eq!(reversed.len(), 1);
    assert_eq!((reversed[0].debits_posted, reversed[0].credits_posted), (36, 39));
    let account_2 = AccountFilter { account_id: AccountId(2), ..filter(F::DEBITS | F::CREDITS) };
    assert!(ledger.machine.get_account_balances(&account_2).is_empty());
    let unknown = AccountFilter { account_id: AccountId(77), ..filter(F::DEBITS) };
    assert!(ledger.machine.get_account_balances(&unknown).is_empty());
    // Expiry releases the reservation but records no balance (TigerBeetle's rule).
    assert_eq!(ledger.transfer(pending(20, 2, 1, 5, 1)), S::Created);
    ledger.advance_seconds(2);
    assert_eq!(ledger.machine.pulse(ledger.now).unwrap(), 1);
    let after = ledger.machine.get_account_balances(&filter(F::CREDITS | F::REVERSED));
    assert_eq!(after[0].credits_pending, 5);
    assert_eq!(ledger.account(1).credits_pending, 0);
}

/// Lookups return what exists, in the order asked, skipping what does not.
#[test]
fn lookups_keep_order_and_skip_missing() {
    let (ledger, _) = ledger();
    let m = &ledger.machine;
    let accounts = m.lookup_accounts(&[AccountId(3), AccountId(99), AccountId(1), AccountId(3)]);
    assert_eq!(accounts.iter().map(|a| a.id.0).collect::<Vec<_>>(), [3, 1, 3]);
    let transfers = m.lookup_transfers(&[TransferId(16), TransferId(0), TransferId(10)]);
    assert_eq!(ids(&transfers), [16, 10]);
    assert_eq!(transfers[1].amount, 10);
}

/// A query whose filter matches little of a long history runs in steps of at most
/// `QUERY_VISITS_PER_STEP` transfers (each a hold of the ledger the node lets go of in
/// between), and the steps answer what one walk would, at the time the query started:
/// transfers applied between steps are not read.
#[test]
fn a_long_account_query_runs_in_bounded_steps_and_answers_as_of_its_start() {
    use tally_node::ledger::QUERY_VISITS_PER_STEP;

    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&[account(1, AccountFlags::HISTORY), plain(2)]);
    let total = 2 * QUERY_VISITS_PER_STEP + 100;
    let transfers: Vec<Transfer> = (1..=total)
        .map(|i| {
            let i = u64::try_from(i).unwrap();
            Transfer { user_data_64: i, ..transfer(u128::from(i), 2, 1, 1) }
        })
        .collect();
    for batch in transfers.chunks(8190) {
        assert!(ledger.create_transfers(batch).iter().all(|s| *s == S::Created));
    }
    let m = &ledger.machine;
    let rare = |flags, user_data_64| AccountFilter { user_data_64, limit: 10, ..filter(flags) };
    for (name, f, expected) in [
        ("oldest first, one match near the end", rare(F::CREDITS, 2 * QUERY_VISITS_PER_STEP as u64 + 50), vec![2 * QUERY_VISITS_PER_STEP as u128 + 50]),
        ("newest first, one match near the start", rare(F::CREDITS | F::REVERSED, 7), vec![7]),
        ("no match", rare(F::CREDITS, u64::MAX), vec![]),
        ("limit reached in the first step", AccountFilter { limit: 3, ..filter(F::CREDITS | F::REVERSED) }, vec![total as u128, total as u128 - 1, total as u128 - 2]),
    ] {
        let mut query = m.account_query_start(&f);
        let (mut out, mut steps) = (Vec::new(), 0);
        while !query.done() {
            m.get_account_transfers_step(&f, &mut query, &mut out);
            steps += 1;
        }
        assert_eq!(ids(&out), expected, "{name}");
        assert_eq!(ids(&m.get_account_transfers(&f)), expected, "{name}: one go");
        // The whole history takes three steps unless the limit ends it first.
        assert_eq!(steps, if f.limit == 3 { 1 } else { 3 }, "{name}");
    }
    // Balances step alike.
    let f = rare(F::CREDITS, 2 * QUERY_VISITS_PER_STEP as u64 + 50);
    let balances = m.get_account_balances(&f);
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0].credits_posted, 2 * QUERY_VISITS_PER_STEP as u128 + 50);

    // A transfer applied between two steps of a query is not read by it.
    let f = rare(F::CREDITS, 999_999_999);
    let mut query = ledger.machine.account_query_start(&f);
    let mut out = Vec::new();
    ledger.machine.get_account_transfers_step(&f, &mut query, &mut out);
    assert!(!query.done() && out.is_empty());
    let late = Transfer { user_data_64: 999_999_999, ..transfer(10_000_000, 2, 1, 1) };
    assert_eq!(ledger.transfer(late), S::Created);
    while !query.done() {
        ledger.machine.get_account_transfers_step(&f, &mut query, &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(ids(&ledger.machine.get_account_transfers(&f)), [10_000_000], "a new query reads it");
}
