//! RocksDB storage of one node: every shard it hosts, in one RocksDB instance.
//!
//! Column families (keys in [`keys`], all prefixed by the shard id):
//! - `raft_log` — Raft log entries by index ([`crate::raft`]'s log store).
//! - `raft_meta` — vote, committed log id, last purged log id.
//! - `ledger` — the ledger records of each shard that change ([`ledger_store::DurableStore`]):
//!   accounts, pending statuses, expiries, balance history, burnt ids.
//! - `transfers` — the transfer segments of each shard. Transfers never change and their
//!   keys grow with time, so each flushed file lies after every older one: compaction
//!   moves these files down without rewriting them. (In the `ledger` family, every flush
//!   overlapped the whole account range, so each compaction also rewrote every transfer
//!   stored in the level below, hundreds of MB at a time.)
//! - `applied` — the last applied log id and membership of each shard's state machine.
//!
//! Durability rules (docs/ARCHITECTURE.md, "Durability"):
//! - Raft log appends, votes and snapshot installs go to RocksDB's write-ahead log without
//!   fsync; a log append is reported flushed to Raft only after an explicit
//!   `flush_wal(true)` (fsync) that covers it, a vote is fsynced before `save_vote` returns,
//!   and an install before it returns. Because the WAL is one ordered file, an fsync makes
//!   every earlier logged write durable.
//! - A state-machine checkpoint (ledger records, transfers and the applied log id, the
//!   [`STATE_FAMILIES`]) is one `WriteBatch` written WITHOUT the write-ahead log: the Raft log of
//!   a majority already holds every entry it covers, so logging the same changes twice
//!   would only double the bytes written and fsynced. (A leader may apply, and so
//!   checkpoint, an entry its own log writer has not written yet; if it crashes then,
//!   openraft purges its log up to the applied index at start, and the entries come back
//!   from the majority: docs/OPERATING.md, "Guarantees, exactly".) The DB uses `atomic_flush`: a flush persists the column
//!   families it covers at one sequence point (an automatic flush covers every family
//!   holding data; [`Storage::flush_state`] covers every state family together), so
//!   after a crash a checkpoint is either wholly on disk or wholly absent, and Raft
//!   re-applies from the persisted applied log id. Before
//!   the log may be purged up to a snapshot, [`Storage::flush_state`] persists the
//!   checkpoint the snapshot was read from.
//! - A RocksDB error while writing stops the node (the caller panics or returns a fatal
//!   error); it never guesses.
//!
//! Only lz4 compression is compiled in (see the workspace `Cargo.toml`).
//!
//! Memtable flushes and compactions write their files with direct I/O (`O_DIRECT`) where
//! the data directory's file system accepts it (`storage.direct_io`, [`FileIo`]): those
//! files are written once and read back only by compaction, a restart or a snapshot sent to
//! a follower, so copying every byte into the page cache first (the kernel's
//! `copy_folio_from_iter_atomic`, 14 % of the bench machine's CPU at peak) bought nothing.
//! It changes no durability rule: a flushed file is still fsynced before RocksDB records it.
//! The write-ahead log stays buffered (RocksDB has no direct-I/O WAL). With direct writes,
//! RocksDB also reads its files with direct I/O: compaction would otherwise read each file
//! it merges (just written around the page cache, so not in it) into the page cache and
//! copy it out again (`_copy_to_iter`, 3.8 % of the bench machine's CPU at peak).

pub mod keys;
pub mod ledger_store;
pub mod records;

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Env, FlushOptions, Options,
    WriteBatch, WriteOptions,
};

use crate::config::DirectIo;

/// Column family of Raft log entries.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of Raft vote, committed and purged log ids.
pub const CF_RAFT_META: &str = "raft_meta";
/// Column family of the ledger records that change (everything but transfers).
pub const CF_LEDGER: &str = "ledger";
/// Column family of transfer segments (append-only, keys in time order).
pub const CF_TRANSFERS: &str = "transfers";
/// Column family of each state machine's applied log id and membership.
pub const CF_APPLIED: &str = "applied";

