//! `tallyd`: the Tally node binary. Parses the command line, loads the configuration,
//! starts logging, and calls the library (`tally_node::server`, `tally_node::dev`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally_node::config::{self, CliOverrides, LogFormat, NodeConfig};
use tally_node::dev::{self, DevOptions};
use tally_node::server::ServerError;

/// Exit code of a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// What `--version` prints; crash-test builds say so (the chaos suite checks this before
/// it sets failpoints).
#[cfg(feature = "failpoints")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (failpoints)");
#[cfg(not(feature = "failpoints"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser, Debug)]
#[command(
    name = "tallyd",
    version = VERSION,
    about = "Tally: a Raft-replicated points ledger node",
    long_about = "Tally: a Raft-replicated points ledger node.\n\n\
        `tallyd start` runs one node of a cluster; `tallyd dev` runs a local three-node \
        cluster for development. Clients and the other nodes reach a node on one gRPC port \
        (tally.v1 ledger and admin, internal raft, grpc.health.v1, reflection)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one node until Ctrl-C, SIGTERM or SIGHUP.
    ///
    /// Each setting is taken from the first of: this flag, its TALLY_* environment variable,
    /// the --config TOML file, the built-in default. Settings without a flag (raft timing,
    /// group commit, timeouts) are set in the file; deploy/tallyd.example.toml lists every
    /// field with its unit and default. The effective configuration is logged at start.
    #[command(after_help = START_AFTER_HELP)]
    Start(StartArgs),
    /// Runs a local 3-node cluster on loopback until Ctrl-C.
    ///
    /// Starts three `tallyd start` processes on 127.0.0.1:<base-port>..<base-port+2>, node i
    /// keeping its data and its log (tallyd.log) in <data-dir>/node-i. Node 1 initialises
    /// a new cluster; an existing one restarts with its balances. Waits until all three
    /// answer the gRPC health check, prints the endpoints, and stops all three on Ctrl-C,
    /// SIGTERM or SIGHUP, or when one exits on its own (exit code 1).
    Dev(DevArgs),
    /// Shows the cluster's shards (replicas, leaders, map version), moves a shard's
    /// leadership or assigns its replicas, through any node's admin service.
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// Writes a new cluster key: 64 random hex digits, to a new file readable by its owner
    /// only. Give every node of one cluster the same key (`cluster_key_file`).
    Keygen {
        /// The file to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ShardsCommand {
    /// Lists every data shard: leader, preferred leader, term and replicas, as the node
    /// at --endpoint knows them.
    List {
        /// A node's host:port.
        #[arg(long, default_value = "127.0.0.1:7001", value_name = "HOST:PORT")]
        endpoint: String,
    },
    /// Hands a shard's leadership to one of its voters and waits (up to 5 s) until it leads.
    TransferLeader {
        /// A node's host:port (any node: the request goes on to the shard's leader).
        #[arg(long, default_value = "127.0.0.1:7001", value_name = "HOST:PORT")]
        endpoint: String,
        /// The cluster key's file (an operator's call, like a node's).
        #[arg(long, env = "TALLY_CLUSTER_KEY_FILE", value_name = "FILE")]
        cluster_key_file: PathBuf,
        /// The shard, 1..=shards.
        #[arg(long, value_name = "S")]
        shard: u32,
        /// The node id to lead it.
        #[arg(long, value_name = "NODE")]
        to: u64,
    },
    /// Assigns a shard's replicas to a set of nodes (a new shard map version); the shard's
    /// leader then adds the new nodes as learners, lets them catch up, makes them voters
    /// and removes the others. Refused if the map changed between reading and writing it.
    SetReplicas {
        /// A node's host:port (any node: the change goes on to the metadata group's leader).
        #[arg(long, default_value = "127.0.0.1:7001", value_name = "HOST:PORT")]
        endpoint: String,
        /// The cluster key's file (an operator's call, like a node's).
        #[arg(long, env = "TALLY_CLUSTER_KEY_FILE", value_name = "FILE")]
        cluster_key_file: PathBuf,
        /// The shard, 1..=shards.
        #[arg(long, value_name = "S")]
        shard: u32,
        /// The node ids to hold its replicas, comma-separated (e.g. 1,2,3).
        #[arg(long, value_name = "NODES", value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
}

const START_AFTER_HELP: &str = "\
Exit codes: 0 stopped by a signal; 1 failed while running (cannot bind, cannot open storage, \
raft error); 2 invalid configuration (the message names the field) or bad flags.

Examples:
  tallyd start --config /etc/tally/tallyd.toml
  tallyd start --node-id 2 --listen 0.0.0.0:7001 --advertise tally-2.internal:7001 \\
      --data-dir /var/lib/tally --cluster-key-file /etc/tally/cluster.key \\
      --bootstrap 1=tally-1.internal:7001,2=tally-2.internal:7001,3=tally-3.internal:7001";

#[derive(clap::Args, Debug)]
struct StartArgs {
    /// TOML configuration file (every field: deploy/tallyd.example.toml). Without it, the
    /// defaults and the other flags apply.
    #[arg(long, env = "TALLY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Raft node id: >= 1, unique in the cluster, never reused for another machine's data.
    /// [file: node_id; default 1]
    #[arg(long, env = "TALLY_NODE_ID", value_name = "N")]
    node_id: Option<u64>,
    /// Address to listen on for all gRPC services, e.g. 0.0.0.0:7001.
    /// [file: listen_addr; default 127.0.0.1:7001]
    #[arg(long = "listen", env = "TALLY_LISTEN_ADDR", value_name = "ADDR")]
    listen_addr: Option<SocketAddr>,
    /// host:port other nodes and clients use to reach this node; must match this node's
    /// entry in --bootstrap. [file: advertise_addr; default: the listen address]
    #[arg(long = "advertise", env = "TALLY_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    advertise_addr: Option<String>,
    /// Data directory; RocksDB lives in <DIR>/rocksdb. Back it with a disk that honours
    /// fsync. [file: data_dir; default ./tally-data]
    #[arg(long, env = "TALLY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Initial voters, "1=host:port,2=host:port,3=host:port", the same on every node. The
    /// smallest id initialises a new cluster; ignored once the cluster exists. Leave empty
    /// to restart or join. [file: bootstrap; default empty]
    #[arg(long, env = "TALLY_BOOTSTRAP", value_name = "ID=HOST:PORT,...")]
    bootstrap: Option<String>,
    /// Data shards of the cluster (1..=1024), each its own Raft group; fixed when the
    /// cluster is created, the same on every node. [file: shards; default 1]
    #[arg(long, env = "TALLY_SHARDS", value_name = "N")]
    shards: Option<u32>,
    /// Log filter (tracing EnvFilter), e.g. "info" or "info,openraft=warn". RUST_LOG, when
    /// set, takes precedence. [file: log.level; default info]
    #[arg(long, env = "TALLY_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format, written to stderr. [file: log.format; default text]
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// File holding the cluster key, the same on every node, mode 600 (`tallyd keygen`
    /// writes one). Required. [file: cluster_key_file]
    #[arg(long, env = "TALLY_CLUSTER_KEY_FILE", value_name = "FILE")]
    cluster_key_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct DevArgs {
    /// Folder holding the three nodes' data, logs and ports (kept across runs).
    #[arg(long, default_value = "./tally-dev", value_name = "DIR")]
    data_dir: PathBuf,
    /// Port of node 1; nodes 2 and 3 use the next two. A kept cluster must reuse the ports
    /// it was created with.
    #[arg(long, default_value_t = 7001, value_name = "PORT")]
    base_port: u16,
    /// Delete the data folder first (only if it holds nothing but tallyd dev's own files)
    /// and start an empty cluster.
    #[arg(long)]
    fresh: bool,
    /// A config file for every node (e.g. `[raft]` or `[batch]` settings to try); the dev
    /// cluster sets each node's id, addresses, data folder and bootstrap list itself.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data shards of a new cluster (1..=1024), each its own Raft group on all three nodes;
    /// a kept cluster must be given the count it was created with. [default: the config
    /// file's, else 1]
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
}

/// Writes a line to stderr, ignoring failure: unlike `eprintln!`, never panics (and so
/// never turns an exit status into SIGABRT) when stderr is a file on the disk whose filling
/// is what is being reported.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Transparent huge pages for the heap (`docs/OPERATING.md`, "Disk and memory").
///
/// A node keeps its whole shard in memory: hash maps and tables of hundreds of MB that
/// apply reads at random. On 4 KiB pages most of those reads also miss the TLB, and every
/// page the heap grows by is a separate fault. glibc backs its heap with transparent huge
/// pages when the tunable `glibc.malloc.hugetlb=1` is set, which only works from the
/// process's environment at start: so `tallyd start` re-executes itself once with it,
/// unless the operator already set that tunable (either way) in `GLIBC_TUNABLES`.
/// Measured (bench/RESULTS.md, 2026-12-04): 4-shard swaps faster in 7 of 8 alternated
/// pairs (4 % on the mean of 6, up to 15 %), 1-shard swaps about 5 %, 1-shard redemptions
/// unchanged.
mod huge_pages {
    /// The glibc tunable.
    pub(crate) const TUNABLE: &str = "glibc.malloc.hugetlb";

    /// Replaces this process (same pid, arguments and environment) by this binary with
    /// `TUNABLE=1` added to `GLIBC_TUNABLES`, unless that variable already names it.
    /// Returns only if it does not re-execute (or the exec failed, which is said).
    pub(crate) fn reexec_with_malloc_huge_pages() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use std::os::unix::process::CommandExt as _;
            let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
            let Some(value) = with_huge_pages(&current) else {
                return;
            };
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!(
                        "tallyd: cannot find its own binary ({e}): going on without {TUNABLE}"
                    );
                    return;
                }
            };
            let mut args = std::env::args_os();
            let mut command = std::process::Command::new(exe);
            if let Some(arg0) = args.next() {
                command.arg0(arg0);
            }
            let e = command.args(args).env("GLIBC_TUNABLES", value).exec();
            eprintln!("tallyd: cannot re-execute with {TUNABLE}=1 ({e}): going on without");
        }
    }

    /// `GLIBC_TUNABLES` with `TUNABLE=1` added, or `None` if `current` already names
    /// `TUNABLE` (with any value: the operator's choice, or this process re-executed).
    pub(crate) fn with_huge_pages(current: &str) -> Option<String> {
        if entry(current).is_some() {
            None
        } else if current.is_empty() {
            Some(format!("{TUNABLE}=1"))
        } else {
            Some(format!("{current}:{TUNABLE}=1"))
        }
    }

    /// `TUNABLE`'s entry (`name=value`) in the `GLIBC_TUNABLES` value `tunables`.
    fn entry(tunables: &str) -> Option<&str> {
        tunables.split(':').find(|t| t.split('=').next() == Some(TUNABLE))
    }

    /// What the log says: the tunable as set, and the kernel's THP mode.
    pub(crate) fn state() -> String {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let tunable = entry(&tunables).map_or_else(|| format!("{TUNABLE} not set"), str::to_owned);
        let kernel = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map_or_else(|_| "unknown".to_owned(), |mode| mode.trim().to_owned());
        format!("{tunable}; kernel transparent_hugepage: {kernel}")
    }

    #[cfg(test)]
    mod tests {
        use super::with_huge_pages;

        #[test]
        fn the_tunable_is_added_once_and_an_operators_choice_is_kept() {
            assert_eq!(with_huge_pages("").as_deref(), Some("glibc.malloc.hugetlb=1"));
            assert_eq!(
                with_huge_pages("glibc.malloc.arena_max=2").as_deref(),
                Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
            );
            // Set already: by the operator (off or on) or by the re-execution itself.
            assert_eq!(with_huge_pages("glibc.malloc.hugetlb=0"), None);
            assert_eq!(with_huge_pages("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"), None);
            // A tunable whose name only starts the same is another one.
            assert_eq!(
                with_huge_pages("glibc.malloc.hugetlbx=1").as_deref(),
                Some("glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1")
            );
        }
    }
}

