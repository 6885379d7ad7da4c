//! Ledger apply throughput on one core, in memory: 8190-event batches over 1,000,000
//! accounts. Each iteration applies one fresh batch (new ids) to a growing ledger; batch
//! generation is outside the measurement. Every result is checked to be `Created`, so only
//! successful work is counted. Record results in `bench/RESULTS.md`.
//!
//! Run: `cargo bench -p tally-bench --bench ledger_apply`
//! Smoke (CI): `cargo bench -p tally-bench --bench ledger_apply -- --test`
//! Override the population with `TALLY_BENCH_ACCOUNTS` (default 1,000,000).

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{START_NS, TransferGenerator, population};
use tally_node::ledger::{CreateTransferStatus, Transfer};
use tally_proto::limits::BATCH_EVENTS_MAX;

/// Transfers preallocated: more than a full criterion run applies (about 1,000 batches of
/// 8,190), so the measurement is of apply, not of the allocator growing the store.
/// Override with `TALLY_BENCH_TRANSFERS_RESERVED` (0 = grow from empty).
fn transfers_reserved() -> usize {
    std::env::var("TALLY_BENCH_TRANSFERS_RESERVED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12 << 20)
}

fn accounts() -> u64 {
    std::env::var("TALLY_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn bench_kind(
    c: &mut Criterion,
    name: &str,
    make: fn(&mut TransferGenerator, usize) -> Vec<Transfer>,
) {
    let accounts = accounts();
    let mut machine = population(accounts, transfers_reserved());
    let mut generator = TransferGenerator::new(accounts, 42);
    let mut now = START_NS + 1_000_000_000;
    let events = BATCH_EVENTS_MAX as usize;
    let mut group = c.benchmark_group("ledger_apply");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function(name, |b| {
        b.iter_batched(
            || make(&mut generator, events),
            |batch| {
                now += 1_000_000;
                let results = machine.create_transfers(now, &batch).expect("batch within limits");
                assert!(results.iter().all(|r| r.status == CreateTransferStatus::Created));
                results
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn simple(c: &mut Criterion) {
    bench_kind(c, "simple_8190", TransferGenerator::simple_batch);
}

fn pending_post(c: &mut Criterion) {
    bench_kind(c, "pending_post_pairs_8190", TransferGenerator::pending_post_batch);
}

fn linked_pairs(c: &mut Criterion) {
    bench_kind(c, "linked_pairs_8190", TransferGenerator::linked_pairs_batch);
}

criterion_group!(benches, simple, pending_post, linked_pairs);
criterion_main!(benches);
