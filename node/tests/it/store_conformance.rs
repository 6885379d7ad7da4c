// Included once per store by `ledger_suite!` in main.rs.
//
// The storage contract, exercised directly: every `LedgerStore` must behave exactly so.
// The ordering rules here are the ones that reach query results and state digests.

use std::ops::ControlFlow;

use tally_node::ledger::{
    Account, AccountBalance, AccountId, Expiry, LedgerStore, PendingStatus, Transfer, TransferId,
};

use crate::support::*;

fn stored_account(id: u128, timestamp: u64) -> Account {
    Account { timestamp, ..plain(id) }
}

fn stored_transfer(id: u128, timestamp: u64) -> Transfer {
    Transfer { timestamp, ..transfer(id, 1, 2, 5) }
}

/// Accounts: insert, read, update, remove; timestamps indexed.
#[test]
fn accounts_round_trip() {
    let mut store = super::new_store();
    assert_eq!(store.account(AccountId(1)), None);
    assert_eq!(store.account_timestamp_max(), 0);
    store.account_insert(&stored_account(1, 10));
    store.account_insert(&stored_account(2, 20));
    assert_eq!(store.account(AccountId(1)), Some(stored_account(1, 10)));
    assert!(store.account_timestamp_exists(20) && !store.account_timestamp_exists(15));
    assert_eq!(store.account_timestamp_max(), 20);
    let updated = Account { credits_posted: 7, ..stored_account(1, 10) };
    store.account_update(&updated);
    assert_eq!(store.account(AccountId(1)), Some(updated));
    store.account_remove(AccountId(2));
    assert_eq!(store.account(AccountId(2)), None);
    assert!(!store.account_timestamp_exists(20));
    assert_eq!(store.account_timestamp_max(), 10);
    let mut visited = Vec::new();
    store.visit_accounts(&mut |a| visited.push(a.id.0));
    assert_eq!(visited, [1]);
}

