//! The connection to a Tally cluster: leader discovery and redirect, retries, deadlines.
//!
//! Every call is tried on the endpoint that last answered (the leader, usually), and:
//! - `UNAVAILABLE` with message `TALLY:NotLeader` / `TALLY:OutcomeUnknown` and metadata
//!   `tally-leader-addr`: resent at once to that address (added to the endpoints if new);
//! - `UNAVAILABLE` without a hint, a transport or connect error, `DEADLINE_EXCEEDED`,
//!   `CANCELLED`, `ABORTED`, `UNKNOWN`: resent to the next endpoint after a backoff;
//! - `RESOURCE_EXHAUSTED` (`TALLY:Overloaded`): resent to the same endpoint after the
//!   server's `tally-retry-after-ms` or the backoff, whichever is longer;
//! - any other code: not retried: [`ClientError::Rejected`] when nothing of the request
//!   applied, [`ClientError::OutcomeUnknown`] when that is not known (see there).
//!
//! At most [`IMMEDIATE_RESENDS_MAX`] resends in a row go out without a wait (redirects, a
//! newer shard map); then the client backs off as after any other failure.
//!
//! **Shards.** The client keeps a copy of the cluster's shard map (`AdminService.ListShards`:
//! the shard count and each shard's leader), fetched in the background by the first call
//! and by any call once it is older than [`SHARD_MAP_MAX_AGE`] (or
//! [`ClientBuilder::shard_map_max_age`]), and sends each request first to the leader of the
//! shard of its first event (the account's, or the first transfer's debit account's): a
//! single-shard request then reaches its leader directly. Any node takes any request (it
//! forwards the parts of other shards), so a stale leader costs one hop, never an error;
//! and a leader this client could not reach a moment ago (it did not connect, or let an
//! attempt time out) is not tried first for [`ENDPOINT_DOWN_FOR`]: the request goes to the
//! node that last answered, which forwards it.
//! Every request carries the map's version (`tally-map-version`); a node whose map is newer
//! (a shard's replicas were moved) answers `FAILED_PRECONDITION` `TALLY:StaleShardMap` with
//! its version, and the client fetches the map again and resends the same request.
//!
//! Every resent attempt is counted by cause ([`Client::take_retries`]): under load, the
//! count says how many requests met a leadership move, a full queue or a timeout.
//!
//! A retry resends the identical request — the same transfer and account ids. Ids are
//! idempotency keys, so an event that an earlier attempt applied (whose reply was lost)
//! comes back as `exists` and is never applied twice: treat `created` and `exists` alike
//! ([`transfer_succeeded`], [`account_succeeded`]). When the call's deadline passes, the
//! outcome of a create is unknown; resend it with the same ids to learn it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tally_proto::limits::{BATCH_EVENTS_MAX, GRPC_MESSAGE_BYTES_MAX, SWAPS_PER_REQUEST_MAX};
use tally_proto::routing::{
    MAP_VERSION_METADATA_KEY, OUTCOME_METADATA_KEY, OUTCOME_UNKNOWN, shard_of,
};
use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tally_proto::v1::ledger_service_client::LedgerServiceClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::batch::TransferBatch;
use crate::error::ClientError;
use crate::loyalty::{self, Earn, Expire, Redemption};

/// Metadata key of the leader's address in a `NotLeader` status.
pub const LEADER_ADDR_KEY: &str = "tally-leader-addr";
/// Metadata key of the server's suggested wait after `Overloaded`, milliseconds.
pub const RETRY_AFTER_MS_KEY: &str = "tally-retry-after-ms";
/// Most endpoints a client keeps (configured plus learned from redirects and the shard
/// map). When full, an address newly learned replaces the learned endpoint that was used
/// least recently (answered a call, or was learned, whichever came last), not the one in
/// use: addresses of nodes gone (a pod's old IP) leave as new ones come. The configured
/// endpoints are always kept.
pub const ENDPOINTS_MAX: usize = 64;
/// Age after which the client fetches the shard map again (in the background), by default.
pub const SHARD_MAP_MAX_AGE: Duration = Duration::from_secs(2);
/// How long fetching the shard map may take.
pub const SHARD_MAP_FETCH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an endpoint that failed to connect (or timed out an attempt) is not tried
/// first for a shard map's leader or a leader hint: another node takes the request and
/// forwards it, instead of every call paying a connect timeout to an address this client
/// cannot reach (a node advertising an address behind NAT, a node down).
pub const ENDPOINT_DOWN_FOR: Duration = Duration::from_secs(5);
/// Longest setting of any of the client's timeouts, its deadline and its backoff.
pub const CLIENT_DURATION_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Resends a call makes at once, in a row (after a redirect to the leader or a newer
/// shard map), before it waits its backoff like after any other failure: two nodes that
/// each name the other as leader during an election cannot make a call spin.
pub const IMMEDIATE_RESENDS_MAX: u32 = 4;

/// The `TALLY:<Code>`s a [`RetryCause`] names (those of the statuses the client resends
/// after); any other code is counted as `other`, so the counts stay bounded.
pub const RETRY_MESSAGE_CODES: [&str; 11] = [
    "NotLeader",
    "OutcomeUnknown",
    "NoQuorum",
    "Stopped",
    "RaftStopped",
    "Unavailable",
    "Unreachable",
    "Overloaded",
    "Timeout",
    "StaleShardMap",
    "ProtocolMismatch",
];

/// Why an attempt failed and the call went on with another: its gRPC code and the
/// `TALLY:<Code>` that starts its message (one of [`RETRY_MESSAGE_CODES`], `other` for
/// another one, empty for none: a transport error). The client's own attempt timeout
/// counts as `DEADLINE_EXCEEDED` with message code `AttemptTimeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryCause {
    code: i32,
    message_code: &'static str,
}

