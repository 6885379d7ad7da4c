//! Runs a workload against a target in a closed or an open loop and records every
//! operation's outcome and every request's latency.
//!
//! - **Closed loop** (`rate = None`): `concurrency` tasks, each sending a request of `batch`
//!   operations, waiting for its reply, and sending the next, until `duration` ends.
//!   Latency is measured from the send.
//! - **Open loop** (`rate = Some(r)`): requests of `batch` operations are due at a fixed
//!   schedule (`r` operations a second in all), whatever the replies do. Each takes one of
//!   `concurrency` sessions (waiting if all are busy) and its latency is measured from the
//!   time it was DUE, so a system that falls behind shows its queueing in the latency
//!   instead of hiding it (coordinated omission). Requests more than
//!   [`OPEN_LOOP_LATE_MAX`] behind schedule are not sent and are counted as `not_sent`;
//!   each still counts in the latency histogram, at how late it was when dropped (a lower
//!   bound), so dropping them cannot make the percentiles look better.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;
use crate::model::Outcome;
use crate::population::PopulationSpec;
use crate::scenario::{Op, OpGenerator, Workload};
use crate::target::{Session, Target};

/// Largest latency the histograms hold (longer ones are clamped to it).
pub const LATENCY_MAX_US: u64 = 300_000_000;
/// In the open loop, a request this far behind its due time is not sent.
pub const OPEN_LOOP_LATE_MAX: Duration = Duration::from_secs(30);

/// The shape of a load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// What to send.
    pub workload: Workload,
    /// Closed loop: tasks; open loop: sessions (the most requests outstanding).
    pub concurrency: u32,
    /// Operations per request.
    pub batch: u32,
    /// Open loop at this many operations per second; closed loop if `None`.
    pub rate: Option<f64>,
    /// How long to send, after the warm-up.
    pub duration: Duration,
    /// Sending before the measured `duration` begins: requests sent (or due) in it are
    /// verified and shown in the timeline, but not counted in the run's rates and latency
    /// (what a cluster still compacting its population does to the first seconds).
    pub warmup: Duration,
    /// Seed of the operation generators.
    pub seed: u64,
    /// Exponent of the Zipf distribution (`redeem-zipf`).
    pub zipf_exponent: f64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Which members swap (`--swap-shards`), as asked.
    pub swap_shards: crate::scenario::SwapShards,
    /// The members swaps are drawn from (chosen for `swap_shards`); `None`: every member.
    pub swappers: Option<std::sync::Arc<[u32]>>,
}

/// Completions within one second of the run.
#[derive(Clone, Debug)]
pub struct Second {
    /// Operations completed (any outcome).
    pub ops: u64,
    /// Operations acknowledged.
    pub ok: u64,
    /// Request latencies (µs) of the requests completed in this second.
    pub latency_us: Histogram<u64>,
}

/// Everything a run recorded.
#[derive(Debug)]
pub struct RunStats {
    /// From the end of the warm-up (the first send if none) to the last reply.
    pub elapsed: Duration,
    /// Requests sent in the warm-up (not counted below, but verified like the others).
    pub warmup_requests: u64,
    /// Requests completed (sent after the warm-up).
    pub requests: u64,
    /// Operations acknowledged.
    pub ok: u64,
    /// Transfers acknowledged (a redemption is two).
    pub transfers_ok: u64,
    /// Refused operations by result code.
    pub failed: BTreeMap<u32, u64>,
    /// Operations whose request failed (outcome unknown).
    pub unknown: u64,
    /// Open loop: operations never sent because they fell too far behind (after the warm-up).
    /// Their requests are in `latency_us` at how late they were when dropped.
    pub not_sent: u64,
    /// Latency (µs) of every request.
    pub latency_us: Histogram<u64>,
    /// Open loop: how late (µs) each request was sent after it was due: the harness's own
    /// delay, which the latency above includes (empty in a closed loop).
    pub send_lag_us: Histogram<u64>,
    /// Per-second completions.
    pub timeline: Vec<Second>,
    /// When the load began (the timeline's second 0), for lining it up with node logs.
    pub started_at: std::time::SystemTime,
    /// Every operation with its outcome, in completion order.
    pub records: Vec<(Op, Outcome)>,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, sigfig).expect("valid histogram bounds")
}

