//! `tally.v1.AdminService`: a node's local view of its shards, for SREs, tools and tests.

use tally_proto::v1;
use tally_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::raft::node::{Replica, Role};

/// The admin service of one node.
#[derive(Clone, Debug)]
pub struct AdminApi {
    node_id: u64,
    replicas: Vec<Replica>,
}

impl AdminApi {
    /// Reports on `replicas`.
    #[must_use]
    pub fn new(node_id: u64, replicas: Vec<Replica>) -> Self {
        Self { node_id, replicas }
    }
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
        let shards = self
            .replicas
            .iter()
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
        Ok(Response::new(v1::NodeStatusReply { node_id: self.node_id, shards }))
    }
}