impl RetryCause {
    fn of(status: &tonic::Status, attempt_timed_out: bool) -> Self {
        let message_code = if attempt_timed_out {
            "AttemptTimeout"
        } else {
            status.message().strip_prefix("TALLY:").map_or("", |rest| {
                let code = rest.split(':').next().unwrap_or_default();
                RETRY_MESSAGE_CODES.iter().find(|c| **c == code).copied().unwrap_or("other")
            })
        };
        Self { code: status.code() as i32, message_code }
    }

    /// The failed attempt's gRPC code.
    #[must_use]
    pub fn code(&self) -> tonic::Code {
        tonic::Code::from_i32(self.code)
    }

    /// The `TALLY:<Code>` of its message (see [`RetryCause`]).
    #[must_use]
    pub fn message_code(&self) -> &'static str {
        self.message_code
    }
}

impl std::fmt::Display for RetryCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message_code {
            "" => write!(f, "{:?}", self.code()),
            code => write!(f, "{:?} {code}", self.code()),
        }
    }
}

/// Whether a transfer's status means it exists as requested (`created` now or `exists`
/// from an earlier attempt with the same id and fields).
#[must_use]
pub fn transfer_succeeded(status: i32) -> bool {
    status == v1::CreateTransferStatus::Created as i32
        || status == v1::CreateTransferStatus::Exists as i32
}

/// As [`transfer_succeeded`], for accounts.
#[must_use]
pub fn account_succeeded(status: i32) -> bool {
    status == v1::CreateAccountStatus::Created as i32
        || status == v1::CreateAccountStatus::Exists as i32
}

/// Builds a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    deadline: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    shard_map_max_age: Duration,
}

impl ClientBuilder {
    /// Time to open a connection (default 1 s).
    #[must_use]
    pub fn connect_timeout(mut self, value: Duration) -> Self {
        self.connect_timeout = value;
        self
    }
    /// Time one attempt may take (default 5 s). Shorter than a node's default
    /// `request_timeout_ms` (10 s) on purpose: a node that stops answering without closing
    /// its connection costs a call at most this before the next node is tried. An attempt
    /// given up on may still be waiting in a node and apply later; the resend carries the
    /// same ids, so it then reads `exists`, but both wait in the cluster meanwhile. Raise it
    /// (and [`Self::deadline`]) for account queries that walk long histories, which a node
    /// may take up to its `request_timeout_ms` to answer.
    #[must_use]
    pub fn attempt_timeout(mut self, value: Duration) -> Self {
        self.attempt_timeout = value;
        self
    }
    /// Time a whole call may take, retries included (default 30 s).
    #[must_use]
    pub fn deadline(mut self, value: Duration) -> Self {
        self.deadline = value;
        self
    }
    /// First and largest wait between retries (default 20 ms and 1 s, doubling).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Age after which the shard map is fetched again in the background (default
    /// [`SHARD_MAP_MAX_AGE`]). A map moved meanwhile is fetched at once anyway: the first
    /// node with a newer map refuses the request with `TALLY:StaleShardMap`.
    #[must_use]
    pub fn shard_map_max_age(mut self, value: Duration) -> Self {
        self.shard_map_max_age = value;
        self
    }

