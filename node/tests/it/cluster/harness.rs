//! The cluster harness: start, stop, kill and restart `tallyd` processes; query their
//! status; wait for conditions.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_proto::auth::{ClusterKey, KeyedChannel};
use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

/// An admin client whose calls carry the cluster key.
pub type KeyedAdmin = AdminServiceClient<KeyedChannel>;

/// One cluster at a time: three processes each already keep both cores busy.
pub static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(1);

/// The port every node of a test cluster listens on (each has its own address).
const PORT: u16 = 7400;

/// Raft tuning for tests: fast elections, and snapshots small enough to trigger.
pub const FAST_RAFT: &str = "
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
";

/// As [`FAST_RAFT`], with a ledger checkpoint every 7 journal writes (a prime, so
/// checkpoints fall inside requests and entries): a crash always leaves some applied
/// entries after the last checkpoint, which recovery must re-apply from the log. A
/// snapshot (and log purge) every 5 entries: the log is purged many times, so a restart
/// finds its entries only if every snapshot's checkpoint was on disk before the purge.
pub const OFTEN_CHECKPOINTED: &str = "
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
checkpoint_writes = 7
snapshot_logs_since_last = 5
logs_to_keep_after_snapshot = 1
";

/// As [`FAST_RAFT`], with a snapshot every 20 entries keeping 5: a node that misses more
/// than that must catch up through a snapshot.
pub const SNAPSHOTTING_RAFT: &str = "
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
snapshot_logs_since_last = 20
logs_to_keep_after_snapshot = 5
";

