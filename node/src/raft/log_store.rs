//! The Raft log of one shard in RocksDB (`raft_log`, `raft_meta` column families).
//!
//! Every write of a log store (appends, truncations, purges, the vote, the committed id)
//! goes to the node's one log [`Writer`] thread, in the order the store issued it; the
//! writer applies each round's writes to RocksDB in that order, makes them durable with
//! one WAL fsync, then reports appends flushed: concurrent appends (of this and other
//! shards) share one fsync. Raft never counts an entry towards a quorum before its fsync.
//!
//! Why a thread and not the caller: openraft calls `append` on the shard's Raft task, and
//! a RocksDB write waits in RocksDB's one write queue behind any write before it — a
//! state-machine checkpoint's batch of several MB among them. A write made in place held
//! the shard's whole Raft loop (replication, commits, replies) and a tokio worker thread
//! for as long (up to a few hundred ms measured at a quarter of peak; bench/RESULTS.md,
//! 2026-12-06). Now `append` only encodes and queues: the leader keeps replicating and
//! commits on its followers' fsyncs while its own write waits.
//!
//! Appended entries are readable at once (openraft reads them to replicate and to apply
//! before they are flushed): until the writer has put them into RocksDB they are served
//! from the store's [`Unwritten`] tail in memory. That tail is always the newest entries
//! of the log, contiguous, so a read takes what it asks of the tail and the rest, all
//! older, from RocksDB. A truncation or purge waits until the writer has done it (and
//! every write queued before it), so no queued append can land after it.
//!
//! Ordering on disk: the writer keeps each store's order in RocksDB's WAL, so a committed
//! id is never in the WAL before the entries it names, and a vote is fsynced before
//! `save_vote` returns. A crash may lose appends queued but not fsynced: they were never
//! reported flushed, so no quorum counted them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use tokio::sync::{mpsc, oneshot};

use super::{TypeConfig, decode, encode};
use crate::storage::keys::{self, Key, MetaKind, ShardId};
use crate::storage::{CF_RAFT_LOG, CF_RAFT_META, Storage, timed_step};

/// Writes queued for the log writer, at most this many (a store's writes wait beyond:
/// the back-pressure of a disk that cannot keep up). Bounds the unwritten tails too. The
/// wait is asynchronous: a full queue suspends the shard's Raft task, never a runtime
/// thread (the node's other shards, its heartbeats and its gRPC service go on).
pub const SYNC_QUEUE_MAX: usize = 4096;

type Entry = EntryOf<TypeConfig>;

/// The entries of one shard appended but not yet written to RocksDB, oldest first: always
/// the newest entries of its log, with contiguous indexes.
#[derive(Debug, Default)]
struct Unwritten {
    entries: VecDeque<Entry>,
    /// While a truncation from this index waits for the writer: entries at or after it
    /// may still be in RocksDB (an append queued before the truncation lands first), and
    /// no read may return them.
    truncating_from: Option<u64>,
}

impl Unwritten {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(RaftEntry::index)
    }

    /// Copies of the entries in `[start, end)`, and where the entries RocksDB must supply
    /// end (the first index held, or the truncation point).
    fn read(&self, start: u64, end: u64) -> (Vec<Entry>, u64) {
        let end = self.truncating_from.map_or(end, |from| end.min(from));
        let Some(first) = self.first_index() else { return (Vec::new(), end) };
        let from = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
        let to = usize::try_from(end.saturating_sub(first)).unwrap_or(usize::MAX);
        let to = to.min(self.entries.len());
        let copies =
            if from < to { self.entries.range(from..to).cloned().collect() } else { Vec::new() };
        (copies, first.min(end))
    }

    /// Drops the entries up to `last` (inclusive), written by now.
    fn written_up_to(&mut self, last: u64) {
        while self.entries.front().is_some_and(|e| e.index() <= last) {
            self.entries.pop_front();
        }
    }
}

