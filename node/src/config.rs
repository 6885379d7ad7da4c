//! The one typed configuration tree of a node.
//!
//! Precedence: command-line flag > `TALLY_*` environment variable > TOML file > default.
//! (clap applies flag > env; [`NodeConfig::load`] lays those over the file.) Unknown fields
//! are refused; [`NodeConfig::validate`] names the bad field by its dotted path. The
//! effective configuration is logged at start ([`NodeConfig`]'s `Display`); there are no
//! secrets in it: the cluster key is a path (`cluster_key_file`), never its contents.
//!
//! `deploy/tallyd.example.toml` documents every field with its unit and default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tally_proto::limits::{BATCH_EVENTS_MAX, RAFT_ENTRIES_PER_MESSAGE_MAX};
use tally_proto::routing::SHARDS_MAX;

use crate::ledger::memory_store::Capacity;

/// Largest node id: the shard map names a shard's nodes as a 128-bit set (bit `n - 1` for
/// node `n`), so `SetShardReplicas` could never name a node with a larger id.
pub const NODE_ID_MAX: u64 = 128;
/// Largest `batch.queue_requests_max`. Each queued request holds its events (a 4-MiB
/// message at most), so the queue must be sized to the memory a node may give it; this
/// only refuses values no machine could hold.
pub const QUEUE_REQUESTS_MAX_MAX: u32 = 1 << 20;
/// Largest `batch.in_flight_entries_max`.
pub const IN_FLIGHT_ENTRIES_MAX_MAX: u32 = 1024;
/// Largest group-commit linger, microseconds.
pub const LINGER_US_MAX: u64 = 100_000;
/// Smallest `raft.checkpoint_writes` (tests use it to checkpoint often).
pub const CHECKPOINT_WRITES_MIN: u64 = 1;
/// Largest `raft.checkpoint_writes`: the journal holds about 150 bytes a write, so this
/// bounds it near 2.5 GiB and the log a restart re-applies to a few seconds.
pub const CHECKPOINT_WRITES_MAX: u64 = 1 << 24;
/// Largest `txn_recovery_after_ms` (one day).
pub const TXN_RECOVERY_AFTER_MS_MAX: u64 = 86_400_000;
/// Largest `pending_watch_max`: about 64 MiB of watch per shard this node leads.
pub const PENDING_WATCH_MAX_MAX: usize = 1 << 20;
/// Largest `raft.snapshot_logs_since_last` and `raft.logs_to_keep_after_snapshot`: they
/// bound the log entries a node keeps on disk between two snapshots.
pub const RAFT_LOG_ENTRIES_MAX: u64 = 1 << 24;
/// Largest `raft.heartbeat_interval_ms`, `raft.election_timeout_min_ms` and
/// `raft.election_timeout_max_ms` (one minute): a failed leader is replaced within it.
pub const RAFT_TIMING_MS_MAX: u64 = 60_000;
/// Largest `raft.leader_balance_interval_ms` (one hour).
pub const LEADER_BALANCE_INTERVAL_MS_MAX: u64 = 3_600_000;

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Raft node id, `1..=`[`NODE_ID_MAX`], unique in the cluster.
    pub node_id: u64,
    /// The one gRPC port: public ledger, admin, internal raft, health, reflection.
    pub listen_addr: SocketAddr,
    /// `host:port` other nodes and clients use to reach this node; empty = `listen_addr`.
    pub advertise_addr: String,
    /// RocksDB lives in `<data_dir>/rocksdb`.
    pub data_dir: PathBuf,
    /// Initial voters. The node with the smallest id here initialises a new cluster; on
    /// later starts the list is ignored. Empty: restart or join only.
    pub bootstrap: Vec<Member>,
    /// Data shards of the cluster (`1..=SHARDS_MAX`), each its own Raft group hosted by
    /// every bootstrap member. Fixed when the cluster is created: every node must be
    /// given the same count, and a node refuses to start on data created with another.
    pub shards: u32,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// Group commit.
    pub batch: BatchConfig,
    /// How long a request may wait inside the node, milliseconds.
    pub request_timeout_ms: u64,
    /// How often the leader checks for due pending-transfer expiries, milliseconds.
    pub pulse_interval_ms: u64,
    /// Age of a cross-shard transaction's marker after which a shard leader finishes the
    /// transaction if its legs there are still unresolved (its coordinator presumably
    /// crashed), milliseconds, `1..=TXN_RECOVERY_AFTER_MS_MAX`.
    pub txn_recovery_after_ms: u64,
    /// Cross-shard pending transfers with a timeout whose expiry a shard's leader watches,
    /// at most, per shard (`1..=PENDING_WATCH_MAX_MAX`, default
    /// [`crate::service::xpending::WATCH_MAX`]); past it, the rest are walked again once
    /// entries leave (`docs/SHARDING.md` §3e). About 64 bytes an entry.
    pub pending_watch_max: usize,
    /// Storage (RocksDB) options.
    pub storage: StorageConfig,
    /// Memory allocated at start for each shard replica's in-memory ledger.
    pub memory: MemoryConfig,
    /// Logging.
    pub log: LogConfig,
    /// File holding the cluster key (`tally_proto::auth`): the same key on every node of the
    /// cluster, readable by its owner only. Required: calls only nodes make (Raft, routed
    /// ledger requests, leadership and replica changes) must carry it.
    pub cluster_key_file: PathBuf,
}

