//! The Raft log of one shard in RocksDB (`raft_log`, `raft_meta` column families).
//!
//! An append writes its entries into RocksDB at once (so they can be read back), then hands
//! the completion callback to the node's [`Syncer`] thread. The syncer takes every callback
//! waiting, makes them durable with one WAL fsync, then reports them flushed: concurrent
//! appends (of this and other shards) share one fsync, and openraft can keep appending
//! while an fsync runs. Raft never counts an entry towards a quorum before its fsync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{TypeConfig, decode, encode};
use crate::storage::keys::{self, MetaKind, ShardId};
use crate::storage::{CF_RAFT_LOG, CF_RAFT_META, Storage, timed_step};

/// Callbacks waiting for the syncer, at most this many queued (appends block beyond).
pub const SYNC_QUEUE_MAX: usize = 4096;

/// The node's fsync thread, shared by every shard's log store.
#[derive(Debug)]
pub struct Syncer {
    tx: crossbeam_channel::Sender<IOFlushed<TypeConfig>>,
}

impl Syncer {
    /// Starts the fsync thread for `storage`. It ends when every `Syncer` handle is dropped.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    #[must_use]
    pub fn start(storage: Storage) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<IOFlushed<TypeConfig>>(SYNC_QUEUE_MAX);
        std::thread::Builder::new()
            .name("tally-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let (result, slow) = timed_step(|| sync(&storage));
                    if let Some(took_ms) = slow {
                        tracing::warn!(took_ms, appends = waiting.len(), "slow WAL fsync");
                    }
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "WAL fsync failed; raft will stop this node");
                    }
                    for callback in waiting {
                        let outcome = result.clone().map_err(io::Error::other);
                        callback.io_completed(outcome);
                    }
                }
            })
            .expect("spawn fsync thread");
        Arc::new(Self { tx })
    }

    fn submit(&self, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error> {
        self.tx.send(callback).map_err(|_| io::Error::other("fsync thread stopped"))
    }
}

/// One WAL fsync. Crash-test builds can fail it (failpoint `storage::fsync`, for the
/// chaos suite's storage fault): the error takes the same path as a real one.
fn sync(storage: &Storage) -> Result<(), String> {
    fail::fail_point!("storage::fsync", |_| Err(
        "injected fsync error (failpoint storage::fsync)".to_owned()
    ));
    storage.sync().map_err(|e| e.to_string())
}

/// The Raft log store of one shard.
#[derive(Clone, Debug)]
pub struct LogStore {
    storage: Storage,
    shard: ShardId,
    syncer: Arc<Syncer>,
}

impl LogStore {
    /// The log store of `shard`.
    #[must_use]
    pub fn new(storage: Storage, shard: ShardId, syncer: Arc<Syncer>) -> Self {
        Self { storage, shard, syncer }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, kind: MetaKind) -> io::Result<Option<T>> {
        let cf = self.storage.cf(CF_RAFT_META);
        let key = keys::meta(self.shard, kind);
        match self.storage.db().get_pinned_cf(cf, key).map_err(io::Error::other)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn meta_put<T: serde::Serialize>(&self, kind: MetaKind, value: &T) -> io::Result<()> {
        let cf = self.storage.cf(CF_RAFT_META);
        let key = keys::meta(self.shard, kind);
        self.storage.db().put_cf(cf, key, encode(value)?).map_err(io::Error::other)
    }

    fn delete_from(&self, index_start: u64, index_end: u64) -> io::Result<()> {
        let cf = self.storage.cf(CF_RAFT_LOG);
        let start = keys::log_entry(self.shard, index_start);
        let end = keys::log_entry(self.shard, index_end);
        self.storage.db().delete_range_cf(cf, start, end).map_err(io::Error::other)
    }

    fn last_entry(&self) -> io::Result<Option<EntryOf<TypeConfig>>> {
        let cf = self.storage.cf(CF_RAFT_LOG);
        let (start, end) = keys::shard_range(self.shard);
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(start.as_bytes().to_vec());
        let mode = IteratorMode::From(end.as_bytes(), Direction::Reverse);
        let mut iter = self.storage.db().iterator_cf_opt(cf, options, mode);
        match iter.next() {
            Some(item) => {
                let (_, value) = item.map_err(io::Error::other)?;
                decode(&value).map(Some)
            }
            None => Ok(None),
        }
    }
}

fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<EntryOf<TypeConfig>>> {
        let (start, end) = index_bounds(&range);
        let cf = self.storage.cf(CF_RAFT_LOG);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::log_entry(self.shard, end).as_bytes().to_vec());
        let start_key = keys::log_entry(self.shard, start);
        let mode = IteratorMode::From(start_key.as_bytes(), Direction::Forward);
        let mut entries = Vec::new();
        for item in self.storage.db().iterator_cf_opt(cf, options, mode) {
            let (key, value) = item.map_err(io::Error::other)?;
            let entry: EntryOf<TypeConfig> = decode(&value)?;
            assert_eq!(keys::log_index_of(&key), entry.index(), "raft log key and entry disagree");
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<TypeConfig>>> {
        self.meta_get(MetaKind::Vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> =
            self.meta_get(MetaKind::LastPurged)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> io::Result<()> {
        self.meta_put(MetaKind::Vote, vote)?;
        // A vote must be durable before it is acted on.
        self.storage.sync().map_err(io::Error::other)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        // Not fsynced: it only lets a restarted node re-apply sooner; Raft recovers it anyway.
        self.meta_put(MetaKind::Committed, &committed)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<TypeConfig>>> {
        Ok(self.meta_get::<Option<LogIdOf<TypeConfig>>>(MetaKind::Committed)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.storage.cf(CF_RAFT_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, keys::log_entry(self.shard, entry.index()), encode(&entry)?);
        }
        let (written, slow) = timed_step(|| self.storage.db().write(batch));
        if let Some(took_ms) = slow {
            tracing::warn!(shard = %self.shard, took_ms, "slow Raft log write");
        }
        written.map_err(io::Error::other)?;
        self.syncer.submit(callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.delete_from(from, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> io::Result<()> {
        // Record the purge point first: entries at or below it are ignored from now on.
        self.meta_put(MetaKind::LastPurged, &log_id)?;
        self.delete_from(0, log_id.index() + 1)
    }
}
