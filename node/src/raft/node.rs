//! Starting one shard's Raft group on this node, and the few operations the services need:
//! propose a command, wait for a linearizable read point, and who the leader is.
//! Errors here carry no openraft types, so the services never name openraft.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};

use super::log_store::{LogStore, Writer};
use super::network::{Channels, Network};
use super::state_machine::{CheckpointSchedule, SharedLedger, StateMachineStore};
use super::{Command, CommandReply, NodeId, Raft, TypeConfig};
use crate::config::{Member, RaftConfig};
use crate::ledger::memory_store::Capacity;
use crate::storage::Storage;
use crate::storage::keys::ShardId;

/// How long a leader that shuts down waits for a voter to take its leadership over.
pub const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Entries a voter may lag the leader's log by and still be handed leadership (by a
/// shutdown, or by leader balancing).
pub const CAUGHT_UP_LAG_MAX: u64 = 64;

/// This node's replica of one shard.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The shard.
    pub shard: ShardId,
    /// Its Raft group handle.
    pub raft: Raft,
    /// Its ledger, for reads.
    pub ledger: SharedLedger,
}

/// Where the leader is, as far as this node knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub id: Option<NodeId>,
    /// The leader's gRPC address.
    pub addr: Option<String>,
}

/// Role of this node in a shard's group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads the group.
    Leader,
    /// Follows a leader.
    Follower,
    /// Campaigning.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// This node's local view of one shard (log indexes; 0 = none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Role here.
    pub role: Role,
    /// Where the leader is.
    pub leader: LeaderHint,
    /// Current term.
    pub term: u64,
    /// Last index in the local log.
    pub last_log_index: u64,
    /// Last index applied by the local state machine.
    pub applied_index: u64,
    /// Last index covered by the local snapshot.
    pub snapshot_index: u64,
    /// Last index purged from the local log.
    pub purged_index: u64,
    /// Voter ids.
    pub voters: Vec<NodeId>,
    /// SHA-256 of the ledger state, if asked for.
    pub digest: Option<[u8; 32]>,
}

/// Why a write or a read point could not be obtained.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReplicaError {
    /// This node is not the shard's leader.
    #[error("not the leader of this shard (leader: {0:?})")]
    NotLeader(LeaderHint),
    /// The proposal was appended here but then lost to a new leader's log: it may or may
    /// not commit. Retrying with the same ids is safe (they are idempotency keys).
    #[error("leader changed after the proposal; outcome unknown (leader: {0:?})")]
    OutcomeUnknown(LeaderHint),
    /// A quorum could not be reached in time.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The Raft group stopped (shutdown or a storage failure).
    #[error("raft stopped: {0}")]
    Stopped(String),
}

fn hint(f: &ForwardToLeader<TypeConfig>) -> LeaderHint {
    LeaderHint { id: f.leader_id, addr: f.leader_node.as_ref().map(|n| n.addr.clone()) }
}