const COLUMN_FAMILIES: [&str; 5] = [CF_RAFT_LOG, CF_RAFT_META, CF_LEDGER, CF_TRANSFERS, CF_APPLIED];

/// The column families of a shard's state machine: what a checkpoint writes, a snapshot
/// holds and a flush of the state persists.
pub const STATE_FAMILIES: [&str; 3] = [CF_LEDGER, CF_TRANSFERS, CF_APPLIED];

/// A storage step slower than this is logged as a warning with its duration: a WAL fsync,
/// a Raft log write, a batch of applied entries, a checkpoint write. Each of them holds up
/// every request behind it, so a run of these warnings is where a latency spike came from
/// (a disk slower than usual, a RocksDB write stall, a starved thread).
pub const SLOW_STEP_WARN: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs one storage step; its result, and its duration in milliseconds if it took
/// [`SLOW_STEP_WARN`] or more (the caller logs it, naming the step).
pub fn timed_step<T>(step: impl FnOnce() -> T) -> (T, Option<u128>) {
    let started = std::time::Instant::now();
    let result = step();
    let took = started.elapsed();
    (result, (took >= SLOW_STEP_WARN).then_some(took.as_millis()))
}

/// How RocksDB writes the files of memtable flushes and compactions and reads its files
/// (the write-ahead log is always buffered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileIo {
    /// With `O_DIRECT`, around the page cache.
    Direct,
    /// Through the page cache, and why.
    Buffered {
        /// `storage.direct_io = "off"`, or what the file system answered the probe.
        why: String,
    },
}

impl fmt::Display for FileIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Buffered { why } => write!(f, "buffered ({why})"),
        }
    }
}

/// Name of the file [`probe_direct_io`] writes and removes in the RocksDB directory.
const DIRECT_IO_PROBE: &str = "DIRECT_IO_PROBE";

/// Whether the file system of `dir` (created if missing) accepts an `O_DIRECT` write of one
/// aligned 4 KiB block: ext4 and xfs do; some tmpfs, overlay and network file systems
/// refuse the flag (`EINVAL`). RocksDB would only find out at its first flush, and stop
/// writing, so this is asked before it opens.
fn probe_direct_io(dir: &Path) -> FileIo {
    #[repr(C, align(4096))]
    struct Block([u8; 4096]);
    let path = dir.join(DIRECT_IO_PROBE);
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        file.write_all(&Block([0; 4096]).0)
    });
    // Best effort: a leftover probe file is harmless, and rewritten by the next start.
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => FileIo::Direct,
        Err(error) => FileIo::Buffered { why: format!("O_DIRECT refused: {error}") },
    }
}

/// The mount point of the file system holding `path` if it is mounted with online discard
/// (`discard` among its mount or file-system options, Linux `/proc/self/mountinfo`). On
/// such a file system every file RocksDB removes stalls every fsync on it, about 0.75 ms
/// per MB on the bench machine (docs/OPERATING.md, "Disk and memory"): the node warns at
/// start. `None` also when it cannot tell (not Linux, no such file).
#[must_use]
pub fn online_discard_mount(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    discard_mount_in(&mountinfo, &path)
}

/// [`online_discard_mount`] over the text of a mountinfo file: the deepest mount point
/// containing `path` decides.
fn discard_mount_in(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String, bool)> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point mount-options [optional...] - type source super-options
        let Some((mount, fs)) = line.split_once(" - ") else { continue };
        let mut fields = mount.split(' ').skip(4);
        let (Some(point), Some(options)) = (fields.next(), fields.next()) else { continue };
        let point = unescape_mount_path(point);
        if !path.starts_with(&point) {
            continue;
        }
        let super_options = fs.split(' ').nth(2).unwrap_or("");
        let discard = options.split(',').chain(super_options.split(',')).any(|o| o == "discard");
        let depth = Path::new(&point).components().count();
        if best.as_ref().is_none_or(|(d, _, _)| depth >= *d) {
            best = Some((depth, point, discard));
        }
    }
    best.and_then(|(_, point, discard)| discard.then_some(point))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and tab, newline, backslash).