    /// Checks the settings. Connects lazily: no server needs to be up.
    ///
    /// # Errors
    /// No endpoint, an endpoint that is not a valid URI, a zero timeout, a deadline
    /// shorter than one attempt, or a duration above [`CLIENT_DURATION_MAX`].
    pub fn build(self) -> Result<Client, ClientError> {
        let bad = |m: String| Err(ClientError::Config(m));
        if self.endpoints.is_empty() || self.endpoints.len() > ENDPOINTS_MAX {
            return bad(format!("1..={ENDPOINTS_MAX} endpoints required"));
        }
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return bad("timeouts must be above zero".into());
        }
        if self.deadline < self.attempt_timeout {
            return bad("the deadline must be at least one attempt timeout".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff: 0 < initial <= max".into());
        }
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
            ("backoff max", self.backoff_max),
            ("shard_map_max_age", self.shard_map_max_age),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| *d > CLIENT_DURATION_MAX) {
            return bad(format!("{name} must be at most {CLIENT_DURATION_MAX:?}"));
        }
        let mut nodes = Vec::new();
        for endpoint in &self.endpoints {
            nodes.push(self.node(endpoint)?);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                settings: self,
                ticks: AtomicU64::new(0),
                built: Instant::now(),
                nodes: RwLock::new(nodes),
                current: AtomicUsize::new(0),
                map: RwLock::new(None),
                fetching: AtomicBool::new(false),
                retries: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    fn node(&self, addr: &str) -> Result<Node, ClientError> {
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| ClientError::Config(format!("endpoint {addr:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let client = LedgerServiceClient::new(channel.clone())
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX as usize);
        let (used, failed_ms) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        Ok(Node { addr: bare(addr).to_owned(), client, channel, used, failed_ms })
    }
}

fn bare(addr: &str) -> &str {
    addr.split_once("://").map_or(addr, |(_, rest)| rest)
}

#[derive(Clone, Debug)]
struct Node {
    addr: String,
    client: LedgerServiceClient<Channel>,
    channel: Channel,
    /// When this endpoint last answered a call successfully or was learned, whichever came
    /// last, as a tick of the client's use clock ([`Client::tick`]); 0 for neither.
    used: Arc<AtomicU64>,
    /// When an attempt on it last failed without an answer from it (a transport error or
    /// the attempt's timeout), in milliseconds since the client was built plus one; 0
    /// once it answers again, or if it never failed.
    failed_ms: Arc<AtomicU64>,
}

/// The client's copy of the shard map.
#[derive(Debug)]
struct ShardMap {
    /// The map's version (`ListShards.map_version`; the highest seen: an older map is
    /// never taken).
    version: u64,
    /// The cluster's data-shard count.
    shards: u32,
    /// Each shard's leader address (index `shard - 1`), empty if unknown.
    leaders: Vec<String>,
    /// When it was fetched.
    fetched: Instant,
}

#[derive(Debug)]
struct Inner {
    settings: ClientBuilder,
    /// Ticks of the use clock so far ([`Client::tick`]).
    ticks: AtomicU64,
    /// When the client was built.
    built: Instant,
    nodes: RwLock<Vec<Node>>,
    /// Index of the endpoint tried first (the last that answered).
    current: AtomicUsize,
    /// The shard map, once fetched.
    map: RwLock<Option<ShardMap>>,
    /// A fetch of the shard map is under way.
    fetching: AtomicBool,
    /// Resent attempts by cause since the last [`Client::take_retries`] (bounded: one
    /// entry per gRPC code and message code).
    retries: Mutex<BTreeMap<RetryCause, u64>>,
}

/// A connection to a Tally cluster. Cheap to clone; share one per process.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A background fetch of the shard map: clears the client's `fetching` flag when dropped
/// (the fetch ended, or its task was dropped).
struct FetchDone(Client);

impl Drop for FetchDone {
    fn drop(&mut self) {
        self.0.inner.fetching.store(false, Ordering::Release);
    }
}

/// The shard map version a request is sent with (`tally-map-version`), once the map is
/// known.
#[derive(Clone, Copy, Debug)]
struct Stamp(Option<u64>);

impl Stamp {
    fn on<M>(self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Some(version) = self.0 {
            request.metadata_mut().insert(MAP_VERSION_METADATA_KEY, version.into());
        }
        request
    }
}

/// Start of the message of a `FAILED_PRECONDITION` that asks for a newer shard map.
const STALE_SHARD_MAP: &str = "TALLY:StaleShardMap";

/// What to do after a failed attempt.
enum Next {
    /// Fetch the shard map (at least this version, if the node said) and resend.
    RefreshMap(Option<u64>),
    Redirect(String),
    OtherNode,
    SameNodeAfter(Duration),
    Fail,
}

/// Whether a call writes: a failed attempt of a write may have applied some of its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// Whether a failed attempt of a write may have applied some of its events: its own
/// timeout, a lost connection, `UNKNOWN`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
/// `INTERNAL`, `DATA_LOSS`, any `UNAVAILABLE` but a redirect, no quorum or another
/// protocol version (so `TALLY:OutcomeUnknown`, `TALLY:Unreachable`, `TALLY:Stopped`), or
/// any status marked `tally-outcome: unknown`. Not the refusals a node makes before it
/// proposes anything: a redirect, no quorum, a full queue, a stale shard map, a malformed
/// request, another protocol version.
fn may_have_applied(status: &tonic::Status, attempt_timed_out: bool) -> bool {
    use tonic::Code;
    if attempt_timed_out || outcome_marked_unknown(status) {
        return true;
    }
    // Not `Stopped`: a replica stopping answers it also for an entry already appended.
    let nothing_done = ["TALLY:NotLeader", "TALLY:NoQuorum", "TALLY:ProtocolMismatch"];
    match status.code() {
        Code::Unavailable => !nothing_done.iter().any(|c| status.message().starts_with(c)),
        Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Internal
        | Code::DataLoss => true,
        _ => false,
    }
}

/// Whether a node marked `status` with `tally-outcome: unknown` (a part of a split request
/// failed while others may have applied).
fn outcome_marked_unknown(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get(OUTCOME_METADATA_KEY)
        .is_some_and(|v| v.as_bytes() == OUTCOME_UNKNOWN.as_bytes())
}

/// The error of a call that ends on `status`, not retried. A write's outcome is unknown when
/// the status itself may follow an apply, or when an `earlier` attempt may have applied and
/// the refusal depends on the cluster's state (a resend refused for a clock says nothing
/// of the first attempt). Known either way: a refusal of the request's content
/// (`INVALID_ARGUMENT`), which would have refused every attempt alike, and
/// `TALLY:QuoteExpired`, which the node answers only once no attempt of the swap can apply
/// any more. Not `UNIMPLEMENTED` or `OUT_OF_RANGE` after an earlier attempt: a node of
/// another build may lack a method another node ran, and tonic answers `OUT_OF_RANGE`
/// also for a reply too large to decode, after the write applied.
fn final_error(
    kind: Kind,
    status: &tonic::Status,
    attempts: u32,
    earlier: Option<String>,
) -> ClientError {
    use tonic::Code;
    let known = status.code() == Code::InvalidArgument
        || status.message().starts_with("TALLY:QuoteExpired");
    let itself = may_have_applied(status, false);
    let earlier = if itself { None } else { earlier.filter(|_| !known) };
    if kind == Kind::Write && (itself || earlier.is_some()) {
        return ClientError::OutcomeUnknown {
            code: status.code(),
            message: status.message().to_owned(),
            attempts,
            earlier,
        };
    }
    ClientError::Rejected { code: status.code(), message: status.message().to_owned() }
}

fn classify(status: &tonic::Status) -> Next {
    use tonic::Code;
    let metadata =
        |key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match status.code() {
        Code::Unavailable => match metadata(LEADER_ADDR_KEY) {
            Some(addr) if !addr.is_empty() => Next::Redirect(addr),
            _ => Next::OtherNode,
        },
        Code::FailedPrecondition if status.message().starts_with(STALE_SHARD_MAP) => {
            Next::RefreshMap(metadata(MAP_VERSION_METADATA_KEY).and_then(|v| v.parse().ok()))
        }
        Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::Unknown => Next::OtherNode,
        Code::ResourceExhausted => {
            let ms = metadata(RETRY_AFTER_MS_KEY).and_then(|v| v.parse().ok()).unwrap_or(0);
            Next::SameNodeAfter(Duration::from_millis(ms))
        }
        _ => Next::Fail,
    }
}

impl Client {
    /// Starts building a client of the nodes at `endpoints` (`host:port`).
    #[must_use]
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            shard_map_max_age: SHARD_MAP_MAX_AGE,
        }
    }

