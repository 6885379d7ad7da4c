//! `--local`: a throwaway 3-node cluster started with `tallyd dev` in a temporary folder
//! (or a given one), stopped with SIGTERM when the run ends. Only the process started
//! here is signalled; `tallyd dev` stops its own nodes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BenchError;

/// How long the cluster may take to report ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long, after it is ready, the cluster may take to have every shard led by its
/// preferred node (the nodes move leaders there in the first seconds: a run started
/// before would meet those moves, and resend the requests they cut off).
pub const LEADERS_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the shard map is read while waiting for the leaders to settle.
const LEADERS_POLL: Duration = Duration::from_millis(100);
/// How long it may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    child: Child,
    endpoints: Vec<String>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// The `tallyd` next to this executable (cargo puts both in the same target folder).
///
/// # Errors
/// If the current executable's folder cannot be found.
pub fn tallyd_beside_me() -> Result<PathBuf, BenchError> {
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or_else(|| BenchError::Setup("no folder for tally-bench".into()))?;
    Ok(dir.join("tallyd"))
}

impl LocalCluster {
    /// Starts `tallyd dev` on ports `base_port..base_port + 3` with its data in `data_dir`
    /// (a new temporary folder, removed afterwards, if `None`), every node with `config` if
    /// given.
    ///
    /// # Errors
    /// If `tallyd` cannot be started or does not report ready within [`START_TIMEOUT`].
    pub async fn start(
        tallyd: &Path,
        base_port: u16,
        data_dir: Option<PathBuf>,
        config: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let (data_dir, temp) = match data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new().prefix("tally-bench-").tempdir()?;
                (temp.path().join("cluster"), Some(temp))
            }
        };
        // Write back the machine's dirty pages first: the ~500 MB of binaries a build has
        // just written otherwise reach the disk under the first run's WAL fsyncs (a stall
        // of 150-220 ms in the first run of each series of 2026-12-07, bench/RESULTS.md).
        tokio::task::spawn_blocking(nix::unistd::sync)
            .await
            .map_err(|e| BenchError::Setup(format!("sync before the cluster starts: {e}")))?;
        let mut child = Command::new(tallyd)
            .arg("dev")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--base-port")
            .arg(base_port.to_string())
            .args(config.map(|c| [Path::new("--config"), c]).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start {}: {e}", tallyd.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(list) = line.strip_prefix("endpoints: ") {
                    return Ok(Some(list.split(',').map(str::to_owned).collect::<Vec<_>>()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let endpoints = match ready {
            Ok(Ok(Some(endpoints))) => endpoints,
            Ok(Ok(None)) => {
                let status = child.wait().await?;
                return Err(BenchError::Setup(format!(
                    "tallyd dev exited before it was ready ({status}); see its message above"
                )));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(BenchError::Setup(format!(
                    "tallyd dev was not ready within {START_TIMEOUT:?}"
                )));
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let cluster = Self { child, endpoints, data_dir, _temp: temp };
        if !leaders_settled(&cluster.endpoints[0]).await {
            eprintln!(
                "warning: the local cluster's shards were not all led by their preferred nodes \
                 within {LEADERS_SETTLE_TIMEOUT:?}; starting anyway (leaders may still move)"
            );
        }
        Ok(cluster)
    }

    /// The nodes' client addresses.
    #[must_use]
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Where the nodes keep their data and logs.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Stops the cluster: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    ///
    /// # Errors
    /// If the process could not be waited for.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        self.terminate();
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
            eprintln!("tallyd dev did not stop within {STOP_TIMEOUT:?}; killing it");
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// On an early exit (error, panic) the cluster still gets SIGTERM, so `tallyd dev` stops its
/// nodes (a SIGKILL would leave them running: they are in their own process groups).
impl Drop for LocalCluster {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// Waits (at most [`LEADERS_SETTLE_TIMEOUT`]) until the shard map read through `endpoint`
/// shows every shard led by its preferred node; whether it did.
async fn leaders_settled(endpoint: &str) -> bool {
    use tally_proto::v1::{ListShardsRequest, admin_service_client::AdminServiceClient};
    let settled = async {
        let mut admin = None;
        loop {
            if admin.is_none() {
                admin = AdminServiceClient::connect(format!("http://{endpoint}")).await.ok();
            }
            if let Some(client) = admin.as_mut() {
                match client.list_shards(ListShardsRequest {}).await {
                    Ok(map) => {
                        let map = map.into_inner();
                        let led = |s: &tally_proto::v1::ShardInfo| {
                            s.leader_id != 0 && s.leader_id == s.preferred_leader_id
                        };
                        if !map.shard_infos.is_empty() && map.shard_infos.iter().all(led) {
                            return;
                        }
                    }
                    Err(_) => admin = None,
                }
            }
            // The shard map has no change stream: read it again after a short wait.
            tokio::time::sleep(LEADERS_POLL).await;
        }
    };
    tokio::time::timeout(LEADERS_SETTLE_TIMEOUT, settled).await.is_ok()
}
