//! RocksDB storage of one node: every shard it hosts, in one RocksDB instance.
//!
//! Column families (keys in [`keys`], all prefixed by the shard id):
//! - `raft_log` — Raft log entries by index ([`crate::raft`]'s log store).
//! - `raft_meta` — vote, committed log id, last purged log id.
//! - `ledger` — the ledger records of each shard ([`ledger_store::DurableStore`]).
//! - `applied` — the last applied log id and membership of each shard's state machine.
//!
//! Durability rules (docs/ARCHITECTURE.md, "Durability"):
//! - Raft log appends, votes and snapshot installs go to RocksDB's write-ahead log without
//!   fsync; a log append is reported flushed to Raft only after an explicit
//!   `flush_wal(true)` (fsync) that covers it, a vote is fsynced before `save_vote` returns,
//!   and an install before it returns. Because the WAL is one ordered file, an fsync makes
//!   every earlier logged write durable.
//! - A state-machine checkpoint (ledger records and the applied log id, two column
//!   families) is one `WriteBatch` written WITHOUT the write-ahead log: the Raft log already
//!   holds every entry it covers, so logging the same changes twice would only double the
//!   bytes written and fsynced. The DB uses `atomic_flush`: a flush persists the column
//!   families it covers at one sequence point (an automatic flush covers every family
//!   holding data; [`Storage::flush_state`] covers `ledger` and `applied` together), so
//!   after a crash a checkpoint is either wholly on disk or wholly absent, and Raft
//!   re-applies from the persisted applied log id. Before
//!   the log may be purged up to a snapshot, [`Storage::flush_state`] persists the
//!   checkpoint the snapshot was read from.
//! - A RocksDB error while writing stops the node (the caller panics or returns a fatal
//!   error); it never guesses.
//!
//! Only lz4 compression is compiled in (see the workspace `Cargo.toml`).

pub mod keys;
pub mod ledger_store;
pub mod records;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, FlushOptions, Options, WriteBatch,
    WriteOptions,
};

/// Column family of Raft log entries.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of Raft vote, committed and purged log ids.
pub const CF_RAFT_META: &str = "raft_meta";
/// Column family of ledger records.
pub const CF_LEDGER: &str = "ledger";
/// Column family of each state machine's applied log id and membership.
pub const CF_APPLIED: &str = "applied";

const COLUMN_FAMILIES: [&str; 4] = [CF_RAFT_LOG, CF_RAFT_META, CF_LEDGER, CF_APPLIED];

/// The node's RocksDB instance, shared by every shard's log store and state machine.
#[derive(Clone, Debug)]
pub struct Storage {
    db: Arc<DB>,
}

impl Storage {
    /// Opens (creating if needed) the RocksDB instance under `path`.
    ///
    /// # Errors
    /// RocksDB cannot open the directory (permissions, another process holds its lock,
    /// corruption).
    pub fn open(path: &Path) -> Result<Self, rocksdb::Error> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        // Room for a memtable to fill while another flushes, so a flush under load does
        // not stall writes (and with them every fsync and apply).
        options.set_max_write_buffer_number(4);
        options.set_max_background_jobs(2);
        // Checkpoints skip the WAL: every flush must cover all column families at once,
        // or a crash could leave ledger records without their applied log id (or the
        // reverse).
        options.set_atomic_flush(true);
        // Bounded disk use for RocksDB's own logs.
        options.set_max_log_file_size(16 << 20);
        options.set_keep_log_file_num(4);
        let families = COLUMN_FAMILIES.iter().map(|&name| {
            let mut cf = Options::default();
            // The Raft log lives only until the next snapshot: compressing it is wasted CPU.
            let compression =
                if name == CF_RAFT_LOG { DBCompressionType::None } else { DBCompressionType::Lz4 };
            cf.set_compression_type(compression);
            if name != CF_RAFT_LOG {
                // Fresh data (L0, L1) is rewritten by compaction soon: compressing it costs
                // CPU on the write path for little disk. Deeper levels hold most bytes.
                use DBCompressionType::{Lz4, None as Plain};
                cf.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
            }
            cf.set_max_write_buffer_number(4);
            ColumnFamilyDescriptor::new(name, cf)
        });
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(Self { db: Arc::new(db) })
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
    /// state-machine column families (`ledger`, `applied`; one atomic flush) and waits.
    ///
    /// # Errors
    /// The flush failed; the caller must stop the node.
    pub fn flush_state(&self) -> Result<(), rocksdb::Error> {
        let families = [self.cf(CF_LEDGER), self.cf(CF_APPLIED)];
        let mut options = FlushOptions::default();
        options.set_wait(true);
        self.db.flush_cfs_opt(&families, &options)
    }

    /// Makes every write so far durable (fsync of the write-ahead log).
    ///
    /// # Errors
    /// The fsync failed; the caller must stop the node.
    pub fn sync(&self) -> Result<(), rocksdb::Error> {
        self.db.flush_wal(true)
    }
}
