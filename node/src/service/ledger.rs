//! The public `tally.v1.LedgerService`.
//!
//! Writes: validated at the edge (a malformed request is refused whole, naming the event
//! and field), encoded as ledger records, and handed to the shard's [`Batcher`]; the reply
//! carries one result per event, in order.
//!
//! Reads are linearizable: each waits for a ReadIndex barrier (the shard's leader confirms
//! with a quorum that it still leads and waits until it has applied everything committed
//! before the read began), then reads its own state machine.
//!
//! **Shards** (`docs/SHARDING.md`). A request without the `tally-shard` metadata is split
//! by shard ([`route`]): each part is served here if this node leads its shard, or
//! forwarded, with `tally-shard` set, to the shard's leader (following at most
//! [`FORWARD_ATTEMPTS_MAX`] leader hints); the parts run concurrently and the reply puts
//! every result back in request order. `lookup_transfers` asks every shard (a transfer id
//! does not say where it lives). A request *with* `tally-shard` (from another node: node
//! headers need the cluster key) is served only by that shard's leader: another node answers
//! `NotLeader` with the leader's address, at once. If one part of a split request fails
//! (e.g. its shard has no leader), the request fails although other parts may have
//! applied — with `OutcomeUnknown` where the part's own error would say nothing was done
//! (`NotLeader`, `Overloaded`, …; [`status::partial`]), else with that error, either way
//! marked `tally-outcome: unknown`: resend it unchanged (ids are idempotency keys; an
//! applied event then reads `exists`).
//!
//! Every request is bounded by `request_timeout_ms` inside the node, forwarding included.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::try_join_all;
use tally_proto::limits::{GRPC_MESSAGE_BYTES_MAX, SWAPS_PER_REQUEST_MAX};
use tally_proto::routing::{self, SHARD_METADATA_KEY, shard_of};
use tally_proto::v1;
use tally_proto::v1::ledger_service_client::LedgerServiceClient;
use tally_proto::v1::ledger_service_server::LedgerService;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::batcher::{Batcher, Kind};
use super::route::{self, RouteError};
use super::shard_map::Metadata;
use super::spread;
use super::status;
use super::swap;
use super::xshard;
use crate::convert;
use crate::ledger::{AccountFlags, BatchEvent, StateMachine, TransferId, imported_mismatch};
use crate::raft::network::{Channels, NodeChannel};
use crate::raft::node::{LeaderHint, Replica, ReplicaError};
use crate::raft::{EventOutcome, RequestOutcome};
use crate::storage::keys::ShardId;
use crate::storage::records;

/// What [`LedgerApi::write_split`] creates: `events` of `kind` on their `shards` (`None`:
/// created elsewhere, e.g. a spread account or a cross-shard chain; `routed`: the shard the
/// request was routed to, if it was).
struct Split<'a, E> {
    kind: Kind,
    events: &'a [E],
    shards: &'a [Option<ShardId>],
    routed: Option<ShardId>,
    /// How every part is judged imported or not: the whole request's flag ([`judged_of`]);
    /// `None`: each part by its own first event.
    judge: Option<bool>,
}

/// Leader hints a forwarded part follows before its error is returned to the caller (a
/// leadership change while forwarding: the first hint was stale).
pub const FORWARD_ATTEMPTS_MAX: u32 = 3;

/// How long a part waits for its shard to have a known leader (an election, a leadership
/// transfer) before the request fails with `NotLeader`.
pub const LEADER_WAIT: Duration = Duration::from_secs(1);

/// One shard this node hosts: its replica and its group-commit front.
#[derive(Clone, Debug)]
pub struct LocalShard {
    /// The replica.
    pub replica: Replica,
    /// Group commit into the replica (used while this node leads the shard).
    pub batcher: Batcher,
}

/// The ledger service of one node: every shard it hosts, and the way to the others.
#[derive(Clone, Debug)]
pub struct LedgerApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: u32,
    local: BTreeMap<ShardId, LocalShard>,
    /// The shard map: a shard it moved off this node is served by the nodes it names.
    meta: Metadata,
    channels: Channels,
    request_timeout: Duration,
    /// Parts forwarded to another node, and the other counters `NodeStatus` reports.
    counters: Arc<super::NodeCounters>,
    /// Internal accounts known to exist, by shard (cross-shard transactions).
    internal_ready: parking_lot::Mutex<std::collections::HashSet<(ShardId, u128)>>,
    /// One lock per spread account being refilled: concurrent dry redemptions wait for
    /// one refill instead of each moving units.
    refills: spread::Refills,
    /// Decided cross-shard transactions whose resolution is being retried in the
    /// background (at most `xshard::RESOLVING_MAX`).
    resolving: std::sync::atomic::AtomicUsize,
}

/// `message` routed to `shard`, to be answered within `timeout`.
fn routed<M>(message: M, shard: ShardId, timeout: Duration) -> Request<M> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(SHARD_METADATA_KEY, MetadataValue::from(shard.0));
    request.set_timeout(timeout);
    request
}

/// gRPC metadata key a node sets on a routed `CreateTransfers` of its own steps (a
/// cross-shard transaction's legs, posts, voids, tombstones; burns): applied exactly as
/// sent, so a leg on a dry spread slice comes back `slice_dry` to the coordinator, which
/// refills it, instead of being refilled, resent or burnt by the shard's leader.
pub const RAW_METADATA_KEY: &str = "tally-raw";

/// gRPC metadata key a node sets on a part of a swap request it forwards to another
/// shard's leader: every chain of it is a swap, whose quote expires at its first (give)
/// transfer's `user_data_64`. The leader settles dry slices as for any request (so the
/// refills of a slice stay on one node, under its refill lock), with the swaps' quotes
/// checked before each refill and resend ([`LedgerApi::settle_dry`]); a chain whose quote
/// lapsed reads [`spread::QUOTE_LAPSED`] on each of its events, for the forwarding node to
/// settle as a late swap.
pub const SWAP_QUOTES_METADATA_KEY: &str = "tally-swap-quotes";

/// gRPC metadata key a node sets on a part of a request it split over shards whose first
/// event's `imported` flag differs from the request's first event's: `1` if the request
/// is imported, `0` if not. The shard's leader judges the part by it, as the whole
/// request is judged (TigerBeetle's rule; docs/SHARDING.md §1).
pub const IMPORTED_METADATA_KEY: &str = "tally-imported";

/// Whether a ledger request carries a node's headers ([`SHARD_METADATA_KEY`],
/// [`RAW_METADATA_KEY`], [`SWAP_QUOTES_METADATA_KEY`], [`IMPORTED_METADATA_KEY`]): they
/// skip the edge checks that keep clients away from Tally's internal accounts and ids, so
/// the server refuses such a request without the cluster key (`tally_proto::auth`).
#[must_use]
pub fn carries_node_headers(metadata: &tonic::metadata::MetadataMap) -> bool {
    [SHARD_METADATA_KEY, RAW_METADATA_KEY, SWAP_QUOTES_METADATA_KEY, IMPORTED_METADATA_KEY]
        .iter()
        .any(|key| metadata.contains_key(*key))
}

/// Marks a forwarded part judged imported or not by `judged` (see [`IMPORTED_METADATA_KEY`]).
fn judged_as<M>(request: &mut Request<M>, judged: Option<bool>) {
    if let Some(imported) = judged {
        request
            .metadata_mut()
            .insert(IMPORTED_METADATA_KEY, MetadataValue::from(u32::from(imported)));
    }
}

/// How a request is judged imported or not: by its first event if it is not routed (the
/// node that takes a client's request), else by [`IMPORTED_METADATA_KEY`] if set.
fn judged_of<T>(
    request: &Request<T>,
    routed: Option<ShardId>,
    first_imported: Option<bool>,
) -> Result<Option<bool>, Status> {
    let Some(value) = request.metadata().get(IMPORTED_METADATA_KEY) else {
        return Ok(if routed.is_none() { first_imported } else { None });
    };
    match (routed, value.to_str()) {
        (Some(_), Ok("1")) => Ok(Some(true)),
        (Some(_), Ok("0")) => Ok(Some(false)),
        (Some(_), _) => Err(status::invalid_because(&format!(
            "{IMPORTED_METADATA_KEY} must be 0 or 1, not {value:?}"
        ))),
        (None, _) => Err(status::invalid_because(&format!(
            "{IMPORTED_METADATA_KEY} is set on a request routed to no shard ({SHARD_METADATA_KEY})"
        ))),
    }
}

/// The outcomes of a cross-shard `chain` whose first event's `imported` flag differs from
/// its request's, as the ledger's batch loop gives them, with nothing to read: the first
/// event fails on its flag, every other on the chain, and the request's last event, if
/// linked, leaves the chain open (`last`: whether the chain ends the request). `now` is
/// the cluster time of the refusal.
fn misjudged_chain(chain: &[crate::ledger::Transfer], last: bool, now: u64) -> Vec<(u64, i32)> {
    use crate::ledger::CreateTransferStatus as TS;
    let end = chain.len() - 1;
    chain
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let status = if last && k == end && t.linked() {
                TS::LinkedEventChainOpen
            } else if k > 0 {
                TS::LinkedEventFailed
            } else {
                imported_mismatch(t)
            };
            (now, wire_status(status.code()))
        })
        .collect()
}

