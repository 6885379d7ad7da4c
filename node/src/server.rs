//! One node: opens storage, starts the Raft group of the metadata group (shard 0, the shard
//! map) and of each data shard, serves gRPC, and shuts down in one order.
//!
//! Served on `listen_addr` (one port): `tally.v1.LedgerService` (public),
//! `tally.v1.AdminService`, `tally.raft.v1.RaftService` (internal), `grpc.health.v1.Health`
//! and server reflection. Node-only calls (every Raft call, ledger requests routed by a
//! node, leadership and replica changes) must carry the cluster key
//! (`tally_proto::auth`), read from `cluster_key_file` before anything else is opened.
//!
//! Shutdown (Ctrl-C / SIGTERM): hand the leadership of every shard this node leads to a
//! caught-up voter (still serving meanwhile, at most `HANDOVER_WAIT`), stop accepting
//! requests and let in-flight ones finish, stop the timers, stop Raft, persist the last
//! checkpoints, fsync the WAL.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tally_proto::auth::ClusterKey;
use tally_proto::limits::{
    GRPC_MESSAGE_BYTES_MAX, HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_FRAME_BYTES_MAX,
    HTTP2_PENDING_ACCEPT_RESETS_MAX, HTTP2_STREAM_WINDOW_BYTES, RAFT_MESSAGE_BYTES_MAX,
};
use tally_proto::raft_v1::raft_service_server::RaftServiceServer;
use tally_proto::v1;
use tally_proto::v1::admin_service_server::AdminServiceServer;
use tally_proto::v1::ledger_service_server::LedgerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::{ConfigError, NodeConfig, machine_memory_bytes};
use crate::ledger::memory_store::Capacity;
use crate::raft::log_store::Writer;
use crate::raft::network::{Channels, PEER_KEEPALIVE_INTERVAL, PEER_KEEPALIVE_TIMEOUT};
use crate::raft::node::Replica;
use crate::raft::service::RaftServer;
use crate::raft::{self};
use crate::service::admin::AdminApi;
use crate::service::batcher::Batcher;
use crate::service::ledger::{LedgerApi, LocalShard};
use crate::service::shard_map::{self, MAP_SHARD, Metadata};
use crate::service::{placement, pulse};
use crate::storage::Storage;
use crate::storage::keys::ShardId;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// RocksDB could not be opened.
    #[error("cannot open storage at {path}: {source}")]
    Storage {
        /// The RocksDB directory.
        path: String,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// Raft could not start or bootstrap.
    #[error("raft: {0}")]
    Raft(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The configuration does not fit this machine (e.g. `[memory]` beyond its memory).
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// This node's protocol version (`tally_proto::auth`): [`NODE_PROTOCOL_VERSION`], or
/// in a `failpoints` build with `node::protocol_version=return(N)`, N (tests run a node as
/// a build of another version would).
///
/// [`NODE_PROTOCOL_VERSION`]: tally_proto::auth::NODE_PROTOCOL_VERSION
fn protocol_version() -> u32 {
    fail::fail_point!("node::protocol_version", |v: Option<String>| v
        .and_then(|v| v.parse().ok())
        .unwrap_or(0));
    tally_proto::auth::NODE_PROTOCOL_VERSION
}

/// Runs one node until `shutdown` resolves (Ctrl-C / SIGTERM in `tallyd start`).
///
/// # Errors
/// Storage that cannot be opened, an address that cannot be bound, or a fatal raft error.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    config.memory.check(config.shards, machine_memory_bytes())?;
    let key = ClusterKey::read_file(&config.cluster_key_file)
        .map_err(|reason| ConfigError::Invalid { field: "cluster_key_file", reason })?
        .with_protocol(protocol_version());
    let node_protocol = key.protocol();
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen_addr, source })?;
    let rocks_path = config.data_dir.join("rocksdb");
    let storage = Storage::open(&rocks_path, config.storage.direct_io).map_err(|source| {
        ServerError::Storage { path: rocks_path.display().to_string(), source }
    })?;
    storage.check_shard_count(config.shards).map_err(ServerError::Raft)?;
    tracing::info!(
        node_id = config.node_id,
        file_io = %storage.file_io(),
        "storage opened"
    );
    if let Some(mount) = crate::storage::online_discard_mount(&rocks_path) {
        tracing::warn!(
            %mount,
            "the data file system is mounted with online discard: every file RocksDB removes \
             stalls every fsync on it (about 0.75 ms per MB measured); mount it without \
             `discard` and trim it periodically (fstrim), see docs/OPERATING.md"
        );
    }
    if config.memory.bytes_per_replica() > 0 {
        tracing::info!(
            accounts_per_shard = config.memory.accounts_per_shard,
            transfers_per_shard = config.memory.transfers_per_shard,
            mib_per_replica = config.memory.bytes_per_replica() >> 20,
            replicas = config.shards,
            "allocating each shard replica's ledger memory ahead ([memory])"
        );
    }
    let log_writer = Writer::start(storage.clone());
    let channels = Channels::new(key.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut local = BTreeMap::new();
    let mut tasks = Vec::new();
    // Starts (and on a new cluster bootstraps) this node's replica of `shard`.
    let start = |shard: ShardId| {
        let (storage, log_writer, channels) = (&storage, log_writer.clone(), channels.clone());
        let config = &config;
        async move {
            // The metadata group's few records need no memory ahead.
            let capacity =
                if shard == MAP_SHARD { Capacity::default() } else { config.memory.capacity() };
            let (node_id, raft) = (config.node_id, &config.raft);
            let replica =
                raft::node::start(node_id, shard, storage, log_writer, channels, raft, capacity)
                    .await
                    .map_err(ServerError::Raft)?;
            replica
                .bootstrap(config.node_id, &config.bootstrap)
                .await
                .map_err(ServerError::Raft)?;
            Ok::<_, ServerError>(replica)
        }
    };
    // The metadata group (shard 0): the shard map.
    let map_replica = start(MAP_SHARD).await?;
    let meta = Metadata::new(
        config.node_id,
        map_replica.clone(),
        &config.bootstrap,
        config.shards,
        channels.clone(),
    );
    tasks.push(tokio::spawn(meta.clone().track(stop_rx.clone())));
    for shard in (1..=config.shards).map(ShardId) {
        let replica = start(shard).await?;
        let (batcher, batcher_task) = Batcher::start(replica.clone(), &config.batch);
        tasks.push(batcher_task);
        tasks.push(tokio::spawn(pulse::run(
            replica.clone(),
            Duration::from_millis(config.pulse_interval_ms),
            stop_rx.clone(),
        )));
        local.insert(shard, LocalShard { replica, batcher });
    }
    let data_replicas: Vec<Replica> = local.values().map(|l| l.replica.clone()).collect();
    let replicas: Vec<Replica> =
        std::iter::once(map_replica).chain(data_replicas.iter().cloned()).collect();
    tasks.push(tokio::spawn(shard_map::reconcile(
        meta.clone(),
        data_replicas.clone(),
        shard_map::RECONCILE_INTERVAL,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(placement::run(
        replicas.clone(),
        Duration::from_millis(config.raft.leader_balance_interval_ms),
        stop_rx.clone(),
    )));
    tracing::info!(node_id = config.node_id, shards = config.shards, "shards started");
    let counters = std::sync::Arc::new(crate::service::NodeCounters::default());
    let admin = AdminApi::new(
        config.node_id,
        config.shards,
        data_replicas,
        meta.clone(),
        channels.clone(),
        counters.clone(),
        key.clone(),
    );
    let ledger = LedgerApi::new(
        config.shards,
        local,
        meta.clone(),
        channels,
        Duration::from_millis(config.request_timeout_ms),
        counters.clone(),
    );
    let in_progress_ms =
        config.request_timeout_ms + u64::from(crate::service::xshard::TXN_TIMEOUT_S) * 1000;
    if config.txn_recovery_after_ms < in_progress_ms {
        // Safe (recovery decides "void unless already posted" once, and a coordinator's
        // later decision is refused), but transactions still in progress may be voided.
        tracing::warn!(
            txn_recovery_after_ms = config.txn_recovery_after_ms,
            in_progress_ms,
            "txn_recovery_after_ms is below request_timeout_ms plus the 10-s decision \
             timeout: recovery may void cross-shard transactions whose coordinator is \
             still working on them"
        );
    }
    tasks.push(tokio::spawn(crate::service::xshard::recover(
        ledger.clone(),
        crate::service::xshard::RECOVERY_INTERVAL,
        Duration::from_millis(config.txn_recovery_after_ms),
        config.pending_watch_max,
        stop_rx.clone(),
    )));
    // A ledger request carrying a node's headers is refused without the cluster key, and
    // every one routed with an older shard map, before it is served.
    let (ledger_key, ledger_counters) = (key.clone(), counters.clone());
    let ledger_check = move |request: tonic::Request<()>| {
        if crate::service::ledger::carries_node_headers(request.metadata()) {
            ledger_counters.require_key(
                &ledger_key,
                &request,
                "a ledger request routed by a node",
            )?;
        }
        meta.check_version(request.metadata()).map(|()| request)
    };
    let raft_counters = counters.clone();
    let raft_check = move |request: tonic::Request<()>| {
        raft_counters.require_key(&key, &request, "tally.raft.v1.RaftService").map(|()| request)
    };
    let groups = replicas.iter().map(|r| (r.shard, r.raft.clone())).collect();
    let raft_server = RaftServer::new(groups);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LedgerServiceServer<LedgerApi>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    // tonic sets TCP_NODELAY only on listeners it binds itself. Without it, a message that
    // spans several segments waits for the peer's delayed ACK (about 40 ms) before its
    // last segment leaves: every reply or replication RPC above a few KiB took 40+ ms.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tracing::info!(node_id = config.node_id, addr = %config.listen_addr, node_protocol, "serving");
    let fatal = parking_lot::Mutex::new(None::<String>);
    let mut stopped_watch = first_stopped(&replicas);
    let served = tonic::transport::Server::builder()
        .max_frame_size(HTTP2_FRAME_BYTES_MAX)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .http2_max_pending_accept_reset_streams(Some(HTTP2_PENDING_ACCEPT_RESETS_MAX))
        // A connection whose other end vanished (no FIN: a crashed host, a cut network)
        // is found and closed, with its streams, instead of held for ever.
        .http2_keepalive_interval(Some(PEER_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(PEER_KEEPALIVE_TIMEOUT))
        .add_service(
            tonic::service::interceptor::InterceptedService::new(
                LedgerServiceServer::new(ledger)
                    .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize)
                    .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize),
                ledger_check,
            ),
        )
        .add_service(tonic::service::interceptor::InterceptedService::new(
            RaftServiceServer::new(raft_server)
                .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize)
                .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize),
            raft_check,
        ))
        .add_service(
            AdminServiceServer::new(admin)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize),
        )
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async {
            // Stop on request, or when the Raft group stopped on an I/O error: a node that
            // cannot write must exit (non-zero) so that it is seen and restarted, not go
            // on answering.
            tokio::select! {
                () = shutdown => {
                    // Still serving: the new leaders' messages must reach this node.
                    futures_util::future::join_all(replicas.iter().map(Replica::hand_over)).await;
                }
                e = &mut stopped_watch => {
                    let e = e.unwrap_or_else(|e| format!("the Raft watch task ended: {e}"));
                    tracing::error!(node_id = config.node_id, error = %e, "raft stopped; the node exits");
                    *fatal.lock() = Some(e);
                }
            }
        })
        .await;
    stopped_watch.abort();

    tracing::info!(node_id = config.node_id, "stopping");
    let _ = stop_tx.send(true);
    futures_util::future::join_all(replicas.iter().map(Replica::shutdown)).await;
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    drop(replicas);
    drop(log_writer);
    // Persist the last checkpoints (written without the WAL) so that a clean restart does
    // not re-apply the log since the last flush, then make the log's tail durable.
    if let Err(e) = storage.flush_state() {
        tracing::error!(error = %e, "final flush of the ledger failed; the next start re-applies from the log");
    }
    if let Err(e) = storage.sync() {
        tracing::error!(error = %e, "final WAL fsync failed");
    }
    close(storage).await;
    served?;
    match fatal.into_inner() {
        Some(e) => Err(ServerError::Raft(format!("raft stopped: {e}"))),
        None => Ok(()),
    }
}