    /// The next tick of the client's use clock (from 1, one per use of an endpoint): it
    /// orders uses strictly, as a wall clock of finite resolution would not.
    fn tick(&self) -> u64 {
        self.inner.ticks.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Milliseconds since this client was built, plus one (so never 0).
    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.inner.built.elapsed().as_millis()).map_or(u64::MAX, |ms| ms + 1)
    }

    /// Whether endpoint `index` failed without an answer within [`ENDPOINT_DOWN_FOR`].
    fn is_down(&self, index: usize) -> bool {
        let failed = self.node_at(index).1.failed_ms.load(Ordering::Relaxed);
        let down_for = u64::try_from(ENDPOINT_DOWN_FOR.as_millis()).unwrap_or(u64::MAX);
        failed != 0 && self.uptime_ms().saturating_sub(failed) < down_for
    }

    fn node_at(&self, index: usize) -> (usize, Node) {
        let nodes = self.inner.nodes.read();
        let index = index % nodes.len();
        (index, nodes[index].clone())
    }

    fn index_of(&self, addr: &str) -> usize {
        let addr = bare(addr);
        if let Some(i) = self.inner.nodes.read().iter().position(|n| n.addr == addr) {
            return i;
        }
        let mut nodes = self.inner.nodes.write();
        if let Some(i) = nodes.iter().position(|n| n.addr == addr) {
            return i;
        }
        let current = self.inner.current.load(Ordering::Relaxed);
        let Ok(node) = self.inner.settings.node(addr) else { return current + 1 };
        node.used.store(self.tick(), Ordering::Relaxed);
        if nodes.len() < ENDPOINTS_MAX {
            nodes.push(node);
            return nodes.len() - 1;
        }
        let learned = self.inner.settings.endpoints.len()..nodes.len();
        let stalest = learned
            .filter(|&i| i != current % nodes.len())
            .min_by_key(|&i| nodes[i].used.load(Ordering::Relaxed));
        match stalest {
            Some(i) => {
                tracing::debug!(dropped = %nodes[i].addr, added = %node.addr, "endpoint replaced");
                nodes[i] = node;
                i
            }
            None => current + 1,
        }
    }

    /// The endpoint to try first for a request whose first event belongs to the shard of
    /// `account_id`: that shard's leader if the map knows it and it has not just failed
    /// without answering ([`ENDPOINT_DOWN_FOR`]).
    fn leader_for(&self, account_id: u128) -> Option<usize> {
        let addr = {
            let map = self.inner.map.read();
            let m = map.as_ref()?;
            let shard = shard_of(account_id, m.shards) as usize;
            m.leaders.get(shard - 1).filter(|a| !a.is_empty()).cloned()
        };
        addr.map(|a| self.index_of(&a)).filter(|&i| !self.is_down(i))
    }

    /// Starts a background fetch of the shard map when it is missing or older than
    /// [`ClientBuilder::shard_map_max_age`] (one fetch at a time). Every call runs it, so
    /// a client whose requests name no routable account still learns the map's version.
    fn refresh_map_if_old(&self) {
        let old = self
            .inner
            .map
            .read()
            .as_ref()
            .is_none_or(|m| m.fetched.elapsed() > self.inner.settings.shard_map_max_age);
        if old && !self.inner.fetching.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // The flag is cleared also if the task is dropped, polled or not (its
                // runtime shut down), so that calls on another runtime still refresh the map.
                let fetching = FetchDone(self.clone());
                runtime.spawn(async move {
                    let client = &fetching.0;
                    let index = client.inner.current.load(Ordering::Relaxed);
                    client.fetch_shard_map(index, SHARD_MAP_FETCH_TIMEOUT).await;
                });
            } else {
                self.inner.fetching.store(false, Ordering::Release);
            }
        }
    }

    /// The attempts this client made again since it was built or since the last call, by
    /// the cause of the attempt before ([`RetryCause`]), emptying the count. A call that
    /// succeeds at once adds nothing; one redirected to the leader adds one
    /// `UNAVAILABLE NotLeader`. A create whose earlier attempt was applied answers
    /// `exists` for it: the count tells how many calls may have been resent.
    #[must_use]
    pub fn take_retries(&self) -> BTreeMap<RetryCause, u64> {
        std::mem::take(&mut *self.inner.retries.lock())
    }

    /// The version of the shard map this client holds (the highest it fetched), `None`
    /// before its first fetch; every request carries it (`tally-map-version`).
    #[must_use]
    pub fn shard_map_version(&self) -> Option<u64> {
        self.inner.map.read().as_ref().map(|m| m.version)
    }

    /// The cluster's data-shard count from the shard map this client holds; without one
    /// yet, fetched now from each known endpoint in turn (each try bounded by
    /// [`SHARD_MAP_FETCH_TIMEOUT`]) until one answers. `None` if none did.
    pub async fn shard_count(&self) -> Option<u32> {
        let held = || self.inner.map.read().as_ref().map(|m| m.shards);
        let first = self.inner.current.load(Ordering::Relaxed);
        let endpoints = self.inner.nodes.read().len();
        for k in 0..endpoints {
            if let Some(shards) = held() {
                return Some(shards);
            }
            self.fetch_shard_map(first + k, SHARD_MAP_FETCH_TIMEOUT).await;
        }
        held()
    }

    /// Fetches the shard map from endpoint `index`, waiting at most `limit` (at most
    /// [`SHARD_MAP_FETCH_TIMEOUT`]; failures are only logged: requests still work without
    /// it, through any node). A map older than the one held (from a node that lags) is
    /// ignored, so the version a request carries always goes with the routes it took.
    async fn fetch_shard_map(&self, index: usize, limit: Duration) {
        let (_, node) = self.node_at(index);
        let mut admin = AdminServiceClient::new(node.channel);
        let fetch = admin.list_shards(v1::ListShardsRequest {});
        match tokio::time::timeout(limit.min(SHARD_MAP_FETCH_TIMEOUT), fetch).await {
            Ok(Ok(reply)) => {
                if let Err(why) = take_map(&mut self.inner.map.write(), &reply.into_inner()) {
                    tracing::debug!(node = %node.addr, why, "shard map not taken");
                }
            }
            Ok(Err(status)) => tracing::debug!(node = %node.addr, %status, "shard map not fetched"),
            Err(_) => tracing::debug!(node = %node.addr, "shard map fetch timed out"),
        }
    }

    /// Runs `rpc` with redirects and retries until it succeeds, fails for good, or the
    /// deadline passes. `rpc` must send the same request every time.
    async fn call<T, F, Fut>(&self, kind: Kind, rpc: F) -> Result<T, ClientError>
    where
        F: Fn(LedgerServiceClient<Channel>, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_via(None, kind, rpc).await
    }

    /// As [`Self::call`], trying endpoint `first` first if given.
    async fn call_via<T, F, Fut>(
        &self,
        first: Option<usize>,
        kind: Kind,
        rpc: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(LedgerServiceClient<Channel>, Stamp) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.refresh_map_if_old();
        let settings = &self.inner.settings;
        let deadline = Instant::now() + settings.deadline;
        let mut backoff = settings.backoff_initial;
        let mut index = first.unwrap_or_else(|| self.inner.current.load(Ordering::Relaxed));
        let mut attempts = 0_u32;
        let mut last_error;
        // The first failed attempt that may have applied something (a write's).
        let mut earlier: Option<String> = None;
        let mut immediate = 0_u32;
        loop {
            attempts += 1;
            let (at, node) = self.node_at(index);
            let timeout =
                settings.attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let stamp = Stamp(self.shard_map_version());
            let (status, timed_out) =
                match tokio::time::timeout(timeout, rpc(node.client, stamp)).await {
                    Ok(Ok(reply)) => {
                        self.inner.current.store(at, Ordering::Relaxed);
                        node.used.store(self.tick(), Ordering::Relaxed);
                        node.failed_ms.store(0, Ordering::Relaxed);
                        return Ok(reply.into_inner());
                    }
                    Ok(Err(status)) => (status, false),
                    Err(_) => (
                        tonic::Status::deadline_exceeded(format!(
                            "attempt timed out after {timeout:?}"
                        )),
                        true,
                    ),
                };
            last_error = format!("{}: {:?} {}", node.addr, status.code(), status.message());
            // No answer from the node itself (it did not connect, or said nothing in time).
            let unanswered = timed_out
                || status.code() == tonic::Code::Unavailable
                    && !status.message().starts_with("TALLY:");
            if unanswered {
                node.failed_ms.store(self.uptime_ms(), Ordering::Relaxed);
            }
            let wait = match classify(&status) {
                Next::RefreshMap(wanted) => {
                    tracing::debug!(node = %node.addr, ?wanted, "shard map stale: fetching it");
                    self.fetch_shard_map(at, deadline.saturating_duration_since(Instant::now()))
                        .await;
                    index = at;
                    // Resend at once only with a newer map than the one refused (and as new
                    // as the node asked for); otherwise back off like any retry.
                    let fetched = self.shard_map_version();
                    let newer = fetched > stamp.0 && fetched >= wanted.or(stamp.0);
                    if newer { Duration::ZERO } else { backoff }
                }
                Next::Fail => return Err(final_error(kind, &status, attempts, earlier)),
                Next::Redirect(addr) => {
                    let hinted = self.index_of(&addr);
                    if self.is_down(hinted) {
                        // Any node forwards to the leader: the next one, after a backoff.
                        tracing::debug!(from = %node.addr, to = %addr, "leader hint down");
                        index = at + 1;
                        backoff
                    } else {
                        tracing::debug!(from = %node.addr, to = %addr, "redirected to the leader");
                        index = hinted;
                        Duration::ZERO
                    }
                }
                Next::OtherNode => {
                    tracing::debug!(node = %node.addr, error = %last_error, "trying the next node");
                    index = at + 1;
                    backoff
                }
                Next::SameNodeAfter(hint) => {
                    index = at;
                    backoff.max(hint)
                }
            };
            if kind == Kind::Write && earlier.is_none() && may_have_applied(&status, timed_out) {
                earlier = Some(last_error.clone());
            }
            immediate = if wait.is_zero() { immediate + 1 } else { 0 };
            let wait = if immediate > IMMEDIATE_RESENDS_MAX {
                immediate = 0;
                backoff
            } else {
                wait
            };
            if !wait.is_zero() {
                backoff = (backoff * 2).min(settings.backoff_max);
            }
            if Instant::now() + wait >= deadline {
                return Err(ClientError::DeadlineExceeded {
                    deadline: settings.deadline,
                    attempts,
                    last_error,
                });
            }
            // Counted only when it is resent (not when the deadline ends the call).
            *self.inner.retries.lock().entry(RetryCause::of(&status, timed_out)).or_default() += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// Creates accounts; one result per account, in order.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create_accounts(
        &self,
        accounts: Vec<v1::Account>,
    ) -> Result<Vec<v1::CreateAccountResult>, ClientError> {
        check_size(accounts.len())?;
        let first = self.leader_for(accounts[0].id.map_or(0, u128::from));
        let sent = accounts.len();
        let request = v1::CreateAccountsRequest { accounts };
        let reply = self
            .call_via(first, Kind::Write, |mut c, stamp| {
                let r = stamp.on(request.clone());
                async move { counted(c.create_accounts(r).await, sent, |r| r.results.len()) }
            })
            .await?;
        Ok(reply.results)
    }

    /// Creates transfers; one result per transfer, in order.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create_transfers(
        &self,
        transfers: Vec<v1::Transfer>,
    ) -> Result<Vec<v1::CreateTransferResult>, ClientError> {
        check_size(transfers.len())?;
        // The node that leads the first transfer's shard: its debit account's, or its
        // credit account's when the debit account is spread (then it applies there).
        let sides = [transfers[0].debit_account_id, transfers[0].credit_account_id];
        let home = sides
            .iter()
            .map(|id| id.map_or(0, u128::from))
            .find(|&id| id != 0 && !tally_proto::routing::is_spread(id));
        let first = home.and_then(|id| self.leader_for(id));
        let sent = transfers.len();
        let request = v1::CreateTransfersRequest { transfers };
        let reply = self
            .call_via(first, Kind::Write, |mut c, stamp| {
                let r = stamp.on(request.clone());
                async move { counted(c.create_transfers(r).await, sent, |r| r.results.len()) }
            })
            .await?;
        Ok(reply.results)
    }

    /// Sends a batch built with [`TransferBatch`] (chains kept whole).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn submit(
        &self,
        batch: TransferBatch,
    ) -> Result<Vec<v1::CreateTransferResult>, ClientError> {
        self.create_transfers(batch.into_request().transfers).await
    }

    /// Runs a swap (build it with [`crate::loyalty::swap`]): the give and receive
    /// transfers' results, and the amount received. Retried like
    /// [`Self::create_transfers`] (same ids: an applied swap reads back `EXISTS`). An
    /// expired quote is [`ClientError::Rejected`] (`FAILED_PRECONDITION`,
    /// `TALLY:QuoteExpired`), also after an attempt that timed out: final, the node makes
    /// sure no earlier attempt of the same swap can still apply (`docs/SHARDING.md` §4).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn swap(&self, request: v1::SwapRequest) -> Result<v1::SwapReply, ClientError> {
        let member = request.member_a_account_id.map_or(0, u128::from);
        let first = if member == 0 { None } else { self.leader_for(member) };
        self.call_via(first, Kind::Write, |mut c, stamp| async move {
            counted(c.swap(stamp.on(request)).await, 2, |r| r.results.len())
        })
        .await
    }

    /// Runs many swaps in one request (at most [`SWAPS_PER_REQUEST_MAX`]; ids distinct
    /// across all of them): one result per swap, in order, each all-or-nothing on its
    /// own. A swap refused alone (malformed, an id reused, its quote expired) says so in
    /// its result's `refusal` and `message`; the others are made. `QUOTE_EXPIRED` is final
    /// there too: no earlier attempt of that swap can still apply. Retried like
    /// [`Self::create_transfers`]: a resend reads each applied swap back as `EXISTS`.
    ///
    /// # Errors
    /// See [`ClientError`]; [`ClientError::InvalidRequest`] for an empty or too large
    /// batch, before anything is sent.
    pub async fn swap_batch(
        &self,
        swaps: Vec<v1::SwapRequest>,
    ) -> Result<Vec<v1::SwapResult>, ClientError> {
        if swaps.is_empty() || swaps.len() > SWAPS_PER_REQUEST_MAX as usize {
            return Err(ClientError::InvalidRequest(format!(
                "{} swaps; a swap batch holds 1..={SWAPS_PER_REQUEST_MAX}",
                swaps.len()
            )));
        }
        let member = swaps[0].member_a_account_id.map_or(0, u128::from);
        let first = if member == 0 { None } else { self.leader_for(member) };
        let sent = swaps.len();
        let request = v1::SwapBatchRequest { swaps };
        let reply = self
            .call_via(first, Kind::Write, |mut c, stamp| {
                let r = stamp.on(request.clone());
                async move {
                    // One result per swap; two transfer results for each made (or
                    // refused by the ledger), none or two for one refused whole.
                    let whole = |r: &v1::SwapBatchReply| {
                        let well_formed = r.results.iter().all(|s| match s.results.len() {
                            2 => true,
                            0 => s.refusal != v1::SwapRefusal::None as i32,
                            _ => false,
                        });
                        if well_formed { r.results.len() } else { usize::MAX }
                    };
                    counted(c.swap_batch(r).await, sent, whole)
                }
            })
            .await?;
        Ok(reply.results)
    }

    /// The accounts found among `ids` (missing ids are skipped), linearizable.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<v1::Account>, ClientError> {
        check_size(ids.len())?;
        let first = self.leader_for(ids[0]);
        let request = v1::LookupAccountsRequest {
            ids: ids.iter().map(|&id| tally_proto::Uint128::from(id)).collect(),
        };
        let reply = self
            .call_via(first, Kind::Read, |mut c, stamp| {
                let r = stamp.on(request.clone());
                async move { c.lookup_accounts(r).await }
            })
            .await?;
        Ok(reply.accounts)
    }

    /// The transfers found among `ids`, linearizable.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<v1::Transfer>, ClientError> {
        check_size(ids.len())?;
        let request = v1::LookupTransfersRequest {
            ids: ids.iter().map(|&id| tally_proto::Uint128::from(id)).collect(),
        };
        let reply = self
            .call(Kind::Read, |mut c, stamp| {
                let r = stamp.on(request.clone());
                async move { c.lookup_transfers(r).await }
            })
            .await?;
        Ok(reply.transfers)
    }

    /// Transfers of one account matching `filter`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get_account_transfers(
        &self,
        filter: v1::AccountFilter,
    ) -> Result<Vec<v1::Transfer>, ClientError> {
        let first = self.leader_for(filter.account_id.map_or(0, u128::from));
        let request = v1::GetAccountTransfersRequest { filter: Some(filter) };
        let reply = self
            .call_via(first, Kind::Read, |mut c, stamp| async move {
                c.get_account_transfers(stamp.on(request)).await
            })
            .await?;
        Ok(reply.transfers)
    }

    /// Historical balances of one account matching `filter`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get_account_balances(
        &self,
        filter: v1::AccountFilter,
    ) -> Result<Vec<v1::AccountBalance>, ClientError> {
        let first = self.leader_for(filter.account_id.map_or(0, u128::from));
        let request = v1::GetAccountBalancesRequest { filter: Some(filter) };
        let reply = self
            .call_via(first, Kind::Read, |mut c, stamp| async move {
                c.get_account_balances(stamp.on(request)).await
            })
            .await?;
        Ok(reply.balances)
    }

    /// Earns points (see [`loyalty::earn`]).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn earn(&self, e: &Earn) -> Result<v1::CreateTransferResult, ClientError> {
        let mut results = self.create_transfers(vec![loyalty::earn(e)]).await?;
        results.pop().ok_or_else(|| ClientError::Config("empty reply".into()))
    }

    /// Redeems points, linked with one unit of stock if given (see [`loyalty::redeem`]);
    /// one result per leg.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn redeem(
        &self,
        r: &Redemption,
    ) -> Result<Vec<v1::CreateTransferResult>, ClientError> {
        self.create_transfers(loyalty::redeem(r)).await
    }

    /// Expires points (see [`loyalty::expire`]).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn expire(&self, e: &Expire) -> Result<v1::CreateTransferResult, ClientError> {
        let mut results = self.create_transfers(vec![loyalty::expire(e)]).await?;
        results.pop().ok_or_else(|| ClientError::Config("empty reply".into()))
    }
}