struct Collector {
    start: Instant,
    /// Requests sent (or due) before this are the warm-up's.
    measured_from: Instant,
    completed: AtomicU64,
    stats: Mutex<RunStats>,
}

impl Collector {
    fn new(start: Instant, measured_from: Instant) -> Self {
        Self {
            start,
            measured_from,
            completed: AtomicU64::new(0),
            stats: Mutex::new(RunStats {
                elapsed: Duration::ZERO,
                warmup_requests: 0,
                requests: 0,
                ok: 0,
                transfers_ok: 0,
                failed: BTreeMap::new(),
                unknown: 0,
                not_sent: 0,
                latency_us: histogram(3),
                send_lag_us: histogram(3),
                timeline: Vec::new(),
                started_at: std::time::SystemTime::now(),
                records: Vec::new(),
            }),
        }
    }

    /// Records an open-loop request of `ops` operations, due at `due`, dropped now for being
    /// more than [`OPEN_LOOP_LATE_MAX`] late: counted `not_sent`, and in the latency
    /// histogram at its lateness (a lower bound of the latency it would have had).
    fn not_sent(&self, due: Instant, ops: u64) {
        if due < self.measured_from {
            return;
        }
        let late = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut stats = self.stats.lock();
        stats.not_sent += ops;
        stats.latency_us.record(late.clamp(1, LATENCY_MAX_US)).expect("clamped into range");
    }

    /// Records one request, due at `since` and sent at `sent` (the same in a closed loop),
    /// replied now.
    fn record(&self, since: Instant, sent: Instant, ops: Vec<Op>, outcomes: Vec<Outcome>) {
        assert_eq!(ops.len(), outcomes.len(), "one outcome per operation");
        let now = Instant::now();
        let latency = u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX);
        let latency = latency.clamp(1, LATENCY_MAX_US);
        let second = usize::try_from(now.duration_since(self.start).as_secs()).unwrap_or(0);
        self.completed.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let measured = since >= self.measured_from;
        let mut stats = self.stats.lock();
        let stats = &mut *stats;
        if measured {
            stats.requests += 1;
            stats.latency_us.record(latency).expect("clamped into range");
            if sent > since {
                let lag = u64::try_from(sent.duration_since(since).as_micros()).unwrap_or(u64::MAX);
                stats.send_lag_us.record(lag.clamp(1, LATENCY_MAX_US)).expect("clamped into range");
            }
        } else {
            stats.warmup_requests += 1;
        }
        while stats.timeline.len() <= second {
            stats.timeline.push(Second { ops: 0, ok: 0, latency_us: histogram(2) });
        }
        let slot = &mut stats.timeline[second];
        slot.ops += ops.len() as u64;
        slot.latency_us.record(latency).expect("clamped into range");
        for (op, outcome) in ops.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Ok => {
                    if measured {
                        stats.ok += 1;
                        stats.transfers_ok += op.transfers();
                    }
                    slot.ok += 1;
                }
                Outcome::Failed(code) if measured => *stats.failed.entry(code).or_default() += 1,
                Outcome::Unknown if measured => stats.unknown += 1,
                Outcome::Failed(_) | Outcome::Unknown => {}
            }
            stats.records.push((op, outcome));
        }
    }
}

