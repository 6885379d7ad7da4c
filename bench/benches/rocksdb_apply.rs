//! The durable apply path of one shard: one `Command` of 8190 transfers (one request,
//! realistic values) decoded from its records and applied by the ledger over
//! `DurableStore` (`raft::state_machine::apply_command`), then its change journal (about
//! 23,000 writes, 3.5 MB: the transfers and every account they touched) and the applied
//! log id written as ONE RocksDB `WriteBatch`, a checkpoint (`raft::state_machine::persist`).
//! Each case opens its own RocksDB in a temporary directory (under `TMPDIR`: keep it on the
//! disk to measure, a tmpfs makes fsync free) and creates 100,000 accounts first
//! (`TALLY_BENCH_ACCOUNTS` overrides). Cases:
//! - `apply_only`: apply, and put the journal into a `WriteBatch` that is not written (the
//!   CPU cost of the ledger and of building the batch);
//! - `apply_write`: apply, then write the checkpoint (to the memtables, without the WAL:
//!   `Storage::write_unlogged`). Production checkpoints only every `raft.checkpoint_writes`
//!   journal writes (several full batches), so this is the write cost each batch adds, paid
//!   at once;
//! - `apply_write_flush`: the same, then a flush of the state's memtables to disk
//!   (`Storage::flush_state`). Production flushes when a memtable fills and before a
//!   snapshot lets the log be purged, not per batch: this is the upper bound.
//!
//! Throughput is in events (transfers); batch generation is outside the measurement. Every
//! result is checked to be `Created`, so only successful work is counted.
//!
//! Run: `cargo bench -p tally-bench --bench rocksdb_apply`
//! Smoke (CI): `cargo bench -p tally-bench --bench rocksdb_apply -- --test`

mod support;

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{Rng, START_NS};
use tally_node::config::DirectIo;
use tally_node::ledger::memory_store::Capacity;
use tally_node::ledger::{Account, AccountId, CreateAccountStatus, CreateTransferStatus};
use tally_node::raft::state_machine::{
    Ledger, SharedLedger, StateMachineStore, apply_command, persist,
};
use tally_node::raft::{Command, Op};
use tally_node::storage::Storage;
use tally_node::storage::keys::ShardId;
use tally_node::storage::records::{account_encode, transfer_encode};
use tally_proto::limits::BATCH_EVENTS_MAX;

/// Events per command: a full batch.
const EVENTS: usize = BATCH_EVENTS_MAX as usize;
/// The shard the bench writes.
const SHARD: ShardId = ShardId(1);

fn accounts() -> u64 {
    std::env::var("TALLY_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// Applies one command of one request to the ledger, finishes it with `finish`, and
/// asserts that every event was created with the kind's `created` code.
fn apply(
    storage: &Storage,
    shared: &SharedLedger,
    command: &Command,
    finish: fn(&Storage, &mut Ledger),
    created: u32,
) {
    let (Op::CreateAccounts { requests, .. } | Op::CreateTransfers { requests, .. }) = &command.op
    else {
        panic!("the bench applies creations only");
    };
    let events = requests.iter().map(|&n| n as usize).sum();
    let mut ledger = shared.write();
    let reply = apply_command(&mut ledger.machine, command);
    finish(storage, &mut ledger);
    drop(ledger);
    assert_eq!(reply.requests.len(), 1, "one request per command");
    support::assert_created(&reply.requests[0], events, created);
}

fn write(storage: &Storage, ledger: &mut Ledger) {
    persist(storage, ledger, false).expect("the RocksDB write");
}

fn write_flush(storage: &Storage, ledger: &mut Ledger) {
    write(storage, ledger);
    storage.flush_state().expect("the memtable flush");
}

fn drain_only(storage: &Storage, ledger: &mut Ledger) {
    let mut batch = rocksdb::WriteBatch::default();
    ledger.machine.store_mut().drain_into(&mut batch, storage);
    assert!(!batch.is_empty(), "the journal held the batch's writes");
}

/// The `requests` of a command of one request of `events` events.
fn one_request(events: usize) -> Vec<u32> {
    vec![u32::try_from(events).expect("at most BATCH_EVENTS_MAX")]
}

/// A fresh RocksDB in a temporary directory with `accounts` accounts (ids `1..=accounts`,
/// ledger 1, code 1), persisted.
fn open(accounts: u64) -> (tempfile::TempDir, Storage, SharedLedger) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::open(dir.path(), DirectIo::Auto).expect("RocksDB opens");
    let shared = StateMachineStore::open(storage.clone(), SHARD, Capacity::default())
        .expect("a new shard")
        .ledger();
    let account =
        |id: u64| Account { id: AccountId(id.into()), ledger: 1, code: 1, ..Account::default() };
    let ids: Vec<u64> = (1..=accounts).collect();
    for chunk in ids.chunks(EVENTS) {
        let events = chunk.iter().flat_map(|&id| account_encode(&account(id))).collect();
        let op = Op::CreateAccounts { requests: one_request(chunk.len()), events };
        let command = Command { cluster_time_ns: START_NS, op };
        apply(&storage, &shared, &command, write, CreateAccountStatus::Created.code());
    }
    (dir, storage, shared)
}

fn bench_case(c: &mut Criterion, name: &str, finish: fn(&Storage, &mut Ledger)) {
    let accounts = accounts();
    let (_dir, storage, shared) = open(accounts);
    let mut rng = Rng::new(42);
    let mut now = START_NS + 1_000_000_000;
    let created = CreateTransferStatus::Created.code();
    let mut group = c.benchmark_group("rocksdb_apply");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                now += 1_000_000;
                let transfers = support::transfers_realistic(&mut rng, accounts, EVENTS);
                let events = transfers.iter().flat_map(transfer_encode).collect();
                let op = Op::CreateTransfers { requests: one_request(EVENTS), events };
                Command { cluster_time_ns: now, op }
            },
            |command| apply(&storage, &shared, &command, finish, created),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn apply_only(c: &mut Criterion) {
    bench_case(c, "apply_only_8190", drain_only);
}

fn apply_write(c: &mut Criterion) {
    bench_case(c, "apply_write_8190", write);
}

fn apply_write_flush(c: &mut Criterion) {
    bench_case(c, "apply_write_flush_8190", write_flush);
}

criterion_group!(benches, apply_only, apply_write, apply_write_flush);
criterion_main!(benches);
