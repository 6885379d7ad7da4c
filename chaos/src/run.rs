//! One chaos run: a fresh cluster, the population, the workload under a nemesis, healing,
//! settling, reading everything back, the checks and the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tally_client::{Client, account_succeeded, transfer_succeeded};
use tally_proto::{u128_of, v1};
use tokio::time::Instant;

use crate::checker::{self, Attempt, Violation};
use crate::cluster::{Cluster, POLL_INTERVAL};
use crate::nemesis::{self, FaultRecord, Nemesis, Schedule};
use crate::net::Network;
use crate::workload::{self, Generator, History, Outcome, Population, Request};

/// How long the cluster may take to elect a leader for every shard (start, healing).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long setup may retry creating the population.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pending-transfer timeout the workload uses (see `workload`).
pub const PENDING_TIMEOUT_MAX: Duration = Duration::from_secs(3);
/// Slack beyond the timeouts for the last expiries and recoveries to be applied.
pub const RESOLVE_SLACK: Duration = Duration::from_secs(20);
/// Ids per lookup request while reading back.
pub const LOOKUP_CHUNK: usize = 2048;
/// How many times a read-back request is tried.
pub const READ_TRIES: u32 = 10;
/// Violations kept per invariant in the report (their total is always given).
pub const VIOLATIONS_SHOWN_MAX: usize = 5;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The nemesis.
    pub nemesis: Nemesis,
    /// Seeds the workload and the nemesis.
    pub seed: u64,
    /// Nodes (3 or 5 are sensible).
    pub nodes: u8,
    /// Data shards.
    pub shards: u32,
    /// Members per shard.
    pub members_per_shard: usize,
    /// Item stock accounts.
    pub items: u128,
    /// Concurrent workload tasks.
    pub workers: usize,
    /// How long the workload runs.
    pub duration: Duration,
    /// The nemesis' schedule.
    pub schedule: Schedule,
    /// The nodes' `txn_recovery_after_ms`.
    pub txn_recovery_after_ms: u64,
    /// The workload client's time per attempt.
    pub attempt: Duration,
    /// The workload client's time per call, retries included: shorter than a failover,
    /// so some outcomes stay unknown and the checker must find them resolved one way.
    pub deadline: Duration,
    /// The `tallyd` executable.
    pub tallyd: PathBuf,
    /// The run's folder (cluster data and logs).
    pub dir: PathBuf,
    /// Try network namespaces (else loopback).
    pub namespaces: bool,
    /// A deliberate breakage to set on every node (failpoints builds), if any.
    pub breakage: Option<Breakage>,
    /// Whether `tallyd` is built with failpoints (`tallyd --version` says so).
    pub failpoints: bool,
}

/// A deliberately broken build, to show the checker catches it (`--break`). Each needs a
/// `tallyd` built with the `failpoints` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Breakage {
    /// Cross-shard transactions are posted without their decision record (failpoint
    /// `coordinator::skip_decision`): the decision leg expires while the others post.
    SkipDecision,
}

impl Breakage {
    /// The node environment that makes it.
    #[must_use]
    pub fn env(self) -> Vec<(String, String)> {
        match self {
            Self::SkipDecision => {
                vec![("FAILPOINTS".to_owned(), "coordinator::skip_decision=return".to_owned())]
            }
        }
    }

    /// Its name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipDecision => "skip-decision",
        }
    }
}

/// One invariant's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// `I1` … `I7`, `model`, or `settled`.
    pub invariant: String,
    /// Whether it held.
    pub passed: bool,
    /// How many violations were found.
    pub violations: usize,
    /// The first few, the first being the smallest counterexample found.
    pub examples: Vec<String>,
}

/// Per-transfer outcome counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Requests sent.
    pub requests: u64,
    /// Requests whose outcome is unknown.
    pub requests_unknown: u64,
    /// Transfers acknowledged (created or exists).
    pub ok: u64,
    /// Transfers refused.
    pub failed: u64,
    /// Transfers of unknown outcome.
    pub unknown: u64,
    /// Unknown transfers found stored after healing.
    pub unknown_applied: u64,
    /// Unknown transfers found absent.
    pub unknown_absent: u64,
    /// Distinct transfer ids sent.
    pub ids: u64,
    /// Of them, found stored.
    pub stored: u64,
}

