//! Group commit (`node/src/service/batcher.rs`) on its own: N concurrent submitters (tokio
//! tasks on a 2-worker runtime; N = 1, 64, 512) each submit 1-event transfer requests (one
//! 128-byte record), one after another, through a `Batcher` with the default `BatchConfig`
//! (8 entries in flight, no linger, 8190 events per entry) into a fake proposer in place of
//! Raft. Cases:
//! - `instant`: the fake answers at once, so the time is the batcher's: queue, gather,
//!   entry assembly, the proposing task, one reply per caller;
//! - `instant_linger_200us`: the same with `linger_us = 200`: when the queue is empty,
//!   gather waits for the next tick of tokio's millisecond timer, so about 1 ms per entry
//!   (why the default linger is 0);
//! - `sleep_1ms`: the fake first sleeps 1 ms per entry (tokio's timer: 1 to 2 ms), standing
//!   in for the log fsync and the consensus round, so requests queue while entries are in
//!   flight and entries grow with the number of submitters.
//!
//! Throughput is in requests (one iteration = one request from each submitter). After each
//! case the mean events per entry over the whole case is printed. The fake answers each
//! event `Created`, and every submitter checks it got exactly one such outcome.
//!
//! Run: `cargo bench -p tally-bench --bench batcher`
//! Smoke (CI): `cargo bench -p tally-bench --bench batcher -- --test`

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::Rng;
use tally_node::config::BatchConfig;
use tally_node::ledger::CreateTransferStatus;
use tally_node::raft::node::ReplicaError;
use tally_node::raft::{Command, CommandReply, Op};
use tally_node::service::batcher::{Batcher, Kind, Propose};
use tally_node::storage::records::transfer_encode;
use tokio::runtime::Runtime;

/// Concurrent submitters per case.
const SUBMITTERS: [u64; 3] = [1, 64, 512];

/// A proposer that answers every event `Created` after `delay` (none if zero), and counts
/// the entries and events it was given.
#[derive(Clone, Debug, Default)]
struct Fake {
    delay: Duration,
    entries: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
}

impl Propose for Fake {
    async fn write(&self, command: Command) -> Result<CommandReply, ReplicaError> {
        let Op::CreateTransfers { requests, .. } = command.op else {
            panic!("the bench submits transfers only");
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.entries.fetch_add(1, Ordering::Relaxed);
        let events: u64 = requests.iter().map(|&n| u64::from(n)).sum();
        self.events.fetch_add(events, Ordering::Relaxed);
        let created = (command.cluster_time_ns, CreateTransferStatus::Created.code());
        let requests = requests.iter().map(|&n| Ok(vec![created; n as usize])).collect();
        Ok(CommandReply { requests })
    }
}

/// `requests` 1-event requests, one after another, each checked to be created.
async fn submitter(batcher: Batcher, record: Arc<[u8]>, requests: u64) {
    let created = CreateTransferStatus::Created.code();
    for _ in 0..requests {
        let outcome = batcher.submit(Kind::Transfers, 1, record.to_vec()).await;
        support::assert_created(&outcome.expect("queued and proposed"), 1, created);
    }
}

/// Runs `submitters` tasks of `requests` requests each; returns the wall time.
async fn round(batcher: &Batcher, record: &Arc<[u8]>, submitters: u64, requests: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|_| tokio::spawn(submitter(batcher.clone(), record.clone(), requests)))
        .collect();
    for task in tasks {
        task.await.expect("a submitter completes");
    }
    start.elapsed()
}

/// The cases of one fake: `delay` per entry, the default `BatchConfig` with `linger_us`.
fn bench_fake(c: &mut Criterion, runtime: &Runtime, name: &str, delay: Duration, linger_us: u64) {
    let transfer = support::transfers_realistic(&mut Rng::new(42), 1_000, 1)[0];
    let record: Arc<[u8]> = Arc::from(transfer_encode(&transfer).as_slice());
    let mut group = c.benchmark_group(format!("batcher/{name}"));
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(2));
    for submitters in SUBMITTERS {
        let fake = Fake { delay, ..Fake::default() };
        let (batcher, task) = {
            let _context = runtime.enter();
            Batcher::start(fake.clone(), &BatchConfig { linger_us, ..BatchConfig::default() })
        };
        group.throughput(Throughput::Elements(submitters));
        group.bench_function(BenchmarkId::new("submitters", submitters), |b| {
            b.iter_custom(|iters| runtime.block_on(round(&batcher, &record, submitters, iters)));
        });
        drop(batcher);
        runtime.block_on(task).expect("the batching task ends with its last Batcher");
        let (entries, events) =
            (fake.entries.load(Ordering::Relaxed), fake.events.load(Ordering::Relaxed));
        let mean = events as f64 / entries.max(1) as f64;
        println!(
            "batcher/{name}/submitters/{submitters}: {mean:.1} events per entry ({entries} entries)"
        );
    }
    group.finish();
}

fn batcher(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let linger_us = BatchConfig::default().linger_us;
    bench_fake(c, &runtime, "instant", Duration::ZERO, linger_us);
    bench_fake(c, &runtime, "instant_linger_200us", Duration::ZERO, 200);
    bench_fake(c, &runtime, "sleep_1ms", Duration::from_millis(1), linger_us);
}

criterion_group!(benches, batcher);
criterion_main!(benches);