/// Runs `load` against `target` over the population `spec`. Operation numbers come from
/// `seqs` (shared with setup, so ids never repeat).
///
/// # Errors
/// A session could not be opened.
pub async fn run(
    target: &Target,
    spec: PopulationSpec,
    load: &LoadSpec,
    seqs: &Arc<AtomicU64>,
) -> Result<RunStats, BenchError> {
    let mut sessions = Vec::with_capacity(load.concurrency as usize);
    for _ in 0..load.concurrency {
        sessions.push(target.session().await?);
    }
    let start = Instant::now();
    let measured_from = start + load.warmup;
    let collector = Arc::new(Collector::new(start, measured_from));
    let progress = load.progress.then(|| show_progress(load, collector.clone()));
    let generator = |task: u64| {
        OpGenerator::new(
            load.workload,
            spec,
            load.zipf_exponent,
            load.seed ^ (task << 32),
            seqs.clone(),
        )
        .with_swappers(load.swappers.clone())
    };
    match load.rate {
        None => closed_loop(sessions, load, start, &collector, generator).await,
        Some(rate) => open_loop(sessions, load, rate, start, &collector, generator(0)).await,
    }
    if let Some((bar, ticker)) = progress {
        // Wait for the cancelled ticker to drop its handle on the collector.
        ticker.abort();
        let _ = ticker.await;
        bar.finish_and_clear();
    }
    let collector = Arc::into_inner(collector).expect("every task has ended");
    let mut stats = collector.stats.into_inner();
    stats.elapsed = measured_from.elapsed();
    Ok(stats)
}

async fn closed_loop(
    sessions: Vec<Session>,
    load: &LoadSpec,
    start: Instant,
    collector: &Arc<Collector>,
    generator: impl Fn(u64) -> OpGenerator,
) {
    let deadline = start + load.warmup + load.duration;
    let mut tasks = JoinSet::new();
    for (task, session) in (0_u64..).zip(sessions) {
        let mut generator = generator(task);
        let collector = collector.clone();
        let batch = load.batch as usize;
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let ops = generator.batch(batch);
                let sent = Instant::now();
                let outcomes = session.execute(&ops).await;
                collector.record(sent, sent, ops, outcomes);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a load task panicked");
    }
}

/// Sends the open loop's requests on schedule. Pacing runs on a thread of its own that
/// sleeps with the operating system's timer (tens of microseconds late), not tokio's
/// (which rounds every wait up to the next whole millisecond: about 1.1 ms late at the
/// median, measured on 2026-12-07 with `send_lag_ms`, time the latency would have
/// charged to the target); each request then runs as a task on the runtime.
async fn open_loop(
    sessions: Vec<Session>,
    load: &LoadSpec,
    rate: f64,
    start: Instant,
    collector: &Arc<Collector>,
    generator: OpGenerator,
) {
    let (free_tx, free_rx) = tokio::sync::mpsc::channel(sessions.len());
    for session in sessions {
        free_tx.try_send(session).expect("room for every session");
    }
    let pacer = Pacer {
        interval: Duration::from_secs_f64(f64::from(load.batch) / rate),
        start,
        deadline: start + load.warmup + load.duration,
        batch: load.batch,
        collector: collector.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let mut tasks = tokio::task::spawn_blocking(move || pacer.run(generator, &free_tx, free_rx))
        .await
        .expect("the open-loop pacer panicked");
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a request task panicked");
    }
}

/// The open loop's schedule, kept by a blocking thread.
struct Pacer {
    interval: Duration,
    start: Instant,
    deadline: Instant,
    batch: u32,
    collector: Arc<Collector>,
    runtime: tokio::runtime::Handle,
}

impl Pacer {
    /// Sends every request due before the deadline, each when due (or as soon as a session
    /// is free); returns the requests still running and the operations never sent.
    fn run(
        self,
        mut generator: OpGenerator,
        free_tx: &tokio::sync::mpsc::Sender<Session>,
        mut free_rx: tokio::sync::mpsc::Receiver<Session>,
    ) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for i in 0_u32.. {
            let due = self.start + self.interval * i;
            if due >= self.deadline {
                break;
            }
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let Some(session) = free_rx.blocking_recv() else { break };
            if due.elapsed() > OPEN_LOOP_LATE_MAX {
                self.collector.not_sent(due, u64::from(self.batch));
                free_tx.try_send(session).expect("room for the session just taken");
                continue;
            }
            let ops = generator.batch(self.batch as usize);
            let (collector, free_tx) = (self.collector.clone(), free_tx.clone());
            tasks.spawn_on(
                async move {
                    let sent = Instant::now();
                    let outcomes = session.execute(&ops).await;
                    collector.record(due, sent, ops, outcomes);
                    let _ = free_tx.try_send(session);
                },
                &self.runtime,
            );
            while let Some(joined) = tasks.try_join_next() {
                joined.expect("a request task panicked");
            }
        }
        tasks
    }
}

