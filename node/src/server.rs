//! One node: opens storage, starts the Raft group of each hosted shard, serves gRPC, and
//! shuts down in one order.
//!
//! Served on `listen_addr` (one port): `tally.v1.LedgerService` (public),
//! `tally.raft.v1.RaftService` (internal), `grpc.health.v1.Health` and server reflection.
//!
//! Shutdown (Ctrl-C / SIGTERM): stop accepting requests and let in-flight ones finish,
//! stop the pulse timer, stop Raft, fsync the WAL.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tally_proto::limits::{GRPC_MESSAGE_BYTES_MAX, RAFT_MESSAGE_BYTES_MAX};
use tally_proto::raft_v1::raft_service_server::RaftServiceServer;
use tally_proto::v1;
use tally_proto::v1::admin_service_server::AdminServiceServer;
use tally_proto::v1::ledger_service_server::LedgerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::NodeConfig;
use crate::raft::log_store::Syncer;
use crate::raft::network::Channels;
use crate::raft::service::RaftServer;
use crate::raft::{self};
use crate::service::admin::AdminApi;
use crate::service::batcher::Batcher;
use crate::service::ledger::LedgerApi;
use crate::service::pulse;
use crate::storage::Storage;
use crate::storage::keys::ShardId;

/// The one shard every node hosts until sharding lands.
pub const DEFAULT_SHARD: ShardId = ShardId(0);

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
}

/// Runs one node until `shutdown` resolves (Ctrl-C / SIGTERM in `tallyd start`).
///
/// # Errors
/// Storage that cannot be opened, an address that cannot be bound, or a fatal raft error.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen_addr, source })?;
    let rocks_path = config.data_dir.join("rocksdb");
    let storage = Storage::open(&rocks_path).map_err(|source| ServerError::Storage {
        path: rocks_path.display().to_string(),
        source,
    })?;
    let syncer = Syncer::start(storage.clone());
    let channels = Channels::default();
    let replica =
        raft::node::start(config.node_id, DEFAULT_SHARD, &storage, syncer, channels, &config.raft)
            .await
            .map_err(ServerError::Raft)?;
    replica.bootstrap(config.node_id, &config.bootstrap).await.map_err(ServerError::Raft)?;

    let (batcher, batcher_task) = Batcher::start(replica.clone(), &config.batch);
    let (stop_tx, stop_rx) = watch::channel(false);
    let pulse_task = tokio::spawn(pulse::run(
        replica.clone(),
        Duration::from_millis(config.pulse_interval_ms),
        stop_rx,
    ));
    let ledger =
        LedgerApi::new(replica.clone(), batcher, Duration::from_millis(config.request_timeout_ms));
    let raft_server = RaftServer::new(HashMap::from([(DEFAULT_SHARD, replica.raft.clone())]));

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
    tracing::info!(node_id = config.node_id, addr = %config.listen_addr, "serving");
    let fatal = parking_lot::Mutex::new(None::<String>);
    let served = tonic::transport::Server::builder()
        .add_service(
            LedgerServiceServer::new(ledger)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize),
        )
        .add_service(
            RaftServiceServer::new(raft_server)
                .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize)
                .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize),
        )
        .add_service(AdminServiceServer::new(AdminApi::new(config.node_id, vec![replica.clone()])))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async {
            // Stop on request, or when the Raft group stopped on an I/O error: a node that
            // cannot write must exit (non-zero) so that it is seen and restarted, not go
            // on answering.
            tokio::select! {
                () = shutdown => {}
                e = replica.stopped() => {
                    tracing::error!(node_id = config.node_id, error = %e, "raft stopped; the node exits");
                    *fatal.lock() = Some(e);
                }
            }
        })
        .await;

    tracing::info!(node_id = config.node_id, "stopping");
    let _ = stop_tx.send(true);
    let _ = pulse_task.await;
    replica.shutdown().await;
    batcher_task.abort();
    // Persist the last checkpoints (written without the WAL) so that a clean restart does
    // not re-apply the log since the last flush, then make the log's tail durable.
    if let Err(e) = storage.flush_state() {
        tracing::error!(error = %e, "final flush of the ledger failed; the next start re-applies from the log");
    }
    if let Err(e) = storage.sync() {
        tracing::error!(error = %e, "final WAL fsync failed");
    }
    served?;
    match fatal.into_inner() {
        Some(e) => Err(ServerError::Raft(format!("raft stopped: {e}"))),
        None => Ok(()),
    }
}