/// One RocksDB operation of a log store.
enum Op {
    Put { cf: &'static str, key: Key, value: Vec<u8> },
    DeleteRange { cf: &'static str, start: Key, end: Key },
}

/// What the writer reports once a job is written (and fsynced if it asked).
enum Report {
    /// Appended entries: they leave the shard's unwritten tail once in RocksDB, and openraft
    /// hears they are flushed after the fsync.
    Flushed { last_index: u64, unwritten: Arc<Mutex<Unwritten>>, callback: IOFlushed<TypeConfig> },
    /// Anything else: the waiting store (if any) gets the outcome.
    Done(Option<oneshot::Sender<Result<(), String>>>),
}

/// One write of a log store, in the order the store issued it.
struct Job {
    ops: Vec<Op>,
    sync: bool,
    report: Report,
}

/// The node's log writer and fsync threads, shared by every shard's log store. Dropping
/// the last handle lets them finish what is queued and waits for them: no thread of
/// theirs still holds the database afterwards.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        for thread in self.threads.drain(..) {
            // A panic there aborts the process (`AbortOnPanic`): join has no error to give.
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Starts the log writer and fsync threads for `storage`. They end when every handle
    /// is dropped, after writing and reporting everything queued.
    ///
    /// Two threads, so that writing one round overlaps the fsync of the round before: the
    /// writer puts each round into RocksDB and passes it on; the fsync thread takes every
    /// round passed on so far, makes them durable with one fsync and reports them.
    ///
    /// # Panics
    /// If a thread cannot be spawned.
    #[must_use]
    pub fn start(storage: Storage) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<Job>(SYNC_QUEUE_MAX);
        let (written_tx, written_rx) = crossbeam_channel::bounded::<Written>(SYNC_QUEUE_MAX);
        let for_sync = storage.clone();
        // After a failed write nothing more is written (a later round landing would leave
        // a hole in the log), and no later report succeeds: Raft must not go on past a log
        // it could not write (openraft stops the node).
        let mut write_failed: Option<String> = None;
        let jobs = move || {
            let first = rx.blocking_recv()?;
            let mut round = vec![first];
            round.extend(std::iter::from_fn(|| rx.try_recv().ok()));
            Some(round)
        };
        let writer = spawn_rounds("tally-log-write", jobs, move |round| {
            written_tx.send(write_round(&storage, round, &mut write_failed)).is_ok()
        });
        let mut sync_failed: Option<String> = None;
        let written = move || {
            let first = written_rx.recv().ok()?;
            let mut rounds = vec![first];
            rounds.extend(written_rx.try_iter());
            Some(rounds)
        };
        let syncer = spawn_rounds("tally-fsync", written, move |rounds| {
            sync_and_report(&for_sync, rounds, &mut sync_failed);
            true
        });
        Arc::new(Self { tx: Some(tx), threads: vec![writer, syncer] })
    }

    /// Queues `job`, waiting (asynchronously) while the queue is full.
    async fn submit(&self, job: Job) -> io::Result<()> {
        self.tx.as_ref().ok_or_else(stopped)?.send(job).await.map_err(|_| stopped())
    }

    /// Queues `ops` and waits until they are written (and fsynced if `sync`), with every
    /// write queued before them.
    async fn write_and_wait(&self, ops: Vec<Op>, sync: bool) -> io::Result<()> {
        let (done, outcome) = oneshot::channel();
        self.submit(Job { ops, sync, report: Report::Done(Some(done)) }).await?;
        match outcome.await {
            Ok(result) => result.map_err(io::Error::other),
            Err(_) => Err(stopped()),
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("log writer thread stopped")
}

/// Starts thread `name`: it takes each round from `next` (everything queued at once,
/// waiting for the first) and hands it to `each`, until `next` has no more (its queue
/// closed) or `each` returns false. A panic there aborts the process ([`AbortOnPanic`]).
///
/// # Panics
/// If the thread cannot be spawned.
fn spawn_rounds<T: Send + 'static>(
    name: &'static str,
    mut next: impl FnMut() -> Option<Vec<T>> + Send + 'static,
    mut each: impl FnMut(Vec<T>) -> bool + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _abort = AbortOnPanic(name);
            while let Some(round) = next() {
                if !each(round) {
                    break;
                }
            }
        })
        .unwrap_or_else(|e| panic!("spawn thread {name}: {e}"))
}