/// One initial voter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Its `host:port`.
    pub addr: String,
}

/// Raft timing and log retention.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat interval, milliseconds (default 100; with elections after 1-2 s:
    /// etcd's defaults. Shorter election timeouts fail over sooner but elect spuriously
    /// when a loaded machine delays heartbeats: 300-600 ms did under peak load on 2 cores).
    pub heartbeat_interval_ms: u64,
    /// Smallest election timeout, milliseconds (> heartbeat).
    pub election_timeout_min_ms: u64,
    /// Largest election timeout, milliseconds (> min, <= `RAFT_TIMING_MS_MAX`).
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log) after this many applied entries
    /// (`1..=RAFT_LOG_ENTRIES_MAX`).
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log after a snapshot, for followers slightly behind
    /// (`0..=RAFT_LOG_ENTRIES_MAX`).
    pub logs_to_keep_after_snapshot: u64,
    /// Entries per AppendEntries message (<= `RAFT_ENTRIES_PER_MESSAGE_MAX`).
    pub append_entries_max: u64,
    /// Ledger writes collected in memory before the state machine writes a checkpoint
    /// (`CHECKPOINT_WRITES_MIN..=CHECKPOINT_WRITES_MAX`).
    pub checkpoint_writes: u64,
    /// How often a node hands the shards it leads but is not the preferred leader of to
    /// their preferred node, milliseconds (`0..=LEADER_BALANCE_INTERVAL_MS_MAX`; 0 = never).
    pub leader_balance_interval_ms: u64,
}

/// Group commit.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// How long to wait for more requests before proposing a partial entry, microseconds.
    pub linger_us: u64,
    /// Events per Raft entry, 1..=`BATCH_EVENTS_MAX`.
    pub events_max: u32,
    /// Requests queued for group commit, 1..=`QUEUE_REQUESTS_MAX_MAX`; beyond it callers
    /// get `Overloaded`.
    pub queue_requests_max: u32,
    /// Raft entries proposed and not yet applied, 1..=`IN_FLIGHT_ENTRIES_MAX_MAX`.
    pub in_flight_entries_max: u32,
}

/// Storage (RocksDB) options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Whether RocksDB writes the files of memtable flushes and compactions, and reads its
    /// files, with direct I/O (`O_DIRECT`), bypassing the page cache.
    pub direct_io: DirectIo,
}

/// Memory allocated and touched at start for each shard replica this node hosts, as
/// TigerBeetle allocates all its memory at start: applying then neither grows a table nor
/// faults in fresh pages until the shard holds more than this (beyond it the ledger grows as
/// usual). Costs resident memory from the start ([`MemoryConfig::bytes_per_replica`]) and
/// start-up time (about a second per ten million transfers per replica, also on every
/// snapshot install). 0 (the default): nothing allocated ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Accounts per shard replica, `0..=MEMORY_ACCOUNTS_PER_SHARD_MAX`.
    pub accounts_per_shard: u64,
    /// Transfers per shard replica, `0..=MEMORY_TRANSFERS_PER_SHARD_MAX`.
    pub transfers_per_shard: u64,
}

/// Most accounts `memory.accounts_per_shard` may ask for.
pub const MEMORY_ACCOUNTS_PER_SHARD_MAX: u64 = 1 << 30;
/// Most transfers `memory.transfers_per_shard` may ask for (a shard's transfers are
/// indexed by `u32` in memory).
pub const MEMORY_TRANSFERS_PER_SHARD_MAX: u64 = (1 << 32) - 2;

