//! `tallyd dev`: a local three-node cluster on loopback, the README's first command.
//!
//! What it starts: three child processes of this same executable, `tallyd start`, node `i`
//! listening on `127.0.0.1:<base_port + i - 1>`, all with the same bootstrap list (node 1
//! initialises a new cluster; an existing one just restarts with its balances intact).
//!
//! Where data goes: node `i` keeps its RocksDB in `<data_dir>/node-i/` and writes its log
//! (stdout and stderr) to `<data_dir>/node-i/tallyd.log`, appended across runs.
//! `<data_dir>/tally-dev.toml` records the base port, because the cluster's membership
//! stores the nodes' addresses: a later run on other ports would not reach itself, so it is
//! refused. `<data_dir>/cluster.key` is the cluster key all three nodes are given, written
//! (mode 600, by [`crate::keygen`]) when the folder has none; an operator's
//! `tallyd shards transfer-leader` or `set-replicas` names it with `--cluster-key-file`.
//! `--fresh` removes `<data_dir>` first, and only if it holds nothing but what `tallyd dev`
//! put there.
//!
//! Lifecycle: checks the three ports are free, spawns the nodes (each in its own process
//! group, with no inherited `TALLY_*` settings), waits until all three answer the gRPC
//! health check with `SERVING` (polling every [`READY_POLL_INTERVAL`], at most
//! [`READY_TIMEOUT`]), prints the endpoints, then waits for Ctrl-C, SIGTERM or SIGHUP, or for
//! a node to exit on its own (an error naming it). Stopping: SIGTERM to each node it started
//! (by pid), up to [`CHILD_STOP_TIMEOUT`] each, then SIGKILL.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Nodes in the dev cluster.
pub const DEV_NODES: u16 = 3;
/// How long the nodes may take, together, to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is polled.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long one health check may take.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node may take to stop after SIGTERM before it is killed.
pub const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines of a failed node quoted in the error.
const LOG_TAIL_LINES: usize = 8;
/// The file in `data_dir` recording how the cluster was created.
const MARKER_FILE: &str = "tally-dev.toml";
/// The file in `data_dir` holding the cluster key.
pub const KEY_FILE: &str = "cluster.key";
/// Settings a node must not inherit from the caller's environment.
const NODE_ENV_REMOVED: [&str; 10] = [
    "TALLY_CONFIG",
    "TALLY_NODE_ID",
    "TALLY_LISTEN_ADDR",
    "TALLY_ADVERTISE_ADDR",
    "TALLY_DATA_DIR",
    "TALLY_BOOTSTRAP",
    "TALLY_SHARDS",
    "TALLY_LOG_LEVEL",
    "TALLY_LOG_FORMAT",
    "TALLY_CLUSTER_KEY_FILE",
];

/// `tallyd dev` options.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Folder of the three nodes' data and logs.
    pub data_dir: PathBuf,
    /// Port of node 1 (nodes 2 and 3 use the next ones).
    pub base_port: u16,
    /// Remove `data_dir` first.
    pub fresh: bool,
    /// A config file every node starts with (its node id, addresses, data folder and
    /// bootstrap list are set by the dev cluster and override the file's).
    pub config: Option<PathBuf>,
    /// Data shards of a new cluster (`--shards` of every node); `None` leaves it to the
    /// config file or the default. A kept cluster must be started with its own count.
    pub shards: Option<u32>,
}