fn unescape_mount_path(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok());
        match (bytes[i], octal.and_then(|d| u8::from_str_radix(d, 8).ok())) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The node's RocksDB instance, shared by every shard's log store and state machine.
#[derive(Clone, Debug)]
pub struct Storage {
    db: Arc<DB>,
    file_io: FileIo,
}

impl Storage {
    /// Opens (creating if needed) the RocksDB instance under `path`; `direct_io` as in
    /// `storage.direct_io` ([`FileIo`] says what was chosen).
    ///
    /// # Errors
    /// RocksDB cannot open the directory (permissions, another process holds its lock,
    /// corruption).
    pub fn open(path: &Path, direct_io: DirectIo) -> Result<Self, rocksdb::Error> {
        let file_io = match direct_io {
            DirectIo::Auto => probe_direct_io(path),
            DirectIo::Off => FileIo::Buffered { why: "storage.direct_io = off".into() },
        };
        let mut options = Options::default();
        let direct = file_io == FileIo::Direct;
        options.set_use_direct_io_for_flush_and_compaction(direct);
        // Reads too: compaction re-reads every file it merges (just flushed, so not in the
        // page cache), and a buffered read copies each block twice (disk to page cache to
        // RocksDB); reads of the running node are otherwise rare (a lagging follower's
        // entries, a snapshot, the load at start), served from RocksDB's block cache.
        options.set_use_direct_reads(direct);
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        // Room for a memtable to fill while another flushes, so a flush under load does
        // not stall writes (and with them every fsync and apply).
        options.set_max_write_buffer_number(4);
        options.set_max_background_jobs(2);
        // Flushes and compactions run at the lowest CPU priority (nice 19): they are
        // bursts of work that can wait for a few milliseconds, while Raft, apply and the
        // replies behind them cannot. They still get every idle cycle, and RocksDB's write
        // stalls (4 memtables per family, 20 files in L0) bound how far they may fall behind.
        let mut env = Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        options.set_env(&env);
        // Checkpoints skip the WAL: every flush must cover all column families at once,
        // or a crash could leave ledger records without their applied log id (or the
        // reverse).
        options.set_atomic_flush(true);
        // Bounded disk use for RocksDB's own logs.
        options.set_max_log_file_size(16 << 20);
        options.set_keep_log_file_num(4);
        let families = COLUMN_FAMILIES.iter().map(|&name| {
            let mut cf = Options::default();
            // Every level of every family in lz4, the Raft log and fresh data (L0, L1)
            // too, though both are soon deleted or rewritten: the three replicas of a
            // machine share its disk, and a WAL fsync waits behind the table files a flush
            // is writing. lz4 makes them 5.6 times smaller (2.55 GB to 0.46 GB per node
            // in a 40-s run at 55,000 redemptions/s), and the p99 at that load fell from a
            // median of 29.5 ms to 24.5 ms, lower in 4 of 4 pairs, at no cost at peak
            // (bench/RESULTS.md, 2026-12-07).
            cf.set_compression_type(DBCompressionType::Lz4);
            cf.set_max_write_buffer_number(4);
            ColumnFamilyDescriptor::new(name, cf)
        });
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(Self { db: Arc::new(db), file_io })
    }

    /// How RocksDB writes (flushes, compactions) and reads its files.
    #[must_use]
    pub fn file_io(&self) -> &FileIo {
        &self.file_io
    }