/// `reply`, unless it holds `results(reply)` results where the request sent `sent` events
/// (`usize::MAX`: malformed otherwise): then `INTERNAL` (a node's fault or a version
/// mismatch), which a write reports as [`ClientError::OutcomeUnknown`]: results out of
/// step with the request cannot be matched to its events, and something may have applied.
fn counted<T>(
    reply: Result<tonic::Response<T>, tonic::Status>,
    sent: usize,
    results: impl FnOnce(&T) -> usize,
) -> Result<tonic::Response<T>, tonic::Status> {
    let reply = reply?;
    match results(reply.get_ref()) {
        got if got == sent => Ok(reply),
        usize::MAX => Err(tonic::Status::internal(format!(
            "TALLY:Internal: the reply to {sent} events holds a malformed result; which of \
             them applied is unknown"
        ))),
        got => Err(tonic::Status::internal(format!(
            "TALLY:Internal: the reply to {sent} events holds {got} results; which of them \
             applied is unknown"
        ))),
    }
}

fn check_size(events: usize) -> Result<(), ClientError> {
    if events == 0 || events > BATCH_EVENTS_MAX as usize {
        return Err(ClientError::InvalidRequest(format!(
            "{events} events; a request holds 1..={BATCH_EVENTS_MAX}"
        )));
    }
    Ok(())
}

