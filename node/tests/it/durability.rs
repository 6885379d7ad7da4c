//! The RocksDB-backed ledger store: what it persists after each batch reloads to exactly
//! the live state, through every kind of write (including chain rollbacks and expiries).

use proptest::prelude::*;
use tally_node::config::DirectIo;
use tally_node::ledger::memory_store::Capacity;
use tally_node::ledger::{AccountFlags, LedgerStore, StateMachine};
use tally_node::storage::keys::{self, ShardId};
use tally_node::storage::ledger_store::DurableStore;
use tally_node::storage::{CF_LEDGER, CF_TRANSFERS, Storage};

use crate::support::*;

const SHARD: ShardId = ShardId(3);

/// Writes what the last batch changed, then checks a reload equals the live state.
fn persist_and_compare(storage: &Storage, ledger: &mut Ledger<DurableStore>) {
    assert!(ledger.machine.store().is_dirty(), "every batch here writes something");
    let mut batch = rocksdb::WriteBatch::default();
    ledger.machine.store_mut().drain_into(&mut batch, storage);
    storage.db().write(batch).unwrap();
    let reloaded = DurableStore::load(storage, SHARD, Capacity::default()).unwrap();
    let reloaded = StateMachine::new(reloaded);
    assert_eq!(reloaded.digest(), ledger.machine.digest(), "reload differs from live state");
    // Into memory allocated ahead (`[memory]`), whose placeholders used the same small ids.
    let ahead = Capacity { accounts: 16, transfers: 256 };
    let preallocated = StateMachine::new(DurableStore::load(storage, SHARD, ahead).unwrap());
    assert_eq!(preallocated.digest(), ledger.machine.digest(), "reload into memory ahead differs");
    assert_eq!(reloaded.store().timestamp_last(), ledger.machine.store().timestamp_last());
    assert_eq!(reloaded.next_expiry(), ledger.machine.next_expiry());
}

