//! `tally.v1.AdminService`: a node's local view of its shards, the shard map as it knows
//! it, and leadership transfer, for SREs, tools and tests. The calls that change the
//! cluster (`TransferLeader`, `SetShardReplicas`) are for nodes and operators only: they
//! must carry the cluster key (`tally_proto::auth`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_proto::auth::ClusterKey;
use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tally_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::shard_map::{MAP_WRITE_WAIT, Metadata};
use super::status;
use crate::raft::network::{Channels, NodeChannel};
use crate::raft::node::{Replica, ReplicaError, Role};

/// How long `TransferLeader` waits for the target to take over.
pub const TRANSFER_LEADER_WAIT: Duration = Duration::from_secs(5);

/// The admin service of one node.
#[derive(Clone, Debug)]
pub struct AdminApi {
    node_id: u64,
    shards: u32,
    replicas: Vec<Replica>,
    meta: Metadata,
    channels: Channels,
    counters: Arc<super::NodeCounters>,
    key: ClusterKey,
}

impl AdminApi {
    /// Reports on `replicas` (this node's, one per data shard of the cluster's `shards`),
    /// the shard map (`meta`, whose group also appears in `NodeStatus` as shard 0) and the
    /// node's `counters` (forwarded parts, watched pending transfers); forwards leadership transfers and map
    /// changes to other nodes over `channels`; refuses those calls without `key`.
    #[must_use]
    pub fn new(
        node_id: u64,
        shards: u32,
        replicas: Vec<Replica>,
        meta: Metadata,
        channels: Channels,
        counters: Arc<super::NodeCounters>,
        key: ClusterKey,
    ) -> Self {
        Self { node_id, shards, replicas, meta, channels, counters, key }
    }

    fn replica(&self, shard_id: u32) -> Result<&Replica, Status> {
        self.replicas
            .iter()
            .find(|r| r.shard.0 == shard_id)
            .ok_or_else(|| status::unknown_shard(shard_id, self.shards))
    }
}

/// The admin service of the node at `addr`, over this node's shared channels.
///
/// # Errors
/// `UNAVAILABLE` `TALLY:Unreachable` for an address that is not a valid URI.
pub fn peer(channels: &Channels, addr: &str) -> Result<AdminServiceClient<NodeChannel>, Status> {
    let channel = channels
        .get(addr)
        .map_err(|e| Status::unavailable(format!("TALLY:Unreachable: {addr}: {e}")))?;
    Ok(AdminServiceClient::new(channel))
}