/// A `tallyd` node of a test cluster.
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// A local cluster of real processes, removed (processes and data) when dropped.
pub struct Cluster {
    pub nodes: Vec<Node>,
    config_path: PathBuf,
    bootstrap: String,
    key_path: PathBuf,
    key: ClusterKey,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` nodes with the given extra TOML (e.g. [`FAST_RAFT`]).
    pub fn start(size: u64, config_toml: &str) -> Self {
        Self::start_with(size, config_toml, &[])
    }

    /// As [`Self::start`], every node with extra environment variables (e.g. `FAILPOINTS`).
    pub fn start_with(size: u64, config_toml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let a = 10 + std::process::id() % 200;
        let b = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed) % 250;
        let nodes: Vec<Node> = (1..=size)
            .map(|id| Node {
                id,
                addr: format!("127.{a}.{b}.{id}:{PORT}"),
                data_dir: dir.path().join(format!("node-{id}")),
                child: None,
            })
            .collect();
        let bootstrap =
            nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        let config_path = dir.path().join("tallyd.toml");
        std::fs::write(&config_path, config_toml).unwrap();
        let key_path = dir.path().join("cluster.key");
        let key = tally_node::keygen::generate().unwrap();
        ClusterKey::write_new_file(&key_path, &key).unwrap();
        let mut cluster = Self { nodes, config_path, bootstrap, key_path, key, _dir: dir };
        for id in 1..=size {
            cluster.spawn_with(id, env);
        }
        cluster
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[usize::try_from(id - 1).unwrap()]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(id - 1).unwrap()]
    }

    /// Starts (or restarts) node `id` on its data directory.
    pub fn spawn(&mut self, id: u64) {
        self.spawn_with(id, &[]);
    }

    /// Waits (at most `limit`) until node `id` exits on its own; its exit status, or
    /// `None` if it still runs. (Used by the `failpoints` crash tests.)
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub fn wait_exit(&mut self, id: u64, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let node = self.node_mut(id);
        let child = node.child.as_mut().expect("node running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                node.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// As [`Self::spawn`], with extra environment variables (e.g. `FAILPOINTS`).
    pub fn spawn_with(&mut self, id: u64, env: &[(&str, &str)]) {
        let (config, bootstrap) = (self.config_path.clone(), self.bootstrap.clone());
        let key_path = self.key_path.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} already running");
        std::fs::create_dir_all(&node.data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data_dir.join("tallyd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tallyd"))
            .arg("start")
            .arg("--config")
            .arg(&config)
            .args(["--node-id", &id.to_string(), "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--bootstrap", &bootstrap, "--log-level", "info"])
            .arg("--cluster-key-file")
            .arg(&key_path)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tallyd");
        node.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self, id: u64) {
        let mut child = self.node_mut(id).child.take().expect("node running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self, id: u64) {
        let mut child = self.node_mut(id).child.take().expect("node running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(status.unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                if !exit.success() {
                    let log = self.node(id).data_dir.join("tallyd.log");
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "node {id} exited with {exit} after SIGTERM; its log ends:\n{}",
                        tail.join("\n")
                    );
                }
                return;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("node {id} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    /// Node `id`'s data folder and the flags it is started with (for a test that starts
    /// it by hand).
    pub fn start_args(&self, id: u64) -> (PathBuf, Vec<String>) {
        let node = self.node(id);
        let args = [
            "start",
            "--config",
            &self.config_path.display().to_string(),
            "--node-id",
            &id.to_string(),
            "--listen",
            &node.addr,
            "--data-dir",
            &node.data_dir.display().to_string(),
            "--bootstrap",
            &self.bootstrap,
            "--cluster-key-file",
            &self.key_path.display().to_string(),
        ];
        (node.data_dir.clone(), args.iter().map(|&a| a.to_owned()).collect())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        Client::builder(self.endpoints())
            .deadline(Duration::from_secs(30))
            .attempt_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// Node `id`'s own view of its first shard, or `None` if it does not answer.
    pub async fn status(&self, id: u64, include_digest: bool) -> Option<v1::ShardStatus> {
        self.shard_status(id, 1, include_digest).await
    }

    /// Node `id`'s own view of `shard`, or `None` if it does not answer.
    pub async fn shard_status(
        &self,
        id: u64,
        shard: u32,
        include_digest: bool,
    ) -> Option<v1::ShardStatus> {
        let mut admin = self.admin(id).await?;
        let reply = admin.node_status(v1::NodeStatusRequest { include_digest }).await.ok()?;
        reply.into_inner().shards.into_iter().find(|s| s.shard_id == shard)
    }

    /// The cluster key the nodes were given (what an operator's or node's call carries).
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// Rewrites the key file every node reads when it starts (e.g. a step of a rotation:
    /// one key, or two on two lines); the harness's own calls then send its first key.
    pub fn set_key_file(&mut self, text: &str) {
        self.key = ClusterKey::parse(text).unwrap();
        std::fs::write(&self.key_path, text).unwrap();
    }

    /// Calls node `id` refused for want of the cluster key since it started, or `None` if
    /// it does not answer.
    pub async fn refused(&self, id: u64) -> Option<u64> {
        let mut admin = self.admin(id).await?;
        let reply = admin.node_status(v1::NodeStatusRequest { include_digest: false }).await;
        Some(reply.ok()?.into_inner().unauthenticated_refused)
    }

    /// Keyed calls node `id` refused as coming from a node of another protocol version
    /// since it started, or `None` if it does not answer.
    #[cfg(feature = "failpoints")]
    pub async fn protocol_refused(&self, id: u64) -> Option<u64> {
        let mut admin = self.admin(id).await?;
        let reply = admin.node_status(v1::NodeStatusRequest { include_digest: false }).await;
        Some(reply.ok()?.into_inner().protocol_mismatch_refused)
    }

    /// An admin client of node `id` whose calls carry the cluster key, as an operator's
    /// do, or `None` if it does not answer.
    pub async fn admin(&self, id: u64) -> Option<KeyedAdmin> {
        let channel = Channel::from_shared(format!("http://{}", self.node(id).addr)).ok()?;
        let channel = channel.connect().await.ok()?;
        Some(AdminServiceClient::with_interceptor(channel, self.key.clone()))
    }

    /// Parts forwarded by all running nodes since they started.
    pub async fn forwarded_parts(&self) -> u64 {
        let mut total = 0;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let mut admin = self.admin(node.id).await.expect("node answers");
            let request = v1::NodeStatusRequest { include_digest: false };
            total += admin.node_status(request).await.unwrap().into_inner().forwarded_parts;
        }
        total
    }

    /// Cross-shard pending transfers the running nodes watch for expiry (`NodeStatus`).
    pub async fn pending_watched(&self) -> u64 {
        let mut total = 0;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(mut admin) = self.admin(node.id).await else { continue };
            let request = v1::NodeStatusRequest { include_digest: false };
            if let Ok(reply) = admin.node_status(request).await {
                total += reply.into_inner().pending_watched;
            }
        }
        total
    }

    /// Node `id`'s shard map, or `None` if it does not answer.
    pub async fn list_shards(&self, id: u64) -> Option<v1::ListShardsReply> {
        let mut admin = self.admin(id).await?;
        Some(admin.list_shards(v1::ListShardsRequest {}).await.ok()?.into_inner())
    }

    /// Whether node `id` is running.
    pub fn running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn wait_leader(&self) -> u64 {
        eventually("a leader is elected", Duration::from_secs(20), || async {
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let status = self.status(node.id, false).await;
                if status.is_some_and(|s| s.role == v1::ReplicaRole::Leader as i32) {
                    return Some(node.id);
                }
            }
            None
        })
        .await
    }

    /// Waits until nodes `ids` have applied the same index, at least `min_applied`, and
    /// returns their common digest (asserting they agree).
    pub async fn wait_converged(&self, ids: &[u64], min_applied: u64) -> Vec<u8> {
        self.wait_shard_converged(1, ids, min_applied).await
    }

    /// As [`Self::wait_converged`], for `shard`.
    pub async fn wait_shard_converged(&self, shard: u32, ids: &[u64], min_applied: u64) -> Vec<u8> {
        eventually("replicas converge", Duration::from_secs(30), || async {
            let mut seen = Vec::new();
            for &id in ids {
                seen.push(self.shard_status(id, shard, true).await?);
            }
            let applied = seen[0].applied_index;
            if applied < min_applied || seen.iter().any(|s| s.applied_index != applied) {
                return None;
            }
            for s in &seen {
                assert_eq!(s.digest, seen[0].digest, "same applied index, different state");
            }
            Some(seen[0].digest.clone())
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
