//! The results of a `tally-bench` invocation: one [`RunReport`] per (target, workload),
//! Tally/PostgreSQL ratios where both ran a workload, written as JSON and printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::driver::{LoadSpec, RunStats};
use crate::model::{Check, all_passed};
use crate::population::PopulationSpec;
use crate::target::tally::transfer_status_name;

/// Latency percentiles of requests, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h` (microseconds); all 0 if it is empty.
    #[must_use]
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One second of a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Point {
    /// Seconds since the run started (end of the interval).
    pub t_s: u64,
    /// Operations completed in this second.
    pub ops: u64,
    /// Operations acknowledged in this second.
    pub ok: u64,
    /// Median request latency (ms) of the requests completed in this second.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// One workload against one target.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// `tally` or `postgres`.
    pub target: String,
    /// The workload's name.
    pub workload: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Tasks (closed) or sessions (open).
    pub concurrency: u32,
    /// Operations per request.
    pub batch: u32,
    /// Open loop: the operations per second asked for.
    pub rate: Option<f64>,
    /// Seconds of sending asked for.
    pub duration_s: f64,
    /// Seconds of warm-up before `duration_s` (its requests verified, not counted).
    pub warmup_s: f64,
    /// Requests sent in the warm-up.
    pub warmup_requests: u64,
    /// Seconds from the first send to the last reply.
    pub elapsed_s: f64,
    /// Requests completed.
    pub requests: u64,
    /// Operations acknowledged.
    pub ok: u64,
    /// Operations refused, by result name.
    pub failed: BTreeMap<String, u64>,
    /// Operations with an unknown outcome.
    pub unknown: u64,
    /// The request errors behind them: error text → operations left unknown (at most
    /// `target::ERROR_TEXTS_MAX` texts). A swap refused whole is not unknown: it counts in
    /// `failed` under its refusal (`SWAP_REFUSAL_…`) and must read back absent.
    pub unknown_errors: BTreeMap<String, u64>,
    /// Attempts the client library resent during the run (warm-up included, read-back
    /// not), by cause (gRPC code and `TALLY:<Code>`); an operation the first attempt
    /// applied then answers `exists` and counts as unknown above.
    pub client_retries: BTreeMap<String, u64>,
    /// Swap runs: which members swapped (`--swap-shards`: `any`, `same`, `cross`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_shards: Option<String>,
    /// Open loop: operations never sent (too far behind schedule).
    pub not_sent: u64,
    /// Operations completed per second (any outcome).
    pub ops_per_s: f64,
    /// Operations acknowledged per second — the headline number. Every kind of operation
    /// the workload sends counts, lookups too (`mixed`: a lookup is acknowledged when
    /// every account asked for came back; their balances move under the load, so they are
    /// not compared); `transfers_per_s` counts writes only.
    pub ok_per_s: f64,
    /// Transfers acknowledged per second (a redemption is two).
    pub transfers_per_s: f64,
    /// Request latency.
    pub latency_ms: Latency,
    /// Open loop: how late the harness sent each request after it was due (part of the
    /// latency above; measured so that a slow sender is seen, not blamed on the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<Latency>,
    /// When the load began (the timeline's second 0), Unix time in milliseconds.
    pub started_unix_ms: u64,
    /// Per-second throughput and latency.
    pub timeline: Vec<Point>,
    /// The checks run after the workload.
    pub verification: Vec<Check>,
    /// Whether every check passed.
    pub verified: bool,
    /// Chart files written for this run.
    pub charts: Vec<String>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl RunReport {
    /// The report of `stats`, checked by `verification`.
    #[must_use]
    pub fn new(target: &str, load: &LoadSpec, stats: &RunStats, verification: Vec<Check>) -> Self {
        let elapsed = stats.elapsed.as_secs_f64();
        let completed = stats.ok + stats.failed.values().sum::<u64>() + stats.unknown;
        let h = &stats.latency_us;
        let timeline = stats
            .timeline
            .iter()
            .zip(1_u64..)
            .map(|(s, t_s)| Point {
                t_s,
                ops: s.ops,
                ok: s.ok,
                p50_ms: ms(s.latency_us.value_at_quantile(0.50)),
                p99_ms: ms(s.latency_us.value_at_quantile(0.99)),
                p999_ms: ms(s.latency_us.value_at_quantile(0.999)),
            })
            .collect();
        Self {
            target: target.to_owned(),
            workload: load.workload.name().to_owned(),
            mode: if load.rate.is_some() { "open" } else { "closed" }.to_owned(),
            concurrency: load.concurrency,
            batch: load.batch,
            rate: load.rate,
            duration_s: load.duration.as_secs_f64(),
            warmup_s: load.warmup.as_secs_f64(),
            warmup_requests: stats.warmup_requests,
            elapsed_s: elapsed,
            requests: stats.requests,
            ok: stats.ok,
            failed: stats.failed.iter().map(|(&c, &n)| (transfer_status_name(c), n)).collect(),
            unknown: stats.unknown,
            unknown_errors: BTreeMap::new(),
            client_retries: BTreeMap::new(),
            swap_shards: (load.workload == crate::scenario::Workload::Swap)
                .then(|| load.swap_shards.name().to_owned()),
            not_sent: stats.not_sent,
            ops_per_s: completed as f64 / elapsed,
            ok_per_s: stats.ok as f64 / elapsed,
            transfers_per_s: stats.transfers_ok as f64 / elapsed,
            latency_ms: Latency::of(h),
            send_lag_ms: load.rate.map(|_| Latency::of(&stats.send_lag_us)),
            started_unix_ms: stats
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            timeline,
            verified: all_passed(&verification),
            verification,
            charts: Vec::new(),
        }
    }

    /// A few lines for the terminal.
    #[must_use]
    pub fn summary(&self) -> String {
        let l = &self.latency_ms;
        let mut out = format!(
            "{:<8} {:<15} {} loop, concurrency {}, batch {}{}: {:.0} ok/s ({:.0} transfers/s) over {:.1} s{}\n\
             \x20        latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n\
             \x20        ok {}  refused {}  unknown {}{}\n",
            self.target,
            self.workload,
            self.mode,
            self.concurrency,
            self.batch,
            self.rate.map(|r| format!(", rate {r:.0}/s")).unwrap_or_default(),
            self.ok_per_s,
            self.transfers_per_s,
            self.elapsed_s,
            if self.warmup_s > 0.0 {
                format!(
                    " after {:.0} s of warm-up ({} requests)",
                    self.warmup_s, self.warmup_requests
                )
            } else {
                String::new()
            },
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.ok,
            self.failed.values().sum::<u64>(),
            self.unknown,
            if self.not_sent > 0 { format!("  not sent {}", self.not_sent) } else { String::new() },
        );
        if let Some(lag) = &self.send_lag_ms {
            let _ = writeln!(
                out,
                "         sent late ms (in the latency): p50 {:.2}  p99 {:.2}  max {:.2}",
                lag.p50, lag.p99, lag.max
            );
        }
        for (name, n) in &self.failed {
            let _ = writeln!(out, "           refused {n}: {name}");
        }
        for (error, n) in &self.unknown_errors {
            let _ = writeln!(out, "           unknown {n}: {error}");
        }
        for (cause, n) in &self.client_retries {
            let _ = writeln!(out, "           resent {n}: {cause}");
        }
        for c in &self.verification {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  verify {mark} {}: {}", c.name, c.detail);
        }
        out
    }
}

/// Tally against PostgreSQL on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The workload.
    pub workload: String,
    /// Tally's acknowledged operations per second.
    pub tally_ok_per_s: f64,
    /// PostgreSQL's.
    pub postgres_ok_per_s: f64,
    /// Tally / PostgreSQL.
    pub ratio: f64,
    /// Tally's p99 request latency (ms).
    pub tally_p99_ms: f64,
    /// PostgreSQL's.
    pub postgres_p99_ms: f64,
    /// Whether both runs passed their verification. A ratio of runs that did not is
    /// printed marked UNVERIFIED: a figure of record needs both verified.
    pub verified: bool,
}