/// Transfers: by id, by timestamp, newest removable, visited in timestamp order.
#[test]
fn transfers_round_trip() {
    let mut store = super::new_store();
    for (id, timestamp) in [(9, 100), (3, 200), (7, 300)] {
        store.transfer_insert(&stored_transfer(id, timestamp));
    }
    assert_eq!(store.transfer(TransferId(3)), Some(stored_transfer(3, 200)));
    assert_eq!(store.transfer_at(300).map(|t| t.id), Some(TransferId(7)));
    assert_eq!(store.transfer_at(250), None);
    assert_eq!(store.transfer_timestamp_max(), 300);
    store.transfer_remove(TransferId(7));
    assert_eq!(store.transfer(TransferId(7)), None);
    assert_eq!(store.transfer_timestamp_max(), 200);
    let mut order = Vec::new();
    store.visit_transfers(&mut |t| order.push(t.id.0));
    assert_eq!(order, [9, 3]);
    // A scan from a timestamp: ascending, from the first at or after it, until it breaks.
    store.transfer_insert(&stored_transfer(8, 400));
    let scan = |store: &super::Store, min, take| {
        let mut out = Vec::new();
        store.transfers_scan(min, &mut |t| {
            out.push(t.id.0);
            if out.len() == take { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        out
    };
    assert_eq!(scan(&store, 0, 10), [9, 3, 8]);
    assert_eq!(scan(&store, 150, 10), [3, 8]);
    assert_eq!(scan(&store, 200, 1), [3]);
    assert_eq!(scan(&store, 401, 10), Vec::<u128>::new());
    store.transfer_remove(TransferId(8));
    assert!(!store.transfer_failed(TransferId(5)));
    store.transfer_failed_insert(TransferId(5));
    store.transfer_failed_insert(TransferId(4));
    assert!(store.transfer_failed(TransferId(5)));
    let mut failed = Vec::new();
    store.visit_failed_ids(&mut |id| failed.push(id.0));
    assert_eq!(failed, [4, 5]);
}

/// Pending statuses and the expiry index, which must yield earliest first, up to a limit.
#[test]
fn pending_statuses_and_expiries() {
    let mut store = super::new_store();
    store.pending_status_set(100, PendingStatus::Pending);
    store.pending_status_set(100, PendingStatus::Posted);
    assert_eq!(store.pending_status(100), Some(PendingStatus::Posted));
    store.pending_status_remove(100);
    assert_eq!(store.pending_status(100), None);
    let entries = [
        Expiry { expires_at: 50, pending_timestamp: 2 },
        Expiry { expires_at: 40, pending_timestamp: 3 },
        Expiry { expires_at: 50, pending_timestamp: 1 },
        Expiry { expires_at: 90, pending_timestamp: 4 },
    ];
    entries.iter().for_each(|e| store.expiry_insert(*e));
    assert_eq!(store.expiry_next(), Some(40));
    let mut due = Vec::new();
    store.expiry_due(50, 10, &mut due);
    assert_eq!(due, [entries[1], entries[2], entries[0]]);
    due.clear();
    store.expiry_due(50, 2, &mut due);
    assert_eq!(due, [entries[1], entries[2]]);
    store.expiry_remove(entries[1]);
    assert_eq!(store.expiry_next(), Some(50));
}

/// The per-account transfer index scans by inclusive range, both directions, and stops
/// when asked.
#[test]
fn account_transfer_index_scans() {
    let mut store = super::new_store();
    store.account_insert(&stored_account(1, 1));
    store.account_insert(&stored_account(2, 2));
    store.account_insert(&stored_account(3, 3));
    for (id, timestamp) in [(10, 10), (11, 15), (12, 20), (13, 30), (14, 40)] {
        // Transfer 11 is between accounts 2 and 3 and must not appear in account 1's index;
        // the others alternate sides.
        let (debit, credit) = match id {
            11 => (2, 3),
            _ if id % 2 == 0 => (1, 2),
            _ => (2, 1),
        };
        store.transfer_insert(&Transfer { timestamp, ..transfer(id, debit, credit, 1) });
        store.account_transfer_append(AccountId(debit), timestamp);
        store.account_transfer_append(AccountId(credit), timestamp);
    }
    let scan = |store: &super::Store, min, max, reversed, take| {
        let mut out = Vec::new();
        store.account_transfers_scan(AccountId(1), min, max, reversed, &mut |t| {
            out.push(t);
            if out.len() == take { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        out
    };
    assert_eq!(scan(&store, 0, u64::MAX, false, 10), [10, 20, 30, 40]);
    assert_eq!(scan(&store, 20, 30, false, 10), [20, 30]);
    assert_eq!(scan(&store, 20, 30, true, 10), [30, 20]);
    assert_eq!(scan(&store, 0, u64::MAX, true, 2), [40, 30]);
    assert_eq!(scan(&store, 31, 39, false, 10), Vec::<u64>::new());
    store.account_transfer_pop(AccountId(2), 40);
    store.account_transfer_pop(AccountId(1), 40);
    store.transfer_remove(TransferId(14));
    assert_eq!(scan(&store, 0, u64::MAX, true, 1), [30]);
    assert_eq!(scan(&store, 0, u64::MAX, false, 10), [10, 20, 30]);
    // An unknown account scans as empty.
    let mut none = 0;
    store.account_transfers_scan(AccountId(9), 0, u64::MAX, false, &mut |_| {
        none += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(none, 0);
}

/// Long chains (more than one skip list entry): every range, both directions, any limit,
/// gives exactly what a sorted list gives, also after undoing transfers across a skip.
#[test]
fn account_transfer_index_scans_of_long_chains() {
    let mut store = super::new_store();
    for (id, timestamp) in [(1, 1), (2, 2), (3, 3)] {
        store.account_insert(&stored_account(id, timestamp));
    }
    let mut mine = Vec::new();
    for i in 1..=700_u64 {
        // Every fifth transfer is between accounts 2 and 3, not in account 1's chain.
        let (debit, credit) = match i {
            _ if i % 5 == 0 => (2, 3),
            _ if i % 2 == 0 => (1, 2),
            _ => (2, 1),
        };
        let timestamp = 10 * i;
        store.transfer_insert(&Transfer { timestamp, ..transfer(u128::from(i), debit, credit, 1) });
        store.account_transfer_append(AccountId(debit), timestamp);
        store.account_transfer_append(AccountId(credit), timestamp);
        if debit == 1 || credit == 1 {
            mine.push(timestamp);
        }
    }
    let check = |store: &super::Store, mine: &[u64]| {
        let bounds = [0, 1, 10, 640, 641, 645, 1280, 2555, 5000, 6390, 6400, 7000, 7001, u64::MAX];
        for &min in &bounds {
            for &max in &bounds {
                for reversed in [false, true] {
                    for take in [1, 3, 70, 10_000] {
                        let mut got = Vec::new();
                        store.account_transfers_scan(AccountId(1), min, max, reversed, &mut |t| {
                            got.push(t);
                            if got.len() == take {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        });
                        let mut want: Vec<u64> =
                            mine.iter().copied().filter(|t| (min..=max).contains(t)).collect();
                        if reversed {
                            want.reverse();
                        }
                        want.truncate(take);
                        assert_eq!(got, want, "min {min} max {max} reversed {reversed} take {take}");
                    }
                }
            }
        }
    };
    check(&store, &mine);
    // Undo the newest 100 transfers (account 1's chain loses 80, across a skip entry).
    for i in (601..=700_u64).rev() {
        let t = store.transfer_at(10 * i).unwrap();
        store.account_transfer_pop(t.credit_account_id, t.timestamp);
        store.account_transfer_pop(t.debit_account_id, t.timestamp);
        store.transfer_remove(t.id);
    }
    mine.retain(|&t| t <= 6000);
    check(&store, &mine);
}

/// Balances are kept per account and timestamp, and visited by account then time.
#[test]
fn balances_round_trip() {
    let mut store = super::new_store();
    store.account_insert(&stored_account(2, 1));
    store.account_insert(&stored_account(1, 2));
    let balance = |timestamp, credits_posted| AccountBalance { timestamp, credits_posted, ..AccountBalance::default() };
    store.balance_append(AccountId(2), &balance(10, 1));
    store.balance_append(AccountId(1), &balance(11, 2));
    store.balance_append(AccountId(2), &balance(12, 3));
    assert_eq!(store.balance_at(AccountId(2), 12), Some(balance(12, 3)));
    assert_eq!(store.balance_at(AccountId(2), 11), None);
    let mut visited = Vec::new();
    store.visit_balances(&mut |id, b| visited.push((id.0, b.timestamp)));
    assert_eq!(visited, [(1, 11), (2, 10), (2, 12)]);
    store.balance_pop(AccountId(2), 12);
    assert_eq!(store.balance_at(AccountId(2), 12), None);
    store.timestamp_last_set(77);
    assert_eq!(store.timestamp_last(), 77);
}