impl MemoryConfig {
    /// What each shard replica's store is created with.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Capacity {
            accounts: size(self.accounts_per_shard),
            transfers: size(self.transfers_per_shard),
        }
    }

    /// About how many bytes each shard replica takes for it (an upper estimate).
    #[must_use]
    pub fn bytes_per_replica(&self) -> u64 {
        self.capacity().bytes()
    }

    /// Checks the bounds, and that `replicas` replicas' memory fits in `total_bytes`
    /// (the machine's memory, when known), naming the field.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn check(&self, replicas: u32, total_bytes: Option<u64>) -> Result<(), ConfigError> {
        if self.accounts_per_shard > MEMORY_ACCOUNTS_PER_SHARD_MAX {
            return Err(invalid(
                "memory.accounts_per_shard",
                format!("must be 0..={MEMORY_ACCOUNTS_PER_SHARD_MAX}"),
            ));
        }
        if self.transfers_per_shard > MEMORY_TRANSFERS_PER_SHARD_MAX {
            return Err(invalid(
                "memory.transfers_per_shard",
                format!("must be 0..={MEMORY_TRANSFERS_PER_SHARD_MAX}"),
            ));
        }
        let needed = self.bytes_per_replica().saturating_mul(u64::from(replicas));
        match total_bytes {
            Some(total) if needed > total => Err(invalid(
                "memory",
                format!(
                    "{} accounts and {} transfers per shard take about {} MiB per replica, {} \
                     MiB for this node's {replicas} shard replicas: more than the machine's {} \
                     MiB",
                    self.accounts_per_shard,
                    self.transfers_per_shard,
                    self.bytes_per_replica() >> 20,
                    needed >> 20,
                    total >> 20
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), if it can be read.
#[must_use]
pub fn machine_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `storage.direct_io`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectIo {
    /// Direct I/O for flushes, compactions and reads if the data directory's file system
    /// accepts an `O_DIRECT` write (probed at start), buffered otherwise.
    #[default]
    Auto,
    /// Buffered writes and reads through the page cache.
    Off,
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive, e.g. `info` or `info,openraft=warn`. `RUST_LOG` overrides.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertise_addr: String::new(),
            data_dir: PathBuf::from("tally-data"),
            bootstrap: Vec::new(),
            shards: 1,
            raft: RaftConfig::default(),
            batch: BatchConfig::default(),
            request_timeout_ms: 10_000,
            pulse_interval_ms: 100,
            txn_recovery_after_ms: 30_000,
            pending_watch_max: crate::service::xpending::WATCH_MAX,
            storage: StorageConfig::default(),
            memory: MemoryConfig::default(),
            log: LogConfig::default(),
            cluster_key_file: PathBuf::new(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_logs_since_last: 20_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 64,
            checkpoint_writes: 131_072,
            leader_balance_interval_ms: 3_000,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            linger_us: 0,
            events_max: BATCH_EVENTS_MAX,
            queue_requests_max: 16_384,
            in_flight_entries_max: 8,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

/// A configuration that cannot be used, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A field breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: &'static str,
        /// The rule broken.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

/// Refuses `value` of `field` outside `lo..=hi`, saying so ("must be lo..=hi", and the
/// limit's constant `name` if not empty).
fn within<T>(field: &'static str, value: T, lo: T, hi: T, name: &str) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    let named = if name.is_empty() { String::new() } else { format!(" ({name})") };
    Err(invalid(field, format!("must be {lo}..={hi}{named}")))
}

/// Values given on the command line or in `TALLY_*` variables (clap merges those two).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// `--node-id` / `TALLY_NODE_ID`.
    pub node_id: Option<u64>,
    /// `--listen` / `TALLY_LISTEN_ADDR`.
    pub listen_addr: Option<SocketAddr>,
    /// `--advertise` / `TALLY_ADVERTISE_ADDR`.
    pub advertise_addr: Option<String>,
    /// `--data-dir` / `TALLY_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--bootstrap` / `TALLY_BOOTSTRAP`, already parsed.
    pub bootstrap: Option<Vec<Member>>,
    /// `--shards` / `TALLY_SHARDS`.
    pub shards: Option<u32>,
    /// `--log-level` / `TALLY_LOG_LEVEL`.
    pub log_level: Option<String>,
    /// `--log-format` / `TALLY_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--cluster-key-file` / `TALLY_CLUSTER_KEY_FILE`.
    pub cluster_key_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads `file` (if any) over the defaults, lays `overrides` on top and validates.
    ///
    /// # Errors
    /// The file cannot be read or parsed (the message names the file, line and field), or a
    /// field is invalid (named by its dotted path).
    pub fn load(file: Option<&Path>, overrides: &CliOverrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file_error =
            |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        Self::from_toml(&text).map_err(file_error)
    }

    /// Parses TOML over the defaults (no validation).
    ///
    /// # Errors
    /// The parser's message, naming the line and the field.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply(&mut self, o: &CliOverrides) {
        if let Some(v) = o.node_id {
            self.node_id = v;
        }
        if let Some(v) = o.listen_addr {
            self.listen_addr = v;
        }
        if let Some(v) = &o.advertise_addr {
            self.advertise_addr.clone_from(v);
        }
        if let Some(v) = &o.data_dir {
            self.data_dir.clone_from(v);
        }
        if let Some(v) = &o.bootstrap {
            self.bootstrap.clone_from(v);
        }
        if let Some(v) = o.shards {
            self.shards = v;
        }
        if let Some(v) = &o.log_level {
            self.log.level.clone_from(v);
        }
        if let Some(v) = o.log_format {
            self.log.format = v;
        }
        if let Some(v) = &o.cluster_key_file {
            self.cluster_key_file.clone_from(v);
        }
        if self.advertise_addr.is_empty() {
            self.advertise_addr = self.listen_addr.to_string();
        }
    }

    /// Checks every rule, naming the first field that breaks one.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("node_id", self.node_id, 1, NODE_ID_MAX, "NODE_ID_MAX")?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        check_host_port(&self.advertised_addr()).map_err(|r| invalid("advertise_addr", r))?;
        self.validate_bootstrap()?;
        within("shards", self.shards, 1, SHARDS_MAX, "SHARDS_MAX")?;
        self.raft.validate()?;
        self.batch.validate()?;
        within("request_timeout_ms", self.request_timeout_ms, 1, 3_600_000, "")?;
        within("pulse_interval_ms", self.pulse_interval_ms, 1, 60_000, "")?;
        within(
            "txn_recovery_after_ms",
            self.txn_recovery_after_ms,
            1,
            TXN_RECOVERY_AFTER_MS_MAX,
            "",
        )?;
        within("pending_watch_max", self.pending_watch_max, 1, PENDING_WATCH_MAX_MAX, "")?;
        self.memory.check(self.shards, None)?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", format!("not a log filter: {:?}", self.log.level)));
        }
        if self.cluster_key_file.as_os_str().is_empty() {
            return Err(invalid(
                "cluster_key_file",
                "required: the file holding the cluster key, the same on every node \
                 (`tallyd keygen --out FILE` writes a new one)",
            ));
        }
        Ok(())
    }

    fn validate_bootstrap(&self) -> Result<(), ConfigError> {
        if self.bootstrap.is_empty() {
            return Ok(());
        }
        for member in &self.bootstrap {
            check_host_port(&member.addr)
                .map_err(|r| invalid("bootstrap", format!("node {}: {r}", member.id)))?;
        }
        let mut ids: Vec<u64> = self.bootstrap.iter().map(|m| m.id).collect();
        let mut addrs: Vec<&str> = self.bootstrap.iter().map(|m| m.addr.as_str()).collect();
        ids.sort_unstable();
        addrs.sort_unstable();
        if ids.iter().any(|id| !(1..=NODE_ID_MAX).contains(id)) {
            return Err(invalid(
                "bootstrap",
                format!("node ids must be 1..={NODE_ID_MAX} (NODE_ID_MAX)"),
            ));
        }
        if ids.windows(2).any(|w| w[0] == w[1]) || addrs.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("bootstrap", "node ids and addresses must be unique"));
        }
        let advertised = self.advertised_addr();
        match self.bootstrap.iter().find(|m| m.id == self.node_id) {
            None => {
                Err(invalid("bootstrap", format!("must include this node (id {})", self.node_id)))
            }
            Some(me) if me.addr != advertised => Err(invalid(
                "bootstrap",
                format!("lists node {} at {} but it advertises {advertised}", me.id, me.addr),
            )),
            Some(_) => Ok(()),
        }
    }

    /// `advertise_addr`, or `listen_addr` when it is empty (before [`NodeConfig::load`]
    /// filled it in, e.g. a config built from `Default` in a test).
    fn advertised_addr(&self) -> String {
        if self.advertise_addr.is_empty() {
            self.listen_addr.to_string()
        } else {
            self.advertise_addr.clone()
        }
    }
}