/// Why the dev cluster did not start or stopped with an error.
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
    /// A node's port is taken before it starts.
    #[error(
        "node {node} cannot listen on {addr}: {source}. Is an earlier `tallyd dev` (or one of \
         its `tallyd start` nodes) still running? Stop it or choose --base-port"
    )]
    PortInUse {
        /// Node id.
        node: u16,
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node did not start, was not ready in time, or exited.
    #[error("node {node} {what}; its log is {log}{tail}")]
    Node {
        /// Node id.
        node: u16,
        /// What happened.
        what: String,
        /// Its log file.
        log: String,
        /// The last lines of its log, each on its own indented line (may be empty).
        tail: String,
    },
    /// The cluster key could not be written or read.
    #[error("cluster key: {0}")]
    Key(String),
    /// The ports do not fit in u16.
    #[error("--base-port {0} leaves no room for {DEV_NODES} ports")]
    Ports(u16),
    /// The data folder belongs to a cluster created on other ports.
    #[error(
        "{data_dir} holds a cluster created with --base-port {recorded}; its members expect \
         those ports. Run with --base-port {recorded}, or --fresh to start over"
    )]
    BasePort {
        /// The data folder.
        data_dir: String,
        /// The base port it was created with.
        recorded: u16,
    },
    /// `--fresh` was asked for a folder `tallyd dev` did not create.
    #[error(
        "--fresh refuses to delete {data_dir}: it holds {entry:?}, which tallyd dev did not \
         create. Remove the folder yourself or choose another --data-dir"
    )]
    NotDevFolder {
        /// The data folder.
        data_dir: String,
        /// The first unexpected entry.
        entry: String,
    },
}

/// One node process this command started and owns.
struct DevNode {
    /// Raft node id, 1..=`DEV_NODES`.
    id: u16,
    /// `127.0.0.1:<port>`.
    addr: String,
    /// Where its stdout and stderr go.
    log: PathBuf,
    /// The process; `id()` is `None` once it has been reaped, so a recycled pid is never
    /// signalled.
    child: Child,
}

/// How the data folder was created (`<data_dir>/tally-dev.toml`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    base_port: u16,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io { path: path.display().to_string(), source }
}

/// Runs the dev cluster until Ctrl-C, SIGTERM or SIGHUP, or until a node exits.
///
/// # Errors
/// See [`DevError`].
pub async fn run(options: DevOptions) -> Result<(), DevError> {
    run_until(options, ctrl_c_or_sigterm()).await
}

/// Runs the dev cluster until `shutdown` resolves or a node exits.
///
/// # Errors
/// See [`DevError`].
pub async fn run_until(
    options: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let addrs = node_addrs(options.base_port)?;
    check_ports_free(&addrs)?;
    prepare_data_dir(&options)?;
    let mut nodes = spawn_all(&options, &addrs).await?;
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
    if outcome.is_ok() {
        println!("all {DEV_NODES} nodes stopped; data kept in {}", options.data_dir.display());
    }
    outcome
}

/// `127.0.0.1:<port>` of nodes 1..=`DEV_NODES`.
fn node_addrs(base_port: u16) -> Result<Vec<String>, DevError> {
    let last = base_port.checked_add(DEV_NODES - 1).ok_or(DevError::Ports(base_port))?;
    if base_port == 0 {
        return Err(DevError::Ports(base_port));
    }
    Ok((base_port..=last).map(|port| format!("127.0.0.1:{port}")).collect())
}

/// Applies `--fresh`, checks or writes the base-port marker, then writes the cluster key
/// if there is none and checks it.
fn prepare_data_dir(options: &DevOptions) -> Result<(), DevError> {
    let dir = &options.data_dir;
    if options.fresh && dir.exists() {
        check_dev_folder(dir)?;
        std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let marker = dir.join(MARKER_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(text) => check_marker(dir, &marker, &text, options.base_port),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "# Written by `tallyd dev`: the ports this cluster was created on.\n\
                 base_port = {}\n",
                options.base_port
            );
            std::fs::write(&marker, text).map_err(io_error(&marker))
        }
        Err(e) => Err(io_error(&marker)(e)),
    }?;
    let key = dir.join(KEY_FILE);
    if !key.exists() {
        crate::keygen::write_new(&key).map_err(DevError::Key)?;
    }
    tally_proto::auth::ClusterKey::read_file(&key).map(drop).map_err(DevError::Key)
}

