//! The client side of the internal `tally.raft.v1` service: how a node's Raft groups reach
//! the other nodes.
//!
//! One HTTP/2 channel per peer address, shared by every shard's group ([`Channels`]) and by
//! the services' forwarded calls; every call on it carries the cluster key
//! (`tally_proto::auth`). Each message names its shard. openraft's messages travel as postcard bytes, so this file is
//! the only place that translates between openraft and the wire.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use parking_lot::Mutex;
use tally_proto::auth::{ClusterKey, KeyedChannel};
use tally_proto::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_STREAM_WINDOW_BYTES, RAFT_MESSAGE_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
};
use tally_proto::raft_v1::raft_service_client::RaftServiceClient;
use tally_proto::raft_v1::{RaftMessage, SnapshotChunk};
use tonic::transport::{Channel, Endpoint};

use super::state_machine::SnapshotData;
use super::{NodeId, TypeConfig, decode, encode};
use crate::storage::keys::ShardId;

/// How long a connection attempt to a peer may take.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 keepalive on peer connections: a PING after this much silence (also while no
/// call is in flight)...
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ...and the connection is closed if the PING is not answered within this. So a peer that
/// vanished without closing its connection (a half-open TCP connection: power loss, a
/// partition) fails the calls in flight on it within about 15 s, and the next call
/// reconnects, instead of a snapshot stream or a forwarded request waiting forever.
/// (Generous on purpose: a peer starved of CPU at peak answers late, and closing its
/// connection would fail every call in flight on it.)
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time an AppendEntries sent by replication may take. openraft gives replication
/// RPCs one heartbeat interval (100 ms by default), which a full batch (megabytes, plus the
/// follower's fsync), or even an empty append on a CPU-starved machine, can exceed: timing
/// it out would only resend the same bytes. (Heartbeats are cut at one interval by openraft
/// itself whatever this says; a late heartbeat only logs a warning, and the election
/// timeout is what tolerates it.) A timed-out RPC is reported as `RPCError::Timeout`, not
/// `Unreachable`: openraft backs replication to an unreachable peer off for 200 ms to 1 s,
/// which a peer that is merely slow must not cost (measured: 0.5-1 s commit stalls under
/// peak load when both followers were marked unreachable).
pub const APPEND_ENTRIES_TIMEOUT_MIN: Duration = Duration::from_secs(2);

/// A channel to a peer whose every call carries the cluster key.
pub type NodeChannel = KeyedChannel;

/// Lazily connected channels to peers, by address, shared by all groups of a node.
#[derive(Clone, Debug)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    key: ClusterKey,
}

impl Channels {
    /// No channel yet; every call on one will carry `key`.
    #[must_use]
    pub fn new(key: ClusterKey) -> Self {
        Self { by_addr: Arc::default(), key }
    }