/// Checks a `host:port` that other nodes and clients dial: a host name or IP address
/// (`[v6]` in brackets) without a scheme, and a port 1..=65535.
fn check_host_port(addr: &str) -> Result<(), String> {
    let expected = || format!("{addr:?} is not host:port (e.g. 10.0.0.5:7001, no http://)");
    let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
    let host_char = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
    if host.is_empty() || !host.chars().all(host_char) {
        return Err(expected());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("{addr:?}: port must be 1..=65535")),
    }
}

impl RaftConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("raft.heartbeat_interval_ms", "must be at least 1"));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                format!(
                    "must be greater than raft.heartbeat_interval_ms ({})",
                    self.heartbeat_interval_ms
                ),
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!(
                    "must be greater than raft.election_timeout_min_ms ({})",
                    self.election_timeout_min_ms
                ),
            ));
        }
        if self.election_timeout_max_ms > RAFT_TIMING_MS_MAX {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!("must be at most {RAFT_TIMING_MS_MAX} (RAFT_TIMING_MS_MAX)"),
            ));
        }
        within(
            "raft.snapshot_logs_since_last",
            self.snapshot_logs_since_last,
            1,
            RAFT_LOG_ENTRIES_MAX,
            "RAFT_LOG_ENTRIES_MAX",
        )?;
        within(
            "raft.logs_to_keep_after_snapshot",
            self.logs_to_keep_after_snapshot,
            0,
            RAFT_LOG_ENTRIES_MAX,
            "RAFT_LOG_ENTRIES_MAX",
        )?;
        within(
            "raft.checkpoint_writes",
            self.checkpoint_writes,
            CHECKPOINT_WRITES_MIN,
            CHECKPOINT_WRITES_MAX,
            "",
        )?;
        if self.leader_balance_interval_ms > LEADER_BALANCE_INTERVAL_MS_MAX {
            return Err(invalid(
                "raft.leader_balance_interval_ms",
                format!("must be at most {LEADER_BALANCE_INTERVAL_MS_MAX}"),
            ));
        }
        within(
            "raft.append_entries_max",
            self.append_entries_max,
            1,
            u64::from(RAFT_ENTRIES_PER_MESSAGE_MAX),
            "RAFT_ENTRIES_PER_MESSAGE_MAX",
        )
    }
}

impl BatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.linger_us > LINGER_US_MAX {
            return Err(invalid("batch.linger_us", format!("must be at most {LINGER_US_MAX}")));
        }
        within("batch.events_max", self.events_max, 1, BATCH_EVENTS_MAX, "BATCH_EVENTS_MAX")?;
        within(
            "batch.queue_requests_max",
            self.queue_requests_max,
            1,
            QUEUE_REQUESTS_MAX_MAX,
            "QUEUE_REQUESTS_MAX_MAX",
        )?;
        within(
            "batch.in_flight_entries_max",
            self.in_flight_entries_max,
            1,
            IN_FLIGHT_ENTRIES_MAX_MAX,
            "IN_FLIGHT_ENTRIES_MAX_MAX",
        )
    }
}