fn main() -> ExitCode {
    // A panic is a broken invariant: stop the whole process at once, never limp on.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    if matches!(cli.command, Command::Start(_)) {
        // Before any thread exists: it may replace this process (same pid).
        huge_pages::reexec_with_malloc_huge_pages();
    }
    // Crash-test builds only: failpoints configured by the FAILPOINTS environment variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("tallyd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Start(args) => runtime.block_on(start(args)),
        Command::Dev(args) => runtime.block_on(dev_cluster(args)),
        Command::Shards(command) => runtime.block_on(shards(command)),
        Command::Keygen { out } => keygen(&out),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    match tally_node::keygen::write_new(out) {
        Ok(()) => {
            println!("wrote a new cluster key to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("tallyd keygen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shards(command: ShardsCommand) -> ExitCode {
    let outcome = match command {
        ShardsCommand::List { endpoint } => tally_node::shards_cli::list(&endpoint).await,
        ShardsCommand::TransferLeader { endpoint, cluster_key_file, shard, to } => {
            tally_node::shards_cli::transfer_leader(&endpoint, &cluster_key_file, shard, to).await
        }
        ShardsCommand::SetReplicas { endpoint, cluster_key_file, shard, nodes } => {
            tally_node::shards_cli::set_replicas(&endpoint, &cluster_key_file, shard, &nodes).await
        }
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("tallyd shards: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: StartArgs) -> ExitCode {
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            say!("tallyd: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    tracing::info!(config = %config, "starting tallyd {}", env!("CARGO_PKG_VERSION"));
    tracing::info!(malloc_huge_pages = %huge_pages::state(), "memory");
    match tally_node::server::run(config, dev::ctrl_c_or_sigterm()).await {
        Ok(()) => {
            tracing::info!("tallyd stopped");
            ExitCode::SUCCESS
        }
        // What the server finds the configuration cannot do on this machine (`[memory]`
        // beyond its memory), checked before anything is allocated: like any invalid
        // configuration.
        Err(ServerError::Config(e)) => {
            say!("tallyd: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "tallyd failed");
            say!("tallyd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flags and `TALLY_*` variables (merged by clap) over the file over the defaults.
fn load_config(args: StartArgs) -> Result<NodeConfig, String> {
    let bootstrap = args
        .bootstrap
        .as_deref()
        .map(config::parse_bootstrap)
        .transpose()
        .map_err(|e| format!("bootstrap (--bootstrap / TALLY_BOOTSTRAP): {e}"))?;
    let overrides = CliOverrides {
        node_id: args.node_id,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        data_dir: args.data_dir,
        bootstrap,
        shards: args.shards,
        log_level: args.log_level,
        log_format: args.log_format,
        cluster_key_file: args.cluster_key_file,
    };
    NodeConfig::load(args.config.as_deref(), &overrides).map_err(|e| e.to_string())
}

async fn dev_cluster(args: DevArgs) -> ExitCode {
    let options = DevOptions {
        data_dir: args.data_dir,
        base_port: args.base_port,
        fresh: args.fresh,
        config: args.config,
        shards: args.shards,
    };
    match dev::run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("tallyd dev: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Text or JSON lines on stderr, filtered by `RUST_LOG` if set, else by `log.level`.
fn init_logging(config: &NodeConfig) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&directive).unwrap_or_else(|e| {
                say!("tallyd: ignoring RUST_LOG={directive:?} ({e}); using log.level");
                tracing_subscriber::EnvFilter::new(&config.log.level)
            })
        }
        _ => tracing_subscriber::EnvFilter::new(&config.log.level),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // On a failed write tracing-subscriber reports to stderr with `eprintln!`, which
        // panics when stderr is the failing file (a log on a full disk): the process then
        // aborted before it could report the I/O error that stopped it.
        .log_internal_errors(false)
        .with_ansi(ansi && config.log.format == LogFormat::Text);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own consistency checks: no clashing flags, defaults parse.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_reach_the_config() {
        // Every start flag lands in its config field, above the file and defaults.
        let cli = Cli::try_parse_from([
            "tallyd",
            "start",
            "--node-id",
            "2",
            "--listen",
            "127.0.0.1:7002",
            "--data-dir",
            "/tmp/t2",
            "--bootstrap",
            "1=127.0.0.1:7001,2=127.0.0.1:7002",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--cluster-key-file",
            "/etc/tally/cluster.key",
        ])
        .unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        let config = load_config(args).unwrap();
        assert_eq!((config.node_id, config.advertise_addr.as_str()), (2, "127.0.0.1:7002"));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/t2"));
        assert_eq!(config.bootstrap.len(), 2);
        assert_eq!((config.log.level.as_str(), config.log.format), ("debug", LogFormat::Json));
        assert_eq!(config.cluster_key_file, PathBuf::from("/etc/tally/cluster.key"));
    }

    #[test]
    fn a_bad_bootstrap_flag_names_the_field() {
        // A malformed --bootstrap is a configuration error that says which setting.
        let cli =
            Cli::try_parse_from(["tallyd", "start", "--bootstrap", "1:127.0.0.1:7001"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("not start") };
        let error = load_config(args).unwrap_err();
        assert!(error.starts_with("bootstrap (--bootstrap"), "{error}");
    }
}
