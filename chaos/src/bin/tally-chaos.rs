//! `tally-chaos`: runs chaos scenarios against real `tallyd` processes and checks the
//! invariants. See chaos/README.md.
//!
//! Exit status: 0 when every run passed, 1 when a run found a violation, 2 when the
//! suite itself could not run (no tallyd, a cluster that never started).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tally_chaos::nemesis::{Nemesis, Schedule};
use tally_chaos::run::{Breakage, RunReport, RunSpec, run};

/// The scenarios `--ci` runs: one of each family, short.
const CI_SCENARIOS: [Nemesis; 4] =
    [Nemesis::KillLeader, Nemesis::Pause, Nemesis::IsolateLeader, Nemesis::LeaderStorm];

#[derive(Debug, Parser)]
#[command(about = "Chaos suite: faults against a real Tally cluster, then the invariants I1-I7")]
struct Args {
    /// Scenarios (nemeses) to run, by name; see --list.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Every scenario (the full matrix).
    #[arg(long, conflicts_with = "scenarios")]
    all: bool,
    /// The bounded CI subset (kill-leader, pause, isolate-leader, leader-storm; 15 s of
    /// load and two faults each). A scenario skipped for want of network namespaces fails.
    #[arg(long, conflicts_with_all = ["scenarios", "all"])]
    ci: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Seeds: each scenario runs once per seed.
    #[arg(long = "seed", value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    /// Seconds of workload per run (faults happen within them).
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
    /// Data shards.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Concurrent workload tasks.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    workers: u64,
    /// Faults per run, at most.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Quiet time before each fault, milliseconds.
    #[arg(long, default_value_t = 2000)]
    quiet_ms: u64,
    /// How long each fault is held, milliseconds.
    #[arg(long, default_value_t = 3000)]
    hold_ms: u64,
    /// The nodes' txn_recovery_after_ms.
    #[arg(long, default_value_t = 3000)]
    txn_recovery_after_ms: u64,
    /// The workload client's time per attempt, milliseconds.
    #[arg(long, default_value_t = 1000)]
    attempt_ms: u64,
    /// The workload client's time per call, retries included, milliseconds (shorter than a
    /// failover, so some outcomes stay unknown and must be found resolved one way).
    #[arg(long, default_value_t = 2500)]
    deadline_ms: u64,
    /// Where reports (and, for failed runs, node data and logs) go.
    #[arg(long, default_value = "chaos-results")]
    out: PathBuf,
    /// The tallyd executable (default: next to this one).
    #[arg(long)]
    tallyd: Option<PathBuf>,
    /// Use loopback addresses instead of network namespaces (no network faults).
    #[arg(long)]
    loopback: bool,
    /// Keep every run's node data and logs (default: only failed runs').
    #[arg(long)]
    keep: bool,
    /// Run a deliberately broken build to show the checker catches it: `skip-decision`
    /// (cross-shard transactions posted without their decision record). Needs a tallyd
    /// built with `--features failpoints`; the runs are expected to FAIL.
    #[arg(long = "break", value_parser = ["skip-decision"])]
    breakage: Option<String>,
}

/// Checks `tallyd` can take failpoints (its `--version` says so); why not.
fn has_failpoints(tallyd: &std::path::Path) -> Result<(), String> {
    let output = std::process::Command::new(tallyd)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", tallyd.display()))?;
    let version = String::from_utf8_lossy(&output.stdout);
    if version.contains("(failpoints)") {
        Ok(())
    } else {
        Err(format!(
            "a tallyd built with failpoints is needed (cargo build --release -p tally-node \
             --features failpoints); {} is {:?}",
            tallyd.display(),
            version.trim()
        ))
    }
}

fn scenarios(args: &Args) -> Result<Vec<Nemesis>, String> {
    if args.ci {
        return Ok(CI_SCENARIOS.to_vec());
    }
    if args.all || args.scenarios.is_empty() {
        return Ok(Nemesis::ALL.to_vec());
    }
    args.scenarios
        .iter()
        .map(|name| {
            Nemesis::parse(name).ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                format!("unknown scenario {name:?}; known: {}", names.join(", "))
            })
        })
        .collect()
}