/// The report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The nemesis' name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The deliberate breakage the nodes ran with, if any.
    pub breakage: Option<Breakage>,
    /// `namespaces` or `loopback` (and why).
    pub network: String,
    /// Nodes, shards.
    pub nodes: u8,
    /// Data shards.
    pub shards: u32,
    /// Seconds of workload.
    pub duration_s: f64,
    /// Seconds the whole run took.
    pub took_s: f64,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// Errors while healing (also reported in `faults`).
    pub heal_errors: Vec<String>,
    /// Outcome counts.
    pub counts: Counts,
    /// Requests per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Acknowledged operations per second of the run.
    pub ok_per_second: Vec<u64>,
    /// The most common errors behind unknown outcomes, with their counts.
    pub unknown_errors: BTreeMap<String, u64>,
    /// Seconds from settling until no account held pending amounts (none if some still
    /// did at the limit).
    pub pending_resolved_s: Option<f64>,
    /// Each invariant.
    pub verdicts: Vec<Verdict>,
    /// Why the run was skipped, if it was.
    pub skipped: Option<String>,
    /// Whether every invariant held (a skipped run passes nothing: false).
    pub passed: bool,
    /// The run's folder (node logs are kept there when it failed).
    pub dir: String,
}

/// Why a run could not be carried out (not a finding about the cluster).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster could not be started or reached.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The client refused its settings.
    #[error(transparent)]
    Client(#[from] tally_client::ClientError),
    /// Setup did not complete in time.
    #[error("setup: {0}")]
    Setup(String),
}

fn node_config(spec: &RunSpec) -> String {
    format!(
        "shards = {}\n\
         txn_recovery_after_ms = {}\n\
         request_timeout_ms = 5000\n\
         [raft]\n\
         heartbeat_interval_ms = 100\n\
         election_timeout_min_ms = 600\n\
         election_timeout_max_ms = 1200\n\
         leader_balance_interval_ms = 1000\n\
         [log]\n\
         level = \"info,openraft=warn\"\n",
        spec.shards, spec.txn_recovery_after_ms
    )
}