/// openraft's configuration from ours.
///
/// # Errors
/// A combination openraft refuses (reported with its reason).
pub fn raft_config(c: &RaftConfig) -> Result<Config, String> {
    let config = Config {
        cluster_name: "tally".into(),
        heartbeat_interval: c.heartbeat_interval_ms,
        election_timeout_min: c.election_timeout_min_ms,
        election_timeout_max: c.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: c.logs_to_keep_after_snapshot,
        max_payload_entries: c.append_entries_max,
        install_snapshot_timeout: 60_000,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config.validate().map_err(|e| e.to_string())
}

/// Opens `shard`'s log and state machine from `storage`, its ledger in memory for
/// `capacity` allocated first, and starts its Raft group.
///
/// # Errors
/// The state machine cannot be loaded or openraft refuses to start.
pub async fn start(
    node_id: NodeId,
    shard: ShardId,
    storage: &Storage,
    log_writer: Arc<Writer>,
    channels: Channels,
    config: &RaftConfig,
    capacity: Capacity,
) -> Result<Replica, String> {
    let raft_config = Arc::new(raft_config(config)?);
    let log = LogStore::new(storage.clone(), shard, log_writer);
    let sm = StateMachineStore::open(storage.clone(), shard, capacity)
        .map_err(|e| e.to_string())?
        .checkpoint_every(config.checkpoint_writes, CheckpointSchedule::slot(node_id, shard));
    let ledger = sm.ledger();
    let network = Network::new(node_id, shard, channels);
    let raft =
        Raft::new(node_id, raft_config, network, log, sm).await.map_err(|e| e.to_string())?;
    Ok(Replica { shard, raft, ledger })
}

/// Why a Raft group stopped on its own, from its metrics (`None` while it runs or after a
/// requested shutdown).
fn fatal_of(metrics: &openraft::RaftMetrics<TypeConfig>) -> Option<String> {
    match &metrics.running_state {
        Err(openraft::errors::Fatal::Stopped) | Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

impl Replica {
    /// Initialises a new cluster with `members` as voters, if this node has the smallest
    /// id among them and the group has no state yet. Does nothing otherwise.
    ///
    /// # Errors
    /// openraft refuses the membership.
    pub async fn bootstrap(&self, node_id: NodeId, members: &[Member]) -> Result<(), String> {
        let Some(first) = members.iter().map(|m| m.id).min() else { return Ok(()) };
        if first != node_id || self.raft.is_initialized().await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let voters: BTreeMap<NodeId, BasicNode> =
            members.iter().map(|m| (m.id, BasicNode::new(m.addr.clone()))).collect();
        tracing::info!(shard = %self.shard, ?voters, "initialising a new cluster");
        self.raft.initialize(voters).await.map_err(|e| e.to_string())
    }

    /// Proposes `command` and waits until it is committed and applied here.
    ///
    /// # Errors
    /// See [`ReplicaError`].
    pub async fn write(&self, command: Command) -> Result<CommandReply, ReplicaError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ReplicaError::NotLeader(hint(&f)))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
                Err(ReplicaError::OutcomeUnknown(hint(&f)))
            }
            Err(RaftError::APIError(e)) => Err(ReplicaError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ReplicaError::Stopped(e.to_string())),
        }
    }

    /// Waits until this node's state machine reflects every write committed before the
    /// call (ReadIndex: the leader confirms its leadership with a quorum, then waits for
    /// its own apply to reach the commit index it saw).
    ///
    /// # Errors
    /// Not the leader, no quorum, or stopped.
    pub async fn read_barrier(&self) -> Result<(), ReplicaError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ReplicaError::NotLeader(hint(&f)))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(ReplicaError::NoQuorum(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ReplicaError::Stopped(e.to_string())),
        }
    }

    /// Why this replica's Raft group stopped on its own (a storage error, a panic), if it
    /// did; `None` while it runs or after a requested shutdown.
    #[must_use]
    pub fn fatal(&self) -> Option<String> {
        fatal_of(&self.raft.metrics().borrow_watched())
    }

    /// Waits until this replica's Raft group stops on its own (see [`Self::fatal`]) and
    /// returns why; never returns while it runs.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(e) = fatal_of(&metrics.borrow_watched()) {
                return e;
            }
            if metrics.changed().await.is_err() {
                return "raft metrics closed".into();
            }
        }
    }

    /// Whether this node currently leads the shard.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// The current leader as this node sees it.
    #[must_use]
    pub fn leader_hint(&self) -> LeaderHint {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader;
        let addr = id.and_then(|id| {
            metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
        });
        LeaderHint { id, addr }
    }

    /// Waits at most `wait` until this node knows a leader of the shard (an election or a
    /// leadership transfer is in progress otherwise); the hint then.
    pub async fn wait_leader(&self, wait: std::time::Duration) -> LeaderHint {
        let mut metrics = self.raft.metrics();
        let known = async {
            loop {
                if metrics.borrow_watched().current_leader.is_some() {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(wait, known).await;
        self.leader_hint()
    }

    /// This node's local view of the shard.
    #[must_use]
    pub fn status(&self, include_digest: bool) -> ReplicaStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let index = |id: &Option<openraft::alias::LogIdOf<TypeConfig>>| {
            id.as_ref().map_or(0, |l| l.index())
        };
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let (applied_index, digest) = {
            let ledger = self.ledger.read();
            (index(&ledger.applied), include_digest.then(|| ledger.machine.digest()))
        };
        ReplicaStatus {
            role,
            leader: self.leader_hint(),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index,
            snapshot_index: index(&metrics.snapshot),
            purged_index: index(&metrics.purged),
            voters: metrics.membership_config.membership().voter_ids().collect(),
            digest,
        }
    }

    /// The voters and their addresses, by node id.
    #[must_use]
    pub fn voters(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()))
            .collect()
    }

    /// Every node of the group: voters and learners.
    #[must_use]
    pub fn members(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.membership_config.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// The node that should lead this shard when all are up: leaders are spread evenly by
    /// taking the `(shard - 1) mod n`-th voter by id (`None` before the group has voters).
    #[must_use]
    pub fn preferred_leader(&self) -> Option<NodeId> {
        let mut voters: Vec<NodeId> = self.voters().into_iter().map(|(id, _)| id).collect();
        voters.sort_unstable();
        let index = (self.shard.0 as usize).saturating_sub(1).checked_rem(voters.len())?;
        Some(voters[index])
    }

    /// The voters (other than this node) whose log matches this leader's to within
    /// `lag_max` entries, most caught up first; empty unless this node leads.
    #[must_use]
    pub fn caught_up_voters(&self, lag_max: u64) -> Vec<NodeId> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let mut matched: Vec<(u64, NodeId)> = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != metrics.id && voters.contains(id))
            .map(|(id, log)| (log.as_ref().map_or(0, |l| l.index()), *id))
            .filter(|(index, _)| index.saturating_add(lag_max) >= last)
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched.into_iter().map(|(_, id)| id).collect()
    }

    /// Asks this node's group (if it leads) to hand leadership to `to`, and waits up to
    /// `wait` until the group reports `to` as its leader. openraft's target takes over only
    /// if its log holds the leader's last entry, so this first waits (within `wait`) until
    /// replication reports `to` caught up, then triggers the transfer.
    ///
    /// # Errors
    /// `NotLeader` if `to` did not take over within `wait` (the hint names the leader
    /// then); `Stopped` if the group stopped.
    pub async fn transfer_leader(
        &self,
        to: NodeId,
        wait: std::time::Duration,
    ) -> Result<(), ReplicaError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut metrics = self.raft.metrics();
        let caught_up = async {
            loop {
                let done = {
                    let m = metrics.borrow_watched();
                    let matched =
                        m.replication.as_ref().and_then(|r| r.get(&to).cloned().flatten());
                    m.state != ServerState::Leader || matched.map(|l| l.index()) >= m.last_log_index
                };
                if done || metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, caught_up).await;
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ReplicaError::Stopped(e.to_string()))?;
        let took_over = async {
            loop {
                if metrics.borrow_watched().current_leader == Some(to) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, took_over).await;
        if self.raft.metrics().borrow_watched().current_leader == Some(to) {
            Ok(())
        } else {
            Err(ReplicaError::NotLeader(self.leader_hint()))
        }
    }

    /// Makes `target` (node id → address) the group's nodes, all voters, if this node leads:
    /// each new node joins as a learner and catches up (at most `learner_wait` each), then
    /// one joint membership change replaces the voters; removed voters leave the group (a
    /// removed leader steps down once the change commits), and so do learners `target` does
    /// not name (left by an earlier target that was superseded). Safe to call again after a
    /// failure: a learner already added is kept, and a change already made is skipped.
    ///
    /// # Errors
    /// Not the leader, a learner that did not catch up in time, a change already in
    /// progress, or a stopped group (each with its reason).
    pub async fn change_voters(
        &self,
        target: &BTreeMap<NodeId, String>,
        learner_wait: std::time::Duration,
    ) -> Result<(), String> {
        if !self.is_leader() {
            return Err("not the leader".into());
        }
        let current: Vec<NodeId> = self.voters().into_iter().map(|(id, _)| id).collect();
        for (&id, addr) in target.iter().filter(|(id, _)| !current.contains(id)) {
            tracing::info!(shard = %self.shard, node = id, "adding a learner");
            let add = self.raft.add_learner(id, BasicNode::new(addr.clone()), true);
            match tokio::time::timeout(learner_wait, add).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("adding node {id} as a learner: {e}")),
                Err(_) => {
                    return Err(format!("node {id} did not catch up within {learner_wait:?}"));
                }
            }
        }
        let voters = target.keys().copied().collect::<std::collections::BTreeSet<_>>();
        let current: std::collections::BTreeSet<NodeId> = current.into_iter().collect();
        if current != voters {
            tracing::info!(shard = %self.shard, ?voters, "changing the voters");
            self.raft
                .change_membership(openraft::ChangeMembers::ReplaceAllVoters(voters.clone()), false)
                .await
                .map_err(|e| format!("membership change: {e}"))?;
        }
        let strays: std::collections::BTreeSet<NodeId> =
            self.members().difference(&voters).copied().collect();
        if !strays.is_empty() {
            tracing::info!(shard = %self.shard, ?strays, "removing learners the map does not assign");
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(strays), false)
                .await
                .map_err(|e| format!("removing learners: {e}"))?;
        }
        Ok(())
    }

    /// If this node leads, hands leadership to the most caught-up voter and waits at most
    /// [`HANDOVER_WAIT`] until it takes over, so that clients see a new leader at once
    /// rather than after an election timeout. Called before a graceful stop, while this
    /// node still serves (the new leader's messages must reach it).
    pub async fn hand_over(&self) {
        if !self.is_leader() {
            return;
        }
        let Some(&to) = self.caught_up_voters(CAUGHT_UP_LAG_MAX).first() else {
            tracing::warn!(shard = %self.shard, "no caught-up voter to hand leadership to");
            return;
        };
        match self.transfer_leader(to, HANDOVER_WAIT).await {
            Ok(()) => tracing::info!(shard = %self.shard, to, "leadership handed over"),
            Err(e) => tracing::warn!(
                shard = %self.shard,
                to,
                error = %e,
                "handover not confirmed within {HANDOVER_WAIT:?} (the target may be stopping \
                 too); the other voters elect a leader after their election timeout"
            ),
        }
    }

    /// Stops the Raft group.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(shard = %self.shard, error = %e, "raft shutdown");
        }
    }
}