/// Parses `--bootstrap`: `1=host:port,2=host:port,...`.
///
/// # Errors
/// A part without `=`, an id that is not a number, or an address that is empty or not
/// `host:port`, quoting the part. (Duplicates and the rules tying the list to this node
/// are [`NodeConfig::validate`]'s, as for the file.)
pub fn parse_bootstrap(text: &str) -> Result<Vec<Member>, String> {
    text.split(',').map(str::trim).filter(|part| !part.is_empty()).map(parse_member).collect()
}

fn parse_member(part: &str) -> Result<Member, String> {
    let (id, addr) =
        part.split_once('=').ok_or_else(|| format!("{part:?}: expected <node id>=<host:port>"))?;
    let (id, addr) = (id.trim(), addr.trim());
    let id = id.parse().map_err(|_| format!("{part:?}: node id {id:?} is not a number"))?;
    if addr.is_empty() {
        return Err(format!("{part:?}: empty address"));
    }
    check_host_port(addr).map_err(|reason| format!("{part:?}: {reason}"))?;
    Ok(Member { id, addr: addr.to_owned() })
}

/// The effective configuration on one line of `key=value` pairs named by dotted path, for
/// the startup log. Nothing is redacted: the configuration holds no secrets (the cluster
/// key's path, not the key).
impl fmt::Display for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> =
            self.bootstrap.iter().map(|m| format!("{}={}", m.id, m.addr)).collect();
        write!(
            f,
            "node_id={} listen_addr={} advertise_addr={} data_dir={} bootstrap=[{}] shards={} \
             request_timeout_ms={} pulse_interval_ms={} txn_recovery_after_ms={} pending_watch_max={} \
             {} {} {} {} {} \
             cluster_key_file={} (no secrets in the config)",
            self.node_id,
            self.listen_addr,
            self.advertised_addr(),
            self.data_dir.display(),
            members.join(","),
            self.shards,
            self.request_timeout_ms,
            self.pulse_interval_ms,
            self.txn_recovery_after_ms,
            self.pending_watch_max,
            self.raft,
            self.batch,
            self.storage,
            self.memory,
            self.log,
            self.cluster_key_file.display()
        )
    }
}

impl fmt::Display for RaftConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "raft.heartbeat_interval_ms={} raft.election_timeout_min_ms={} \
             raft.election_timeout_max_ms={} raft.snapshot_logs_since_last={} \
             raft.logs_to_keep_after_snapshot={} raft.append_entries_max={} \
             raft.checkpoint_writes={} raft.leader_balance_interval_ms={}",
            self.heartbeat_interval_ms,
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
            self.snapshot_logs_since_last,
            self.logs_to_keep_after_snapshot,
            self.append_entries_max,
            self.checkpoint_writes,
            self.leader_balance_interval_ms
        )
    }
}

impl fmt::Display for BatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch.linger_us={} batch.events_max={} batch.queue_requests_max={} \
             batch.in_flight_entries_max={}",
            self.linger_us, self.events_max, self.queue_requests_max, self.in_flight_entries_max
        )
    }
}

impl fmt::Display for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direct_io = match self.direct_io {
            DirectIo::Auto => "auto",
            DirectIo::Off => "off",
        };
        write!(f, "storage.direct_io={direct_io}")
    }
}

impl fmt::Display for MemoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory.accounts_per_shard={} memory.transfers_per_shard={}",
            self.accounts_per_shard, self.transfers_per_shard
        )
    }
}