/// Runs `spec`.
///
/// # Errors
/// See [`RunError`].
pub async fn run(spec: &RunSpec) -> Result<RunReport, RunError> {
    let began = Instant::now();
    let (net, why_not) = Network::create(spec.nodes, spec.namespaces);
    let network = match &why_not {
        None => net.kind().to_owned(),
        Some(why) => format!("{} ({why})", net.kind()),
    };
    let mut report = RunReport {
        scenario: spec.nemesis.name().to_owned(),
        seed: spec.seed,
        breakage: spec.breakage,
        network,
        nodes: spec.nodes,
        shards: spec.shards,
        duration_s: spec.duration.as_secs_f64(),
        took_s: 0.0,
        faults: Vec::new(),
        heal_errors: Vec::new(),
        counts: Counts::default(),
        kinds: BTreeMap::new(),
        ok_per_second: Vec::new(),
        unknown_errors: BTreeMap::new(),
        pending_resolved_s: None,
        verdicts: Vec::new(),
        skipped: None,
        passed: false,
        dir: spec.dir.display().to_string(),
    };
    if spec.nemesis.needs_network() && !net.faults_possible() {
        report.skipped = Some(format!(
            "{} needs network namespaces; this run is on {}",
            spec.nemesis.name(),
            report.network
        ));
        return Ok(report);
    }
    if spec.nemesis == Nemesis::Ring && spec.nodes < 5 {
        report.skipped = Some(format!(
            "a ring of {} nodes cuts nothing (every pair is adjacent): run it with --nodes 5",
            spec.nodes
        ));
        return Ok(report);
    }
    if spec.nemesis.needs_failpoints() && !spec.failpoints {
        report.skipped = Some(format!(
            "{} needs a tallyd built with failpoints (cargo build --release -p tally-node \
             --features failpoints)",
            spec.nemesis.name()
        ));
        return Ok(report);
    }
    if spec.nemesis.needs_faketime() && nemesis::faketime_lib().is_none() {
        report.skipped = Some(format!(
            "{} needs libfaketime (Debian: apt-get install faketime)",
            spec.nemesis.name()
        ));
        return Ok(report);
    }
    let env = spec.breakage.map(Breakage::env).unwrap_or_default();
    let cluster =
        Cluster::start(net, spec.nodes, &spec.tallyd, &spec.dir, &node_config(spec), &env)?;
    let all = cluster.nodes();
    cluster.wait_settled(&all, SETTLE_TIMEOUT).await?;
    let client = cluster.client(spec.attempt, spec.deadline)?;
    let population = Population::new(spec.shards, spec.members_per_shard, spec.items);
    let funding = setup(&client, &population).await?;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));

    // The load, and the faults beside it.
    let quote_expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(Duration::ZERO, |now| now + workload::QUOTE_VALID_FOR)
        .as_nanos();
    let quote_expires_at = u64::try_from(quote_expires_at).unwrap_or(u64::MAX);
    let generator = Arc::new(parking_lot::Mutex::new(Generator::new(
        population.clone(),
        spec.seed,
        quote_expires_at,
    )));
    let start = Instant::now();
    let end = start + spec.duration;
    let (history, faults) = tokio::join!(
        workload::run(&client, generator, spec.workers, start, spec.duration),
        nemesis::run(&cluster, spec.nemesis, spec.schedule, spec.seed, start, end),
    );
    report.faults = faults;

    // Heal, settle, wait out every timeout, read back, check.
    let healed = nemesis::heal_all(&cluster).await;
    report.heal_errors = healed.errors;
    let settled = cluster.lock().await.wait_settled(&all, SETTLE_TIMEOUT).await;
    // The faults were made as scheduled (at least one, none failing), no node stopped
    // by itself, and the cluster settled afterwards.
    let mut fault_problems: Vec<String> = report
        .faults
        .iter()
        .flat_map(|f| {
            f.errors.iter().map(move |e| format!("{} at {} ms: {e}", f.nemesis.name(), f.at_ms))
        })
        .chain(report.heal_errors.iter().cloned())
        .collect();
    if report.faults.is_empty() {
        fault_problems
            .push("no fault was injected (the load was too short for one round)".to_owned());
    }
    let mut verdicts = vec![
        verdict("faults", fault_problems),
        verdict("no crash", healed.crashed),
        verdict("settled", settled.err().map(|e| e.to_string()).into_iter().collect()),
    ];
    // Every pending transfer and leg must be resolved by then: its timeout, recovery's
    // wait, slack, and how far a wall clock was set ahead (cluster time then stays ahead
    // of real time until the true clock catches up; timeouts run on cluster time).
    let clock_ahead = report.faults.iter().map(|f| f.clock_ahead_ms).max().unwrap_or(0);
    let limit = PENDING_TIMEOUT_MAX
        + Duration::from_millis(spec.txn_recovery_after_ms)
        + RESOLVE_SLACK
        + Duration::from_millis(clock_ahead);
    let waited = Instant::now();
    let accounts = read_settled_accounts(&client, &population.all(), limit).await;
    report.pending_resolved_s = match &accounts {
        Ok(a) if checker::check_resolved(a).is_empty() => Some(waited.elapsed().as_secs_f64()),
        _ => None,
    };
    let mut attempts: Vec<Attempt<'_>> = Vec::new();
    let funding_attempt = Attempt {
        transfers: &funding.0,
        statuses: Some(&funding.1),
        invoked_ns: 0,
        completed_ns: 0,
    };
    attempts.push(funding_attempt);
    attempts.extend(history.requests.iter().map(attempt_of));
    let ids = distinct_ids(&attempts);
    let stored = read_transfers(&client, &ids).await;
    match (accounts, stored) {
        (Ok(accounts), Ok(stored)) => {
            let mut found = checker::check_accounts(&accounts);
            found.extend(checker::check_history(&attempts, &stored, spec.shards));
            found.extend(checker::check_resolved(&accounts));
            found.extend(checker::check_resolutions(&stored, spec.shards));
            found.extend(checker::check_model(&accounts, &stored));
            verdicts.extend(group(found));
            report.counts = counts(&history, &stored, ids.len());
        }
        (accounts, stored) => {
            let why = [accounts.err(), stored.err()].into_iter().flatten().collect::<Vec<_>>();
            verdicts.push(verdict("read back", why));
        }
    }
    report.kinds = kinds(&history);
    report.ok_per_second = ok_per_second(&history, spec.duration);
    report.unknown_errors = unknown_errors(&history);
    report.passed = verdicts.iter().all(|v| v.passed);
    if !report.passed {
        write_history(&spec.dir.join("history.jsonl"), &funding, &history);
    }
    report.verdicts = verdicts;
    report.took_s = began.elapsed().as_secs_f64();
    drop(cluster); // stops the nodes, removes the namespaces
    Ok(report)
}