/// How long a stopping node waits for its last database handles to be released.
pub const STORAGE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes the database once every other handle is gone (at most [`STORAGE_CLOSE_WAIT`];
/// after that, stops its background work and leaves it open, with a warning).
async fn close(mut storage: Storage) {
    let deadline = tokio::time::Instant::now() + STORAGE_CLOSE_WAIT;
    loop {
        match storage.try_close() {
            Ok(()) => return,
            Err(still) if tokio::time::Instant::now() < deadline => {
                storage = still;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(still) => {
                tracing::warn!(
                    "database handles still held at exit; stopping its background work only"
                );
                still.stop_background_work();
                return;
            }
        }
    }
}

/// Watches until one of `replicas` stops on its own (an I/O error); the task's output
/// says which and why.
///
/// A task of its own, not part of the future `main` blocks on: a Raft group's metrics
/// change several times per entry, and each change wakes the watch. On a runtime worker
/// that wake is a queue push; on the thread that runs `main` it was a thread switch each
/// time, about 1,700 a second per node at half of peak (2026-12-07, bench/RESULTS.md).
fn first_stopped(replicas: &[Replica]) -> tokio::task::JoinHandle<String> {
    let replicas = replicas.to_vec();
    tokio::spawn(async move {
        let stops = replicas
            .iter()
            .map(|r| Box::pin(async move { format!("{}: {}", r.shard, r.stopped().await) }));
        futures_util::future::select_all(stops).await.0
    })
}
