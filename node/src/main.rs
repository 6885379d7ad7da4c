//! `tallyd`: the Tally node binary. Parses the command line, loads the configuration,
//! starts logging, and calls the library (`tally_node::server`, `tally_node::dev`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally_node::config::{self, LogFormat, NodeConfig, Overrides};
use tally_node::dev::{self, DevOptions};

#[derive(Parser, Debug)]
#[command(name = "tallyd", version, about = "Tally: a Raft-replicated points ledger node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one node until Ctrl-C or SIGTERM.
    ///
    /// Settings come from the TOML file, then TALLY_* variables, then these flags (each
    /// overrides the previous). See deploy/tallyd.example.toml for every field.
    Start(StartArgs),
    /// Runs a local 3-node cluster on loopback (three tallyd processes, data under one
    /// folder), initialises it, prints the endpoints, and stops all three on Ctrl-C.
    Dev(DevArgs),
}

#[derive(clap::Args, Debug)]
struct StartArgs {
    /// TOML configuration file.
    #[arg(long, env = "TALLY_CONFIG")]
    config: Option<PathBuf>,
    /// Raft node id (>= 1, unique in the cluster).
    #[arg(long, env = "TALLY_NODE_ID")]
    node_id: Option<u64>,
    /// Address to listen on for all gRPC services, e.g. 0.0.0.0:7001.
    #[arg(long = "listen", env = "TALLY_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// host:port other nodes and clients use to reach this node (default: --listen).
    #[arg(long = "advertise", env = "TALLY_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// Data directory (RocksDB lives in <data-dir>/rocksdb).
    #[arg(long, env = "TALLY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Initial voters, "1=host:port,2=host:port,3=host:port". The smallest id initialises a
    /// new cluster; ignored once the cluster exists.
    #[arg(long, env = "TALLY_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// Log filter, e.g. "info" or "info,openraft=warn" (RUST_LOG overrides).
    #[arg(long, env = "TALLY_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(clap::Args, Debug)]
struct DevArgs {
    /// Folder holding the three nodes' data and logs (kept across runs).
    #[arg(long, default_value = "tally-dev")]
    data_dir: PathBuf,
    /// Port of node 1; nodes 2 and 3 use the next two.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Delete the data folder first and start an empty cluster.
    #[arg(long)]
    fresh: bool,
}

fn main() -> ExitCode {
    // A panic is a broken invariant: stop the whole process at once, never limp on.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        eprintln!("tallyd: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    match cli.command {
        Command::Start(args) => runtime.block_on(start(args)),
        Command::Dev(args) => runtime.block_on(dev_cluster(args)),
    }
}

async fn start(args: StartArgs) -> ExitCode {
    let bootstrap = match args.bootstrap.as_deref().map(config::parse_bootstrap).transpose() {
        Ok(bootstrap) => bootstrap,
        Err(e) => {
            eprintln!("tallyd: invalid configuration: bootstrap: {e}");
            return ExitCode::from(2);
        }
    };
    let overrides = Overrides {
        node_id: args.node_id,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        data_dir: args.data_dir,
        bootstrap,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let config = match NodeConfig::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tallyd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    tracing::info!(config = %config, "starting tallyd {}", env!("CARGO_PKG_VERSION"));
    match tally_node::server::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tallyd stopped");
            eprintln!("tallyd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev_cluster(args: DevArgs) -> ExitCode {
    let options =
        DevOptions { data_dir: args.data_dir, base_port: args.base_port, fresh: args.fresh };
    match dev::run(options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tallyd dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("tallyd: cannot watch SIGTERM ({e}); Ctrl-C only");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