impl fmt::Display for LogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log.level={:?} log.format={}", self.level, self.format)
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<NodeConfig, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    /// What `tallyd dev` and the test clusters pass: the cluster key's file.
    fn keyed() -> CliOverrides {
        CliOverrides { cluster_key_file: Some(PathBuf::from("cluster.key")), ..Default::default() }
    }

    fn with(toml: &str) -> Result<NodeConfig, ConfigError> {
        let mut config = NodeConfig::from_toml(toml).unwrap();
        config.apply(&keyed());
        config.validate().map(|()| config)
    }

    fn write_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_validate() {
        // The defaults and a cluster key's file make a usable single-node configuration; the
        // defaults alone are refused, naming the missing file.
        let unkeyed = NodeConfig::load(None, &CliOverrides::default());
        assert_eq!(field_of(unkeyed), "cluster_key_file");
        let error = NodeConfig::default().validate().unwrap_err().to_string();
        assert!(error.contains("required") && error.contains("tallyd keygen"), "{error}");
        let keyed_default =
            NodeConfig { cluster_key_file: PathBuf::from("cluster.key"), ..NodeConfig::default() };
        keyed_default.validate().unwrap();
        let loaded = NodeConfig::load(None, &keyed()).unwrap();
        assert_eq!(loaded.advertise_addr, "127.0.0.1:7001");
        assert_eq!(loaded.batch.events_max, BATCH_EVENTS_MAX);
        assert_eq!((loaded.request_timeout_ms, loaded.pulse_interval_ms), (10_000, 100));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        // A typo is an error naming the field, not a silently ignored setting.
        for (text, name) in [
            ("[raft]\nheartbeat_ms = 5\n", "heartbeat_ms"),
            ("nodeid = 5\n", "nodeid"),
            ("[batch]\nlinger_ms = 5\n", "linger_ms"),
            ("[log]\nlevels = \"info\"\n", "levels"),
            ("bootstrap = [{ id = 1, address = \"a:1\" }]\n", "address"),
            ("[tls]\ncert = \"x\"\n", "tls"),
        ] {
            let error = NodeConfig::from_toml(text).unwrap_err();
            assert!(error.contains(name), "{name}: {error}");
        }
        let error = NodeConfig::from_toml("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(error.contains("xml"), "{error}");
        let error = NodeConfig::from_toml("[storage]\ndirect_io = \"on\"\n").unwrap_err();
        assert!(error.contains("on") && error.contains("auto"), "{error}");
        let off = NodeConfig::from_toml("[storage]\ndirect_io = \"off\"\n").unwrap();
        assert_eq!(off.storage.direct_io, DirectIo::Off);
    }

    #[test]
    fn memory_is_bounded_and_must_fit_the_machine() {
        let config = NodeConfig::from_toml(
            "shards = 4\ncluster_key_file = \"cluster.key\"\n\
             [memory]\naccounts_per_shard = 1000\ntransfers_per_shard = 2000000\n",
        )
        .unwrap();
        assert_eq!(config.memory.capacity(), Capacity { accounts: 1000, transfers: 2_000_000 });
        config.validate().unwrap();
        let per_replica = config.memory.bytes_per_replica();
        assert!(per_replica >= 2_000_000 * 128, "a transfer is at least its 128 bytes");
        config.memory.check(4, Some(4 * per_replica)).unwrap();
        let error = config.memory.check(4, Some(4 * per_replica - 1)).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Invalid { field: "memory", reason } if reason.contains("more than the machine's")),
            "{error}"
        );
        let mut too_many = NodeConfig::default();
        too_many.memory.transfers_per_shard = MEMORY_TRANSFERS_PER_SHARD_MAX + 1;
        let error = too_many.validate().unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: "memory.transfers_per_shard", .. }));
        too_many.memory = MemoryConfig {
            accounts_per_shard: MEMORY_ACCOUNTS_PER_SHARD_MAX + 1,
            ..MemoryConfig::default()
        };
        let error = too_many.validate().unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: "memory.accounts_per_shard", .. }));
        let error = NodeConfig::from_toml("[memory]\ntransfers = 5\n").unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
        assert_eq!(NodeConfig::default().memory.bytes_per_replica(), 0);
    }

    #[test]
    fn parse_errors_name_the_file_the_line_and_the_field() {
        // A value of the wrong type is reported with the file, its line and the field.
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "node_id = 2\n\n[raft]\nheartbeat_interval_ms = \"50\"\n");
        let error = NodeConfig::load(Some(&path), &CliOverrides::default()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ConfigError::File { .. }), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("heartbeat_interval_ms"), "{text}");
        let missing = NodeConfig::load(Some(&dir.path().join("nope.toml")), &Default::default());
        assert!(matches!(missing, Err(ConfigError::File { .. })));
    }

    #[test]
    fn each_rule_names_its_field() {
        // Every validation rule reports the dotted path of the field that broke it.
        for (text, field) in [
            ("node_id = 0", "node_id"),
            ("node_id = 129", "node_id"),
            ("data_dir = \"\"", "data_dir"),
            ("advertise_addr = \"http://10.0.0.5:7001\"", "advertise_addr"),
            ("advertise_addr = \"10.0.0.5\"", "advertise_addr"),
            ("advertise_addr = \"10.0.0.5:0\"", "advertise_addr"),
            ("advertise_addr = \":7001\"", "advertise_addr"),
            ("[raft]\nheartbeat_interval_ms = 0", "raft.heartbeat_interval_ms"),
            ("[raft]\nelection_timeout_min_ms = 50", "raft.election_timeout_min_ms"),
            ("[raft]\nelection_timeout_max_ms = 300", "raft.election_timeout_max_ms"),
            ("[raft]\nsnapshot_logs_since_last = 0", "raft.snapshot_logs_since_last"),
            ("[raft]\nsnapshot_logs_since_last = 16777217", "raft.snapshot_logs_since_last"),
            ("[raft]\nlogs_to_keep_after_snapshot = 16777217", "raft.logs_to_keep_after_snapshot"),
            ("[raft]\nelection_timeout_max_ms = 60001", "raft.election_timeout_max_ms"),
            ("[raft]\nappend_entries_max = 0", "raft.append_entries_max"),
            ("[raft]\nappend_entries_max = 65", "raft.append_entries_max"),
            ("[raft]\ncheckpoint_writes = 0", "raft.checkpoint_writes"),
            ("[raft]\ncheckpoint_writes = 16777217", "raft.checkpoint_writes"),
            ("[raft]\nleader_balance_interval_ms = 3600001", "raft.leader_balance_interval_ms"),
            ("[batch]\nlinger_us = 100001", "batch.linger_us"),
            ("[batch]\nevents_max = 0", "batch.events_max"),
            ("[batch]\nevents_max = 8191", "batch.events_max"),
            ("[batch]\nqueue_requests_max = 0", "batch.queue_requests_max"),
            ("[batch]\nin_flight_entries_max = 0", "batch.in_flight_entries_max"),
            ("[batch]\nin_flight_entries_max = 1025", "batch.in_flight_entries_max"),
            ("[batch]\nqueue_requests_max = 1048577", "batch.queue_requests_max"),
            ("request_timeout_ms = 0", "request_timeout_ms"),
            ("pulse_interval_ms = 0", "pulse_interval_ms"),
            ("txn_recovery_after_ms = 0", "txn_recovery_after_ms"),
            ("pending_watch_max = 0", "pending_watch_max"),
            ("pending_watch_max = 1048577", "pending_watch_max"),
            ("shards = 0", "shards"),
            ("shards = 1025", "shards"),
            ("[log]\nlevel = \"info,[\"", "log.level"),
        ] {
            assert_eq!(field_of(with(text)), field, "{text}");
        }
        with("[batch]\nlinger_us = 0").unwrap();
        with("shards = 1024").unwrap();
        with("node_id = 128").unwrap();
        with("[raft]\nsnapshot_logs_since_last = 16777216\nlogs_to_keep_after_snapshot = 0")
            .unwrap();
        with("[raft]\nelection_timeout_max_ms = 60000").unwrap();
        with("[batch]\nqueue_requests_max = 1048576\nin_flight_entries_max = 1024").unwrap();
        with("pending_watch_max = 1048576").unwrap();
        with("[batch]\nlinger_us = 100000").unwrap();
    }

    #[test]
    fn range_errors_say_the_range_and_name_its_limit() {
        let message = |text: &str| with(text).unwrap_err().to_string();
        assert_eq!(message("node_id = 129"), "node_id: must be 1..=128 (NODE_ID_MAX)");
        assert_eq!(message("request_timeout_ms = 0"), "request_timeout_ms: must be 1..=3600000");
        assert_eq!(
            message("[raft]\nlogs_to_keep_after_snapshot = 16777217"),
            "raft.logs_to_keep_after_snapshot: must be 0..=16777216 (RAFT_LOG_ENTRIES_MAX)"
        );
    }

    #[test]
    fn election_timeout_error_reads_as_documented() {
        // The message says which rule and quotes the other field's value.
        let error = with("[raft]\nelection_timeout_min_ms = 50").unwrap_err();
        assert_eq!(
            error.to_string(),
            "raft.election_timeout_min_ms: must be greater than raft.heartbeat_interval_ms (100)"
        );
    }

    #[test]
    fn bootstrap_rules_name_the_field() {
        // The bootstrap list must hold this node at its advertised address, unique ids and
        // addresses, ids 1..=NODE_ID_MAX, and dialable addresses.
        let me = "{ id = 1, addr = \"127.0.0.1:7001\" }";
        for list in [
            "[{ id = 2, addr = \"127.0.0.1:7002\" }]".to_owned(),
            format!("[{me}, {{ id = 1, addr = \"127.0.0.1:7002\" }}]"),
            format!("[{me}, {{ id = 2, addr = \"127.0.0.1:7001\" }}]"),
            format!("[{me}, {{ id = 0, addr = \"127.0.0.1:7002\" }}]"),
            format!("[{me}, {{ id = 129, addr = \"127.0.0.1:7002\" }}]"),
            format!("[{me}, {{ id = 2, addr = \"127.0.0.1\" }}]"),
            "[{ id = 1, addr = \"127.0.0.1:9999\" }]".to_owned(),
        ] {
            assert_eq!(field_of(with(&format!("bootstrap = {list}"))), "bootstrap", "{list}");
        }
        let ok = format!("bootstrap = [{me}, {{ id = 2, addr = \"127.0.0.1:7002\" }}]");
        assert_eq!(with(&ok).unwrap().bootstrap.len(), 2);
        let advertised = "advertise_addr = \"tally-1.internal:7001\"\n\
                          bootstrap = [{ id = 1, addr = \"tally-1.internal:7001\" }]";
        with(advertised).unwrap();
    }

    #[test]
    fn overrides_win_over_the_file_and_the_file_over_defaults() {
        // Precedence: an override (flag or env, merged by clap) beats the file, which beats
        // the defaults; advertise_addr follows the effective listen_addr unless set.
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            &dir,
            "node_id = 2\nlisten_addr = \"127.0.0.1:7002\"\n[batch]\nlinger_us = 7\n\
             [log]\nlevel = \"debug\"\n",
        );
        let from_file = NodeConfig::load(Some(&path), &keyed()).unwrap();
        assert_eq!((from_file.node_id, from_file.batch.linger_us), (2, 7));
        assert_eq!(from_file.advertise_addr, "127.0.0.1:7002");
        assert_eq!(from_file.raft, RaftConfig::default());
        let overrides = CliOverrides {
            node_id: Some(3),
            listen_addr: Some("0.0.0.0:7003".parse().unwrap()),
            data_dir: Some(PathBuf::from("/var/lib/tally")),
            log_level: Some("warn".into()),
            log_format: Some(LogFormat::Json),
            bootstrap: Some(parse_bootstrap("3=0.0.0.0:7003").unwrap()),
            cluster_key_file: Some(PathBuf::from("/etc/tally/cluster.key")),
            ..CliOverrides::default()
        };
        let overridden = NodeConfig::load(Some(&path), &overrides).unwrap();
        assert_eq!((overridden.node_id, overridden.batch.linger_us), (3, 7));
        assert_eq!(overridden.advertise_addr, "0.0.0.0:7003");
        assert_eq!(overridden.data_dir, PathBuf::from("/var/lib/tally"));
        assert_eq!(overridden.log, LogConfig { level: "warn".into(), format: LogFormat::Json });
        assert_eq!(overridden.bootstrap, vec![Member { id: 3, addr: "0.0.0.0:7003".into() }]);
        assert_eq!(overridden.cluster_key_file, PathBuf::from("/etc/tally/cluster.key"));
        let advertise = CliOverrides { advertise_addr: Some("tally-2:7002".into()), ..overrides };
        let error = NodeConfig::load(Some(&path), &advertise).unwrap_err();
        assert_eq!(field_of(Err(error)), "bootstrap");
    }

    #[test]
    fn an_invalid_override_is_refused_after_merging() {
        // Overrides are validated like the file: a flag cannot smuggle in a bad value.
        let overrides = CliOverrides { node_id: Some(0), ..keyed() };
        assert_eq!(field_of(NodeConfig::load(None, &overrides)), "node_id");
        let overrides = CliOverrides { log_level: Some("info,[".into()), ..keyed() };
        assert_eq!(field_of(NodeConfig::load(None, &overrides)), "log.level");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        // deploy/tallyd.example.toml parses, validates, and sets the documented defaults.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tallyd.example.toml");
        let config = NodeConfig::load(Some(&path), &CliOverrides::default()).unwrap();
        let defaults = NodeConfig::default();
        assert_eq!(config.raft, defaults.raft);
        assert_eq!(config.batch, defaults.batch);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.storage, defaults.storage);
        assert_eq!(config.memory, defaults.memory);
        assert_eq!(config.request_timeout_ms, defaults.request_timeout_ms);
        assert_eq!(config.pulse_interval_ms, defaults.pulse_interval_ms);
        assert_eq!(config.txn_recovery_after_ms, defaults.txn_recovery_after_ms);
        assert_eq!(config.shards, defaults.shards);
        assert_eq!(config.bootstrap.len(), 3);
        assert_eq!(config.cluster_key_file, PathBuf::from("/etc/tally/cluster.key"));
    }

    #[test]
    fn the_bench_peak_config_is_valid() {
        // bench/peak.toml, the config of the peak-sale runs in bench/RESULTS.md.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/peak.toml");
        // `tallyd dev` passes the cluster key's file.
        let config = NodeConfig::load(Some(&path), &keyed()).unwrap();
        assert_eq!(config.shards, 1);
        assert_eq!(
            config.memory.capacity(),
            Capacity { accounts: 1_100_000, transfers: 8_000_000 }
        );
    }

    #[test]
    fn the_summary_names_every_field_by_its_path() {
        // The startup log line carries every effective value under its dotted path.
        let config = NodeConfig::load(None, &keyed()).unwrap();
        let summary = config.to_string();
        for key in [
            "node_id=1",
            "listen_addr=127.0.0.1:7001",
            "advertise_addr=127.0.0.1:7001",
            "data_dir=tally-data",
            "bootstrap=[]",
            "shards=1",
            "request_timeout_ms=10000",
            "pulse_interval_ms=100",
            "txn_recovery_after_ms=30000",
            "pending_watch_max=65536",
            "raft.heartbeat_interval_ms=100",
            "raft.election_timeout_min_ms=1000",
            "raft.election_timeout_max_ms=2000",
            "raft.snapshot_logs_since_last=20000",
            "raft.logs_to_keep_after_snapshot=1000",
            "raft.append_entries_max=64",
            "raft.checkpoint_writes=131072",
            "raft.leader_balance_interval_ms=3000",
            "batch.linger_us=0",
            "batch.events_max=8190",
            "batch.queue_requests_max=16384",
            "batch.in_flight_entries_max=8",
            "storage.direct_io=auto",
            "memory.accounts_per_shard=0",
            "memory.transfers_per_shard=0",
            "log.level=\"info\"",
            "log.format=text",
            "cluster_key_file=cluster.key",
        ] {
            assert!(summary.contains(key), "{key} missing from {summary}");
        }
    }

    #[test]
    fn bootstrap_flag_parses_and_explains_bad_parts() {
        // The flag form `1=host:port,...` parses; each malformed part is quoted in the error.
        let members = parse_bootstrap("1=127.0.0.1:7001, 2=127.0.0.1:7002,").unwrap();
        assert_eq!(
            members,
            vec![
                Member { id: 1, addr: "127.0.0.1:7001".into() },
                Member { id: 2, addr: "127.0.0.1:7002".into() },
            ]
        );
        assert_eq!(parse_bootstrap("").unwrap(), Vec::new());
        for (text, expected) in [
            ("1:127.0.0.1:7001", "expected <node id>=<host:port>"),
            ("x=127.0.0.1:7001", "node id \"x\" is not a number"),
            ("-1=127.0.0.1:7001", "is not a number"),
            ("1=", "empty address"),
            ("1=127.0.0.1:7001;2=127.0.0.1:7002", "is not host:port"),
            ("1=http://127.0.0.1:7001", "is not host:port"),
            ("1=127.0.0.1:99999", "port must be 1..=65535"),
        ] {
            let error = parse_bootstrap(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