impl Comparison {
    /// Its line in the comparison table.
    fn line(&self) -> String {
        format!(
            "{:<15} {:>11.0} {:>15.0} {:>15.1}x   {:>8.2} / {:.2}{}",
            self.workload,
            self.tally_ok_per_s,
            self.postgres_ok_per_s,
            self.ratio,
            self.tally_p99_ms,
            self.postgres_p99_ms,
            if self.verified { "" } else { "   UNVERIFIED: a run failed its verification" }
        )
    }
}

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads the machine's description from `/proc` (fields left empty if unreadable).
    #[must_use]
    pub fn describe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_gib: memory_kib / (1024.0 * 1024.0),
        }
    }
}

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch when the invocation started.
    pub started_unix_s: u64,
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// The population.
    pub population: PopulationSpec,
    /// Seconds each target took to load each population, keyed `target/workloads` (one
    /// population per workload unless `--shared-population`).
    pub setup_s: BTreeMap<String, f64>,
    /// Every run, in order.
    pub runs: Vec<RunReport>,
    /// Tally/PostgreSQL ratios for the workloads both ran.
    pub comparisons: Vec<Comparison>,
}

impl Report {
    /// Fills in the comparisons from the runs (the last run of each target per workload).
    pub fn compare(&mut self) {
        let last = |target: &str, workload: &str| {
            self.runs.iter().rev().find(|r| r.target == target && r.workload == workload)
        };
        let mut workloads: Vec<&str> = Vec::new();
        for run in &self.runs {
            if !workloads.contains(&run.workload.as_str()) {
                workloads.push(&run.workload);
            }
        }
        self.comparisons = workloads
            .into_iter()
            .filter_map(|w| {
                let (t, p) = (last("tally", w)?, last("postgres", w)?);
                Some(Comparison {
                    workload: w.to_owned(),
                    tally_ok_per_s: t.ok_per_s,
                    postgres_ok_per_s: p.ok_per_s,
                    ratio: t.ok_per_s / p.ok_per_s.max(f64::MIN_POSITIVE),
                    tally_p99_ms: t.latency_ms.p99,
                    postgres_p99_ms: p.latency_ms.p99,
                    verified: t.verified && p.verified,
                })
            })
            .collect();
    }

    /// Whether every run's verification passed.
    #[must_use]
    pub fn verified(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| r.verified)
    }

    /// The comparison table for the terminal.
    #[must_use]
    pub fn comparison_table(&self) -> String {
        if self.comparisons.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "workload         tally ok/s   postgres ok/s   tally/postgres   p99 ms tally / postgres\n",
        );
        for c in &self.comparisons {
            out.push_str(&c.line());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Comparison;

    #[test]
    fn a_ratio_of_runs_not_both_verified_is_marked() {
        let c = Comparison {
            workload: "flash-sale".into(),
            tally_ok_per_s: 120_000.0,
            postgres_ok_per_s: 3_000.0,
            ratio: 40.0,
            tally_p99_ms: 60.0,
            postgres_p99_ms: 90.0,
            verified: true,
        };
        assert!(c.line().contains("40.0x") && !c.line().contains("UNVERIFIED"), "{}", c.line());
        let failed = Comparison { verified: false, ..c };
        assert!(failed.line().ends_with("UNVERIFIED: a run failed its verification"));
    }
}