fn check_marker(dir: &Path, marker: &Path, text: &str, base_port: u16) -> Result<(), DevError> {
    let recorded = toml::from_str::<Marker>(text).map_err(|e| DevError::Io {
        path: marker.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    if recorded.base_port != base_port {
        return Err(DevError::BasePort {
            data_dir: dir.display().to_string(),
            recorded: recorded.base_port,
        });
    }
    Ok(())
}

/// Refuses to delete a folder holding anything but the marker, the key and `node-<n>`
/// folders.
fn check_dev_folder(dir: &Path) -> Result<(), DevError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name().to_string_lossy().into_owned();
        let is_node =
            name.strip_prefix("node-").is_some_and(|n| n.parse::<u16>().is_ok_and(|n| n >= 1));
        if name != MARKER_FILE && name != KEY_FILE && !is_node {
            return Err(DevError::NotDevFolder {
                data_dir: dir.display().to_string(),
                entry: name,
            });
        }
    }
    Ok(())
}

/// Binds and releases each port, so a taken one is reported before any node starts.
fn check_ports_free(addrs: &[String]) -> Result<(), DevError> {
    for (id, addr) in (1..=DEV_NODES).zip(addrs) {
        std::net::TcpListener::bind(addr.as_str()).map_err(|source| DevError::PortInUse {
            node: id,
            addr: addr.clone(),
            source,
        })?;
    }
    Ok(())
}

