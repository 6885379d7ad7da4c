//! A cluster of real `tallyd` processes, one per node, each in its place on the
//! [`Network`]; started, killed, paused and resumed by process id. Every process it
//! started is killed when it is dropped (also after a failure), and nothing else.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tally_client::Client;
use tally_proto::auth::{ClusterKey, KeyedChannel};
use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tokio::time::Instant;

use crate::net::Network;

/// How long one admin call of the suite may take.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the suite polls the cluster while it waits for a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A node's process, if running.
#[derive(Debug, Default)]
struct Proc {
    child: Option<Child>,
    paused: bool,
    /// Extra environment of its starts (e.g. `FAILPOINTS`).
    env: Vec<(String, String)>,
}

/// The cluster under test.
#[derive(Debug)]
pub struct Cluster {
    /// Where the nodes live.
    pub net: Network,
    tallyd: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    bootstrap: String,
    /// The cluster key's file (written by `tallyd keygen`) and the key, which the suite's
    /// leadership and replica changes carry, as an operator's do.
    key_file: PathBuf,
    key: ClusterKey,
    procs: Vec<Proc>,
}

/// A cluster-level failure of the suite itself (not a finding about the cluster).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or process operation.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// `tallyd keygen` failed, or wrote no usable key.
    #[error("cluster key: {0}")]
    Key(String),
    /// The cluster did not reach a state in time.
    #[error("timed out after {0:?} waiting until {1}")]
    Timeout(Duration, String),
}