/// Takes the shard map of `reply` into `held`, unless it is out of range or older than
/// the map held (a node that lags): then `held` is kept, marked as just confirmed (the node
/// has nothing newer, so it is asked again only once the map is old), and the reason is
/// returned.
fn take_map(held: &mut Option<ShardMap>, reply: &v1::ListShardsReply) -> Result<(), String> {
    if reply.shards == 0 || reply.shards > tally_proto::routing::SHARDS_MAX {
        return Err(format!("{} shards: out of range", reply.shards));
    }
    if let Some(map) = held.as_mut().filter(|m| m.version > reply.map_version) {
        map.fetched = Instant::now();
        return Err(format!("version {} is older than {}", reply.map_version, map.version));
    }
    let mut leaders = vec![String::new(); reply.shards as usize];
    for info in &reply.shard_infos {
        if let Some(slot) = (info.shard_id as usize).checked_sub(1).and_then(|i| leaders.get_mut(i))
        {
            slot.clone_from(&info.leader_addr);
        }
    }
    *held = Some(ShardMap {
        version: reply.map_version,
        shards: reply.shards,
        leaders,
        fetched: Instant::now(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn only_a_refusal_of_the_content_is_final_after_an_earlier_attempt_may_have_applied() {
        let earlier = || Some("n1: DeadlineExceeded attempt timed out".to_owned());
        let unknown = |status: &Status| {
            matches!(
                final_error(Kind::Write, status, 2, earlier()),
                ClientError::OutcomeUnknown { .. }
            )
        };
        // A node of another build lacking the method, or a reply too large to decode: the
        // earlier attempt may still have applied.
        assert!(unknown(&Status::unimplemented("unknown method Swap")));
        assert!(unknown(&Status::out_of_range("decoded message length too large")));
        assert!(unknown(&Status::failed_precondition("TALLY:BatchRefused: ...")));
        // The same content refused by every attempt, and a final quote refusal.
        assert!(!unknown(&Status::invalid_argument("TALLY:InvalidRequest: event 0: ...")));
        assert!(!unknown(&Status::failed_precondition("TALLY:QuoteExpired: ...")));
        // Without an earlier attempt, a refusal that follows no apply is a rejection.
        for status in [Status::unimplemented("x"), Status::out_of_range("x")] {
            let error = final_error(Kind::Write, &status, 1, None);
            assert!(matches!(error, ClientError::Rejected { .. }), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_full_endpoint_list_replaces_the_learned_endpoint_used_least_recently() {
        let client = Client::builder(["10.0.0.1:7001", "10.0.0.2:7001"]).build().unwrap();
        let learned = |k: usize| format!("10.1.{}.{}:7001", k / 256, k % 256);
        for k in 0..ENDPOINTS_MAX - 2 {
            assert_eq!(client.index_of(&learned(k)), k + 2);
        }
        // Every learned endpoint answers a call, in order, but the second and the fifth;
        // the client is using the first.
        for k in (0..ENDPOINTS_MAX - 2).filter(|&k| k != 1 && k != 4) {
            client.node_at(k + 2).1.used.store(client.tick(), Ordering::Relaxed);
        }
        client.inner.current.store(2, Ordering::Relaxed);
        let addrs = || client.inner.nodes.read().iter().map(|n| n.addr.clone()).collect::<Vec<_>>();
        // New addresses take the slots of those two (learned first, used least recently),
        // then of the third learned one (the first is in use); none evicts another new one,
        // and the configured two are kept.
        assert_eq!(client.index_of("10.2.0.1:7001"), 3);
        assert_eq!(client.index_of("10.2.0.2:7001"), 6);
        assert_eq!(client.index_of("10.2.0.3:7001"), 4);
        assert_eq!(client.index_of("10.2.0.1:7001"), 3, "known: found, not added again");
        let now = addrs();
        assert_eq!(now.len(), ENDPOINTS_MAX);
        assert_eq!(&now[..4], ["10.0.0.1:7001", "10.0.0.2:7001", &learned(0), "10.2.0.1:7001"]);
        for gone in [1, 2, 4] {
            assert!(!now.contains(&learned(gone)), "{now:?}");
        }
        // With only configured endpoints, a new address is not kept: the next one is tried.
        let configured: Vec<String> = (0..ENDPOINTS_MAX).map(learned).collect();
        let full = Client::builder(configured).build().unwrap();
        assert_eq!(full.index_of("10.2.0.1:7001"), 1);
        assert_eq!(full.inner.nodes.read().len(), ENDPOINTS_MAX);
    }

    #[tokio::test]
    async fn a_leader_that_does_not_connect_is_not_tried_first_for_a_while() {
        // Two ports with nothing listening (bound, then closed): every connect is refused.
        let closed = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (a, b) = (closed(), closed());
        let client = Client::builder([a.as_str(), b.as_str()])
            .attempt_timeout(Duration::from_millis(200))
            .deadline(Duration::from_millis(300))
            .build()
            .unwrap();
        // The map names A as the leader of the only shard.
        let map = v1::ListShardsReply {
            shards: 1,
            map_version: 1,
            shard_infos: vec![v1::ShardInfo {
                shard_id: 1,
                leader_addr: a.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        take_map(&mut client.inner.map.write(), &map).unwrap();
        assert_eq!(client.leader_for(7), Some(0), "A is tried first while it has not failed");
        let error = client.lookup_accounts(&[7]).await.unwrap_err();
        assert!(matches!(error, ClientError::DeadlineExceeded { .. }), "{error:?}");
        assert!(client.is_down(0) && client.is_down(1), "both refused their connections");
        assert_eq!(client.leader_for(7), None, "A is not tried first for a while");
        // Once it answers again (here: marked as if it had), it is tried first again.
        client.node_at(0).1.failed_ms.store(0, Ordering::Relaxed);
        assert_eq!(client.leader_for(7), Some(0));
    }

    #[test]
    fn an_older_shard_map_is_never_taken() {
        let reply = |version: u64, leader: &str| v1::ListShardsReply {
            shards: 2,
            map_version: version,
            shard_infos: vec![v1::ShardInfo {
                shard_id: 2,
                leader_addr: leader.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut held = None;
        take_map(&mut held, &reply(3, "a:1")).unwrap();
        let fetched = held.as_ref().unwrap().fetched;
        // A lagging node's map: not taken, but the held one counts as confirmed now.
        let why = take_map(&mut held, &reply(2, "b:1")).unwrap_err();
        assert!(why.contains("older"), "{why}");
        let map = held.as_ref().unwrap();
        assert_eq!((map.version, map.leaders.clone()), (3, vec![String::new(), "a:1".into()]));
        assert!(map.fetched >= fetched);
        // The same version (leaders move without a new version) and a newer one are taken.
        take_map(&mut held, &reply(3, "c:1")).unwrap();
        assert_eq!(held.as_ref().unwrap().leaders[1], "c:1");
        take_map(&mut held, &reply(4, "d:1")).unwrap();
        assert_eq!(held.as_ref().map(|m| m.version), Some(4));
        let out_of_range = v1::ListShardsReply { shards: 0, ..reply(5, "e:1") };
        assert!(take_map(&mut held, &out_of_range).is_err());
        assert_eq!(held.as_ref().map(|m| m.version), Some(4));
    }

    #[tokio::test]
    async fn durations_beyond_a_day_are_refused_when_built() {
        let error = Client::builder(["127.0.0.1:1"]).deadline(Duration::MAX).build().unwrap_err();
        assert!(error.to_string().contains("deadline must be at most"), "{error}");
        let error = Client::builder(["127.0.0.1:1"])
            .shard_map_max_age(CLIENT_DURATION_MAX + Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("shard_map_max_age"), "{error}");
        assert!(Client::builder(["127.0.0.1:1"]).deadline(CLIENT_DURATION_MAX).build().is_ok());
    }

    #[test]
    fn a_background_map_fetch_dropped_with_its_runtime_lets_the_next_one_start() {
        // A listener that accepts and never answers: the fetch waits on it.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(async {
            let client = Client::builder([addr.as_str()]).build().unwrap();
            client.refresh_map_if_old();
            assert!(client.inner.fetching.load(Ordering::Acquire), "a fetch is under way");
            tokio::task::yield_now().await;
            client
        });
        // The fetch task is dropped with its runtime, before its 1 s timeout.
        drop(runtime);
        assert!(!client.inner.fetching.load(Ordering::Acquire), "the flag was left set");
    }

    #[test]
    fn a_retry_cause_names_known_codes_only() {
        let cause = |status: &Status, timed_out| RetryCause::of(status, timed_out).to_string();
        let leader = Status::unavailable("TALLY:NotLeader: not the leader");
        assert_eq!(cause(&leader, false), "Unavailable NotLeader");
        // A code the client does not know is counted as `other`, not by its own text.
        let novel = Status::unavailable("TALLY:SomethingNew: details");
        assert_eq!(cause(&novel, false), "Unavailable other");
        assert_eq!(cause(&Status::unavailable("transport error"), false), "Unavailable");
        let own = Status::deadline_exceeded("attempt timed out after 5s");
        assert_eq!(cause(&own, true), "DeadlineExceeded AttemptTimeout");
        assert_eq!(RetryCause::of(&leader, false).code(), Code::Unavailable);
        assert_eq!(RetryCause::of(&leader, false).message_code(), "NotLeader");
    }
}