/// Creates the population's accounts and funds them, retrying (same ids) until every
/// event is created or exists; the funding transfers with their statuses.
async fn setup(
    client: &Client,
    population: &Population,
) -> Result<(Vec<v1::Transfer>, Vec<i32>), RunError> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let accounts = population.accounts();
    loop {
        match client.create_accounts(accounts.clone()).await {
            Ok(results) if results.iter().all(|r| account_succeeded(r.status)) => break,
            Ok(results) => {
                let refused = results.iter().find(|r| !account_succeeded(r.status));
                return Err(RunError::Setup(format!("an account was refused: {refused:?}")));
            }
            Err(e) if Instant::now() >= deadline => return Err(RunError::Setup(e.to_string())),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
    let funding = population.funding();
    loop {
        match client.create_transfers(funding.clone()).await {
            Ok(results) if results.iter().all(|r| transfer_succeeded(r.status)) => {
                let statuses = results.iter().map(|r| r.status).collect();
                return Ok((funding, statuses));
            }
            Ok(results) => {
                let refused = results.iter().find(|r| !transfer_succeeded(r.status));
                return Err(RunError::Setup(format!(
                    "a funding transfer was refused: {refused:?}"
                )));
            }
            Err(e) if Instant::now() >= deadline => return Err(RunError::Setup(e.to_string())),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The history of a failed run, one request per line (funding first), to trace a
/// counterexample: kind, times (ms), statuses or the error, and each transfer's id,
/// accounts, amount, flags, pending id and timeout (ids in hex).
fn write_history(
    path: &std::path::Path,
    funding: &(Vec<v1::Transfer>, Vec<i32>),
    history: &History,
) {
    let line = |kind: &str,
                invoked: f64,
                completed: f64,
                outcome: serde_json::Value,
                transfers: &[v1::Transfer]| {
        let transfers: Vec<serde_json::Value> = transfers
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": format!("{:#x}", u128_of(t.id)),
                    "debit": format!("{:#x}", u128_of(t.debit_account_id)),
                    "credit": format!("{:#x}", u128_of(t.credit_account_id)),
                    "amount": u128_of(t.amount).to_string(),
                    "flags": t.flags,
                    "pending_id": format!("{:#x}", u128_of(t.pending_id)),
                    "timeout": t.timeout,
                })
            })
            .collect();
        serde_json::json!({
            "kind": kind, "invoked_ms": invoked, "completed_ms": completed,
            "outcome": outcome, "transfers": transfers,
        })
        .to_string()
    };
    let mut out = vec![line("funding", 0.0, 0.0, serde_json::json!(funding.1), &funding.0)];
    for r in &history.requests {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out.push(line(
            &r.kind,
            ms(r.invoked),
            ms(r.completed),
            serde_json::json!(r.outcome),
            &r.transfers,
        ));
    }
    if let Err(e) = std::fs::write(path, out.join("\n") + "\n") {
        eprintln!("history not written to {}: {e}", path.display());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn attempt_of(request: &Request) -> Attempt<'_> {
    Attempt {
        transfers: &request.transfers,
        statuses: match &request.outcome {
            Outcome::Replied(statuses) => Some(statuses),
            Outcome::Unknown(_) => None,
        },
        invoked_ns: nanos(request.invoked),
        completed_ns: nanos(request.completed),
    }
}

fn distinct_ids(attempts: &[Attempt<'_>]) -> Vec<u128> {
    let mut ids: Vec<u128> =
        attempts.iter().flat_map(|a| a.transfers.iter().map(|t| u128_of(t.id))).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Reads `ids`' accounts until none holds pending amounts or `limit` passes (I6 then
/// judges what is left); the last read.
async fn read_settled_accounts(
    client: &Client,
    ids: &[u128],
    limit: Duration,
) -> Result<Vec<v1::Account>, String> {
    let deadline = Instant::now() + limit;
    loop {
        let accounts = read_accounts(client, ids).await?;
        if checker::check_resolved(&accounts).is_empty() || Instant::now() >= deadline {
            return Ok(accounts);
        }
        tokio::time::sleep(POLL_INTERVAL * 5).await;
    }
}

async fn read_accounts(client: &Client, ids: &[u128]) -> Result<Vec<v1::Account>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let found = retry(|| client.lookup_accounts(chunk)).await?;
        if found.len() != chunk.len() {
            return Err(format!("{} of {} accounts found", found.len(), chunk.len()));
        }
        out.extend(found);
    }
    Ok(out)
}

async fn read_transfers(client: &Client, ids: &[u128]) -> Result<Vec<v1::Transfer>, String> {
    let mut out = Vec::new();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        out.extend(retry(|| client.lookup_transfers(chunk)).await?);
    }
    Ok(out)
}

async fn retry<T, F, Fut>(call: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, tally_client::ClientError>>,
{
    let mut last = String::new();
    for _ in 0..READ_TRIES {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(format!("read back failed {READ_TRIES} times, last: {last}"))
}

fn verdict(invariant: &str, problems: Vec<String>) -> Verdict {
    Verdict {
        invariant: invariant.to_owned(),
        passed: problems.is_empty(),
        violations: problems.len(),
        examples: problems.into_iter().take(VIOLATIONS_SHOWN_MAX).collect(),
    }
}

/// One verdict per invariant I1–I7 and the model, in that order, passed or not.
fn group(violations: Vec<Violation>) -> Vec<Verdict> {
    let mut by: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for name in ["I1", "I2", "I3", "I4", "I5", "I6", "I7", "model"] {
        by.insert(name, Vec::new());
    }
    for v in violations {
        by.entry(v.invariant()).or_default().push(v.to_string());
    }
    by.into_iter().map(|(name, problems)| verdict(name, problems)).collect()
}

fn counts(history: &History, stored: &[v1::Transfer], ids: usize) -> Counts {
    let stored_ids: std::collections::HashSet<u128> =
        stored.iter().map(|t| u128_of(t.id)).collect();
    let mut c = Counts { ids: ids as u64, stored: stored_ids.len() as u64, ..Counts::default() };
    for r in &history.requests {
        c.requests += 1;
        match &r.outcome {
            Outcome::Replied(statuses) => {
                for &s in statuses {
                    if transfer_succeeded(s) {
                        c.ok += 1;
                    } else {
                        c.failed += 1;
                    }
                }
            }
            Outcome::Unknown(_) => {
                c.requests_unknown += 1;
                for t in &r.transfers {
                    c.unknown += 1;
                    if stored_ids.contains(&u128_of(t.id)) {
                        c.unknown_applied += 1;
                    } else {
                        c.unknown_absent += 1;
                    }
                }
            }
        }
    }
    c
}

fn kinds(history: &History) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for r in &history.requests {
        for kind in r.kind.split('+') {
            *kinds.entry(kind.to_owned()).or_default() += 1;
        }
    }
    kinds
}

fn ok_per_second(history: &History, duration: Duration) -> Vec<u64> {
    let seconds = usize::try_from(duration.as_secs()).unwrap_or(0) + 10;
    let mut out = vec![0_u64; seconds];
    for r in &history.requests {
        let second = usize::try_from(r.completed.as_secs()).unwrap_or(usize::MAX);
        if let (Some(slot), Outcome::Replied(statuses)) = (out.get_mut(second), &r.outcome) {
            *slot += statuses.iter().filter(|&&s| transfer_succeeded(s)).count() as u64;
        }
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

fn unknown_errors(history: &History) -> BTreeMap<String, u64> {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &history.requests {
        if let Outcome::Unknown(e) = &r.outcome {
            let text: String = e.chars().take(200).collect();
            *errors.entry(text).or_default() += 1;
        }
    }
    // The ten most frequent.
    let mut sorted: Vec<(String, u64)> = errors.into_iter().collect();
    sorted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    sorted.into_iter().take(10).collect()
}

impl RunReport {
    /// A few lines for the terminal.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let verdict = match (&self.skipped, self.passed) {
            (Some(why), _) => format!("SKIPPED: {why}"),
            (None, true) => "PASS".to_owned(),
            (None, false) => "FAIL".to_owned(),
        };
        let c = &self.counts;
        let broken =
            self.breakage.map(|b| format!(", BROKEN BUILD: {}", b.name())).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<18} seed {:<6} {}  ({} nodes, {} shards, {}; {:.0} s{broken})",
            self.scenario, self.seed, verdict, self.nodes, self.shards, self.network, self.took_s
        );
        if self.skipped.is_some() {
            return out;
        }
        let _ = writeln!(
            out,
            "  requests {} (unknown {}); transfers ok {} failed {} unknown {} (applied {}, absent {}); faults {}",
            c.requests,
            c.requests_unknown,
            c.ok,
            c.failed,
            c.unknown,
            c.unknown_applied,
            c.unknown_absent,
            self.faults.len()
        );
        for f in &self.faults {
            let errors =
                if f.errors.is_empty() { String::new() } else { format!(" ERRORS {:?}", f.errors) };
            let _ = writeln!(
                out,
                "  fault {:>6} ms .. {:>6} ms  {}{errors}",
                f.at_ms, f.healed_ms, f.what
            );
        }
        if let Some(s) = self.pending_resolved_s {
            let _ = writeln!(out, "  no pending amounts left {s:.1} s after settling");
        }
        for v in &self.verdicts {
            let mark = if v.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  {mark} {:<9} violations {}", v.invariant, v.violations);
            for e in &v.examples {
                let _ = writeln!(out, "         {e}");
            }
        }
        out
    }
}
