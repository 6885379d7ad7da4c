//! `tally-bench`: the peak-sale load generator.
//!
//! Loads a loyalty population into Tally (a running cluster, `--endpoints`, or a throwaway
//! local one, `--local`) and, with `--targets tally,postgres`, into PostgreSQL; runs each
//! workload in a closed or open loop against each target in turn; then reads everything
//! back and verifies it. Prints a summary, Tally/PostgreSQL ratios, writes `report.json`
//! and PNG charts into `--out`. Exit status: 0 all verified, 1 a verification failed,
//! 2 the run could not be carried out.
//!
//! ```text
//! tally-bench --local --members 100000 --duration-s 5          # quick look
//! tally-bench --local --workloads redeem-uniform,flash-sale \
//!             --targets tally,postgres --concurrency 64 --batch 64
//! tally-bench --endpoints 10.0.0.1:7001,10.0.0.2:7001 --rate 50000 --concurrency 2048
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tally_bench::BenchError;
use tally_bench::chart;
use tally_bench::driver::{self, LoadSpec};
use tally_bench::local::{LocalCluster, tallyd_beside_me};
use tally_bench::model::Model;
use tally_bench::population::{Ids, PopulationSpec};
use tally_bench::report::{Machine, Report, RunReport};
use tally_bench::scenario::{SwapShards, Workload};
use tally_bench::target::Target;
use tally_bench::target::postgres::PgTarget;
use tally_bench::target::tally::TallyTarget;
use tally_client::Client;
use tally_proto::limits::BATCH_EVENTS_MAX;

/// Longest run accepted, so every load loop stops by itself.
const DURATION_MAX_S: u64 = 3_600;
/// Most client tasks or sessions.
const CONCURRENCY_MAX: u32 = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetName {
    Tally,
    Postgres,
}

