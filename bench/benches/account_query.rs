//! `get_account_transfers` of a hot account (a merchant, a spread slice, a pool): one
//! page of 100 from the middle of a 1,000,000-transfer history, oldest first and newest
//! first — the cost of each page while a client pages through the history. The ledger is
//! in memory; every page is checked to hold 100 transfers in order. Record results in
//! `bench/RESULTS.md`.
//!
//! Run: `cargo bench -p tally-bench --bench account_query`
//! Smoke (CI): `cargo bench -p tally-bench --bench account_query -- --test`
//! Override the history with `TALLY_BENCH_HOT_TRANSFERS` (default 1,000,000).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tally_bench::workload::{START_NS, population};
use tally_node::ledger::{
    AccountFilter, AccountFilterFlags, AccountId, CreateTransferStatus, Transfer, TransferId,
};
use tally_proto::limits::BATCH_EVENTS_MAX;

fn hot_transfers() -> u64 {
    std::env::var("TALLY_BENCH_HOT_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn pages(c: &mut Criterion) {
    let history = hot_transfers();
    let members = 1000_u64;
    let mut machine = population(members + 1, usize::try_from(history).expect("fits"));
    let hot = AccountId(u128::from(members + 1));
    let mut now = START_NS + 1_000_000_000;
    let ids: Vec<u64> = (1..=history).collect();
    for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
        let batch: Vec<Transfer> = chunk
            .iter()
            .map(|&id| Transfer {
                id: TransferId(u128::from(id)),
                debit_account_id: AccountId(u128::from(1 + id % members)),
                credit_account_id: hot,
                amount: 1,
                ledger: 1,
                code: 1,
                ..Transfer::default()
            })
            .collect();
        now += 1_000_000;
        let results = machine.create_transfers(now, &batch).expect("batch within limits");
        assert!(results.iter().all(|r| r.status == CreateTransferStatus::Created));
    }
    let newest = machine.get_account_transfers(&AccountFilter {
        account_id: hot,
        limit: 1,
        flags: AccountFilterFlags::CREDITS | AccountFilterFlags::REVERSED,
        ..AccountFilter::default()
    });
    let oldest = machine.get_account_transfers(&AccountFilter {
        account_id: hot,
        limit: 1,
        flags: AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    });
    let middle = (oldest[0].timestamp + newest[0].timestamp) / 2;
    let mut group = c.benchmark_group("account_query");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, flags, range) in [
        ("oldest_first_page_100_from_middle", AccountFilterFlags::CREDITS, (middle, 0)),
        (
            "newest_first_page_100_from_middle",
            AccountFilterFlags::CREDITS | AccountFilterFlags::REVERSED,
            (0, middle),
        ),
    ] {
        let filter = AccountFilter {
            account_id: hot,
            timestamp_min: range.0,
            timestamp_max: range.1,
            limit: 100,
            flags,
            ..AccountFilter::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let page = machine.get_account_transfers(&filter);
                assert_eq!(page.len(), 100);
                let ascending = !flags.contains(AccountFilterFlags::REVERSED);
                assert!(page.windows(2).all(|w| (w[0].timestamp < w[1].timestamp) == ascending));
                page
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