#[derive(Clone, Debug)]
enum Step {
    Single { debit: u128, credit: u128, amount: u128 },
    Pending { debit: u128, credit: u128, amount: u128, timeout: u32 },
    Post { back: usize, amount: u128 },
    Void { back: usize },
    FailingChain { debit: u128, credit: u128 },
    Advance { seconds: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    let acct = 1_u128..=6;
    prop_oneof![
        (acct.clone(), acct.clone(), 1_u128..50).prop_map(|(debit, credit, amount)| Step::Single {
            debit,
            credit,
            amount
        }),
        (acct.clone(), acct.clone(), 1_u128..50, 0_u32..3).prop_map(
            |(debit, credit, amount, timeout)| Step::Pending { debit, credit, amount, timeout }
        ),
        (0_usize..8, prop_oneof![Just(u128::MAX), 1_u128..20])
            .prop_map(|(back, amount)| Step::Post { back, amount }),
        (0_usize..8).prop_map(|back| Step::Void { back }),
        (acct.clone(), acct).prop_map(|(debit, credit)| Step::FailingChain { debit, credit }),
        (1_u64..3).prop_map(|seconds| Step::Advance { seconds }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every batch's persisted changes reload to the identical ledger (digest, clock and
    /// expiry index), across transfers, pending life cycles, rollbacks and expiries.
    #[test]
    fn persisted_batches_reload_to_the_live_state(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        let mut ledger = Ledger::new(DurableStore::new(SHARD));
        let mut accounts: Vec<_> = (1..=4).map(|id| account(id, AccountFlags::HISTORY)).collect();
        accounts.push(member(5));
        accounts.push(account(6, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS));
        ledger.create_accounts(&accounts);
        persist_and_compare(&storage, &mut ledger);
        let mut next_id = 100_u128;
        let mut pendings: Vec<u128> = Vec::new();
        for s in steps {
            next_id += 10;
            let id = next_id;
            let batch = match s {
                Step::Single { debit, credit, amount } => vec![transfer(id, debit, credit, amount)],
                Step::Pending { debit, credit, amount, timeout } => {
                    pendings.push(id);
                    vec![pending(id, debit, credit, amount, timeout)]
                }
                Step::Post { back, amount } => {
                    let target = pendings.iter().rev().nth(back).copied().unwrap_or(1);
                    vec![post(id, target, amount)]
                }
                Step::Void { back } => {
                    let target = pendings.iter().rev().nth(back).copied().unwrap_or(1);
                    vec![void(id, target)]
                }
                Step::FailingChain { debit, credit } => vec![
                    linked(transfer(id, debit, credit, 1)),
                    linked(pending(id + 1, debit, credit, 1, 1)),
                    transfer(id + 2, debit, 999, 1),
                ],
                Step::Advance { seconds } => {
                    ledger.advance_seconds(seconds);
                    vec![transfer(id, 1, 2, 1)]
                }
            };
            ledger.create_transfers(&batch);
            persist_and_compare(&storage, &mut ledger);
        }
        ledger.audit();
    }
}

/// A store reopened from disk after the RocksDB instance is closed serves the same state.
#[test]
fn state_survives_closing_and_reopening_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let digest = {
        let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        let mut ledger = Ledger::new(DurableStore::new(SHARD));
        ledger.create_accounts(&[member(1), plain(2)]);
        ledger.create_transfers(&[transfer(10, 2, 1, 70), pending(11, 1, 2, 30, 5)]);
        let mut batch = rocksdb::WriteBatch::default();
        ledger.machine.store_mut().drain_into(&mut batch, &storage);
        storage.db().write(batch).unwrap();
        storage.sync().unwrap();
        ledger.machine.digest()
    };
    let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
    let store = DurableStore::load(&storage, SHARD, Capacity::default()).unwrap();
    let machine = StateMachine::new(store);
    assert_eq!(machine.digest(), digest);
    let other_shard = DurableStore::load(&storage, ShardId(4), Capacity::default()).unwrap();
    assert!(
        StateMachine::new(other_shard)
            .lookup_accounts(&[tally_node::ledger::AccountId(1)])
            .is_empty()
    );
}

/// Transfers are stored in the `transfers` column family and nothing else is; data in the
/// layout before the split (a transfer segment in `ledger`) is refused with a clear error
/// instead of being loaded without its transfers.
#[test]
fn transfers_live_in_their_own_family_and_the_old_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
    let mut ledger = Ledger::new(DurableStore::new(SHARD));
    ledger.create_accounts(&[member(1), plain(2)]);
    ledger.create_transfers(&[transfer(10, 2, 1, 70), transfer(11, 2, 1, 5)]);
    let mut batch = rocksdb::WriteBatch::default();
    ledger.machine.store_mut().drain_into(&mut batch, &storage);
    storage.db().write(batch).unwrap();

    let keys_of = |family: &str| -> Vec<Box<[u8]>> {
        let cf = storage.cf(family);
        storage.db().iterator_cf(cf, rocksdb::IteratorMode::Start).map(|kv| kv.unwrap().0).collect()
    };
    let transfers = keys_of(CF_TRANSFERS);
    assert_eq!(transfers.len(), 1, "two transfers, one segment");
    assert!(transfers.iter().all(|k| keys::is_transfer_segment(k)));
    let ledger_keys = keys_of(CF_LEDGER);
    assert!(ledger_keys.len() >= 2, "two accounts at least: {ledger_keys:?}");
    assert!(ledger_keys.iter().all(|k| !keys::is_transfer_segment(k)));
    let reloaded =
        StateMachine::new(DurableStore::load(&storage, SHARD, Capacity::default()).unwrap());
    assert_eq!(reloaded.digest(), ledger.machine.digest(), "both transfers reload");

    // The old layout: the segment under `ledger`.
    let segment = storage.db().get_cf(storage.cf(CF_TRANSFERS), &transfers[0]).unwrap().unwrap();
    storage.db().put_cf(storage.cf(CF_LEDGER), &transfers[0], segment).unwrap();
    let error = DurableStore::load(&storage, SHARD, Capacity::default()).unwrap_err();
    assert!(error.to_string().contains("empty data_dir"), "{error}");
}