fn invalid_route(e: &RouteError) -> Status {
    Status::invalid_argument(format!("TALLY:InvalidRequest: {e}"))
}

/// Refuses a routed request holding an event that belongs to another shard (or to a
/// cross-shard transaction).
fn check_routed(shards: &[Option<ShardId>], routed: ShardId) -> Result<(), Status> {
    match shards.iter().position(|&s| s != Some(routed)) {
        None => Ok(()),
        Some(index) => Err(status::wrong_shard(&match shards[index] {
            Some(shard) => format!(
                "event {index} belongs to shard {}, not to the routed shard {}",
                shard.0, routed.0
            ),
            None => format!("event {index} belongs to a cross-shard transaction"),
        })),
    }
}

/// A request naming an internal account (only nodes use them, in routed requests).
fn reserved(index: usize) -> Status {
    Status::invalid_argument(format!(
        "TALLY:InvalidRequest: event {index} names an account id whose high 64 bits are \
         {:#x}: those ids are reserved for Tally's internal accounts",
        xshard::INTERNAL_ID_HI
    ))
}

/// Whether `t` is a post or void with an id Tally derives for resolving its pending
/// transfer as a cross-shard leg (`ledger::internal`): only a node may send one, or a
/// client that learnt a leg's id could resolve it behind its transaction's decision.
fn resolves_as_tally(t: &crate::ledger::Transfer) -> bool {
    crate::ledger::internal::is_derived_resolution(t)
}

/// Why a client's `ledger` is Tally's own (`ledger::internal`), if it is.
fn reserved_ledger(ledger: u32) -> Option<String> {
    use crate::ledger::internal::RESERVED_LEDGER_MIN;
    (ledger >= RESERVED_LEDGER_MIN).then(|| {
        format!(
            "ledger = {ledger}: ledgers {RESERVED_LEDGER_MIN}..={} are reserved for Tally",
            u32::MAX
        )
    })
}

/// Why a client's `code` or `ledger` is Tally's own (`ledger::internal`), if it is.
pub(super) fn reserved_code_or_ledger(code: u16, ledger: u32) -> Option<String> {
    use crate::ledger::internal::RESERVED_CODE_MIN;
    if code >= RESERVED_CODE_MIN {
        Some(format!("code = {code}: codes {RESERVED_CODE_MIN}..=65535 are reserved for Tally"))
    } else {
        reserved_ledger(ledger)
    }
}

/// Why a client's transfer `t` uses one of Tally's own codes, ledgers or the leg timeout,
/// if it does.
fn reserved_in(t: &crate::ledger::Transfer) -> Option<String> {
    use crate::ledger::internal::LEG_TIMEOUT;
    reserved_transfer_id(t.id.0).or_else(|| reserved_code_or_ledger(t.code, t.ledger)).or_else(|| {
        (t.timeout == LEG_TIMEOUT).then(|| {
            format!(
                "timeout = {LEG_TIMEOUT}: the largest timeout marks Tally's own legs (at most {} s)",
                LEG_TIMEOUT - 1
            )
        })
    })
}

/// Why a client's transfer id is Tally's own (`ledger::internal::RESOLUTION_ID_HI`), if it is.
pub(super) fn reserved_transfer_id(id: u128) -> Option<String> {
    use crate::ledger::internal::{RESOLUTION_ID_HI, is_reserved_transfer_id};
    is_reserved_transfer_id(id).then(|| {
        format!(
            "id = {id:#x}: transfer ids whose high 32 bits are {RESOLUTION_ID_HI:#x} are \
             reserved for Tally's resolutions of cross-shard legs: choose another id"
        )
    })
}

fn reserved_resolution(index: usize) -> Status {
    Status::invalid_argument(format!(
        "TALLY:InvalidRequest: event {index} resolves its pending transfer with an id Tally \
         derives for its own resolutions of cross-shard legs (from SHA-256 of \"tally-post\", \
         \"tally-void\", \"tally-client-post\" or \"tally-client-void\" and the pending id, \
         in the range whose high 32 bits are {:#x} or, as before 2026-12-07, all 128 bits): \
         choose another id",
        crate::ledger::internal::RESOLUTION_ID_HI
    ))
}

/// What [`LedgerApi::create`] did.
struct Created {
    /// (timestamp, wire status) per transfer, in request order.
    outcomes: Vec<(u64, i32)>,
    /// Cross-shard chains decided void because their quote expired: (index of the chain's
    /// first transfer, quote expiry, cluster time then).
    expired: Vec<(usize, u64, u64)>,
    /// Single-shard chains left unsettled because their quote expired while their spread
    /// account's slice was dry ([`LedgerApi::settle_dry`]): their outcomes hold
    /// `slice_dry`, and a caller must settle them.
    lapsed: Vec<spread::QuoteLapsed>,
}

/// Late swaps settled ([`LedgerApi::settle_late_swaps`]): (request index, swap, its two
/// transfers as stored if it applied, `None` if it expired for good), and those to run.
type LateSwaps =
    (Vec<(usize, swap::Swap, Option<Vec<crate::ledger::Transfer>>)>, Vec<(usize, swap::Swap)>);

/// `made`'s two transfers as stored, if `found` holds both as the swap asked.
fn applied(
    made: &swap::Swap,
    found: &HashMap<u128, crate::ledger::Transfer>,
) -> Option<Vec<crate::ledger::Transfer>> {
    let both: Vec<crate::ledger::Transfer> =
        made.transfers.iter().filter_map(|t| found.get(&t.id.0).copied()).collect();
    made.applied_as(&both).then_some(both)
}

/// One step of an account query ([`StateMachine::get_account_transfers_step`] or
/// [`StateMachine::get_account_balances_step`]).
type QueryStep<T> = fn(
    &StateMachine<crate::storage::ledger_store::DurableStore>,
    &crate::ledger::AccountFilter,
    &mut crate::ledger::AccountQuery,
    &mut Vec<T>,
);

/// Transfer results on the wire from (timestamp, status) outcomes.
fn transfer_results(outcomes: Vec<(u64, i32)>) -> Vec<v1::CreateTransferResult> {
    outcomes
        .into_iter()
        .map(|(timestamp, status)| v1::CreateTransferResult { timestamp, status })
        .collect()
}

fn wire_status(code: u32) -> i32 {
    i32::try_from(code).expect("status codes are small")
}

/// Puts each part's results back at their events' places. Each part's results are for
/// its indexes, in order.
fn merge<T: Default + Clone>(
    events: usize,
    parts: Vec<(&Vec<usize>, Vec<T>)>,
) -> Result<Vec<T>, Status> {
    let mut out = vec![T::default(); events];
    for (indexes, results) in parts {
        if results.len() != indexes.len() {
            return Err(Status::internal(format!(
                "TALLY:Internal: a shard answered {} results for {} events",
                results.len(),
                indexes.len()
            )));
        }
        for (&index, result) in indexes.iter().zip(results) {
            out[index] = result;
        }
    }
    Ok(out)
}