#[derive(Parser, Debug)]
#[command(about = "Peak-sale load against Tally (and PostgreSQL side by side), verified")]
struct Args {
    /// Comma-separated addresses of a running Tally cluster.
    #[arg(long, value_delimiter = ',', conflicts_with = "local")]
    endpoints: Vec<String>,
    /// Start a throwaway 3-node cluster with `tallyd dev` for this run.
    #[arg(long)]
    local: bool,
    /// Port of the local cluster's node 1 (nodes 2 and 3 use the next two).
    #[arg(long, default_value_t = 7201)]
    local_base_port: u16,
    /// Keep the local cluster's data in this folder (default: a temporary folder, removed).
    #[arg(long)]
    local_data_dir: Option<PathBuf>,
    /// Run every workload on one population (and, with --local, one cluster), in the order
    /// given, instead of each on a freshly loaded one: later workloads then meet a ledger
    /// grown by the earlier ones.
    #[arg(long)]
    shared_population: bool,
    /// Give merchants, stock, delivered, issuance and supply ordinary (not spread) ids:
    /// on a cluster of several shards most redemptions and earns then become cross-shard
    /// transactions (to measure those).
    #[arg(long)]
    no_spread: bool,
    /// A tallyd config file for every node of the --local cluster (settings to try).
    #[arg(long)]
    local_config: Option<PathBuf>,
    /// The tallyd binary for --local (default: the one next to tally-bench).
    #[arg(long)]
    tallyd: Option<PathBuf>,
    /// Systems to drive, in order, each through every workload.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tally")]
    targets: Vec<TargetName>,
    /// PostgreSQL connection string (see bench/postgres.sh).
    #[arg(long, default_value = "host=127.0.0.1 port=5433 user=postgres dbname=tally")]
    postgres_url: String,
    /// Workloads to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "redeem-uniform")]
    workloads: Vec<Workload>,
    /// Closed loop: client tasks; open loop: sessions (most requests outstanding).
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Operations per request.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// PostgreSQL: connections (default: --concurrency).
    #[arg(long)]
    pg_concurrency: Option<u32>,
    /// PostgreSQL: operations per request, pipelined on one connection (default: --batch).
    #[arg(long)]
    pg_batch: Option<u32>,
    /// Open loop at this many operations per second (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load per workload.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Seconds of load before the measured --duration-s: sent and verified like the rest,
    /// shown in the timeline, left out of the rates and latencies (0..=--duration-s).
    #[arg(long, default_value_t = 0)]
    warmup_s: u64,
    /// Seed of the workload generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Exponent of redeem-zipf's member distribution.
    #[arg(long, default_value_t = 0.99)]
    zipf_exponent: f64,
    /// Which members the swap workload draws: `any`; `same`, only those whose accounts on
    /// the two ledgers share a shard (every swap single-shard); `cross`, only those whose
    /// accounts do not (every swap a cross-shard transaction; needs two shards or more).
    /// Chosen from the cluster's shard map after setup.
    #[arg(long, value_enum, default_value = "any")]
    swap_shards: SwapShards,
    /// Members.
    #[arg(long, default_value_t = 1_000_000)]
    members: u32,
    /// Merchants.
    #[arg(long, default_value_t = 1_000)]
    merchants: u32,
    /// Items.
    #[arg(long, default_value_t = 100)]
    items: u32,
    /// Flash-sale items (the first of the items).
    #[arg(long, default_value_t = 10)]
    hot_items: u32,
    /// Points each member starts with.
    #[arg(long, default_value_t = 100_000)]
    member_points: u64,
    /// Units of stock per item.
    #[arg(long, default_value_t = 1_000_000_000)]
    stock: u64,
    /// Folder for report.json and the charts.
    #[arg(long, default_value = "tally-bench-results")]
    out: PathBuf,
    /// TrueType font for chart text (default: DejaVu Sans from fonts-dejavu-core).
    #[arg(long)]
    font: Option<PathBuf>,
    /// No charts.
    #[arg(long)]
    no_charts: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl Args {
    fn population(&self) -> PopulationSpec {
        PopulationSpec {
            members: self.members,
            merchants: self.merchants,
            items: self.items,
            hot_items: self.hot_items,
            member_points: self.member_points,
            stock: self.stock,
            swaps: self.workloads.contains(&Workload::Swap),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.population().validate()?;
        let batch_max = BATCH_EVENTS_MAX / 2;
        for (name, batch) in [("--batch", Some(self.batch)), ("--pg-batch", self.pg_batch)] {
            if batch.is_some_and(|b| b == 0 || b > batch_max) {
                return Err(format!(
                    "{name} must be 1..={batch_max} (a redemption is 2 transfers)"
                ));
            }
        }
        for (name, n) in
            [("--concurrency", Some(self.concurrency)), ("--pg-concurrency", self.pg_concurrency)]
        {
            if n.is_some_and(|n| n == 0 || n > CONCURRENCY_MAX) {
                return Err(format!("{name} must be 1..={CONCURRENCY_MAX}"));
            }
        }
        if self.duration_s == 0 || self.duration_s > DURATION_MAX_S {
            return Err(format!("--duration-s must be 1..={DURATION_MAX_S}"));
        }
        if self.warmup_s > self.duration_s {
            return Err(format!("--warmup-s must be 0..={} (--duration-s)", self.duration_s));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a positive number of operations per second".into());
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0) {
            return Err("--zipf-exponent must be a positive number".into());
        }
        if self.targets.contains(&TargetName::Tally) && !self.local && self.endpoints.is_empty() {
            return Err("driving tally needs --local or --endpoints".into());
        }
        if self.targets.contains(&TargetName::Postgres) && self.workloads.contains(&Workload::Swap)
        {
            return Err("the swap workload runs against tally only (--targets tally)".into());
        }
        if self.swap_shards != SwapShards::Any && !self.workloads.contains(&Workload::Swap) {
            return Err("--swap-shards applies to the swap workload only".into());
        }
        if self.targets.is_empty() || self.workloads.is_empty() {
            return Err("--targets and --workloads need at least one entry".into());
        }
        Ok(())
    }

    fn load(&self, target: TargetName, workload: Workload) -> LoadSpec {
        let pg = target == TargetName::Postgres;
        LoadSpec {
            workload,
            concurrency: if pg {
                self.pg_concurrency.unwrap_or(self.concurrency)
            } else {
                self.concurrency
            },
            batch: if pg { self.pg_batch.unwrap_or(self.batch) } else { self.batch },
            rate: self.rate,
            duration: Duration::from_secs(self.duration_s),
            warmup: Duration::from_secs(self.warmup_s),
            seed: self.seed,
            zipf_exponent: self.zipf_exponent,
            progress: !self.no_progress,
            swap_shards: self.swap_shards,
            swappers: None,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("tally-bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tally-bench: VERIFICATION FAILED (see above and report.json)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tally-bench: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, BenchError> {
    std::fs::create_dir_all(&args.out)?;
    let charts = !args.no_charts
        && match chart::load_font(args.font.as_deref()) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("charts skipped: {e}");
                false
            }
        };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut report = Report {
        started_unix_s: now.as_secs(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::describe(),
        population: args.population(),
        setup_s: Default::default(),
        runs: Vec::new(),
        comparisons: Vec::new(),
    };
    let mut nonce = 0;
    // Each target alone on the machine: a local cluster lives only while its own runs do.
    for &name in &args.targets {
        for round in rounds(&args.workloads, args.shared_population) {
            // A new nonce per round: the round's population never meets an earlier one's ids.
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            nonce = u64::try_from(now.as_millis()).unwrap_or(1).max(nonce + 1);
            let local = if args.local && name == TargetName::Tally {
                Some(start_local(&args, &round).await?)
            } else {
                None
            };
            let endpoints = local.as_ref().map(|c| c.endpoints().to_vec());
            let result = drive(&args, &mut report, name, &round, endpoints, nonce, charts).await;
            if let Some(cluster) = local {
                cluster.stop().await?;
            }
            result?;
        }
    }
    report.compare();
    print!("{}", report.comparison_table());
    let path = args.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?)?;
    println!("report: {}", path.display());
    Ok(report.verified())
}

/// The workloads grouped by population: each on its own (the default), so every workload
/// starts from the same state and the order of `--workloads` does not bias the figures, or
/// all on one (`--shared-population`), in order.
fn rounds(workloads: &[Workload], shared: bool) -> Vec<Vec<Workload>> {
    if shared { vec![workloads.to_vec()] } else { workloads.iter().map(|&w| vec![w]).collect() }
}

/// What a round is called in `setup_s`, log lines and per-round data folders.
fn round_name(round: &[Workload]) -> String {
    round.iter().map(|w| w.name()).collect::<Vec<_>>().join(",")
}

/// A fresh local cluster for `round`: its data in `--local-data-dir` itself when all
/// workloads share one population, else in a folder per workload inside it.
async fn start_local(args: &Args, round: &[Workload]) -> Result<LocalCluster, BenchError> {
    let tallyd = match &args.tallyd {
        Some(path) => path.clone(),
        None => tallyd_beside_me()?,
    };
    let data_dir = args
        .local_data_dir
        .as_ref()
        .map(|dir| if args.shared_population { dir.clone() } else { dir.join(round_name(round)) });
    let cluster =
        LocalCluster::start(&tallyd, args.local_base_port, data_dir, args.local_config.as_deref())
            .await?;
    println!(
        "local cluster for {}: {} (data {})",
        round_name(round),
        cluster.endpoints().join(","),
        cluster.data_dir().display()
    );
    Ok(cluster)
}

/// Loads a population into target `name`, then runs `round`'s workloads on it in order,
/// each verified; adds the runs to `report`.
async fn drive(
    args: &Args,
    report: &mut Report,
    name: TargetName,
    round: &[Workload],
    local: Option<Vec<String>>,
    nonce: u64,
    charts: bool,
) -> Result<(), BenchError> {
    let spec = args.population();
    let mut tally: Option<(Client, Ids)> = None;
    let target = match name {
        TargetName::Tally => {
            let endpoints = local.unwrap_or_else(|| args.endpoints.clone());
            let client = Client::builder(endpoints).deadline(Duration::from_secs(60)).build()?;
            let ids = Ids::new(nonce).with_spread(!args.no_spread);
            tally = Some((client.clone(), ids));
            Target::Tally(TallyTarget::new(client, ids))
        }
        TargetName::Postgres => Target::Postgres(PgTarget::new(args.postgres_url.clone())),
    };
    let seqs = Arc::new(AtomicU64::new(1));
    let mut model = Model::new(spec);
    let started = Instant::now();
    let what = round_name(round);
    println!("{}: loading {} accounts for {what} ...", target.name(), spec.accounts());
    target.setup(&spec, &seqs).await?;
    let took = started.elapsed().as_secs_f64();
    println!("{}: population loaded in {took:.1} s", target.name());
    report.setup_s.insert(format!("{}/{what}", target.name()), took);
    let swappers = match (&tally, args.swap_shards) {
        (Some((client, ids)), mode)
            if mode != SwapShards::Any && round.contains(&Workload::Swap) =>
        {
            Some(swappers(client, ids, spec.members, mode).await?)
        }
        _ => None,
    };
    for &workload in round {
        let mut load = args.load(name, workload);
        if workload == Workload::Swap {
            load.swappers.clone_from(&swappers);
        }
        // Counted per run: what setup or the last read-back resent is not this run's.
        let _ = target.take_retries();
        let stats = driver::run(&target, spec, &load, &seqs).await?;
        let retries = target.take_retries();
        let verification = target.verify(&mut model, &stats.records).await?;
        let mut run = RunReport::new(target.name(), &load, &stats, verification);
        run.unknown_errors = target.take_errors();
        run.client_retries = retries;
        if charts {
            let stem = format!("{}-{}", run.target, run.workload);
            match chart::write(&run, &args.out, &stem) {
                Ok(paths) => run.charts = paths.iter().map(|p| p.display().to_string()).collect(),
                Err(e) => eprintln!("chart not written: {e}"),
            }
        }
        print!("{}", run.summary());
        report.runs.push(run);
    }
    Ok(())
}

/// The members whose two swap accounts share a shard (`Same`) or not (`Cross`), by the
/// shard map `client` holds; an error if there are none (e.g. `cross` on one shard).
async fn swappers(
    client: &Client,
    ids: &Ids,
    members: u32,
    mode: SwapShards,
) -> Result<std::sync::Arc<[u32]>, BenchError> {
    let Some(shards) = client.shard_count().await else {
        return Err(BenchError::Setup(format!(
            "--swap-shards {}: no endpoint answered with the cluster's shard map",
            mode.name()
        )));
    };
    let list = ids.swappers(members, shards, mode == SwapShards::Same);
    println!(
        "tally: swaps drawn from the {} of {members} members whose two accounts are {} ({shards} shard(s))",
        list.len(),
        if mode == SwapShards::Same { "on one shard" } else { "on different shards" }
    );
    if list.is_empty() {
        return Err(BenchError::Setup(format!(
            "--swap-shards {}: no member qualifies on {shards} shard(s)",
            mode.name()
        )));
    }
    Ok(list.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_gets_its_own_population_unless_shared() {
        let all = [Workload::RedeemUniform, Workload::FlashSale, Workload::Earn];
        let own = rounds(&all, false);
        assert_eq!(own, vec![vec![all[0]], vec![all[1]], vec![all[2]]]);
        assert_eq!(
            own.iter().map(|r| round_name(r)).collect::<Vec<_>>(),
            ["redeem-uniform", "flash-sale", "earn"]
        );
        let shared = rounds(&all, true);
        assert_eq!(shared, vec![all.to_vec()]);
        assert_eq!(round_name(&shared[0]), "redeem-uniform,flash-sale,earn");
    }
}
