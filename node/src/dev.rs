//! `tallyd dev`: a local three-node cluster on loopback, the README's first command.
//!
//! Starts three child processes of this same executable (`tallyd start`), node `i` on
//! `127.0.0.1:<base_port + i - 1>` with its data in `<data_dir>/node-i` and its log in
//! `<data_dir>/node-i/tallyd.log`, all with the same bootstrap list (node 1 initialises a
//! new cluster; an existing one just restarts, balances intact). Waits until all three
//! report `SERVING` on the gRPC health check, prints the endpoints, then waits for Ctrl-C /
//! SIGTERM or for a child to exit on its own. Stopping: SIGTERM to each child it started
//! (by pid), up to `CHILD_STOP_TIMEOUT` each, then SIGKILL.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Nodes in the dev cluster.
pub const DEV_NODES: u16 = 3;
/// How long the nodes may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
pub const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `tallyd dev` options.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Folder of the three nodes' data and logs.
    pub data_dir: PathBuf,
    /// Port of node 1 (nodes 2 and 3 use the next ones).
    pub base_port: u16,
    /// Remove `data_dir` first.
    pub fresh: bool,
}

/// Why the dev cluster stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// File system trouble with the data folder.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A node did not start or exited.
    #[error("node {node} {what}; see {log}")]
    Node {
        /// Node id.
        node: u16,
        /// What happened.
        what: String,
        /// Its log file.
        log: String,
    },
    /// The ports do not fit in u16.
    #[error("--base-port {0} leaves no room for {DEV_NODES} ports")]
    Ports(u16),
}

struct DevNode {
    id: u16,
    addr: String,
    log: PathBuf,
    child: Child,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io { path: path.display().to_string(), source }
}

/// Runs the dev cluster until `shutdown` resolves or a node exits.
///
/// # Errors
/// See [`DevError`].
pub async fn run(options: DevOptions, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    let last =
        options.base_port.checked_add(DEV_NODES - 1).ok_or(DevError::Ports(options.base_port))?;
    if options.fresh && options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir).map_err(io_error(&options.data_dir))?;
    }
    let addrs: Vec<String> = (options.base_port..=last).map(|p| format!("127.0.0.1:{p}")).collect();
    let bootstrap: Vec<String> =
        addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let mut nodes = Vec::new();
    for (id, addr) in (1..=DEV_NODES).zip(&addrs) {
        match spawn(&options.data_dir, id, addr, &bootstrap.join(",")) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = wait_ready(&mut nodes).await {
        stop_all(&mut nodes).await;
        return Err(e);
    }
    print_ready(&options.data_dir, &nodes);
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        exited = first_exit(&mut nodes) => Err(exited),
    };
    println!("stopping the dev cluster");
    stop_all(&mut nodes).await;
    outcome
}

fn spawn(data_dir: &Path, id: u16, addr: &str, bootstrap: &str) -> Result<DevNode, DevError> {
    let dir = data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let log = dir.join("tallyd.log");
    let file =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(io_error(&log))?;
    let file_err = file.try_clone().map_err(io_error(&log))?;
    let exe = std::env::current_exe().map_err(io_error(Path::new("tallyd")))?;
    let child = Command::new(exe)
        .arg("start")
        .args(["--node-id", &id.to_string(), "--listen", addr, "--bootstrap", bootstrap])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(file_err))
        .spawn()
        .map_err(|e| DevError::Node {
            node: id,
            what: format!("could not start: {e}"),
            log: log.display().to_string(),
        })?;
    Ok(DevNode { id, addr: addr.to_owned(), log, child })
}

fn node_error(node: &DevNode, what: String) -> DevError {
    DevError::Node { node: node.id, what, log: node.log.display().to_string() }
}

async fn serving(addr: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else { return false };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest { service: String::new() };
    matches!(client.check(request).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

/// Polls every node's health (every 50 ms, up to `READY_TIMEOUT`).
async fn wait_ready(nodes: &mut [DevNode]) -> Result<(), DevError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for node in nodes.iter_mut() {
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(node_error(node, format!("exited during start ({status})")));
            }
            if serving(&node.addr).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(node_error(node, format!("not serving after {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn print_ready(data_dir: &Path, nodes: &[DevNode]) {
    println!(
        "tally dev cluster ready: {} nodes on loopback, data in {}",
        nodes.len(),
        data_dir.display()
    );
    for node in nodes {
        println!("  node {}  {}  log {}", node.id, node.addr, node.log.display());
    }
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    println!("endpoints: {}", endpoints.join(","));
    println!("Ctrl-C stops all three.");
}

async fn first_exit(nodes: &mut [DevNode]) -> DevError {
    let waits = nodes.iter_mut().map(|n| {
        Box::pin(async move {
            let status = n.child.wait().await;
            let what = match status {
                Ok(s) => format!("exited on its own ({s})"),
                Err(e) => format!("could not be watched ({e})"),
            };
            DevError::Node { node: n.id, what, log: n.log.display().to_string() }
        })
    });
    futures_util::future::select_all(waits).await.0
}

async fn stop_all(nodes: &mut [DevNode]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        if tokio::time::timeout(CHILD_STOP_TIMEOUT, node.child.wait()).await.is_err() {
            eprintln!("node {} did not stop within {CHILD_STOP_TIMEOUT:?}; killing it", node.id);
            let _ = node.child.kill().await;
        }
    }
}