fn role(r: Role) -> v1::ReplicaRole {
    match r {
        Role::Leader => v1::ReplicaRole::Leader,
        Role::Follower => v1::ReplicaRole::Follower,
        Role::Candidate => v1::ReplicaRole::Candidate,
        Role::Learner => v1::ReplicaRole::Learner,
        Role::Shutdown => v1::ReplicaRole::Shutdown,
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn node_status(
        &self,
        request: Request<v1::NodeStatusRequest>,
    ) -> Result<Response<v1::NodeStatusReply>, Status> {
        let include_digest = request.get_ref().include_digest;
        if include_digest {
            self.counters.require_key(&self.key, &request, "NodeStatus with include_digest")?;
        }
        let shards = std::iter::once(self.meta.replica())
            .chain(&self.replicas)
            .map(|replica| {
                let s = replica.status(include_digest);
                v1::ShardStatus {
                    shard_id: replica.shard.0,
                    role: role(s.role) as i32,
                    leader_id: s.leader.id.unwrap_or(0),
                    leader_addr: s.leader.addr.unwrap_or_default(),
                    term: s.term,
                    last_log_index: s.last_log_index,
                    applied_index: s.applied_index,
                    snapshot_index: s.snapshot_index,
                    purged_index: s.purged_index,
                    voters: s.voters,
                    digest: s.digest.map(|d| d.to_vec()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(v1::NodeStatusReply {
            node_id: self.node_id,
            shards,
            forwarded_parts: self.counters.forwarded.load(Ordering::Relaxed),
            pending_watched: self.counters.pending_watched.load(Ordering::Relaxed),
            unauthenticated_refused: self.counters.unauthenticated.load(Ordering::Relaxed),
            protocol_mismatch_refused: self.counters.protocol_mismatch.load(Ordering::Relaxed),
        }))
    }

    async fn list_shards(
        &self,
        _request: Request<v1::ListShardsRequest>,
    ) -> Result<Response<v1::ListShardsReply>, Status> {
        let view = self.meta.view();
        let shard_infos = self
            .replicas
            .iter()
            .map(|replica| {
                let assigned_node_ids: Vec<u64> =
                    self.meta.nodes_of(&view, replica.shard.0).into_iter().collect();
                if self.meta.departed(replica.shard.0).is_some() {
                    // The map moved this shard off this node: its leftover replica knows
                    // nothing current. Report the assignment and no leader.
                    return v1::ShardInfo {
                        shard_id: replica.shard.0,
                        replicas: self.meta.replicas_of(&assigned_node_ids),
                        assigned_node_ids,
                        ..v1::ShardInfo::default()
                    };
                }
                let hint = replica.leader_hint();
                v1::ShardInfo {
                    shard_id: replica.shard.0,
                    leader_id: hint.id.unwrap_or(0),
                    leader_addr: hint.addr.unwrap_or_default(),
                    replicas: replica
                        .voters()
                        .into_iter()
                        .map(|(node_id, addr)| v1::ShardReplica { node_id, addr })
                        .collect(),
                    preferred_leader_id: replica.preferred_leader().unwrap_or(0),
                    term: replica.status(false).term,
                    assigned_node_ids,
                }
            })
            .collect();
        Ok(Response::new(v1::ListShardsReply {
            shards: self.shards,
            shard_infos,
            node_id: self.node_id,
            map_version: view.version,
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderReply>, Status> {
        self.counters.require_key(&self.key, &request, "TransferLeader")?;
        let v1::TransferLeaderRequest { shard_id, to_node_id } = *request.get_ref();
        let replica = self.replica(shard_id)?;
        if !replica.voters().iter().any(|(id, _)| *id == to_node_id) {
            return Err(Status::invalid_argument(format!(
                "TALLY:InvalidRequest: node {to_node_id} is not a voter of shard {shard_id}"
            )));
        }
        let hint = replica.leader_hint();
        if hint.id == Some(to_node_id) {
            return Ok(Response::new(v1::TransferLeaderReply { leader_id: to_node_id }));
        }
        if !replica.is_leader() {
            // Forward once to the leader; it answers for itself (a forwarded request that
            // finds leadership moved on is refused, not forwarded again).
            let Some(addr) = hint.addr.clone().filter(|_| !status::was_forwarded(&request)) else {
                return Err(status::replica(&ReplicaError::NotLeader(hint)));
            };
            let forwarded = status::forwarded(
                *request.get_ref(),
                TRANSFER_LEADER_WAIT + Duration::from_secs(1),
            );
            return peer(&self.channels, &addr)?
                .transfer_leader(forwarded)
                .await
                .map_err(|e| status::forward_failed(&addr, e));
        }
        match replica.transfer_leader(to_node_id, TRANSFER_LEADER_WAIT).await {
            Ok(()) => Ok(Response::new(v1::TransferLeaderReply { leader_id: to_node_id })),
            Err(ReplicaError::NotLeader(hint)) => Err(Status::deadline_exceeded(format!(
                "TALLY:Timeout: node {to_node_id} did not take over shard {shard_id} within \
                 {TRANSFER_LEADER_WAIT:?} (leader now: {:?}); it may still, see ListShards",
                hint.id
            ))),
            Err(e) => Err(status::replica(&e)),
        }
    }

    async fn set_shard_replicas(
        &self,
        request: Request<v1::SetShardReplicasRequest>,
    ) -> Result<Response<v1::SetShardReplicasReply>, Status> {
        self.counters.require_key(&self.key, &request, "SetShardReplicas")?;
        let v1::SetShardReplicasRequest { shard_id, node_ids, expected_map_version } =
            request.get_ref();
        let nodes = self.meta.validate(*shard_id, node_ids)?;
        if let Some(addr) = self.meta.leader_elsewhere().await? {
            // Forward once to the metadata group's leader; it answers for itself (a
            // forwarded request that finds leadership moved on is refused).
            if status::was_forwarded(&request) {
                let hint = self.meta.replica().leader_hint();
                return Err(status::replica(&ReplicaError::NotLeader(hint)));
            }
            let forwarded = status::forwarded(request.get_ref().clone(), MAP_WRITE_WAIT * 2);
            return peer(&self.channels, &addr)?
                .set_shard_replicas(forwarded)
                .await
                .map_err(|e| status::forward_failed(&addr, e));
        }
        let map_version = self.meta.set_replicas(*shard_id, &nodes, *expected_map_version).await?;
        tracing::info!(shard = shard_id, ?nodes, map_version, "shard map changed");
        Ok(Response::new(v1::SetShardReplicasReply { map_version }))
    }

    async fn get_shard_map(
        &self,
        request: Request<v1::GetShardMapRequest>,
    ) -> Result<Response<v1::GetShardMapReply>, Status> {
        let view = self.meta.current_view(!status::was_forwarded(&request)).await?;
        Ok(Response::new(v1::GetShardMapReply {
            map_version: view.version,
            assignments: self.meta.assignments(&view),
        }))
    }
}