/// Aborts the process if dropped while its thread panics: without its log threads a node
/// would stop committing and never say why (the queued appends' callbacks would never
/// run), so a panic there stops the node at once; Raft recovers from the durable log.
struct AbortOnPanic(&'static str);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(thread = self.0, "a Raft log thread panicked; stopping the node");
            std::process::abort();
        }
    }
}

/// A round of jobs in RocksDB (or not, and why), waiting for the fsync.
struct Written {
    reports: Vec<Report>,
    needs_sync: bool,
    outcome: Result<(), String>,
}

/// Writes one round of jobs as one RocksDB batch, their order kept; after a failure
/// (`failed`), writes nothing more.
fn write_round(storage: &Storage, round: Vec<Job>, failed: &mut Option<String>) -> Written {
    let mut batch = WriteBatch::default();
    let mut needs_sync = false;
    let mut reports = Vec::with_capacity(round.len());
    for job in round {
        needs_sync |= job.sync;
        for op in job.ops {
            match op {
                Op::Put { cf, key, value } => batch.put_cf(storage.cf(cf), key.as_bytes(), value),
                Op::DeleteRange { cf, start, end } => {
                    batch.delete_range_cf(storage.cf(cf), start.as_bytes(), end.as_bytes());
                }
            }
        }
        reports.push(job.report);
    }
    if let Some(e) = failed {
        return Written { reports, needs_sync, outcome: Err(e.clone()) };
    }
    let (written, slow) = timed_step(|| storage.db().write(batch));
    if let Some(took_ms) = slow {
        tracing::warn!(took_ms, writes = reports.len(), "slow Raft log write");
    }
    let outcome = written.map_err(|e| {
        tracing::error!(error = %e, "Raft log write failed; raft will stop this node");
        format!("Raft log write failed: {e}")
    });
    if let Err(e) = &outcome {
        *failed = Some(e.clone());
    }
    if outcome.is_ok() {
        // In RocksDB now: reads find them there.
        for report in &reports {
            if let Report::Flushed { last_index, unwritten, .. } = report {
                unwritten.lock().written_up_to(*last_index);
            }
        }
    }
    Written { reports, needs_sync, outcome }
}

/// Makes written rounds durable with one fsync (if any needs it), then reports every job.
fn sync_and_report(storage: &Storage, rounds: Vec<Written>, failed: &mut Option<String>) {
    for round in &rounds {
        if let (None, Err(e)) = (&failed, &round.outcome) {
            *failed = Some(e.clone());
        }
    }
    if failed.is_none() && rounds.iter().any(|r| r.needs_sync) {
        let (result, slow) = timed_step(|| sync(storage));
        if let Some(took_ms) = slow {
            let writes: usize = rounds.iter().map(|r| r.reports.len()).sum();
            tracing::warn!(took_ms, writes, "slow WAL fsync");
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "WAL fsync failed; raft will stop this node");
            *failed = Some(e);
        }
    }
    for report in rounds.into_iter().flat_map(|r| r.reports) {
        let outcome = failed.clone().map_or(Ok(()), Err);
        match report {
            Report::Flushed { callback, .. } => {
                callback.io_completed(outcome.map_err(io::Error::other));
            }
            Report::Done(Some(done)) => {
                // The store may have stopped waiting (its task ended): nothing to tell.
                let _ = done.send(outcome);
            }
            Report::Done(None) => {}
        }
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
    writer: Arc<Writer>,
    unwritten: Arc<Mutex<Unwritten>>,
}

