//! The shard map's metadata group (shard 0, `docs/SHARDING.md` §1b): which nodes hold each
//! data shard's replicas, versioned and replicated, and the reconciler that moves each
//! shard's Raft membership to what the map assigns.
//!
//! Shard 0 runs the same Raft group and ledger state machine as a data shard (one log,
//! fsync before acknowledging, snapshots, recovery), and holds only map records: a change
//! of version `v` is the transfer with id [`change_id`]`(v)` of 1 unit from the map account
//! to its sink, its shard in `user_data_32` and its nodes as a bit set in `user_data_128`
//! (bit `n - 1` for node `n`, so node ids `1..=`[`MAP_NODE_ID_MAX`]). The map's version is
//! the map account's `debits_posted` (changes made), and the map is version 0 (every shard
//! on the nodes the cluster was created with) plus the changes in order. Since the id of
//! the next change is `expected + 1`, two changes made against the same version cannot
//! both be created: compare-and-set by the ledger's own idempotency rule.
//!
//! The routing of accounts never depends on the map (`shard_of` is a fixed function of
//! the id and the fixed shard count); the map says where a shard's replicas are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;

use tally_proto::routing::MAP_VERSION_METADATA_KEY;
use tally_proto::v1;
use tokio::sync::watch;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::batcher::cluster_time_now_ns;
use super::status;
use crate::config::Member;
use crate::ledger::{
    Account, AccountId, CreateAccountStatus as AS, CreateTransferStatus as TS, StateMachine,
    Transfer, TransferFlags, TransferId,
};
use crate::raft::network::Channels;
use crate::raft::node::{Replica, ReplicaError};
use crate::raft::{Command, NodeId, Op};
use crate::storage::keys::ShardId;
use crate::storage::ledger_store::DurableStore;
use crate::storage::records;

/// The metadata group's shard id.
pub const MAP_SHARD: ShardId = ShardId(0);
/// The ledger of map records (never a client's: shard 0 takes no ledger requests).
pub const MAP_LEDGER: u32 = u32::MAX - 1;
/// The code of map accounts and change records.
const MAP_CODE: u16 = 1;
/// High 64 bits of the map's account and change ids.
const MAP_ID_HIGH: u128 = 0xFFFF_FFFF_FFFF_FFFC << 64;
/// The map account: debited 1 per change, so its `debits_posted` is the map's version.
const MAP_ACCOUNT: u128 = MAP_ID_HIGH | u64::MAX as u128;
/// The map account's counterpart.
const MAP_SINK: u128 = MAP_ID_HIGH | (u64::MAX - 1) as u128;
/// Highest node id a map change can name (its nodes are a 128-bit set); a node's
/// configuration refuses a larger id ([`crate::config::NODE_ID_MAX`], the same).
pub const MAP_NODE_ID_MAX: u64 = crate::config::NODE_ID_MAX;
/// Most changes a cluster's map takes in its lifetime (the map is read whole, version by
/// version; beyond this `SetShardReplicas` is refused with `RESOURCE_EXHAUSTED`).
pub const MAP_VERSION_MAX: u64 = 100_000;
const _: () = assert!(MAP_VERSION_MAX < u64::MAX - 1, "change ids stay below the map's accounts");
/// How often each node compares the shards it leads with the map.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a new replica may take to catch up as a learner before the reconciler gives
/// up (and tries again on its next round).
pub const LEARNER_WAIT: Duration = Duration::from_secs(30);
/// How long `SetShardReplicas` waits for its Raft commit.
pub const MAP_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The id of the change record that makes version `version`.
#[must_use]
pub const fn change_id(version: u64) -> u128 {
    MAP_ID_HIGH | version as u128
}

fn node_bits(nodes: &BTreeSet<NodeId>) -> u128 {
    nodes.iter().fold(0, |bits, &n| bits | 1 << (n - 1))
}

fn bits_nodes(bits: u128) -> BTreeSet<NodeId> {
    (1..=MAP_NODE_ID_MAX).filter(|n| bits & (1 << (n - 1)) != 0).collect()
}

/// The shard map at one version: the shards whose replicas were assigned since creation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapView {
    /// Changes made since creation.
    pub version: u64,
    assigned: BTreeMap<u32, BTreeSet<NodeId>>,
}