    /// The channel to `addr`, created (lazily connecting) on first use.
    ///
    /// # Errors
    /// `addr` does not make a valid URI.
    pub fn get(&self, addr: &str) -> Result<NodeChannel, tonic::transport::Error> {
        let keyed = |channel: &Channel| KeyedChannel::new(channel.clone(), self.key.clone());
        let mut by_addr = self.by_addr.lock();
        if let Some(channel) = by_addr.get(addr) {
            return Ok(keyed(channel));
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Fixed windows, not the adaptive one (which starts at 64 KiB): h2 closes a
            // connection (`ENHANCE_YOUR_CALM`, "too_many_data_frames") once the small DATA
            // frames it holds unread exceed half its connection window, and replies to
            // replication and heartbeats are small. At 64 KiB that was ~150 unread replies,
            // reached at 16 shards with the CPU saturated; at 32 MiB it is ~75,000.
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let peer = keyed(&channel);
        by_addr.insert(addr.to_owned(), channel);
        Ok(peer)
    }
}

/// Creates one [`Connection`] per peer for a shard's group.
#[derive(Clone, Debug)]
pub struct Network {
    id: NodeId,
    shard: ShardId,
    channels: Channels,
}

impl Network {
    /// The network of node `id`'s replica of `shard`'s group, over the node's shared channels.
    #[must_use]
    pub fn new(id: NodeId, shard: ShardId, channels: Channels) -> Self {
        Self { id, shard, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            id: self.id,
            shard: self.shard,
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// A shard group's connection to one peer.
#[derive(Debug)]
pub struct Connection {
    id: NodeId,
    shard: ShardId,
    target: NodeId,
    addr: String,
    channels: Channels,
}

type RpcError = RPCError<TypeConfig>;

fn unreachable(e: &(impl std::error::Error + 'static)) -> RpcError {
    RPCError::Unreachable(Unreachable::new(e))
}

fn network(e: &(impl std::error::Error + 'static)) -> RpcError {
    RPCError::Network(NetworkError::new(e))
}

/// Whether tonic's own request deadline (`TimeoutExpired`) is in `status`'s error chain.
pub(crate) fn caused_by_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

impl Connection {
    /// A failed call as openraft should see it: a timeout (tonic's own deadline, a
    /// `Cancelled` status caused by `TimeoutExpired`; or the server's `DeadlineExceeded`) is
    /// a `Timeout`; a refused, closed or reset connection (`Unavailable`, any other
    /// `Cancelled`) is `Unreachable`; anything else a `Network` error.
    fn status_error(&self, status: &tonic::Status, action: RPCTypes, ttl: Duration) -> RpcError {
        let timeout = || {
            RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout: ttl })
        };
        match status.code() {
            tonic::Code::DeadlineExceeded => timeout(),
            tonic::Code::Cancelled if caused_by_timeout(status) => timeout(),
            tonic::Code::Cancelled | tonic::Code::Unavailable => unreachable(status),
            _ => network(status),
        }
    }

    fn client(&self) -> Result<RaftServiceClient<NodeChannel>, RpcError> {
        let channel = self.channels.get(&self.addr).map_err(|e| unreachable(&e))?;
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize))
    }

    fn message<T: serde::Serialize>(&self, value: &T) -> Result<RaftMessage, RpcError> {
        Ok(RaftMessage { shard_id: self.shard.0, payload: encode(value).map_err(|e| network(&e))? })
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        action: RPCTypes,
        ttl: Duration,
        rpc: F,
    ) -> Result<Resp, RpcError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftServiceClient<NodeChannel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(self.message(req)?);
        request.set_timeout(ttl);
        let reply =
            rpc(self.client()?, request).await.map_err(|s| self.status_error(&s, action, ttl))?;
        decode(&reply.into_inner().payload).map_err(|e| network(&e))
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let ttl = option.hard_ttl().max(APPEND_ENTRIES_TIMEOUT_MIN);
        self.call(&rpc, RPCTypes::AppendEntries, ttl, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.call(
            &rpc,
            RPCTypes::Vote,
            option.hard_ttl(),
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.call(
            &rpc,
            RPCTypes::Vote,
            option.hard_ttl(),
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        self.call(&req, RPCTypes::TransferLeader, option.hard_ttl(), |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let shard_id = self.shard.0;
        let data = snapshot.snapshot;
        let chunks = std::iter::once(SnapshotChunk { shard_id, header, data: Vec::new() }).chain(
            data.chunks(SNAPSHOT_CHUNK_BYTES_MAX as usize)
                .map(|c| SnapshotChunk { shard_id, header: Vec::new(), data: c.to_vec() })
                .collect::<Vec<_>>(),
        );
        let mut client = self.client().map_err(|e| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        tracing::info!(
            shard = shard_id,
            target = self.target,
            bytes = data.len(),
            "sending snapshot"
        );
        let send = client.install_snapshot(tokio_stream::iter(chunks));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => {
                let reply = reply.map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
                let vote = decode(&reply.into_inner().payload)
                    .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
                Ok(SnapshotResponse { vote })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deadline_is_a_timeout() {
        // Proves the mapping openraft's backoff depends on: tonic's own deadline and the
        // server's DeadlineExceeded are timeouts (no unreachable-peer backoff); a reset or
        // refused connection is unreachable; anything else is a network error.
        let connection = Connection {
            id: 1,
            shard: ShardId(0),
            target: 2,
            addr: "127.0.0.1:1".into(),
            channels: Channels::new(
                ClusterKey::parse("0123456789abcdef0123456789abcdef").expect("a valid key"),
            ),
        };
        let ttl = Duration::from_millis(100);
        let map =
            |status: tonic::Status| connection.status_error(&status, RPCTypes::AppendEntries, ttl);
        let deadline = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(deadline.code(), tonic::Code::Cancelled);
        assert!(matches!(map(deadline), RPCError::Timeout(t) if t.timeout == ttl && t.target == 2));
        assert!(matches!(map(tonic::Status::deadline_exceeded("late")), RPCError::Timeout(_)));
        assert!(matches!(map(tonic::Status::cancelled("stream reset")), RPCError::Unreachable(_)));
        assert!(matches!(map(tonic::Status::unavailable("refused")), RPCError::Unreachable(_)));
        assert!(matches!(map(tonic::Status::internal("bug")), RPCError::Network(_)));
    }
}