    /// The RocksDB handle.
    #[must_use]
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// A column family by name.
    ///
    /// # Panics
    /// If `name` is not one of this module's column families (a programming error).
    #[must_use]
    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column family opened at start")
    }

    /// Writes a state-machine checkpoint without the write-ahead log (see the module docs):
    /// it reaches disk with the next flush of the memtables, atomically.
    ///
    /// # Errors
    /// The write failed; the caller must stop the node.
    pub fn write_unlogged(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options)
    }

    /// Persists every unlogged checkpoint written so far: flushes the memtables of the
    /// state-machine column families ([`STATE_FAMILIES`]; one atomic flush) and waits.
    ///
    /// # Errors
    /// The flush failed; the caller must stop the node.
    pub fn flush_state(&self) -> Result<(), rocksdb::Error> {
        let families = STATE_FAMILIES.map(|name| self.cf(name));
        let mut options = FlushOptions::default();
        options.set_wait(true);
        self.db.flush_cfs_opt(&families, &options)
    }

    /// Records the cluster's data-shard count on this node's first start (durably) and,
    /// on every later start, checks that `shards` is the recorded count: the count is
    /// fixed when a cluster is created, since it decides where every account lives.
    ///
    /// # Errors
    /// Another count is recorded; the data predates sharding (a single group under shard
    /// 0); or RocksDB failed.
    pub fn check_shard_count(&self, shards: u32) -> Result<(), String> {
        let meta = self.cf(CF_RAFT_META);
        let key = keys::meta(keys::ShardId(0), keys::MetaKind::ShardCount);
        match self.db.get_cf(meta, key.as_bytes()).map_err(|e| e.to_string())? {
            Some(bytes) => {
                let recorded = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| format!("shard count record of {} bytes", bytes.len()))?;
                if recorded == shards {
                    Ok(())
                } else {
                    Err(format!(
                        "this node's data belongs to a cluster of {recorded} data shards but \
                         `shards` is {shards}; the count is fixed when a cluster is created: \
                         set shards = {recorded}"
                    ))
                }
            }
            None => {
                let (start, end) = keys::shard_range(keys::ShardId(0));
                let mut old = self.db.iterator_cf(
                    self.cf(CF_RAFT_LOG),
                    rocksdb::IteratorMode::From(start.as_bytes(), rocksdb::Direction::Forward),
                );
                if old
                    .next()
                    .transpose()
                    .map_err(|e| e.to_string())?
                    .is_some_and(|(k, _)| k.as_ref() < end.as_bytes())
                {
                    return Err(
                        "this node's data was written by a tallyd without shards (one Raft \
                         group, shard 0) and cannot be opened by this version; start a \
                         new cluster in an empty data_dir"
                            .into(),
                    );
                }
                let mut options = WriteOptions::default();
                options.set_sync(true);
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, key.as_bytes(), shards.to_be_bytes());
                self.db.write_opt(batch, &options).map_err(|e| e.to_string())
            }
        }
    }

    /// Stops RocksDB's background flushes and compactions, waiting for running ones.
    pub fn stop_background_work(&self) {
        self.db.cancel_all_background_work(true);
    }

    /// Closes the database if this is its last handle (every shard's log store, state
    /// machine and their threads have dropped theirs); gives the handle back otherwise.
    /// A node closes its database before the process exits: RocksDB threads still running
    /// when the C++ runtime's static objects are destroyed abort the process (`pthread
    /// lock: Invalid argument`, seen after clean stops).
    ///
    /// # Errors
    /// Other handles remain.
    pub fn try_close(self) -> Result<(), Self> {
        let Self { db, file_io } = self;
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                Ok(())
            }
            Err(db) => Err(Self { db, file_io }),
        }
    }

    /// Makes every write so far durable (fsync of the write-ahead log).
    ///
    /// # Errors
    /// The fsync failed; the caller must stop the node.
    pub fn sync(&self) -> Result<(), rocksdb::Error> {
        self.db.flush_wal(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::IteratorMode;

    #[test]
    fn online_discard_is_found_on_the_deepest_mount_holding_the_path() {
        // Shapes of /proc/self/mountinfo lines: the root with discard in its mount options,
        // a data mount below it without, one with discard among the file-system options,
        // and a mount point with a space.
        let mountinfo = "\
22 1 254:0 / / rw,relatime,discard shared:1 - ext4 /dev/vda rw
30 22 254:16 / /data rw,noatime shared:2 - ext4 /dev/vdb rw,nodiscard
31 22 254:32 / /fast rw,noatime - xfs /dev/vdc rw,discard,attr2
32 22 254:48 / /my\\040disk rw - ext4 /dev/vdd rw,discard
";
        let found = |p: &str| discard_mount_in(mountinfo, Path::new(p));
        assert_eq!(found("/work/tally").as_deref(), Some("/"));
        assert_eq!(found("/data/node-1/rocksdb"), None, "nodiscard is not discard");
        assert_eq!(found("/fast/node-1").as_deref(), Some("/fast"));
        assert_eq!(found("/my disk/node-1").as_deref(), Some("/my disk"));
        assert_eq!(found("/database"), found("/"), "a mount point matches whole components");
    }

    #[test]
    fn the_shard_count_is_recorded_once_and_then_enforced() {
        // First start records the count; the same count opens again; another is refused
        // naming both; data from before sharding (a log under shard 0) is refused.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        storage.check_shard_count(4).unwrap();
        storage.check_shard_count(4).unwrap();
        let error = storage.check_shard_count(16).unwrap_err();
        assert!(error.contains("cluster of 4 data shards") && error.contains("is 16"), "{error}");
        assert!(!error.contains("  "), "one line, single spaces: {error:?}");
        drop(storage);
        let reopened = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        reopened.check_shard_count(4).unwrap();

        let old = tempfile::tempdir().unwrap();
        let storage = Storage::open(old.path(), DirectIo::Auto).unwrap();
        let key = keys::log_entry(keys::ShardId(0), 1);
        storage.db().put_cf(storage.cf(CF_RAFT_LOG), key.as_bytes(), b"entry").unwrap();
        let error = storage.check_shard_count(1).unwrap_err();
        assert!(error.contains("without shards"), "{error}");
        assert!(!error.contains("  "), "one line, single spaces: {error:?}");
    }

    #[test]
    fn flushed_and_compacted_files_are_written_as_configured_and_read_back() {
        // `off` is buffered whatever the file system; `auto` is direct where the probe's
        // O_DIRECT write succeeds. Either way a checkpoint flushed to files is read back after
        // a reopen and a compaction, and the probe leaves no file behind.
        let dir = tempfile::tempdir().unwrap();
        let buffered = Storage::open(dir.path(), DirectIo::Off).unwrap();
        assert!(
            matches!(buffered.file_io(), FileIo::Buffered { why } if why.contains("off")),
            "{}",
            buffered.file_io()
        );
        drop(buffered);
        for _ in 0..2 {
            let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
            assert_eq!(*storage.file_io(), probe_direct_io(dir.path()));
            let mut batch = WriteBatch::default();
            for i in 0..10_000u32 {
                let key = keys::log_entry(keys::ShardId(1), u64::from(i) + 1);
                batch.put_cf(storage.cf(CF_LEDGER), key.as_bytes(), i.to_be_bytes().repeat(16));
            }
            storage.write_unlogged(batch).unwrap();
            storage.flush_state().unwrap();
            drop(storage);
            let reopened = Storage::open(dir.path(), DirectIo::Auto).unwrap();
            let key = keys::log_entry(keys::ShardId(1), 5_000);
            let value = reopened.db().get_cf(reopened.cf(CF_LEDGER), key.as_bytes()).unwrap();
            assert_eq!(value, Some(4_999u32.to_be_bytes().repeat(16)));
            // A compaction reads the flushed files and writes new ones; all still read back.
            let cf = reopened.cf(CF_LEDGER);
            reopened.db().compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            let values: Vec<Vec<u8>> = reopened
                .db()
                .iterator_cf(cf, IteratorMode::Start)
                .map(|kv| kv.unwrap().1.to_vec())
                .collect();
            let expected: Vec<Vec<u8>> =
                (0..10_000u32).map(|i| i.to_be_bytes().repeat(16)).collect();
            assert_eq!(values, expected);
            assert!(!dir.path().join(DIRECT_IO_PROBE).exists());
        }
    }
}