impl MapView {
    /// The nodes assigned to `shard`, or `None` if it was never changed (it stays on the
    /// nodes the cluster was created with).
    #[must_use]
    pub fn assigned(&self, shard: u32) -> Option<&BTreeSet<NodeId>> {
        self.assigned.get(&shard)
    }

    /// The map as `machine` (shard 0's ledger) holds it.
    fn read(machine: &StateMachine<DurableStore>) -> Self {
        let version = version_of(machine);
        let ids: Vec<TransferId> = (1..=version).map(|v| TransferId(change_id(v))).collect();
        let mut assigned = BTreeMap::new();
        let mut changes = machine.lookup_transfers(&ids);
        changes.sort_by_key(|t| t.id.0);
        for change in changes {
            assigned.insert(change.user_data_32, bits_nodes(change.user_data_128));
        }
        Self { version, assigned }
    }
}

fn version_of(machine: &StateMachine<DurableStore>) -> u64 {
    machine
        .lookup_accounts(&[AccountId(MAP_ACCOUNT)])
        .first()
        .map_or(0, |a| u64::try_from(a.debits_posted).unwrap_or(u64::MAX))
}

/// This node's replica of the metadata group and what it needs to read and change the map.
#[derive(Clone, Debug)]
pub struct Metadata {
    node_id: NodeId,
    replica: Replica,
    members: BTreeMap<NodeId, String>,
    shards: u32,
    channels: Channels,
    /// The map version this node has applied, kept up to date by [`Self::track`]: the check
    /// of every ledger request reads it without taking shard 0's ledger lock (which a
    /// snapshot install holds).
    applied: Arc<AtomicU64>,
    cache: Arc<parking_lot::Mutex<Arc<MapView>>>,
    /// One change at a time from this node (the compare-and-set makes it safe anyway).
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Metadata {
    /// The map over `replica` (shard 0) on node `node_id` of a cluster of `members` and
    /// `shards` data shards; reaches the metadata group's leader over `channels`.
    #[must_use]
    pub fn new(
        node_id: NodeId,
        replica: Replica,
        members: &[Member],
        shards: u32,
        channels: Channels,
    ) -> Self {
        let meta = Self {
            node_id,
            replica,
            members: members.iter().map(|m| (m.id, m.addr.clone())).collect(),
            shards,
            channels,
            applied: Arc::default(),
            cache: Arc::default(),
            writing: Arc::default(),
        };
        meta.refresh();
        meta
    }

    /// The metadata group's replica on this node.
    #[must_use]
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The map version this node has applied (it may lag the metadata group's leader).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Reads the map from shard 0's ledger and publishes it (version and view).
    fn refresh(&self) -> Arc<MapView> {
        let view = Arc::new(MapView::read(&self.replica.ledger.read().machine));
        self.applied.fetch_max(view.version, Ordering::AcqRel);
        let mut cache = self.cache.lock();
        if cache.version < view.version {
            *cache = view.clone();
        }
        view
    }

    /// The map as this node has applied it.
    #[must_use]
    pub fn view(&self) -> Arc<MapView> {
        let cached = self.cache.lock().clone();
        if cached.version >= self.version() { cached } else { self.refresh() }
    }

    /// Keeps [`Self::version`] and [`Self::view`] up to date with what shard 0 applies,
    /// until `stop`.
    pub async fn track(self, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.replica.raft.metrics();
        let mut seen = None;
        loop {
            let applied = metrics.borrow_watched().last_applied.as_ref().map(|l| l.index());
            if applied != seen {
                seen = applied;
                self.refresh();
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    /// The nodes `shard`'s replicas belong on: assigned by the map, else every member.
    #[must_use]
    pub fn nodes_of(&self, view: &MapView, shard: u32) -> BTreeSet<NodeId> {
        view.assigned(shard).cloned().unwrap_or_else(|| self.members.keys().copied().collect())
    }

    /// If the map (as applied here) assigns `shard` to other nodes than this one, their
    /// addresses: this node's replica of it is then a leftover that hears of no leader or
    /// of a stale one, and requests for the shard go to those nodes instead.
    #[must_use]
    pub fn departed(&self, shard: u32) -> Option<Vec<String>> {
        if self.version() == 0 {
            return None;
        }
        let view = self.view();
        let nodes = view.assigned(shard)?;
        if nodes.contains(&self.node_id) {
            return None;
        }
        Some(nodes.iter().filter_map(|n| self.members.get(n).cloned()).collect())
    }

    /// `nodes` with their addresses (as the cluster was created).
    #[must_use]
    pub fn replicas_of(&self, nodes: &[NodeId]) -> Vec<v1::ShardReplica> {
        nodes
            .iter()
            .map(|&node_id| v1::ShardReplica {
                node_id,
                addr: self.members.get(&node_id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Every data shard with the nodes `view` assigns it, for `GetShardMap`.
    #[must_use]
    pub fn assignments(&self, view: &MapView) -> Vec<v1::ShardAssignment> {
        (1..=self.shards)
            .map(|shard_id| v1::ShardAssignment {
                shard_id,
                node_ids: self.nodes_of(view, shard_id).into_iter().collect(),
            })
            .collect()
    }

    /// The address of the metadata group's leader if another node leads it (waiting at
    /// most [`MAP_WRITE_WAIT`] for an election), `None` if this node does.
    ///
    /// # Errors
    /// `UNAVAILABLE` `TALLY:NotLeader` when no leader is known.
    pub async fn leader_elsewhere(&self) -> Result<Option<String>, Status> {
        let replica = &self.replica;
        if replica.is_leader() {
            return Ok(None);
        }
        let hint = match replica.leader_hint() {
            hint if hint.addr.is_some() => hint,
            _ => replica.wait_leader(MAP_WRITE_WAIT).await,
        };
        if replica.is_leader() {
            return Ok(None);
        }
        match hint.addr.as_ref() {
            Some(addr) if hint.id != Some(self.node_id) => Ok(Some(addr.clone())),
            _ => Err(status::replica(&ReplicaError::NotLeader(hint))),
        }
    }

    /// The map at the metadata group's latest committed version (linearizable): read here
    /// after a read barrier if this node leads shard 0, else asked of its leader (only if
    /// `forward`; otherwise refused with `NotLeader`).
    ///
    /// # Errors
    /// No leader, no quorum or no answer within [`MAP_WRITE_WAIT`].
    pub async fn current_view(&self, forward: bool) -> Result<Arc<MapView>, Status> {
        if let Some(addr) = self.leader_elsewhere().await? {
            if !forward {
                return Err(status::replica(&ReplicaError::NotLeader(self.replica.leader_hint())));
            }
            let request = status::forwarded(v1::GetShardMapRequest {}, MAP_WRITE_WAIT * 2);
            let reply = super::admin::peer(&self.channels, &addr)?
                .get_shard_map(request)
                .await
                .map_err(|e| status::forward_failed(&addr, e))?
                .into_inner();
            let assigned = reply
                .assignments
                .into_iter()
                .map(|a| (a.shard_id, a.node_ids.into_iter().collect()))
                .collect();
            return Ok(Arc::new(MapView { version: reply.map_version, assigned }));
        }
        within_map_wait(self.replica.read_barrier()).await?;
        Ok(self.refresh())
    }

    /// Refuses a ledger request routed with a map older than this node's
    /// (`tally-map-version`; a request without it is not checked).
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` `TALLY:StaleShardMap` with this node's version in the
    /// status's metadata; `INVALID_ARGUMENT` for a value that is not a number.
    pub fn check_version(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(value) = metadata.get(MAP_VERSION_METADATA_KEY) else { return Ok(()) };
        let sent: u64 = value.to_str().ok().and_then(|v| v.parse().ok()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "TALLY:InvalidRequest: {MAP_VERSION_METADATA_KEY} must be a decimal version, \
                 not {value:?}"
            ))
        })?;
        let version = self.version();
        if sent >= version {
            return Ok(());
        }
        let mut refused = Status::failed_precondition(format!(
            "TALLY:StaleShardMap: the request was routed with shard map version {sent}, this \
             node has version {version}; fetch the map (ListShards) and resend"
        ));
        refused.metadata_mut().insert(MAP_VERSION_METADATA_KEY, MetadataValue::from(version));
        Err(refused)
    }

    /// Checks a `SetShardReplicas` request: the shard exists and the nodes are 1..=128
    /// distinct members.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown shard, `INVALID_ARGUMENT` naming the bad node id.
    pub fn validate(&self, shard: u32, nodes: &[NodeId]) -> Result<BTreeSet<NodeId>, Status> {
        if shard == 0 || shard > self.shards {
            return Err(status::unknown_shard(shard, self.shards));
        }
        let invalid =
            |why: String| Status::invalid_argument(format!("TALLY:InvalidRequest: {why}"));
        if nodes.is_empty() {
            return Err(invalid("node_ids must name at least one node".into()));
        }
        let mut set = BTreeSet::new();
        for (i, &node) in nodes.iter().enumerate() {
            if !self.members.contains_key(&node) {
                let known: Vec<_> = self.members.keys().collect();
                return Err(invalid(format!(
                    "node_ids[{i}] = {node} is not a node of this cluster (nodes: {known:?})"
                )));
            }
            if node > MAP_NODE_ID_MAX {
                return Err(invalid(format!(
                    "node_ids[{i}] = {node}: the shard map holds node ids 1..={MAP_NODE_ID_MAX}"
                )));
            }
            if !set.insert(node) {
                return Err(invalid(format!("node_ids[{i}] = {node} is named twice")));
            }
        }
        Ok(set)
    }

    /// Records `nodes` as `shard`'s replicas if the map is still at `expected` (this node
    /// must lead the metadata group); returns the new version.
    ///
    /// # Errors
    /// `ABORTED` `TALLY:StaleShardMap` if the map moved on (or `expected` is ahead of it),
    /// `RESOURCE_EXHAUSTED` past [`MAP_VERSION_MAX`], or the replica's error (not the leader,
    /// no quorum, stopped) as a status.
    pub async fn set_replicas(
        &self,
        shard: u32,
        nodes: &BTreeSet<NodeId>,
        expected: u64,
    ) -> Result<u64, Status> {
        let _one = self.writing.lock().await;
        let replica = &self.replica;
        within_map_wait(replica.read_barrier()).await?;
        let version = self.refresh().version;
        let stale = |version: u64| {
            let mut s = Status::aborted(format!(
                "TALLY:StaleShardMap: expected shard map version {expected}, it is {version}; \
                 read it again (ListShards) and decide again"
            ));
            s.metadata_mut().insert(MAP_VERSION_METADATA_KEY, MetadataValue::from(version));
            s
        };
        if version > expected && self.change(expected + 1) == Some((shard, nodes.clone())) {
            // A resend of the change that made `expected + 1` (its reply was lost): the same
            // outcome again.
            return Ok(expected + 1);
        }
        if version != expected {
            return Err(stale(version));
        }
        if version >= MAP_VERSION_MAX {
            return Err(Status::resource_exhausted(format!(
                "TALLY:LimitExceeded: the shard map has had {MAP_VERSION_MAX} changes \
                 (MAP_VERSION_MAX)"
            )));
        }
        if version == 0 {
            // The first change creates the map's two accounts (a resend reads `exists`).
            let account = |id| Account {
                id: AccountId(id),
                ledger: MAP_LEDGER,
                code: MAP_CODE,
                ..Account::default()
            };
            let mut events = Vec::new();
            for id in [MAP_ACCOUNT, MAP_SINK] {
                events.extend_from_slice(&records::account_encode(&account(id)));
            }
            let created = self.write(Op::CreateAccounts { requests: vec![2], events }).await?;
            if let Some(&(_, code)) =
                created.iter().find(|(_, c)| *c != AS::Created as u32 && *c != AS::Exists as u32)
            {
                return Err(Status::internal(format!(
                    "TALLY:Internal: map accounts not created: status {code}"
                )));
            }
        }
        let change = Transfer {
            id: TransferId(change_id(expected + 1)),
            debit_account_id: AccountId(MAP_ACCOUNT),
            credit_account_id: AccountId(MAP_SINK),
            amount: 1,
            user_data_128: node_bits(nodes),
            user_data_32: shard,
            ledger: MAP_LEDGER,
            code: MAP_CODE,
            flags: TransferFlags::empty(),
            ..Transfer::default()
        };
        let events = records::transfer_encode(&change).to_vec();
        let outcome = self.write(Op::CreateTransfers { requests: vec![1], events }).await?;
        let version = self.refresh().version;
        match outcome.first().map(|&(_, code)| code) {
            Some(c) if c == TS::Created as u32 || c == TS::Exists as u32 => Ok(expected + 1),
            _ => Err(stale(version)),
        }
    }

    /// The shard and nodes of the change that made `version`, if it was made.
    fn change(&self, version: u64) -> Option<(u32, BTreeSet<NodeId>)> {
        let ledger = self.replica.ledger.read();
        let record = ledger.machine.lookup_transfers(&[TransferId(change_id(version))]);
        record.first().map(|c| (c.user_data_32, bits_nodes(c.user_data_128)))
    }

    async fn write(&self, op: Op) -> Result<Vec<(u64, u32)>, Status> {
        let command = Command { cluster_time_ns: cluster_time_now_ns(), op };
        let reply = within_map_wait(self.replica.write(command)).await?;
        match reply.requests.into_iter().next() {
            Some(Ok(outcomes)) => Ok(outcomes),
            Some(Err(reason)) => Err(status::refused(&reason)),
            None => Err(Status::internal("TALLY:Internal: no outcome for a map write")),
        }
    }
}

/// `step`'s outcome, or `TALLY:Timeout` after [`MAP_WRITE_WAIT`].
async fn within_map_wait<T>(
    step: impl Future<Output = Result<T, ReplicaError>>,
) -> Result<T, Status> {
    let waited = u64::try_from(MAP_WRITE_WAIT.as_millis()).unwrap_or(u64::MAX);
    tokio::time::timeout(MAP_WRITE_WAIT, step)
        .await
        .map_err(|_| status::timeout_of("MAP_WRITE_WAIT", waited))?
        .map_err(|e| status::replica(&e))
}

/// Every `interval` until `stop`: for each data shard this node leads whose members
/// (voters and learners) differ from the nodes the map assigns it, starts one task that
/// moves them ([`reconcile_shard`]); a shard whose move is under way is not started again,
/// and one slow shard does not hold up the others. Failures are logged and tried again on
/// a later round. (A removed leader steps down by itself: openraft's
/// `removed_leader_step_down`, 150 ms after the change commits.) Moves still under way
/// when `stop` comes are abandoned (a membership change already proposed completes).
pub async fn reconcile(
    meta: Metadata,
    replicas: Vec<Replica>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut ticks = super::ticks::Ticks::new(interval, stop);
    let mut moving = tokio::task::JoinSet::new();
    let busy: Arc<parking_lot::Mutex<BTreeSet<ShardId>>> = Arc::default();
    while ticks.next().await {
        while moving.try_join_next().is_some() {}
        let view = meta.view();
        for replica in replicas.iter().filter(|r| r.is_leader()) {
            let Some(target) = view.assigned(replica.shard.0) else { continue };
            if replica.members() == *target || !busy.lock().insert(replica.shard) {
                continue;
            }
            let (meta, replica, busy) = (meta.clone(), replica.clone(), busy.clone());
            moving.spawn(async move {
                if let Err(e) = reconcile_shard(&meta, &replica).await {
                    tracing::warn!(shard = %replica.shard, error = %e, "shard map not reconciled yet");
                }
                busy.lock().remove(&replica.shard);
            });
        }
    }
}

/// Moves `replica`'s group (this node leads it) to the nodes the metadata group's latest
/// committed map assigns it. That map is read from shard 0's leader, not from this node's
/// copy, which may lag: a new leader of the shard acting on an older version would move
/// the shard back, then forward again.
async fn reconcile_shard(meta: &Metadata, replica: &Replica) -> Result<(), String> {
    let current = meta.current_view(true).await.map_err(|s| s.message().to_owned())?;
    let target = meta.nodes_of(&current, replica.shard.0);
    if replica.members() == target {
        return Ok(());
    }
    let target: BTreeMap<NodeId, String> = target
        .iter()
        .filter_map(|id| meta.members.get(id).map(|addr| (*id, addr.clone())))
        .collect();
    replica.change_voters(&target, LEARNER_WAIT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sets_round_trip_through_their_bits() {
        for nodes in [vec![1], vec![1, 2, 3], vec![2, 64, 65, 128]] {
            let set: BTreeSet<NodeId> = nodes.into_iter().collect();
            assert_eq!(bits_nodes(node_bits(&set)), set);
        }
        assert_eq!(node_bits(&BTreeSet::from([1, 3])), 0b101);
    }

    #[test]
    fn change_ids_are_internal_and_ordered_by_version() {
        assert!(change_id(1) < change_id(2));
        assert_eq!(change_id(7) >> 64, 0xFFFF_FFFF_FFFF_FFFC);
        assert!(change_id(MAP_VERSION_MAX) < MAP_SINK, "versions stay below the account ids");
    }
}
