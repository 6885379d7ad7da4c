//! Routing of one full `CreateTransfers` request (`node/src/service/route.rs`) on a
//! 16-shard cluster: which shard each of 8,190 events goes to, and which pending ids must
//! be looked up on every shard first. Cases:
//! - `redemptions`: member → merchant transfers, each naming its accounts (merchants
//!   spread, so each stays on its member's shard: the common request);
//! - `posts_naming_no_account`: posts of pending transfers that carry only the pending id
//!   (so each follows its pending transfer): half resolve a pending transfer created
//!   earlier in the same request, half one that must be looked up.
//!
//! Every case checks that each event got a shard and how many ids are to be found.
//! Record results in `bench/RESULTS.md`.
//!
//! Run: `cargo bench -p tally-bench --bench routing`
//! Smoke (CI): `cargo bench -p tally-bench --bench routing -- --test`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_node::ledger::{AccountId, Transfer, TransferFlags, TransferId};
use tally_node::service::route::{pending_to_find, transfer_routes};
use tally_proto::limits::BATCH_EVENTS_MAX;
use tally_proto::routing::spread_account_id;

const SHARDS: u32 = 16;

/// Redemption `i` (member `i` to a spread merchant), id `id`.
fn redemption(id: u128, i: u128, flags: TransferFlags) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(i),
        credit_account_id: AccountId(spread_account_id(1 + i % 1000)),
        amount: 10,
        ledger: 1,
        code: 1,
        flags,
        ..Transfer::default()
    }
}

fn redemptions(events: u128) -> Vec<Transfer> {
    (1..=events).map(|i| redemption(1_000_000 + i, i, TransferFlags::empty())).collect()
}

/// `events` events: pending redemptions created in the request (a quarter of the events),
/// their posts (a quarter), and posts of pending transfers created before (half).
fn posts(events: u128) -> Vec<Transfer> {
    let quarter = events / 4;
    let post = |id: u128, pending: u128| Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending),
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    };
    let mut out: Vec<Transfer> =
        (1..=quarter).map(|i| redemption(2_000_000 + i, i, TransferFlags::PENDING)).collect();
    out.extend((1..=quarter).map(|i| post(3_000_000 + i, 2_000_000 + i)));
    out.extend((1..=events - 2 * quarter).map(|i| post(4_000_000 + i, 5_000_000 + i)));
    out
}

fn routing(c: &mut Criterion) {
    let events = u128::from(BATCH_EVENTS_MAX);
    // Where the looked-up pending transfers were found.
    let lookup = |id: TransferId| Some(1 + u32::try_from(id.0 % 16).expect("small"));
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(u64::from(BATCH_EVENTS_MAX)));
    for (name, request, to_find) in [
        ("redemptions", redemptions(events), 0),
        (
            "posts_naming_no_account",
            posts(events),
            usize::try_from(events - 2 * (events / 4)).expect("small"),
        ),
    ] {
        let found = pending_to_find(&request, SHARDS);
        assert_eq!(found.len(), to_find, "{name}");
        let routes = transfer_routes(&request, SHARDS, lookup);
        assert!(routes.shards.iter().all(Option::is_some), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let found = pending_to_find(black_box(&request), SHARDS);
                let routes = transfer_routes(black_box(&request), SHARDS, lookup);
                (found, routes)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