impl LogStore {
    /// The log store of `shard`.
    #[must_use]
    pub fn new(storage: Storage, shard: ShardId, writer: Arc<Writer>) -> Self {
        Self { storage, shard, writer, unwritten: Arc::default() }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, kind: MetaKind) -> io::Result<Option<T>> {
        let cf = self.storage.cf(CF_RAFT_META);
        let key = keys::meta(self.shard, kind);
        match self.storage.db().get_pinned_cf(cf, key).map_err(io::Error::other)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn meta_op<T: serde::Serialize>(&self, kind: MetaKind, value: &T) -> io::Result<Op> {
        Ok(Op::Put { cf: CF_RAFT_META, key: keys::meta(self.shard, kind), value: encode(value)? })
    }

    fn delete_op(&self, index_start: u64, index_end: u64) -> Op {
        Op::DeleteRange {
            cf: CF_RAFT_LOG,
            start: keys::log_entry(self.shard, index_start),
            end: keys::log_entry(self.shard, index_end),
        }
    }

    /// The entries in `[start, end)` that are in RocksDB, in index order.
    fn read_written(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        let cf = self.storage.cf(CF_RAFT_LOG);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::log_entry(self.shard, end).as_bytes().to_vec());
        let start_key = keys::log_entry(self.shard, start);
        let mode = IteratorMode::From(start_key.as_bytes(), Direction::Forward);
        for item in self.storage.db().iterator_cf_opt(cf, options, mode) {
            let (key, value) = item.map_err(io::Error::other)?;
            let entry: Entry = decode(&value)?;
            assert_eq!(keys::log_index_of(&key), entry.index(), "raft log key and entry disagree");
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_written(&self) -> io::Result<Option<Entry>> {
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
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = index_bounds(&range);
        // The unwritten tail first: an entry not in it by now is in RocksDB already (the
        // writer drops entries from the tail only after writing them), so RocksDB supplies
        // everything before the tail's first index.
        let (tail, written_end) = self.unwritten.lock().read(start, end);
        let mut entries = self.read_written(start, written_end)?;
        entries.extend(tail);
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
        let last_unwritten = self.unwritten.lock().entries.back().map(RaftEntry::log_id);
        let last_log_id = match last_unwritten {
            Some(log_id) => Some(log_id),
            None => match self.last_written()? {
                Some(entry) => Some(entry.log_id()),
                None => last_purged_log_id,
            },
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> io::Result<()> {
        // A vote must be durable before it is acted on.
        let op = self.meta_op(MetaKind::Vote, vote)?;
        self.writer.write_and_wait(vec![op], true).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        // Not waited for nor fsynced: it only lets a restarted node re-apply sooner; Raft
        // recovers it anyway. Queued behind the appends it names, so it never reaches the
        // WAL before them.
        let op = self.meta_op(MetaKind::Committed, &committed)?;
        self.writer.submit(Job { ops: vec![op], sync: false, report: Report::Done(None) }).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<TypeConfig>>> {
        Ok(self.meta_get::<Option<LogIdOf<TypeConfig>>>(MetaKind::Committed)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            let key = keys::log_entry(self.shard, entry.index());
            ops.push(Op::Put { cf: CF_RAFT_LOG, key, value: encode(&entry)? });
            appended.push(entry);
        }
        let Some(last_index) = appended.last().map(RaftEntry::index) else {
            // Nothing to write; openraft still waits to hear it is flushed.
            callback.io_completed(Ok(()));
            return Ok(());
        };
        {
            let mut unwritten = self.unwritten.lock();
            if let (Some(last), Some(first)) = (unwritten.entries.back(), appended.first()) {
                assert_eq!(
                    last.index() + 1,
                    first.index(),
                    "raft log append does not follow the unwritten tail"
                );
            }
            unwritten.entries.extend(appended);
        }
        let report = Report::Flushed { last_index, unwritten: self.unwritten.clone(), callback };
        self.writer.submit(Job { ops, sync: true, report }).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        // Reads stop seeing the removed entries at once, those in the tail and those an
        // append queued before this may still put into RocksDB; the wait makes sure that
        // no such append lands after the deletion.
        {
            let mut unwritten = self.unwritten.lock();
            while unwritten.entries.back().is_some_and(|e| e.index() >= from) {
                unwritten.entries.pop_back();
            }
            unwritten.truncating_from = Some(from);
        }
        // Fsynced before openraft goes on (truncations are rare: a leader change with
        // entries to replace): entries appended after it may be applied, and a checkpoint
        // made durable, before their own fsync; the conflicting entries must not be able
        // to come back in the durable log under that checkpoint's applied id. (RocksDB
        // also syncs older WAL files before a flush; this does not depend on it.)
        self.writer.write_and_wait(vec![self.delete_op(from, u64::MAX)], true).await?;
        // Deleted: RocksDB holds nothing at or after `from` any more. (After a failure the
        // cap stays: the node stops.)
        self.unwritten.lock().truncating_from = None;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> io::Result<()> {
        // The purge point first, in the same batch: entries at or below it are ignored
        // from now on.
        let ops = vec![
            self.meta_op(MetaKind::LastPurged, &log_id)?,
            self.delete_op(0, log_id.index() + 1),
        ];
        self.writer.write_and_wait(ops, false).await
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::testing::{blank_ent, log_id};
    use openraft::type_config::TypeConfigExt as _;

    use super::*;
    use crate::config::DirectIo;
    use crate::ledger::memory_store::Capacity;
    use crate::raft::state_machine::StateMachineStore;

    const SHARD: ShardId = ShardId(3);

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>>
        {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
            let log = LogStore::new(storage.clone(), SHARD, Writer::start(storage.clone()));
            let sm = StateMachineStore::open(storage, SHARD, Capacity::default()).unwrap();
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_store_passes_openraft_s_storage_suite() {
        Suite::test_all(Builder).await.unwrap();
    }

    /// A log store whose writer is the test: its jobs wait in `jobs` until the test runs
    /// them with [`run_writer`], as the writer and fsync threads would.
    fn held_writer() -> (tempfile::TempDir, Storage, LogStore, mpsc::Receiver<Job>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        let (tx, jobs) = mpsc::channel(SYNC_QUEUE_MAX);
        let log = LogStore::new(
            storage.clone(),
            SHARD,
            Arc::new(Writer { tx: Some(tx), threads: Vec::new() }),
        );
        (dir, storage, log, jobs)
    }

    fn run_writer(storage: &Storage, jobs: &mut mpsc::Receiver<Job>, failed: &mut Option<String>) {
        let round = std::iter::from_fn(|| jobs.try_recv().ok()).collect();
        let written = write_round(storage, round, &mut None);
        sync_and_report(storage, vec![written], failed);
    }

    type Flushed = openraft::type_config::alias::OneshotReceiverOf<TypeConfig, io::Result<()>>;

    async fn append(log: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) -> Flushed {
        let (tx, rx) = TypeConfig::oneshot();
        let entries = indexes.map(|i| blank_ent::<TypeConfig>(1, 1, i));
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(RaftEntry::index).collect()
    }

    #[tokio::test]
    async fn appended_entries_are_read_before_and_after_the_writer_writes_them() {
        let (_dir, storage, mut log, mut jobs) = held_writer();
        let mut first = append(&mut log, 1..=3).await;
        // Queued, not written: served from the unwritten tail, flushed not yet reported.
        assert_eq!(indexes(&log.try_get_log_entries(1..4).await.unwrap()), [1, 2, 3]);
        assert!(log.read_written(0, u64::MAX).unwrap().is_empty());
        assert!((&mut first).now_or_never().is_none());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 3)));

        let mut failed = None;
        run_writer(&storage, &mut jobs, &mut failed);
        assert!(failed.is_none());
        first.now_or_never().unwrap().unwrap().unwrap();
        assert!(log.unwritten.lock().entries.is_empty());
        assert_eq!(indexes(&log.read_written(0, u64::MAX).unwrap()), [1, 2, 3]);

        // A read across the boundary: 2..=3 from RocksDB, 4..=5 from the tail.
        let mut second = append(&mut log, 4..=5).await;
        assert_eq!(indexes(&log.try_get_log_entries(2..=5).await.unwrap()), [2, 3, 4, 5]);
        assert_eq!(indexes(&log.try_get_log_entries(4..).await.unwrap()), [4, 5]);
        assert_eq!(indexes(&log.try_get_log_entries(..3).await.unwrap()), [1, 2]);
        assert!((&mut second).now_or_never().is_none());
        run_writer(&storage, &mut jobs, &mut failed);
        second.now_or_never().unwrap().unwrap().unwrap();
        assert_eq!(indexes(&log.try_get_log_entries(0..100).await.unwrap()), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_truncation_hides_queued_entries_at_once_and_ends_after_the_writer_deleted_them() {
        let (_dir, storage, mut log, mut jobs) = held_writer();
        let mut failed = None;
        let _written = append(&mut log, 1..=2).await;
        run_writer(&storage, &mut jobs, &mut failed);
        let _queued = append(&mut log, 3..=5).await;

        let mut truncating = log.clone();
        let truncation = tokio::spawn(async move {
            truncating.truncate_after(Some(log_id::<TypeConfig>(1, 1, 3))).await
        });
        // The tail loses 4 and 5 before the writer runs; the truncation waits for it.
        while jobs.len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(indexes(&log.try_get_log_entries(0..100).await.unwrap()), [1, 2, 3]);
        assert!(!truncation.is_finished());
        // The queued append (3..=5) lands in RocksDB before the deletion does (its own
        // round here, as it may with the writer thread): reads still stop at 3.
        let append_round = jobs.try_recv().unwrap();
        let written = write_round(&storage, vec![append_round], &mut None);
        assert_eq!(indexes(&log.read_written(0, u64::MAX).unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(indexes(&log.try_get_log_entries(0..100).await.unwrap()), [1, 2, 3]);
        sync_and_report(&storage, vec![written], &mut failed);
        // Then the deletion, fsynced before the truncation returns.
        let deletion = jobs.try_recv().unwrap();
        assert!(deletion.sync, "a truncation is fsynced");
        let written = write_round(&storage, vec![deletion], &mut None);
        sync_and_report(&storage, vec![written], &mut failed);
        truncation.await.unwrap().unwrap();
        assert!(failed.is_none());
        assert_eq!(indexes(&log.read_written(0, u64::MAX).unwrap()), [1, 2, 3]);
        assert!(log.unwritten.lock().entries.is_empty());
        // The log goes on from 4.
        let _next = append(&mut log, 4..=4).await;
        assert_eq!(indexes(&log.try_get_log_entries(0..100).await.unwrap()), [1, 2, 3, 4]);
    }

    /// Polls `future` once, outside tokio's task budget: after many awaits in one task the
    /// budget is spent and any poll within it is pending, ready or not.
    fn polled_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        tokio::task::unconstrained(future).now_or_never()
    }

    #[tokio::test]
    async fn a_full_writer_queue_suspends_the_append_instead_of_blocking_the_thread() {
        // With the queue full, the next append waits without holding its thread (on this
        // one-thread runtime a blocking wait would never return), and goes on once the
        // writer has taken the queue.
        let (_dir, storage, mut log, mut jobs) = held_writer();
        let last = u64::try_from(SYNC_QUEUE_MAX).unwrap();
        let mut flushed = Vec::new();
        for index in 1..=last {
            flushed.push(append(&mut log, index..=index).await);
        }
        assert_eq!(jobs.len(), SYNC_QUEUE_MAX);
        let mut queued = log.clone();
        let mut next = Box::pin(append(&mut queued, last + 1..=last + 1));
        assert!(polled_once(&mut next).is_none(), "the append waits for room");
        // The entry is readable already, from the unwritten tail.
        let read = log.try_get_log_entries(last + 1..=last + 1).await.unwrap();
        assert_eq!(indexes(&read), [last + 1]);

        let mut failed = None;
        run_writer(&storage, &mut jobs, &mut failed);
        let mut next_flushed = next.await;
        assert!(polled_once(&mut next_flushed).is_none(), "queued, not yet written");
        run_writer(&storage, &mut jobs, &mut failed);
        assert!(failed.is_none());
        for rx in flushed {
            polled_once(rx).unwrap().unwrap().unwrap();
        }
        polled_once(next_flushed).unwrap().unwrap().unwrap();
        assert_eq!(log.read_written(0, u64::MAX).unwrap().len(), SYNC_QUEUE_MAX + 1);
    }
}