fn show_progress(
    load: &LoadSpec,
    collector: Arc<Collector>,
) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = ProgressBar::with_draw_target(
        Some(load.duration.as_secs()),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(load.workload.name());
    let ticker_bar = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut last = (Instant::now(), 0_u64);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let done = collector.completed.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            ticker_bar.set_position(now.duration_since(collector.start).as_secs());
            ticker_bar.set_message(format!("{rate:>9.0} ops/s  {done} done"));
        }
    });
    (bar, ticker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redeem(seq: u64) -> Op {
        Op::Redeem { seq, member: 1, merchant: 2, item: 3, points: 10 }
    }

    #[test]
    fn warm_up_requests_are_kept_for_verification_but_not_counted() {
        let start = Instant::now();
        let collector = Collector::new(start, start + Duration::from_secs(3600));
        collector.record(
            start,
            start,
            vec![redeem(1), redeem(2)],
            vec![Outcome::Ok, Outcome::Unknown],
        );
        let later = Collector::new(start, start);
        later.record(start, start, vec![redeem(3)], vec![Outcome::Failed(7)]);

        let warm = collector.stats.into_inner();
        assert_eq!((warm.warmup_requests, warm.requests), (1, 0));
        assert_eq!((warm.ok, warm.transfers_ok, warm.unknown), (0, 0, 0));
        assert_eq!(warm.latency_us.len(), 0, "no latency recorded for the warm-up");
        assert_eq!(warm.records.len(), 2, "both operations kept for verification");
        assert_eq!(warm.timeline[0].ok, 1, "the timeline shows the warm-up");

        let measured = later.stats.into_inner();
        assert_eq!((measured.warmup_requests, measured.requests), (0, 1));
        assert_eq!(measured.failed.get(&7), Some(&1));
        assert_eq!(measured.latency_us.len(), 1);
        assert_eq!(measured.send_lag_us.len(), 0, "sent when due: no lag to record");
    }

    #[test]
    fn a_request_dropped_for_lateness_counts_in_the_latency_at_its_lateness() {
        let now = Instant::now();
        let due = now.checked_sub(Duration::from_secs(31)).expect("a clock past 31 s");
        let collector = Collector::new(due, due);
        collector.record(now, now, vec![redeem(1)], vec![Outcome::Ok]);
        collector.not_sent(due, 32);
        // Dropped in the warm-up: neither counted nor in the latency.
        let warm = Collector::new(due, now + Duration::from_secs(1));
        warm.not_sent(due, 32);
        let stats = collector.stats.into_inner();
        assert_eq!(stats.not_sent, 32);
        assert_eq!(stats.latency_us.len(), 2, "the reply and the request never sent");
        assert!(stats.latency_us.max() >= 31_000_000, "{} µs", stats.latency_us.max());
        let warm = warm.stats.into_inner();
        assert_eq!((warm.not_sent, warm.latency_us.len()), (0, 0));
    }

    #[test]
    fn a_request_sent_late_counts_its_lag_in_its_latency_and_on_its_own() {
        // Due 5 ms ago, sent 2 ms after that, replied now.
        let due = Instant::now().checked_sub(Duration::from_millis(5)).expect("a clock past 5 ms");
        let collector = Collector::new(due, due);
        let sent = due + Duration::from_millis(2);
        collector.record(due, sent, vec![redeem(1)], vec![Outcome::Ok]);
        let stats = collector.stats.into_inner();
        assert_eq!(stats.send_lag_us.len(), 1);
        let lag = stats.send_lag_us.max();
        assert!((1_990..=2_010).contains(&lag), "lag recorded as {lag} µs, sent 2 ms late");
        assert!(
            stats.latency_us.max() >= 5_000,
            "latency counts from the due time, lag included: {} µs",
            stats.latency_us.max()
        );
    }
}