/// Crash-test builds: holds a late swap's burns (failpoint `swap::before_burn`,
/// `return(PATH)`) until the file PATH exists or `deadline` passes, so that a test can
/// apply an earlier attempt of the swap between the lookup and the burn, then release them.
#[cfg(feature = "failpoints")]
async fn hold_burns(deadline: Instant) {
    const POLL: Duration = Duration::from_millis(10);
    let Some(Some(release)) = fail::eval("swap::before_burn", |path| path) else { return };
    tracing::warn!(%release, "failpoint swap::before_burn: late swaps looked up, burns held");
    let release = std::path::Path::new(&release);
    while !release.exists() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Lookup results of several shards, in the order of `ids`: each shard's results are
/// the ids it found, in the order asked; an id found nowhere is skipped.
///
/// An id found on several shards (a cross-shard pending transfer's alias and marker share
/// its id) is taken once, from the shard whose record ranks lowest (`rank`; the first such
/// shard on a tie), and every shard's list moves past it.
fn merge_found<T>(
    ids: &[u128],
    mut found: Vec<std::vec::IntoIter<T>>,
    id_of: impl Fn(&T) -> u128,
    rank: impl Fn(&T) -> u8,
) -> Vec<T> {
    let mut heads: Vec<Option<T>> = found.iter_mut().map(Iterator::next).collect();
    let mut out = Vec::new();
    for &id in ids {
        let mut best: Option<T> = None;
        for (head, rest) in heads.iter_mut().zip(found.iter_mut()) {
            if head.as_ref().is_some_and(|h| id_of(h) == id) {
                let record = std::mem::replace(head, rest.next()).expect("matched");
                if best.as_ref().is_none_or(|b| rank(&record) < rank(b)) {
                    best = Some(record);
                }
            }
        }
        out.extend(best);
    }
    out
}

/// Records a peer sent, decoded (a peer's malformed record is an internal error).
fn peer_decoded<W, T>(
    wire: &[W],
    decode: fn(usize, &W) -> Result<T, convert::RequestError>,
) -> Result<Vec<T>, Status> {
    wire.iter()
        .enumerate()
        .map(|(i, w)| {
            decode(i, w).map_err(|e| Status::internal(format!("TALLY:Internal: from a peer: {e}")))
        })
        .collect()
}

fn id_of(id: Option<&tally_proto::Uint128>) -> u128 {
    id.copied().map_or(0, u128::from)
}

impl LedgerApi {
    /// Serves the `local` shards of a cluster of `shards` data shards, sending the parts of
    /// a shard the map (`meta`) moved off this node to the nodes it names; reaches the other
    /// nodes over `channels`, counting each part it forwards in `counters`. (The shard map
    /// version of requests is checked before they reach it: `Metadata::check_version` as
    /// the service's interceptor.)
    #[must_use]
    pub fn new(
        shards: u32,
        local: BTreeMap<ShardId, LocalShard>,
        meta: Metadata,
        channels: Channels,
        request_timeout: Duration,
        counters: Arc<super::NodeCounters>,
    ) -> Self {
        let internal_ready = parking_lot::Mutex::default();
        let refills = spread::Refills::default();
        let inner = Inner {
            shards,
            local,
            meta,
            channels,
            request_timeout,
            counters,
            internal_ready,
            refills,
            resolving: std::sync::atomic::AtomicUsize::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    fn shard(&self, shard: ShardId) -> Result<&LocalShard, Status> {
        self.inner
            .local
            .get(&shard)
            .ok_or_else(|| status::unknown_shard(shard.0, self.inner.shards))
    }

    /// `tally-shard` of a request, if it is routed (to a shard this node hosts).
    fn routed_shard<T>(&self, request: &Request<T>) -> Result<Option<ShardId>, Status> {
        let Some(value) = request.metadata().get(SHARD_METADATA_KEY) else { return Ok(None) };
        let shard =
            value.to_str().ok().and_then(|v| v.parse().ok()).map(ShardId).ok_or_else(|| {
                status::wrong_shard(&format!(
                    "{SHARD_METADATA_KEY} must be a shard number, not {value:?}"
                ))
            })?;
        self.shard(shard)?;
        Ok(Some(shard))
    }

    /// Decided transactions whose resolution is being retried in the background.
    pub(super) fn counters(&self) -> &super::NodeCounters {
        &self.inner.counters
    }

    pub(super) fn resolving(&self) -> &std::sync::atomic::AtomicUsize {
        &self.inner.resolving
    }

    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.request_timeout
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.inner.request_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    fn peer(&self, addr: &str) -> Result<LedgerServiceClient<NodeChannel>, Status> {
        let channel = self
            .inner
            .channels
            .get(addr)
            .map_err(|e| Status::unavailable(format!("TALLY:Unreachable: {addr}: {e}")))?;
        Ok(LedgerServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize))
    }

    fn leader_check(&self, replica: &Replica) -> Result<(), Status> {
        if replica.is_leader() { Ok(()) } else { Err(self.not_leader(replica)) }
    }

    /// Why this node does not serve `replica`'s shard: stopped, or who leads (for a shard
    /// the map moved off this node, a node it names: the leftover replica here knows no
    /// current leader).
    fn not_leader(&self, replica: &Replica) -> Status {
        // A group stopped by an I/O error still names its last leader (often itself):
        // say it stopped instead of sending the client back here.
        if let Some(e) = replica.fatal() {
            return status::replica(&ReplicaError::Stopped(e));
        }
        let hint = match self.inner.meta.departed(replica.shard.0) {
            Some(addrs) if !addrs.is_empty() => {
                LeaderHint { id: None, addr: addrs.first().cloned() }
            }
            _ => replica.leader_hint(),
        };
        status::replica(&ReplicaError::NotLeader(hint))
    }

    /// Serves a part on `shard`: here with `local` while this node leads it, else (if
    /// `forward`) forwarded to the leader with `remote(client, time left)`.
    async fn on_shard<T, L, LF, R, RF>(
        &self,
        shard: ShardId,
        deadline: Instant,
        forward: bool,
        local: L,
        remote: R,
    ) -> Result<T, Status>
    where
        L: Fn(LocalShard) -> LF,
        LF: Future<Output = Result<T, Status>>,
        R: Fn(LedgerServiceClient<NodeChannel>, Duration) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let here = self.shard(shard)?.clone();
        // The map moved this shard off this node: unless the replica here still leads (the
        // move is under way), it is a leftover that hears of no leader, or of a stale one (a
        // removed leader names itself, with no address). The nodes the map names take the
        // part then (and redirect it to their leader).
        let elsewhere = self.inner.meta.departed(shard.0).filter(|addrs| !addrs.is_empty());
        let mut redirect: Option<String> = None;
        for attempt in 1..=FORWARD_ATTEMPTS_MAX {
            // After this node's own attempt was redirected, follow the redirect even if the
            // replica still says it leads: a leader removed from the voters stays `Leader`
            // of its old term until it steps down, refusing writes with a hint (seen in the
            // shard-map test; three local attempts then failed the part).
            if here.replica.is_leader() && redirect.is_none() {
                match local(here.clone()).await {
                    // Leadership moved before the part was proposed (nothing applied):
                    // follow it like a stale hint.
                    Err(e) if attempt < FORWARD_ATTEMPTS_MAX && status::is_not_leader(&e) => {
                        redirect = status::leader_addr(&e);
                        continue;
                    }
                    served => return served,
                }
            }
            if !forward {
                return Err(self.not_leader(&here.replica));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(status::timeout(self.timeout_ms()));
            }
            let target = match (redirect.take(), &elsewhere) {
                (Some(addr), _) => addr,
                (None, Some(addrs)) => addrs[(attempt as usize - 1) % addrs.len()].clone(),
                (None, None) => match here.replica.leader_hint().addr {
                    Some(addr) => addr,
                    // An election or a leadership transfer: wait a little for its outcome.
                    None => match here.replica.wait_leader(left.min(LEADER_WAIT)).await.addr {
                        Some(_) => continue,
                        None => return Err(self.not_leader(&here.replica)),
                    },
                },
            };
            self.inner.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            // Bounded here too: a half-open connection would never answer.
            let answer = tokio::time::timeout(left, remote(self.peer(&target)?, left))
                .await
                .map_err(|_| status::timeout(self.timeout_ms()))?;
            match answer {
                Ok(reply) => return Ok(reply),
                Err(e) if attempt < FORWARD_ATTEMPTS_MAX && status::is_not_leader(&e) => {
                    tracing::debug!(%shard, from = %target, "forward redirected");
                    redirect = status::leader_addr(&e).filter(|a| *a != target);
                }
                Err(e) => return Err(status::forward_failed(&target, e)),
            }
        }
        Err(self.not_leader(&here.replica))
    }

    /// Group-commits `records` on `shard`, which this node must lead, judged imported or
    /// not by `imported` if given, else by the first event ([`Batcher::submit_judged`]).
    async fn write_local(
        &self,
        here: &LocalShard,
        kind: Kind,
        events: usize,
        imported: Option<bool>,
        records: Vec<u8>,
    ) -> Result<Vec<EventOutcome>, Status> {
        self.leader_check(&here.replica)?;
        let events = u32::try_from(events).expect("validated against BATCH_EVENTS_MAX");
        let submit = here.batcher.submit_judged(kind, events, imported, records);
        let outcome: RequestOutcome = tokio::time::timeout(self.inner.request_timeout, submit)
            .await
            .map_err(|_| status::timeout(self.timeout_ms()))?
            .map_err(|e| status::submit(&e))?;
        let outcomes = outcome.map_err(|reason| status::refused(&reason))?;
        assert_eq!(outcomes.len(), events as usize, "one outcome per event");
        Ok(outcomes)
    }

    /// Reads `shard`'s state machine after a linearizable barrier; this node must lead it.
    async fn read_local<T>(
        &self,
        here: &LocalShard,
        read: impl FnOnce(&StateMachine<crate::storage::ledger_store::DurableStore>) -> T,
    ) -> Result<T, Status> {
        tokio::time::timeout(self.inner.request_timeout, here.replica.read_barrier())
            .await
            .map_err(|_| status::timeout(self.timeout_ms()))?
            .map_err(|e| match e {
                ReplicaError::NotLeader(_) => self.not_leader(&here.replica),
                e => status::replica(&e),
            })?;
        Ok(read(&here.replica.ledger.read().machine))
    }

    /// Runs `filter`'s account query on `shard`'s state machine after a linearizable
    /// barrier, in steps of at most [`crate::ledger::QUERY_VISITS_PER_STEP`] transfers,
    /// each under its own hold of the ledger, yielding between them (the ledger's writes
    /// wait for one step, not for the walk); within `request_timeout_ms` in all.
    async fn query_local<T>(
        &self,
        here: &LocalShard,
        filter: &crate::ledger::AccountFilter,
        step: QueryStep<T>,
    ) -> Result<Vec<T>, Status> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut query = self.read_local(here, |m| m.account_query_start(filter)).await?;
        let mut out = Vec::new();
        while !query.done() {
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "TALLY:Timeout: the account query walked the account's transfers for \
                     request_timeout_ms ({} ms) without its answer; narrow its timestamp range \
                     or raise its limit",
                    self.timeout_ms()
                )));
            }
            step(&here.replica.ledger.read().machine, filter, &mut query, &mut out);
            tokio::task::yield_now().await;
        }
        Ok(out)
    }

    /// Creates `split.events`: all here if the request was routed (this node must lead
    /// that shard), else split by shard, each part group-committed here if this node leads
    /// its shard or sent on with `forward(peer, time left, shard, the part's indexes, how
    /// it is judged)`; the outcomes (timestamp, wire status) in request order.
    async fn write_split<E: BatchEvent, F, FF>(
        &self,
        split: Split<'_, E>,
        encode: impl Fn(&E, &mut Vec<u8>) + Copy,
        forward: F,
    ) -> Result<Vec<(u64, i32)>, Status>
    where
        F: Fn(LedgerServiceClient<NodeChannel>, Duration, ShardId, &[usize], Option<bool>) -> FF
            + Copy,
        FF: Future<Output = Result<Vec<(u64, i32)>, Status>>,
    {
        let Split { kind, events, shards, routed, judge } = split;
        // A part is marked with `judge` only where its own first event would say otherwise.
        let judged = move |indexes: &[usize]| {
            judge.filter(|&j| indexes.first().is_some_and(|&i| events[i].imported() != j))
        };
        let local = |here: LocalShard, indexes: Vec<usize>| async move {
            let mut records = Vec::with_capacity(indexes.len() * records::TRANSFER_BYTES);
            for &i in &indexes {
                encode(&events[i], &mut records);
            }
            let judged = judged(&indexes);
            let outcomes = self.write_local(&here, kind, indexes.len(), judged, records).await?;
            Ok(outcomes
                .into_iter()
                .map(|(timestamp, code)| (timestamp, wire_status(code)))
                .collect())
        };
        if let Some(shard) = routed {
            check_routed(shards, shard)?;
            return local(self.shard(shard)?.clone(), (0..events.len()).collect()).await;
        }
        let deadline = self.deadline();
        let groups = route::group(shards);
        let parts = groups.iter().map(|(&shard, indexes)| async move {
            let outcomes = self
                .on_shard(
                    shard,
                    deadline,
                    true,
                    |here| local(here, indexes.clone()),
                    |peer, left| forward(peer, left, shard, indexes, judged(indexes)),
                )
                .await?;
            Ok::<_, Status>((indexes, outcomes))
        });
        let several = groups.len() > 1;
        let done = try_join_all(parts).await;
        merge(events.len(), done.map_err(|e| if several { status::partial(e) } else { e })?)
    }

    /// Makes the swaps `requests`, one result per swap in order. Each is checked on its
    /// own: a malformed swap, one reusing an id of an earlier swap of the request, or one
    /// whose quote has (nearly) expired is refused alone, and the rest run together as one
    /// `create` (their cross-shard steps shared). A resend of an applied swap reads
    /// `EXISTS`, also after its quote expired.
    ///
    /// # Errors
    /// What fails the whole request retryably (no leader, timeout): nothing of a swap is
    /// then half-applied, and a resend finds each swap's outcome.
    async fn swap_all(&self, requests: &[v1::SwapRequest]) -> Result<Vec<v1::SwapResult>, Status> {
        let refused =
            |refusal: v1::SwapRefusal, why: &Status, received: Option<u128>| v1::SwapResult {
                refusal: refusal as i32,
                message: why.message().to_owned(),
                results: Vec::new(),
                amount_received: received.map(Into::into),
            };
        let mut results: Vec<Option<v1::SwapResult>> = vec![None; requests.len()];
        let mut valid: Vec<(usize, swap::Swap)> = Vec::new();
        let mut seen: HashMap<u128, usize> = HashMap::new();
        for (i, request) in requests.iter().enumerate() {
            let made = match swap::Swap::from_request(request) {
                Ok(made) => made,
                Err(e) => {
                    results[i] = Some(refused(v1::SwapRefusal::Invalid, &e, None));
                    continue;
                }
            };
            let reused = made.transfers.iter().find_map(|t| seen.get(&t.id.0).map(|&j| (t.id, j)));
            if let Some((id, j)) = reused {
                let e = Status::invalid_argument(format!(
                    "TALLY:InvalidRequest: swap {i}: transfer id {:#x} is also used by swap {j} \
                     of this request",
                    id.0
                ));
                results[i] = Some(refused(v1::SwapRefusal::Invalid, &e, None));
                continue;
            }
            seen.extend(made.transfers.iter().map(|t| (t.id.0, i)));
            valid.push((i, made));
        }
        let received = |made: &swap::Swap| Some(made.transfers[1].amount.into());
        // A swap settled by `settle_late_swaps` at cluster time `now`: applied (its two
        // transfers as stored), or refused for its quote before anything was created.
        let settled = |made: &swap::Swap, applied: Option<Vec<crate::ledger::Transfer>>, now| {
            if let Some(both) = applied {
                let exists = wire_status(crate::ledger::CreateTransferStatus::Exists.code());
                v1::SwapResult {
                    results: transfer_results(both.iter().map(|t| (t.timestamp, exists)).collect()),
                    amount_received: received(made),
                    ..v1::SwapResult::default()
                }
            } else {
                let expired = swap::quote_expired(made.expires_at, now);
                refused(v1::SwapRefusal::QuoteExpired, &expired, Some(made.transfers[1].amount))
            }
        };
        let now = super::batcher::cluster_time_now_ns();
        let (late, ready): (Vec<_>, Vec<_>) =
            valid.into_iter().partition(|(_, made)| made.check_quote(now).is_err());
        // (request index, swap, whether it is a late swap handed back to run).
        let mut ready: Vec<(usize, swap::Swap, bool)> =
            ready.into_iter().map(|(i, made)| (i, made, false)).collect();
        if !late.is_empty() {
            let (answered, to_run) = self.settle_late_swaps(late).await?;
            for (i, made, applied) in answered {
                results[i] = Some(settled(&made, applied, now));
            }
            ready.extend(to_run.into_iter().map(|(i, made)| (i, made, true)));
        }
        if !ready.is_empty() {
            let transfers: Vec<crate::ledger::Transfer> =
                ready.iter().flat_map(|(_, made, _)| made.transfers).collect();
            let wire: Vec<v1::Transfer> =
                transfers.iter().map(convert::transfer_to_proto).collect();
            // A late cross-shard swap handed back runs with the edge's margin taken off its
            // expiry, already past: its transaction ends void unless an earlier attempt's
            // decision posted it first.
            let not_after: Vec<u64> = ready
                .iter()
                .flat_map(|(_, made, late)| {
                    let at = if *late {
                        made.expires_at.saturating_sub(swap::QUOTE_TIME_LEFT_MIN_NS)
                    } else {
                        made.expires_at
                    };
                    [at; 2]
                })
                .collect();
            // Swaps are never imported: judged as the first event says (not imported).
            let created = self.create(&transfers, &wire, None, &not_after, false, None).await?;
            let expired: HashMap<usize, (u64, u64)> =
                created.expired.iter().map(|&(start, at, now)| (start / 2, (at, now))).collect();
            // Single-shard swaps whose quote expired while their pool's slice was dry: not
            // proposed again, and now settled as late ones (their give id burnt, so an
            // earlier attempt still in flight can never apply either).
            let lapsed: HashMap<usize, u64> =
                created.lapsed.iter().map(|l| (l.start / 2, l.now)).collect();
            if !lapsed.is_empty() {
                // Tagged by their index in `ready`.
                let swaps = lapsed.keys().map(|&k| (k, ready[k].1)).collect();
                let (answered, to_run) =
                    self.settle_late_swaps(swaps).await.map_err(status::partial)?;
                if let Some(&(k, _)) = to_run.first() {
                    return Err(status::partial(Status::internal(format!(
                        "TALLY:Internal: swap {} found a dry slice on one shard and was then \
                         routed across shards; resend the request",
                        ready[k].0
                    ))));
                }
                for (k, made, applied) in answered {
                    results[ready[k].0] = Some(settled(&made, applied, lapsed[&k]));
                }
            }
            let mut outcomes = transfer_results(created.outcomes).into_iter();
            for (k, (i, made, late)) in ready.iter().enumerate() {
                let pair: Vec<v1::CreateTransferResult> = outcomes.by_ref().take(2).collect();
                if lapsed.contains_key(&k) {
                    continue;
                }
                let (refusal, message) = match expired.get(&k) {
                    Some(&(_, now)) => (
                        v1::SwapRefusal::QuoteExpired,
                        swap::quote_expired(made.expires_at, now).message().to_owned(),
                    ),
                    None => (v1::SwapRefusal::None, String::new()),
                };
                // A late swap voided for its quote is answered as one refused before it
                // started (it was, by this node): no transfer results.
                let late_refusal = *late && refusal == v1::SwapRefusal::QuoteExpired;
                results[*i] = Some(v1::SwapResult {
                    refusal: refusal as i32,
                    message,
                    results: if late_refusal { Vec::new() } else { pair },
                    amount_received: received(made),
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Status::internal("TALLY:Internal: a swap without a result")))
            .collect()
    }

    /// Settles the swaps whose quote had (nearly) expired when they reached this node:
    /// each is answered applied (both transfers found as asked: `EXISTS`) or expired for
    /// good, or handed back to run as usual. Expired "for good" must hold while an earlier
    /// attempt of the same swap (a resend's first try, abandoned by its client) may still
    /// be in flight on any node, so a lookup that finds nothing is not enough:
    /// - a swap on one shard has its give transfer's id burnt there, through its Raft log
    ///   (a transfer from an account no one has, which the ledger refuses and records as
    ///   failed): an earlier attempt applied before it is found, one applied after it
    ///   meets `id_already_failed` and applies nothing;
    /// - a cross-shard swap is handed back, to run with [`swap::QUOTE_TIME_LEFT_MIN_NS`]
    ///   taken off its expiry: its transaction, the same for every attempt, is decided
    ///   once, void unless an earlier attempt's decision posted it first.
    ///
    /// Also settles the single-shard swaps whose quote lapsed while their pool's slice
    /// was dry ([`spread::QuoteLapsed`]). Each swap's `usize` is the caller's tag for it.
    ///
    /// # Errors
    /// What fails the whole request retryably; nothing of these swaps has applied by this
    /// node's doing (the caller marks the error partial when other swaps of the request
    /// may have).
    async fn settle_late_swaps(&self, late: Vec<(usize, swap::Swap)>) -> Result<LateSwaps, Status> {
        let count = self.inner.shards;
        let deadline = self.deadline();
        let found = self.found_transfers(late.iter().flat_map(|(_, m)| m.transfers)).await?;
        let mut answered = Vec::new();
        let mut to_run = Vec::new();
        let mut burns: BTreeMap<ShardId, Vec<(usize, swap::Swap)>> = BTreeMap::new();
        for (i, made) in late {
            if let Some(both) = applied(&made, &found) {
                answered.push((i, made, Some(both)));
                continue;
            }
            let routes = route::transfer_routes(&made.transfers, count, |_| None);
            match routes.shards[..] {
                [Some(shard), Some(other)] if shard == other && routes.transactions.is_empty() => {
                    burns.entry(shard).or_default().push((i, made));
                }
                _ => to_run.push((i, made)),
            }
        }
        #[cfg(feature = "failpoints")]
        if !burns.is_empty() {
            hold_burns(deadline).await;
        }
        let burnt = burns.into_iter().map(|(shard, swaps)| async move {
            let events = swaps.iter().map(|(_, made)| spread::burn_of(&made.transfers[0]));
            let results = self.transfers_on(shard, events.collect(), deadline).await?;
            Ok::<_, Status>(swaps.into_iter().zip(results).collect::<Vec<_>>())
        });
        let mut taken = Vec::new();
        for ((i, made), (_, status)) in try_join_all(burnt).await?.into_iter().flatten() {
            if xshard::exists_differently(status) {
                // The give id exists: an earlier attempt may have applied meanwhile.
                taken.push((i, made));
            } else {
                // Burnt (`debit_account_not_found`), burnt before (`id_already_failed`), or
                // refused by a check the ledger makes before it looks the debit account up,
                // on fields the burn shares with the give (a zero ledger or code, the credit
                // account's id): the give would be refused by it too. It never applies.
                answered.push((i, made, None));
            }
        }
        if !taken.is_empty() {
            let found = self.found_transfers(taken.iter().flat_map(|(_, m)| m.transfers)).await?;
            for (i, made) in taken {
                // Not applied as asked: the id belongs to another transfer, and this swap
                // can never apply.
                let both = applied(&made, &found);
                answered.push((i, made, both));
            }
        }
        Ok((answered, to_run))
    }

    /// The transfers found among the ids of `transfers`, by id.
    async fn found_transfers(
        &self,
        transfers: impl Iterator<Item = crate::ledger::Transfer>,
    ) -> Result<HashMap<u128, crate::ledger::Transfer>, Status> {
        let ids = transfers.map(|t| t.id.0.into()).collect();
        let found = self.lookup_transfers(Request::new(v1::LookupTransfersRequest { ids }));
        let mut by_id = HashMap::new();
        for (k, wire) in found.await?.into_inner().transfers.iter().enumerate() {
            let t = convert::transfer_from_proto(k, wire)
                .map_err(|e| Status::internal(format!("TALLY:Internal: {e}")))?;
            by_id.insert(t.id.0, t);
        }
        Ok(by_id)
    }

    /// Creates validated `transfers` (`wire`: the same as sent, for forwarding): routed
    /// to one shard, or split by shard, each cross-shard chain run as a transaction; the
    /// outcomes in request order. `not_after` is empty or holds, per transfer, the quote
    /// expiry of its chain (swaps): a cross-shard chain is not posted after it (see
    /// [`LedgerApi::run_transactions`]), and is then listed in [`Created::expired`].
    /// `judge`: how the request is judged imported or not ([`judged_of`]); a cross-shard
    /// chain whose first event's flag differs fails on it here, and is never run.
    async fn create(
        &self,
        transfers: &[crate::ledger::Transfer],
        wire: &[v1::Transfer],
        routed_to: Option<ShardId>,
        not_after: &[u64],
        raw: bool,
        judge: Option<bool>,
    ) -> Result<Created, Status> {
        let count = self.inner.shards;
        if routed_to.is_none() {
            let internal = crate::ledger::internal::has_internal_account;
            if let Some(i) = transfers.iter().position(internal) {
                return Err(reserved(i));
            }
            if let Some(i) = transfers.iter().position(resolves_as_tally) {
                return Err(reserved_resolution(i));
            }
            if let Some((i, why)) =
                transfers.iter().enumerate().find_map(|(i, t)| reserved_in(t).map(|why| (i, why)))
            {
                return Err(status::invalid_because(&format!("event {i}: {why}")));
            }
        }
        let routes = match routed_to {
            // A node's own steps: applied where they were sent (a leg between two spread
            // accounts would otherwise be routed by its own id).
            Some(shard) if raw => route::TransferRoutes {
                shards: vec![Some(shard); transfers.len()],
                transactions: Vec::new(),
            },
            // The forwarding node found where each pending transfer lives.
            Some(shard) => route::transfer_routes(transfers, count, |_| Some(shard.0)),
            None => {
                let to_find = route::pending_to_find(transfers, count);
                let found = if to_find.is_empty() {
                    HashMap::new()
                } else {
                    self.find_pending(&to_find, self.deadline()).await?
                };
                route::transfer_routes(transfers, count, |id| found.get(&id).copied())
            }
        };
        let swap_quotes = !not_after.is_empty();
        let single =
            self.write_transfers(transfers, wire, (&routes.shards, routed_to, judge), swap_quotes);
        let deadline = self.deadline();
        // Cross-shard chains whose first event's `imported` flag differs from the
        // request's: answered at once (`misjudged_chain`), the others run.
        let (misjudged, run): (Vec<_>, Vec<_>) = routes
            .transactions
            .iter()
            .cloned()
            .partition(|range| judge.is_some_and(|j| transfers[range.start].imported() != j));
        let chains: Vec<xshard::Placed<'_>> = run
            .iter()
            .map(|range| {
                let chain = &transfers[range.clone()];
                (chain, route::placement(chain, count))
            })
            .collect();
        let expiries: Vec<Option<u64>> = if not_after.is_empty() {
            Vec::new()
        } else {
            run.iter().map(|range| not_after.get(range.start).copied()).collect()
        };
        let transactions = async {
            if chains.is_empty() {
                Ok(Vec::new())
            } else {
                self.run_transactions(&chains, &expiries, !raw, deadline).await
            }
        };
        let (mut outcomes, transactions) = tokio::try_join!(single, transactions)
            .map_err(|e| if chains.is_empty() { e } else { status::partial(e) })?;
        let mut expired = Vec::new();
        for (range, settled) in run.iter().zip(transactions) {
            outcomes[range.clone()].copy_from_slice(&settled.results);
            if let Some((at, now)) = settled.expired {
                expired.push((range.start, at, now));
            }
        }
        if !misjudged.is_empty() {
            let now = super::batcher::cluster_time_now_ns();
            for range in misjudged {
                let last = range.end == transfers.len();
                let answered = misjudged_chain(&transfers[range.clone()], last, now);
                outcomes[range].copy_from_slice(&answered);
            }
        }
        // A post or void of a cross-shard pending transfer read `pending_transfer_not_pending`
        // on the shard of its alias or marker (§3e): carried to its debit leg.
        if routed_to.is_none() && count > 1 {
            self.resolve_pending_across(transfers, &routes.shards, &mut outcomes, deadline)
                .await
                .map_err(status::partial)?;
        }
        // A part of a swap request forwarded to another shard's leader may come back with
        // chains whose quote lapsed there (`QUOTE_LAPSED`): settled here with the rest.
        let unsettled = |status: i32| status == spread::SLICE_DRY || status == spread::QUOTE_LAPSED;
        let lapsed = if !raw && outcomes.iter().any(|&(_, s)| unsettled(s)) {
            self.settle_dry(transfers, wire, &routes.shards, routed_to, not_after, &mut outcomes)
                .await
                .map_err(status::partial)?
        } else {
            Vec::new()
        };
        Ok(Created { outcomes, expired, lapsed })
    }

    /// Creates `transfers` (`wire`: as sent) whose shards are `shards` (those of the
    /// transfers created on one shard; `None` for the others), routed to `routed_to` if
    /// the request was, judged by `judge` ([`Split`]), as [`Self::write_split`] does; the
    /// parts it forwards carry [`SWAP_QUOTES_METADATA_KEY`] if `swap_quotes` (every chain
    /// a swap).
    pub(super) async fn write_transfers(
        &self,
        transfers: &[crate::ledger::Transfer],
        wire: &[v1::Transfer],
        (shards, routed_to, judge): (&[Option<ShardId>], Option<ShardId>, Option<bool>),
        swap_quotes: bool,
    ) -> Result<Vec<(u64, i32)>, Status> {
        let split =
            Split { kind: Kind::Transfers, events: transfers, shards, routed: routed_to, judge };
        self.write_split(
            split,
            |t, out| out.extend_from_slice(&records::transfer_encode(t)),
            |mut peer, left, shard, indexes, judged| {
                let transfers = indexes.iter().map(|&i| wire[i]).collect();
                let message = v1::CreateTransfersRequest { transfers };
                let mut request = routed(message, shard, left);
                judged_as(&mut request, judged);
                if swap_quotes {
                    let yes = MetadataValue::from(1_u32);
                    request.metadata_mut().insert(SWAP_QUOTES_METADATA_KEY, yes);
                }
                async move {
                    let reply = peer.create_transfers(request).await?;
                    Ok(reply.into_inner().results.iter().map(|r| (r.timestamp, r.status)).collect())
                }
            },
        )
        .await
    }

    /// The cluster's data-shard count.
    pub(super) fn shard_count(&self) -> u32 {
        self.inner.shards
    }

    /// The refill locks of spread accounts' slices.
    pub(super) fn refills(&self) -> &spread::Refills {
        &self.inner.refills
    }

    /// The shards this node hosts.
    pub(super) fn hosted(&self) -> impl Iterator<Item = &LocalShard> {
        self.inner.local.values()
    }

    /// Whether internal account `id` is known to exist on `shard`; records it if `mark`.
    pub(super) fn internal_ready(&self, shard: ShardId, id: u128, mark: bool) -> bool {
        let mut ready = self.inner.internal_ready.lock();
        if mark { !ready.insert((shard, id)) } else { ready.contains(&(shard, id)) }
    }

    /// Creates `transfers` on `shard` as one request (here if this node leads it, else at
    /// its leader); the outcomes (timestamp, status) in order.
    pub(super) async fn transfers_on(
        &self,
        shard: ShardId,
        transfers: Vec<crate::ledger::Transfer>,
        deadline: Instant,
    ) -> Result<Vec<(u64, u32)>, Status> {
        let transfers = &transfers;
        self.on_shard(
            shard,
            deadline,
            true,
            |here| async move {
                let records = transfers.iter().flat_map(records::transfer_encode).collect();
                self.write_local(&here, Kind::Transfers, transfers.len(), None, records).await
            },
            |mut peer, left| {
                let wire = transfers.iter().map(convert::transfer_to_proto).collect();
                let message = v1::CreateTransfersRequest { transfers: wire };
                let mut request = routed(message, shard, left);
                request.metadata_mut().insert(RAW_METADATA_KEY, MetadataValue::from(1_u32));
                async move {
                    let reply = peer.create_transfers(request).await?;
                    Ok(reply
                        .into_inner()
                        .results
                        .iter()
                        .map(|r| (r.timestamp, u32::try_from(r.status).unwrap_or(u32::MAX)))
                        .collect())
                }
            },
        )
        .await
    }

    /// Creates `accounts` on `shard` as one request; the outcomes in order.
    pub(super) async fn accounts_on(
        &self,
        shard: ShardId,
        accounts: Vec<crate::ledger::Account>,
        deadline: Instant,
    ) -> Result<Vec<(u64, u32)>, Status> {
        let accounts = &accounts;
        self.on_shard(
            shard,
            deadline,
            true,
            |here| async move {
                let records = accounts.iter().flat_map(records::account_encode).collect();
                self.write_local(&here, Kind::Accounts, accounts.len(), None, records).await
            },
            |mut peer, left| {
                let wire = accounts.iter().map(convert::account_to_proto).collect();
                let message = v1::CreateAccountsRequest { accounts: wire };
                async move {
                    let reply = peer.create_accounts(routed(message, shard, left)).await?;
                    Ok(reply
                        .into_inner()
                        .results
                        .iter()
                        .map(|r| (r.timestamp, u32::try_from(r.status).unwrap_or(u32::MAX)))
                        .collect())
                }
            },
        )
        .await
    }

    /// The transfers found among `ids` on `shard` (linearizable), in the order of `ids`.
    pub(super) async fn lookup_on(
        &self,
        shard: ShardId,
        ids: Vec<TransferId>,
        deadline: Instant,
    ) -> Result<Vec<crate::ledger::Transfer>, Status> {
        let ids = &ids;
        self.on_shard(
            shard,
            deadline,
            true,
            |here| async move { self.read_local(&here, |m| m.lookup_transfers(ids)).await },
            |mut peer, left| {
                let message =
                    v1::LookupTransfersRequest { ids: ids.iter().map(|id| id.0.into()).collect() };
                async move {
                    let reply = peer.lookup_transfers(routed(message, shard, left)).await?;
                    peer_decoded(&reply.into_inner().transfers, convert::transfer_from_proto)
                }
            },
        )
        .await
    }

    /// The accounts found among `ids` on `shard` (linearizable), in the order of `ids`.
    pub(super) async fn lookup_accounts_on(
        &self,
        shard: ShardId,
        ids: Vec<crate::ledger::AccountId>,
        deadline: Instant,
    ) -> Result<Vec<crate::ledger::Account>, Status> {
        let ids = &ids;
        self.on_shard(
            shard,
            deadline,
            true,
            |here| async move { self.read_local(&here, |m| m.lookup_accounts(ids)).await },
            |mut peer, left| {
                let message =
                    v1::LookupAccountsRequest { ids: ids.iter().map(|id| id.0.into()).collect() };
                async move {
                    let reply = peer.lookup_accounts(routed(message, shard, left)).await?;
                    peer_decoded(&reply.into_inner().accounts, convert::account_from_proto)
                }
            },
        )
        .await
    }

    /// `get_account_transfers` with `filter` on `shard` (linearizable).
    pub(super) async fn account_transfers_on(
        &self,
        shard: ShardId,
        filter: crate::ledger::AccountFilter,
        deadline: Instant,
    ) -> Result<Vec<crate::ledger::Transfer>, Status> {
        self.on_shard(
            shard,
            deadline,
            true,
            |here| async move {
                self.query_local(&here, &filter, StateMachine::get_account_transfers_step).await
            },
            |mut peer, left| {
                let message = v1::GetAccountTransfersRequest {
                    filter: Some(convert::filter_to_proto(&filter)),
                };
                async move {
                    let reply = peer.get_account_transfers(routed(message, shard, left)).await?;
                    peer_decoded(&reply.into_inner().transfers, convert::transfer_from_proto)
                }
            },
        )
        .await
    }

    /// Where each pending transfer of `ids` lives (the shard it was found on), by asking
    /// every shard.
    async fn find_pending(
        &self,
        ids: &[TransferId],
        deadline: Instant,
    ) -> Result<HashMap<TransferId, u32>, Status> {
        let wire: Vec<tally_proto::Uint128> = ids.iter().map(|id| id.0.into()).collect();
        let found = self.lookup_transfers_everywhere(ids, &wire, deadline).await?;
        // An id found on two shards: a cross-shard pending transfer's alias (its debit
        // shard) wins over a marker (which a refused transfer reusing the id may have left
        // on a third shard, §3e).
        let mut out: HashMap<TransferId, (u32, bool)> = HashMap::new();
        for (shard, on) in (1..=self.inner.shards).zip(found) {
            for t in on {
                let marker = t.ledger == xshard::INTERNAL_LEDGER
                    && t.code == u32::from(xshard::PENDING_MARKER_CODE);
                let id = TransferId(id_of(t.id.as_ref()));
                let slot = out.entry(id).or_insert((shard, marker));
                if slot.1 && !marker {
                    *slot = (shard, marker);
                }
            }
        }
        Ok(out.into_iter().map(|(id, (shard, _))| (id, shard)).collect())
    }

    /// `lookup_transfers` of `ids` on every shard, one list per shard.
    async fn lookup_transfers_everywhere(
        &self,
        ids: &[TransferId],
        wire: &[tally_proto::Uint128],
        deadline: Instant,
    ) -> Result<Vec<std::vec::IntoIter<v1::Transfer>>, Status> {
        let parts = (1..=self.inner.shards).map(|s| {
            let shard = ShardId(s);
            self.on_shard(
                shard,
                deadline,
                true,
                move |here| async move {
                    let found = self.read_local(&here, |m| m.lookup_transfers(ids)).await?;
                    Ok(v1::LookupTransfersReply {
                        transfers: found.iter().map(convert::transfer_to_proto).collect(),
                    })
                },
                move |mut peer, left| {
                    let message = v1::LookupTransfersRequest { ids: wire.to_vec() };
                    async move {
                        peer.lookup_transfers(routed(message, shard, left))
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
        });
        let replies = try_join_all(parts).await?;
        Ok(replies.into_iter().map(|r| r.transfers.into_iter()).collect())
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn create_accounts(
        &self,
        request: Request<v1::CreateAccountsRequest>,
    ) -> Result<Response<v1::CreateAccountsReply>, Status> {
        let accounts =
            convert::accounts_from_request(request.get_ref()).map_err(|e| status::invalid(&e))?;
        let routed_to = self.routed_shard(&request)?;
        if let (None, Some(i)) =
            (routed_to, accounts.iter().position(|a| route::is_internal(a.id.0)))
        {
            return Err(reserved(i));
        }
        if routed_to.is_none()
            && let Some((i, why)) =
                accounts.iter().enumerate().find_map(|(i, a)| Some((i, reserved_ledger(a.ledger)?)))
        {
            return Err(status::invalid_because(&format!("event {i}: {why}")));
        }
        // Internal and spread accounts exist on every shard: a routed request creates them
        // there; else a spread account is created on every shard (`create_spread`).
        let spread_ids: Vec<usize> = (0..accounts.len())
            .filter(|&i| routing::is_spread(accounts[i].id.0) && routed_to.is_none())
            .collect();
        for &i in &spread_ids {
            let linked = |j: usize| accounts[j].flags.contains(AccountFlags::LINKED);
            if linked(i) || (i > 0 && linked(i - 1)) {
                return Err(status::invalid_because(&format!(
                    "account {i} is spread (its id's top 16 bits are {:#x}) and cannot be part \
                     of a linked chain: its slices are created on every shard, one request each",
                    routing::SPREAD_ID_TAG
                )));
            }
        }
        let shards: Vec<Option<ShardId>> = route::account_shards(&accounts, self.inner.shards)
            .map_err(|e| invalid_route(&e))?
            .into_iter()
            .zip(&accounts)
            .map(|(shard, a)| match routed_to {
                Some(routed) if route::floats(a.id.0) => Some(routed),
                None if routing::is_spread(a.id.0) => None,
                _ => Some(shard),
            })
            .collect();
        let judge = judged_of(&request, routed_to, accounts.first().map(BatchEvent::imported))?;
        // A spread account whose `imported` flag differs from the request's fails on it,
        // before anything is read (it is neither linked nor behind a linked account): it
        // is answered here and created on no shard.
        let (misjudged, spread_ids): (Vec<usize>, Vec<usize>) = spread_ids
            .into_iter()
            .partition(|&i| judge.is_some_and(|j| accounts[i].imported() != j));
        let deadline = self.deadline();
        let spread: Vec<crate::ledger::Account> = spread_ids.iter().map(|&i| accounts[i]).collect();
        let spread_outcomes = async {
            if spread.is_empty() {
                Ok(Vec::new())
            } else {
                self.create_spread(&spread, deadline).await
            }
        };
        let wire = &request.get_ref().accounts;
        let split = Split {
            kind: Kind::Accounts,
            events: &accounts,
            shards: &shards,
            routed: routed_to,
            judge,
        };
        let single = self.write_split(
            split,
            |a, out| out.extend_from_slice(&records::account_encode(a)),
            |mut peer, left, shard, indexes, judged| {
                let accounts = indexes.iter().map(|&i| wire[i]).collect();
                let mut request = routed(v1::CreateAccountsRequest { accounts }, shard, left);
                judged_as(&mut request, judged);
                async move {
                    let reply = peer.create_accounts(request).await?;
                    Ok(reply.into_inner().results.iter().map(|r| (r.timestamp, r.status)).collect())
                }
            },
        );
        let (mut outcomes, spread_outcomes) = tokio::try_join!(single, spread_outcomes)
            .map_err(|e| if spread.is_empty() { e } else { status::partial(e) })?;
        for (&i, outcome) in spread_ids.iter().zip(spread_outcomes) {
            outcomes[i] = outcome;
        }
        if !misjudged.is_empty() {
            let now = super::batcher::cluster_time_now_ns();
            for &i in &misjudged {
                outcomes[i] = (now, wire_status(imported_mismatch(&accounts[i]).code()));
            }
        }
        let results = outcomes
            .into_iter()
            .map(|(timestamp, status)| v1::CreateAccountResult { timestamp, status })
            .collect();
        Ok(Response::new(v1::CreateAccountsReply { results }))
    }

    async fn create_transfers(
        &self,
        request: Request<v1::CreateTransfersRequest>,
    ) -> Result<Response<v1::CreateTransfersReply>, Status> {
        let transfers =
            convert::transfers_from_request(request.get_ref()).map_err(|e| status::invalid(&e))?;
        let routed_to = self.routed_shard(&request)?;
        let metadata = request.metadata();
        // A node's own steps, routed: as sent (see `RAW_METADATA_KEY`).
        let raw = routed_to.is_some() && metadata.contains_key(RAW_METADATA_KEY);
        // A part of a swap request, from the node that took it: each chain's quote expiry.
        let not_after = if routed_to.is_some() && metadata.contains_key(SWAP_QUOTES_METADATA_KEY) {
            spread::swap_quotes(&transfers)
        } else {
            Vec::new()
        };
        let judge = judged_of(&request, routed_to, transfers.first().map(BatchEvent::imported))?;
        let created = self
            .create(&transfers, &request.get_ref().transfers, routed_to, &not_after, raw, judge)
            .await?;
        let mut outcomes = created.outcomes;
        // Lapsed swaps go back to the node that took them, which burns their give ids.
        for lapsed in &created.lapsed {
            for outcome in &mut outcomes[lapsed.start..lapsed.end] {
                outcome.1 = spread::QUOTE_LAPSED;
            }
        }
        Ok(Response::new(v1::CreateTransfersReply { results: transfer_results(outcomes) }))
    }

    async fn swap(
        &self,
        request: Request<v1::SwapRequest>,
    ) -> Result<Response<v1::SwapReply>, Status> {
        let mut results = self.swap_all(std::slice::from_ref(request.get_ref())).await?;
        let result =
            results.pop().ok_or_else(|| Status::internal("TALLY:Internal: no swap result"))?;
        match v1::SwapRefusal::try_from(result.refusal) {
            Ok(v1::SwapRefusal::Invalid) => Err(Status::invalid_argument(result.message)),
            Ok(v1::SwapRefusal::QuoteExpired) => Err(Status::failed_precondition(result.message)),
            _ => Ok(Response::new(v1::SwapReply {
                results: result.results,
                amount_received: result.amount_received,
            })),
        }
    }

    async fn swap_batch(
        &self,
        request: Request<v1::SwapBatchRequest>,
    ) -> Result<Response<v1::SwapBatchReply>, Status> {
        let swaps = &request.get_ref().swaps;
        if swaps.is_empty() || swaps.len() > SWAPS_PER_REQUEST_MAX as usize {
            return Err(Status::invalid_argument(format!(
                "TALLY:InvalidRequest: a swap batch holds 1 to {SWAPS_PER_REQUEST_MAX} swaps \
                 (SWAPS_PER_REQUEST_MAX), not {}",
                swaps.len()
            )));
        }
        let results = self.swap_all(swaps).await?;
        Ok(Response::new(v1::SwapBatchReply { results }))
    }

    async fn lookup_accounts(
        &self,
        request: Request<v1::LookupAccountsRequest>,
    ) -> Result<Response<v1::LookupAccountsReply>, Status> {
        let ids = convert::account_ids_from_proto(&request.get_ref().ids)
            .map_err(|e| status::invalid(&e))?;
        let count = self.inner.shards;
        let routed_to = self.routed_shard(&request)?;
        // A spread account is the sum of its slices (a routed request reads one slice).
        let shards: Vec<Option<ShardId>> = ids
            .iter()
            .map(|id| match routed_to {
                Some(routed) if routing::is_spread(id.0) => Some(routed),
                None if routing::is_spread(id.0) => None,
                _ => Some(ShardId(shard_of(id.0, count))),
            })
            .collect();
        if let Some(shard) = routed_to {
            check_routed(&shards, shard)?;
            let found = self.read_local(self.shard(shard)?, |m| m.lookup_accounts(&ids)).await?;
            let accounts = found.iter().map(convert::account_to_proto).collect();
            return Ok(Response::new(v1::LookupAccountsReply { accounts }));
        }
        let deadline = self.deadline();
        let groups = route::group(&shards);
        let parts = groups.iter().map(|(&shard, indexes)| {
            let (ids, wire) = (&ids, &request.get_ref().ids);
            self.on_shard(
                shard,
                deadline,
                true,
                move |here| async move {
                    let part: Vec<_> = indexes.iter().map(|&i| ids[i]).collect();
                    let found = self.read_local(&here, |m| m.lookup_accounts(&part)).await?;
                    let accounts = found.iter().map(convert::account_to_proto).collect();
                    Ok(v1::LookupAccountsReply { accounts })
                },
                move |mut peer, left| {
                    let message = v1::LookupAccountsRequest {
                        ids: indexes.iter().map(|&i| wire[i]).collect(),
                    };
                    async move {
                        peer.lookup_accounts(routed(message, shard, left))
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
        });
        let spread: Vec<crate::ledger::AccountId> =
            ids.iter().copied().filter(|id| routing::is_spread(id.0)).collect();
        let sums = async {
            if spread.is_empty() {
                Ok(HashMap::new())
            } else {
                self.spread_sums(&spread, deadline).await
            }
        };
        let (found, sums) = tokio::try_join!(try_join_all(parts), sums)?;
        let mut found: Vec<_> = found.into_iter().map(|r| r.accounts.into_iter()).collect();
        // In the order asked, as `merge_found` expects of every part.
        let summed = spread.iter().filter_map(|id| sums.get(&id.0));
        found.push(summed.map(convert::account_to_proto).collect::<Vec<_>>().into_iter());
        let order: Vec<u128> = ids.iter().map(|id| id.0).collect();
        let accounts = merge_found(&order, found, |a| id_of(a.id.as_ref()), |_| 0);
        Ok(Response::new(v1::LookupAccountsReply { accounts }))
    }

    async fn lookup_transfers(
        &self,
        request: Request<v1::LookupTransfersRequest>,
    ) -> Result<Response<v1::LookupTransfersReply>, Status> {
        let ids = convert::transfer_ids_from_proto(&request.get_ref().ids)
            .map_err(|e| status::invalid(&e))?;
        if let Some(shard) = self.routed_shard(&request)? {
            let found = self.read_local(self.shard(shard)?, |m| m.lookup_transfers(&ids)).await?;
            let transfers = found.iter().map(convert::transfer_to_proto).collect();
            return Ok(Response::new(v1::LookupTransfersReply { transfers }));
        }
        let deadline = self.deadline();
        let found =
            self.lookup_transfers_everywhere(&ids, &request.get_ref().ids, deadline).await?;
        let order: Vec<u128> = ids.iter().map(|id| id.0).collect();
        // A cross-shard pending transfer's marker (on its credit shard) yields to its alias.
        let marker = |t: &v1::Transfer| {
            u8::from(
                t.ledger == xshard::INTERNAL_LEDGER
                    && t.code == u32::from(xshard::PENDING_MARKER_CODE),
            )
        };
        let merged = merge_found(&order, found, |t| id_of(t.id.as_ref()), marker);
        // A transfer of a cross-shard transaction is found as its alias: rebuilt from its
        // legs if the transaction was posted, left out otherwise (all aliases at once).
        let mut aliases = Vec::new();
        let mut places = Vec::with_capacity(merged.len());
        for t in &merged {
            let alias = if t.ledger == xshard::INTERNAL_LEDGER {
                Some(
                    convert::transfer_from_proto(0, t)
                        .map_err(|e| Status::internal(format!("TALLY:Internal: {e}")))?,
                )
                .filter(xshard::is_alias)
            } else {
                None
            };
            places.push(alias.map(|a| {
                aliases.push(a);
                aliases.len() - 1
            }));
        }
        let rebuilt = if aliases.is_empty() {
            Vec::new()
        } else {
            self.reconstruct(&aliases, deadline).await?
        };
        let transfers = merged
            .into_iter()
            .zip(places)
            .filter_map(|(t, place)| match place {
                None => Some(t),
                Some(i) => rebuilt[i].as_ref().map(convert::transfer_to_proto),
            })
            .collect();
        Ok(Response::new(v1::LookupTransfersReply { transfers }))
    }

    async fn get_account_transfers(
        &self,
        request: Request<v1::GetAccountTransfersRequest>,
    ) -> Result<Response<v1::GetAccountTransfersReply>, Status> {
        let filter = convert::filter_from_proto(request.get_ref().filter.as_ref())
            .map_err(|e| status::invalid(&e))?;
        let spread = routing::is_spread(filter.account_id.0);
        let routed_to = self.routed_shard(&request)?;
        if spread && routed_to.is_none() {
            let found = self.spread_transfers(&filter, self.deadline()).await?;
            let transfers = found.iter().map(convert::transfer_to_proto).collect();
            return Ok(Response::new(v1::GetAccountTransfersReply { transfers }));
        }
        let mut shard = ShardId(shard_of(filter.account_id.0, self.inner.shards));
        if let Some(routed) = routed_to {
            // A routed request for an account on every shard (a spread account's slice, or
            // an internal account, e.g. the alias account a node reads to tell a decision
            // leg from a client's transfer) reads that shard's.
            if spread || route::is_internal(filter.account_id.0) {
                shard = routed;
            }
            check_routed(&[Some(shard)], routed)?;
        }
        let reply = self
            .on_shard(
                shard,
                self.deadline(),
                routed_to.is_none(),
                |here| async move {
                    let step = StateMachine::get_account_transfers_step;
                    let found = self.query_local(&here, &filter, step).await?;
                    let transfers = found.iter().map(convert::transfer_to_proto).collect();
                    Ok(v1::GetAccountTransfersReply { transfers })
                },
                |mut peer, left| {
                    let message = *request.get_ref();
                    async move {
                        peer.get_account_transfers(routed(message, shard, left))
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_account_balances(
        &self,
        request: Request<v1::GetAccountBalancesRequest>,
    ) -> Result<Response<v1::GetAccountBalancesReply>, Status> {
        let filter = convert::filter_from_proto(request.get_ref().filter.as_ref())
            .map_err(|e| status::invalid(&e))?;
        if routing::is_spread(filter.account_id.0) {
            return Err(status::invalid_because(
                "a spread account's balance history is kept per slice (one per shard) and \
                 has no single running balance: use lookup_accounts for its balances (the sum \
                 of its slices) or get_account_transfers for its history",
            ));
        }
        let shard = ShardId(shard_of(filter.account_id.0, self.inner.shards));
        let routed_to = self.routed_shard(&request)?;
        if let Some(routed) = routed_to {
            check_routed(&[Some(shard)], routed)?;
        }
        let reply = self
            .on_shard(
                shard,
                self.deadline(),
                routed_to.is_none(),
                |here| async move {
                    let step = StateMachine::get_account_balances_step;
                    let found = self.query_local(&here, &filter, step).await?;
                    let balances = found.iter().map(convert::balance_to_proto).collect();
                    Ok(v1::GetAccountBalancesReply { balances })
                },
                |mut peer, left| {
                    let message = *request.get_ref();
                    async move {
                        peer.get_account_balances(routed(message, shard, left))
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
            .await?;
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{CreateTransferStatus as TS, Transfer, TransferFlags};

    /// The node that takes a request judges it by its first event; a routed part by the
    /// header its sender set, else by its own first event; a malformed header, or one on
    /// a request routed nowhere, is refused.
    #[test]
    fn a_request_is_judged_by_its_first_event_or_its_senders_header() {
        let with = |value: Option<&'static str>| {
            let mut request = Request::new(());
            if let Some(v) = value {
                request.metadata_mut().insert(IMPORTED_METADATA_KEY, MetadataValue::from_static(v));
            }
            request
        };
        let shard = Some(ShardId(2));
        assert_eq!(judged_of(&with(None), None, Some(true)).unwrap(), Some(true));
        assert_eq!(judged_of(&with(None), None, None).unwrap(), None);
        assert_eq!(judged_of(&with(None), shard, Some(true)).unwrap(), None);
        assert_eq!(judged_of(&with(Some("1")), shard, Some(false)).unwrap(), Some(true));
        assert_eq!(judged_of(&with(Some("0")), shard, Some(true)).unwrap(), Some(false));
        for (value, routed) in [(Some("2"), shard), (Some("yes"), shard), (Some("1"), None)] {
            let refused = judged_of(&with(value), routed, Some(true)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{value:?}");
            assert!(refused.message().contains(IMPORTED_METADATA_KEY), "{refused:?}");
        }
    }

    /// A chain whose first event's flag differs from its request's: the first fails on
    /// the flag, the rest on the chain, and the request's last event, linked, leaves the
    /// chain open, as the ledger's batch loop answers.
    #[test]
    fn a_misjudged_chain_is_answered_as_the_batch_loop_would() {
        let linked = Transfer { flags: TransferFlags::LINKED, ..Transfer::default() };
        let plain = Transfer::default();
        let statuses = |chain: &[Transfer], last| -> Vec<i32> {
            let answered = misjudged_chain(chain, last, 7);
            assert!(answered.iter().all(|&(timestamp, _)| timestamp == 7));
            answered.into_iter().map(|(_, status)| status).collect()
        };
        let code = |s: TS| wire_status(s.code());
        // The ledger answers each shape the same: the chain alone (it ends the batch), and
        // followed by one event of the request's kind.
        let imported = Transfer { flags: TransferFlags::IMPORTED, timestamp: 1, ..plain };
        let shapes: [&[Transfer]; 4] = [&[plain], &[linked, plain], &[linked, linked], &[linked]];
        for chain in shapes {
            for (judge, next) in [(true, imported), (false, plain)] {
                let chain: Vec<Transfer> = if judge {
                    chain.to_vec()
                } else {
                    chain
                        .iter()
                        .map(|t| Transfer { flags: t.flags | imported.flags, timestamp: 1, ..*t })
                        .collect()
                };
                for last in [true, false] {
                    let mut batch = chain.clone();
                    if !last {
                        batch.push(next);
                    }
                    let mut ledger = StateMachine::new(crate::ledger::MemoryStore::new());
                    let results =
                        ledger.create_transfers_judged(1 << 40, &batch, Some(judge)).unwrap();
                    let ledger: Vec<i32> =
                        results[..chain.len()].iter().map(|r| code(r.status)).collect();
                    assert_eq!(statuses(&chain, last), ledger, "{chain:?} last {last}");
                }
            }
        }
        // A plain first event (its request imported), an imported one (its request not).
        assert_eq!(statuses(&[plain], false), [code(TS::ImportedEventExpected)]);
        assert_eq!(statuses(&[imported], true), [code(TS::ImportedEventNotExpected)]);
        assert_eq!(
            statuses(&[linked, linked, plain], true),
            [TS::ImportedEventExpected, TS::LinkedEventFailed, TS::LinkedEventFailed].map(code)
        );
        assert_eq!(
            statuses(&[linked, linked], true),
            [TS::ImportedEventExpected, TS::LinkedEventChainOpen].map(code)
        );
        assert_eq!(statuses(&[linked], true), [code(TS::LinkedEventChainOpen)]);
    }
}