/// A new cluster key in `dir/cluster.key`, written by `tallyd keygen` (a key left by an
/// earlier run in the same folder is replaced).
fn new_key(tallyd: &Path, dir: &Path) -> Result<(PathBuf, ClusterKey), ClusterError> {
    let path = dir.join("cluster.key");
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(path.display().to_string())(e));
        }
        _ => {}
    }
    let output = std::process::Command::new(tallyd)
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .output()
        .map_err(io(format!("{} keygen", tallyd.display())))?;
    if !output.status.success() {
        return Err(ClusterError::Key(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    let key = ClusterKey::read_file(&path).map_err(ClusterError::Key)?;
    Ok((path, key))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

impl Cluster {
    /// Starts `nodes` nodes of `tallyd` with the node settings `toml` and the extra
    /// environment `env`, keeping data and logs under `dir` (node `i` in `dir/node-i/`).
    ///
    /// # Errors
    /// A folder or a process could not be made.
    pub fn start(
        net: Network,
        nodes: u8,
        tallyd: &Path,
        dir: &Path,
        toml: &str,
        env: &[(String, String)],
    ) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
        let config = dir.join("tallyd.toml");
        std::fs::write(&config, toml).map_err(io(config.display().to_string()))?;
        let (key_file, key) = new_key(tallyd, dir)?;
        let bootstrap =
            (1..=nodes).map(|n| format!("{n}={}", net.addr(n))).collect::<Vec<_>>().join(",");
        let mut cluster = Self {
            net,
            tallyd: tallyd.to_owned(),
            dir: dir.to_owned(),
            config,
            bootstrap,
            key_file,
            key,
            procs: (0..nodes).map(|_| Proc { env: env.to_vec(), ..Proc::default() }).collect(),
        };
        for node in 1..=nodes {
            cluster.spawn(node)?;
        }
        Ok(cluster)
    }

    /// Node ids, `1..=n`.
    #[must_use]
    pub fn nodes(&self) -> Vec<u8> {
        (1..=u8::try_from(self.procs.len()).unwrap_or(u8::MAX)).collect()
    }

    fn proc(&mut self, node: u8) -> &mut Proc {
        &mut self.procs[usize::from(node) - 1]
    }

    /// Node `node`'s data and log folder.
    #[must_use]
    pub fn node_dir(&self, node: u8) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    /// Starts node `node` on its data folder, unless it runs.
    ///
    /// # Errors
    /// The log file or the process could not be made.
    pub fn spawn(&mut self, node: u8) -> Result<(), ClusterError> {
        self.spawn_with(node, &[])
    }

    /// Starts node `node` on its data folder with `extra` environment for this start
    /// only (a failpoint, a skewed clock), unless it runs.
    ///
    /// # Errors
    /// The log file or the process could not be made.
    pub fn spawn_with(&mut self, node: u8, extra: &[(String, String)]) -> Result<(), ClusterError> {
        if self.running(node) {
            return Ok(());
        }
        let dir = self.node_dir(node);
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        let log_path = dir.join("tallyd.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(log_path.display().to_string()))?;
        let err = log.try_clone().map_err(io("log file"))?;
        let mut command = self.net.command(node, &self.tallyd);
        command
            .arg("start")
            .arg("--config")
            .arg(&self.config)
            .args(["--node-id", &node.to_string(), "--listen", &self.net.addr(node)])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--bootstrap", &self.bootstrap])
            .arg("--cluster-key-file")
            .arg(&self.key_file)
            .envs(self.procs[usize::from(node) - 1].env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        for key in [
            "TALLY_CONFIG",
            "TALLY_SHARDS",
            "TALLY_LOG_LEVEL",
            "TALLY_CLUSTER_KEY_FILE",
            "RUST_LOG",
        ] {
            command.env_remove(key);
        }
        let child = command.spawn().map_err(io(format!("start {}", self.tallyd.display())))?;
        let proc = self.proc(node);
        proc.child = Some(child);
        proc.paused = false;
        Ok(())
    }

    /// Whether node `node`'s process runs (paused counts as running); reaps it if it
    /// exited on its own.
    pub fn running(&mut self, node: u8) -> bool {
        let proc = self.proc(node);
        match proc.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                proc.child = None;
                false
            }
            None => false,
        }
    }

    /// The exit status of node `node` if it exited on its own since it was started.
    pub fn exited(&mut self, node: u8) -> Option<ExitStatus> {
        let proc = self.proc(node);
        let status = proc.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            proc.child = None;
        }
        status
    }

    fn signal(&mut self, node: u8, signal: Signal) -> bool {
        let Some(child) = self.proc(node).child.as_ref() else { return false };
        let Ok(pid) = i32::try_from(child.id()) else { return false };
        kill(Pid::from_raw(pid), signal).is_ok()
    }

    /// SIGKILL: no shutdown path runs. Waits until the process is gone.
    pub fn kill(&mut self, node: u8) {
        if self.signal(node, Signal::SIGKILL) {
            let proc = self.proc(node);
            if let Some(mut child) = proc.child.take() {
                let _ = child.wait();
            }
            proc.paused = false;
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&mut self, node: u8) {
        if self.signal(node, Signal::SIGSTOP) {
            self.proc(node).paused = true;
        }
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self, node: u8) {
        if self.proc(node).paused && self.signal(node, Signal::SIGCONT) {
            self.proc(node).paused = false;
        }
    }

    /// Every node's `host:port`.
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        (1..=u8::try_from(self.procs.len()).unwrap_or(u8::MAX)).map(|n| self.net.addr(n)).collect()
    }

    /// A client of every node (attempts of `attempt`, calls of at most `deadline`).
    ///
    /// # Errors
    /// The client's settings were refused.
    pub fn client(
        &self,
        attempt: Duration,
        deadline: Duration,
    ) -> Result<Client, tally_client::ClientError> {
        Client::builder(self.endpoints()).attempt_timeout(attempt).deadline(deadline).build()
    }

    /// An admin connection to node `node` whose calls carry the cluster key, if it answers.
    pub async fn admin(&self, node: u8) -> Option<AdminServiceClient<KeyedChannel>> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.net.addr(node)))
                .ok()?
                .connect_timeout(ADMIN_CALL_TIMEOUT)
                .timeout(ADMIN_CALL_TIMEOUT);
        Some(AdminServiceClient::with_interceptor(endpoint.connect().await.ok()?, self.key.clone()))
    }

    /// The shards as node `node` knows them, if it answers.
    pub async fn shards(&self, node: u8) -> Option<v1::ListShardsReply> {
        let mut admin = self.admin(node).await?;
        admin.list_shards(v1::ListShardsRequest {}).await.ok().map(tonic::Response::into_inner)
    }

    /// Waits (at most `limit`) until every node in `nodes` answers and every shard has a
    /// leader among them that all of them agree on.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`].
    pub async fn wait_settled(&self, nodes: &[u8], limit: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.settled(nodes).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(
                    limit,
                    format!("nodes {nodes:?} agree on a leader of every shard"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn settled(&self, nodes: &[u8]) -> bool {
        let mut seen: Option<Vec<u64>> = None;
        for &node in nodes {
            let Some(reply) = self.shards(node).await else { return false };
            let leaders: Vec<u64> = reply.shard_infos.iter().map(|s| s.leader_id).collect();
            let known = leaders.iter().all(|l| nodes.iter().any(|&n| u64::from(n) == *l));
            // No membership change under way: every group holds the replicas assigned.
            let moved = reply.shard_infos.iter().all(|s| voters(s) == assigned(s));
            if !known || !moved || seen.as_ref().is_some_and(|s| *s != leaders) {
                return false;
            }
            seen = Some(leaders);
        }
        true
    }

    /// Asks node `via` to assign `shard`'s replicas to `nodes` (a new shard map version,
    /// compare-and-set on the version read just before); the error as text.
    ///
    /// # Errors
    /// The node did not answer or refused.
    pub async fn set_replicas(&self, via: u8, shard: u32, nodes: &[u8]) -> Result<u64, String> {
        let mut admin =
            self.admin(via).await.ok_or_else(|| format!("node {via} does not answer"))?;
        let map = admin
            .get_shard_map(v1::GetShardMapRequest {})
            .await
            .map_err(|e| format!("GetShardMap via node {via}: {}", e.message()))?
            .into_inner();
        let request = v1::SetShardReplicasRequest {
            shard_id: shard,
            node_ids: nodes.iter().map(|&n| u64::from(n)).collect(),
            expected_map_version: map.map_version,
        };
        let reply = admin
            .set_shard_replicas(request)
            .await
            .map_err(|e| format!("SetShardReplicas via node {via}: {}", e.message()))?;
        Ok(reply.into_inner().map_version)
    }

    /// Waits (at most `limit`) until node `via` sees `shard`'s group hold exactly its
    /// assigned replicas, each a voter.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`].
    pub async fn wait_replicas(
        &self,
        via: u8,
        shard: u32,
        nodes: &[u8],
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let mut want: Vec<u64> = nodes.iter().map(|&n| u64::from(n)).collect();
        want.sort_unstable();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(reply) = self.shards(via).await
                && let Some(info) = reply.shard_infos.iter().find(|s| s.shard_id == shard)
                && voters(info) == want
                && assigned(info) == want
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(
                    limit,
                    format!("shard {shard}'s replicas are {nodes:?}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The leader of `shard` as the first answering node knows it.
    pub async fn leader_of(&self, shard: u32) -> Option<u8> {
        for node in self.nodes() {
            if let Some(reply) = self.shards(node).await {
                let info = reply.shard_infos.iter().find(|s| s.shard_id == shard)?;
                return u8::try_from(info.leader_id).ok().filter(|&l| l != 0);
            }
        }
        None
    }

    /// Asks node `via` to hand `shard`'s leadership to `to`; whether it did.
    pub async fn transfer_leader(&self, via: u8, shard: u32, to: u8) -> bool {
        let Some(mut admin) = self.admin(via).await else { return false };
        let request = v1::TransferLeaderRequest { shard_id: shard, to_node_id: u64::from(to) };
        admin.transfer_leader(request).await.is_ok()
    }
}

/// A shard's voters, ascending.
fn voters(info: &v1::ShardInfo) -> Vec<u64> {
    let mut ids: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    ids.sort_unstable();
    ids
}

/// The nodes the shard map assigns a shard to, ascending.
fn assigned(info: &v1::ShardInfo) -> Vec<u64> {
    let mut ids = info.assigned_node_ids.clone();
    ids.sort_unstable();
    ids
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes() {
            self.resume(node);
            self.kill(node);
        }
    }
}