async fn spawn_all(options: &DevOptions, addrs: &[String]) -> Result<Vec<DevNode>, DevError> {
    let bootstrap: Vec<String> =
        (1..=DEV_NODES).zip(addrs).map(|(id, addr)| format!("{id}={addr}")).collect();
    let bootstrap = bootstrap.join(",");
    let mut nodes = Vec::new();
    for (id, addr) in (1..=DEV_NODES).zip(addrs) {
        match spawn(options, id, addr, &bootstrap) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

fn spawn(options: &DevOptions, id: u16, addr: &str, bootstrap: &str) -> Result<DevNode, DevError> {
    let dir = options.data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let log = dir.join("tallyd.log");
    let stdout =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(io_error(&log))?;
    let stderr = stdout.try_clone().map_err(io_error(&log))?;
    let exe = std::env::current_exe().map_err(io_error(Path::new("tallyd")))?;
    let mut command = Command::new(exe);
    command
        .arg("start")
        .args(["--node-id", &id.to_string(), "--listen", addr, "--bootstrap", bootstrap])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--cluster-key-file")
        .arg(options.data_dir.join(KEY_FILE))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Ctrl-C reaches this process only; it stops the nodes in one order.
        .process_group(0)
        // Safety net if this future is dropped without `stop_all`.
        .kill_on_drop(true);
    for name in NODE_ENV_REMOVED {
        command.env_remove(name);
    }
    if let Some(config) = &options.config {
        command.arg("--config").arg(config);
    }
    if let Some(shards) = options.shards {
        command.arg("--shards").arg(shards.to_string());
    }
    let child = command.spawn().map_err(|e| DevError::Node {
        node: id,
        what: format!("could not be started: {e}"),
        log: log.display().to_string(),
        tail: String::new(),
    })?;
    Ok(DevNode { id, addr: addr.to_owned(), log, child })
}

/// An error about `node`, quoting the end of its log.
fn node_error(node: &DevNode, what: String) -> DevError {
    DevError::Node {
        node: node.id,
        what,
        log: node.log.display().to_string(),
        tail: log_tail(&node.log),
    }
}

/// The last `LOG_TAIL_LINES` lines of a log, each on a new indented line; empty if none.
fn log_tail(log: &Path) -> String {
    let Ok(bytes) = std::fs::read(log) else { return String::new() };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].iter().map(|line| format!("\n    | {line}")).collect()
}

/// Whether the node at `addr` answers the health check (service `""`) with `SERVING`.
async fn serving(addr: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let endpoint = endpoint.connect_timeout(HEALTH_CHECK_TIMEOUT).timeout(HEALTH_CHECK_TIMEOUT);
    let check = async {
        let channel = endpoint.connect().await.ok()?;
        let request = HealthCheckRequest { service: String::new() };
        HealthClient::new(channel).check(request).await.ok()
    };
    let response = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await.ok().flatten();
    response.is_some_and(|r| r.get_ref().status == ServingStatus::Serving as i32)
}

/// Polls every node until all are `SERVING`; fails at once if one exits, or at the deadline
/// naming the first node not ready.
async fn wait_ready(nodes: &mut [DevNode]) -> Result<(), DevError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = vec![false; nodes.len()];
    loop {
        for (node, ready) in nodes.iter_mut().zip(ready.iter_mut()) {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(node_error(node, format!("exited during start ({status})")));
            }
            if !*ready {
                *ready = serving(&node.addr).await;
            }
        }
        if let Some(late) = ready.iter().position(|r| !r) {
            if Instant::now() >= deadline {
                let what = format!("was not serving {READY_TIMEOUT:?} after start");
                return Err(node_error(&nodes[late], what));
            }
        } else {
            return Ok(());
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

fn print_ready(data_dir: &Path, nodes: &[DevNode]) {
    println!("tally dev cluster ready: {} nodes on loopback", nodes.len());
    for node in nodes {
        println!("  node {}  {}  log {}", node.id, node.addr, node.log.display());
    }
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    println!("endpoints: {}", endpoints.join(","));
    println!("data: {} (kept across runs; --fresh starts over)", data_dir.display());
    println!(
        "cluster key: {} (for `tallyd shards transfer-leader|set-replicas --cluster-key-file`)",
        data_dir.join(KEY_FILE).display()
    );
    println!("Ctrl-C stops all {}.", nodes.len());
}

/// Resolves with an error naming the first node that exits and its exit status.
async fn first_exit(nodes: &mut [DevNode]) -> DevError {
    let waits = nodes.iter_mut().map(|node| {
        Box::pin(async move {
            let what = match node.child.wait().await {
                // A node stops cleanly on SIGTERM, SIGINT or SIGHUP: here one sent to the
                // node, not to `tallyd dev` (e.g. `pkill -P` of this process, whose
                // children the nodes are; `cargo run` execs this binary in its own place).
                Ok(status) if status.success() => format!(
                    "stopped ({status}) as a node does on a signal sent to it rather than to \
                     tallyd dev; stop the dev cluster with Ctrl-C or a signal to tallyd dev"
                ),
                Ok(status) => format!("exited on its own ({status})"),
                Err(e) => format!("could not be watched ({e})"),
            };
            node_error(node, what)
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// SIGTERM to every node still running, then waits up to `CHILD_STOP_TIMEOUT` for each,
/// then SIGKILL. A node that already exited (and was reported) is left alone.
async fn stop_all(nodes: &mut [DevNode]) {
    let mut running = Vec::new();
    for node in nodes.iter_mut() {
        // `id()` is None once the child was reaped: never signal a pid that may be reused.
        let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) else { continue };
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            eprintln!("node {}: SIGTERM to pid {pid} failed: {e}", node.id);
        }
        running.push(node);
    }
    for node in running {
        stop_one(node).await;
    }
}

/// Waits for one signalled node, killing it after `CHILD_STOP_TIMEOUT`.
async fn stop_one(node: &mut DevNode) {
    match tokio::time::timeout(CHILD_STOP_TIMEOUT, node.child.wait()).await {
        Ok(Ok(status)) if !status.success() => {
            eprintln!("node {} stopped with {status}; see {}", node.id, node.log.display());
        }
        Ok(_) => {}
        Err(_) => {
            eprintln!("node {} did not stop within {CHILD_STOP_TIMEOUT:?}; killing it", node.id);
            if let Err(e) = node.child.kill().await {
                eprintln!("node {}: SIGKILL failed: {e}", node.id);
            }
        }
    }
}

/// Resolves on Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed). Used by
/// `tallyd start` and `tallyd dev`.
pub async fn ctrl_c_or_sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        eprintln!("tallyd: cannot watch SIGTERM/SIGHUP; Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, base_port: u16, fresh: bool) -> DevOptions {
        DevOptions { data_dir: dir.to_path_buf(), base_port, fresh, config: None, shards: None }
    }

    #[test]
    fn ports_are_consecutive_and_bounded() {
        // Node i listens on base_port + i - 1; a base port with no room is refused.
        assert_eq!(
            node_addrs(7001).unwrap(),
            vec!["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert!(matches!(node_addrs(65534), Err(DevError::Ports(65534))));
        assert!(matches!(node_addrs(0), Err(DevError::Ports(0))));
        node_addrs(65533).unwrap();
    }

    #[test]
    fn a_taken_port_names_the_node() {
        // A port in use is reported before any node starts, naming the node and address.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let free = "127.0.0.1:0".to_owned();
        let error = check_ports_free(&[free, addr.clone()]).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, DevError::PortInUse { node: 2, .. }), "{text}");
        assert!(text.contains(&addr), "{text}");
    }

    #[test]
    fn data_is_kept_unless_fresh_and_ports_must_match() {
        // A restart keeps the data; other ports on the same data are refused; --fresh
        // starts over.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cluster");
        prepare_data_dir(&options(&dir, 7001, false)).unwrap();
        let key = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
        std::fs::create_dir_all(dir.join("node-1")).unwrap();
        std::fs::write(dir.join("node-1/balance"), "kept").unwrap();
        prepare_data_dir(&options(&dir, 7001, false)).unwrap();
        assert!(dir.join("node-1/balance").exists());
        // The nodes' key is kept with their data.
        assert_eq!(std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(), key);
        let error = prepare_data_dir(&options(&dir, 7101, false)).unwrap_err();
        assert!(matches!(error, DevError::BasePort { recorded: 7001, .. }), "{error}");
        prepare_data_dir(&options(&dir, 7101, true)).unwrap();
        assert!(!dir.join("node-1").exists());
        assert_ne!(
            std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(),
            key,
            "a new cluster, a new key"
        );
        let marker = std::fs::read_to_string(dir.join(MARKER_FILE)).unwrap();
        assert!(marker.contains("base_port = 7101"), "{marker}");
    }

    #[test]
    fn fresh_refuses_a_folder_dev_did_not_create() {
        // --fresh never deletes a folder holding anything tallyd dev did not put there.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("thesis.tex"), "precious").unwrap();
        let error = prepare_data_dir(&options(root.path(), 7001, true)).unwrap_err();
        assert!(matches!(error, DevError::NotDevFolder { .. }), "{error}");
        assert!(root.path().join("thesis.tex").exists());
        std::fs::create_dir(root.path().join("node-x")).unwrap();
        std::fs::remove_file(root.path().join("thesis.tex")).unwrap();
        assert!(prepare_data_dir(&options(root.path(), 7001, true)).is_err());
    }

    #[test]
    fn a_node_error_quotes_the_end_of_its_log() {
        // A failing node's error shows its last log lines, so the cause is on screen.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tallyd.log");
        let lines: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n")).unwrap();
        let tail = log_tail(&log);
        assert!(tail.contains("line 20") && tail.contains("line 13"), "{tail}");
        assert!(!tail.contains("line 12"), "{tail}");
        assert_eq!(log_tail(&dir.path().join("missing.log")), "");
    }

    #[tokio::test]
    async fn nothing_listening_is_not_serving() {
        // The health probe answers false (quickly) when no node listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = Instant::now();
        assert!(!serving(&port.to_string()).await);
        assert!(started.elapsed() <= HEALTH_CHECK_TIMEOUT * 2);
    }
}