fn tallyd(args: &Args) -> Result<PathBuf, String> {
    let path = match &args.tallyd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))?
            .with_file_name("tallyd"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no tallyd at {}: build it (cargo build --release -p tally-node) or pass --tallyd",
            path.display()
        ))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for n in Nemesis::ALL {
            let needs = [
                (n.needs_network(), "network namespaces"),
                (n.needs_failpoints(), "a failpoints build of tallyd"),
                (n.needs_faketime(), "libfaketime"),
            ];
            let needs: Vec<&str> = needs.iter().filter(|(on, _)| *on).map(|(_, w)| *w).collect();
            if needs.is_empty() {
                println!("{}", n.name());
            } else {
                println!("{}  (needs {})", n.name(), needs.join(", "));
            }
        }
        return ExitCode::SUCCESS;
    }
    let (list, tallyd) = match (scenarios(&args), tallyd(&args)) {
        (Ok(list), Ok(tallyd)) => (list, tallyd),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tally-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let breakage = args.breakage.as_deref().map(|_| Breakage::SkipDecision);
    let failpoints = has_failpoints(&tallyd);
    if breakage.is_some()
        && let Err(e) = &failpoints
    {
        eprintln!("tally-chaos: --break: {e}");
        return ExitCode::from(2);
    }
    let failpoints = failpoints.is_ok();
    let duration = Duration::from_secs(if args.ci { 15 } else { args.duration_s });
    let rounds = if args.ci { 2 } else { args.rounds };
    let charts = match tally_chaos::chart::load_font() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("tally-chaos: no timeline charts: {e}");
            false
        }
    };
    let mut reports: Vec<RunReport> = Vec::new();
    let mut broken = false;
    for &seed in &args.seeds {
        for &nemesis in &list {
            let dir = args.out.join(format!("{}-seed{seed}", nemesis.name()));
            let _ = std::fs::remove_dir_all(&dir);
            let spec = RunSpec {
                nemesis,
                seed,
                nodes: args.nodes,
                shards: args.shards,
                members_per_shard: 16,
                items: 4,
                workers: usize::try_from(args.workers).unwrap_or(8),
                duration,
                schedule: Schedule {
                    rounds,
                    quiet: Duration::from_millis(args.quiet_ms),
                    hold: Duration::from_millis(args.hold_ms),
                },
                txn_recovery_after_ms: args.txn_recovery_after_ms,
                attempt: Duration::from_millis(args.attempt_ms),
                deadline: Duration::from_millis(args.deadline_ms),
                tallyd: tallyd.clone(),
                dir: dir.clone(),
                namespaces: !args.loopback,
                breakage,
                failpoints,
            };
            println!(
                "{}: running (seed {seed}, {} s of load) ...",
                nemesis.name(),
                duration.as_secs()
            );
            match run(&spec).await {
                Ok(report) => {
                    print!("{}", report.summary());
                    if charts && report.skipped.is_none() {
                        let _ = std::fs::create_dir_all(&args.out);
                        let png = args.out.join(format!("{}-seed{seed}.png", nemesis.name()));
                        if let Err(e) = tally_chaos::chart::timeline(&report, &png) {
                            eprintln!("tally-chaos: {e}");
                        }
                    }
                    if report.passed && !args.keep {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    reports.push(report);
                }
                Err(e) => {
                    eprintln!(
                        "{}: the run could not be carried out: {e} (logs in {})",
                        nemesis.name(),
                        dir.display()
                    );
                    broken = true;
                }
            }
        }
    }
    let path = args.out.join("report.json");
    let written = std::fs::create_dir_all(&args.out).and_then(|()| {
        std::fs::write(&path, serde_json::to_vec_pretty(&reports).unwrap_or_default())
    });
    match written {
        Ok(()) => println!("report: {}", path.display()),
        Err(e) => eprintln!("report not written to {}: {e}", path.display()),
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed && r.skipped.is_none())
        .map(|r| r.scenario.as_str())
        .collect();
    let skipped = reports.iter().filter(|r| r.skipped.is_some()).count();
    // Scenarios asked for by name (or by --ci) must run; --all reports its skips.
    if (args.ci || !args.all && !args.scenarios.is_empty()) && skipped > 0 {
        eprintln!("tally-chaos: {skipped} of the scenarios asked for were skipped (see above)");
        broken = true;
    }
    println!(
        "{} runs: {} passed, {} failed {failed:?}, {skipped} skipped",
        reports.len(),
        reports.iter().filter(|r| r.passed).count(),
        failed.len()
    );
    if broken {
        ExitCode::from(2)
    } else if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
