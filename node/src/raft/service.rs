//! The server side of the internal `tally.raft.v1` service: hands each message to the Raft
//! group of the shard it names.

use std::collections::HashMap;
use std::sync::Arc;

use openraft::Snapshot;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use tally_proto::limits::SNAPSHOT_BYTES_MAX;
use tally_proto::raft_v1::raft_service_server::RaftService;
use tally_proto::raft_v1::{RaftMessage, SnapshotChunk};
use tonic::{Request, Response, Status, Streaming};

use super::{Raft, decode, encode};
use crate::storage::keys::ShardId;

/// The Raft groups this node hosts, by shard.
#[derive(Clone, Debug)]
pub struct RaftServer {
    groups: Arc<HashMap<ShardId, Raft>>,
}

impl RaftServer {
    /// Serves `groups`.
    #[must_use]
    pub fn new(groups: HashMap<ShardId, Raft>) -> Self {
        Self { groups: Arc::new(groups) }
    }

    fn group(&self, shard_id: u32) -> Result<&Raft, Status> {
        self.groups.get(&ShardId(shard_id)).ok_or_else(|| {
            Status::not_found(format!("TALLY:UnknownShard: shard {shard_id} is not hosted here"))
        })
    }
}

impl RaftServer {
    /// Decodes the request for its shard's group, runs `handle`, encodes the reply.
    async fn unary<Req, Resp, E, F, Fut>(
        &self,
        request: Request<RaftMessage>,
        handle: F,
    ) -> Result<Response<RaftMessage>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let message = request.into_inner();
        let raft = self.group(message.shard_id)?.clone();
        let rpc = decode(&message.payload).map_err(|e| bad_payload(&e))?;
        let response = handle(raft, rpc).await.map_err(|e| stopped(&e))?;
        reply(message.shard_id, &response)
    }
}

fn bad_payload(e: &std::io::Error) -> Status {
    Status::invalid_argument(format!("TALLY:BadRaftMessage: {e}"))
}

fn stopped(e: &impl std::fmt::Display) -> Status {
    Status::unavailable(format!("TALLY:RaftStopped: {e}"))
}

fn reply<T: serde::Serialize>(shard_id: u32, value: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { shard_id, payload }))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, rpc| async move { raft.append_entries(rpc).await }).await
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, rpc| async move { raft.vote(rpc).await }).await
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, rpc| async move { raft.pre_vote(rpc).await }).await
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, rpc| async move { raft.handle_transfer_leader(rpc).await }).await
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("TALLY:BadSnapshot: empty stream"))?;
        let shard_id = first.shard_id;
        let raft = self.group(shard_id)?;
        let (vote, meta): (VoteOf<super::TypeConfig>, SnapshotMetaOf<super::TypeConfig>) =
            decode(&first.header).map_err(|e| bad_payload(&e))?;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            if chunk.shard_id != shard_id || !chunk.header.is_empty() {
                return Err(Status::invalid_argument("TALLY:BadSnapshot: chunk of another stream"));
            }
            if (data.len() + chunk.data.len()) as u64 > SNAPSHOT_BYTES_MAX {
                return Err(Status::resource_exhausted(format!(
                    "TALLY:SnapshotTooLarge: over SNAPSHOT_BYTES_MAX ({SNAPSHOT_BYTES_MAX} bytes)"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot { meta, snapshot: data.into() };
        let response = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| stopped(&e))?;
        reply(shard_id, &response.vote)
    }
}
