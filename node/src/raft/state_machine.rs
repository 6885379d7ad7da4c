//! The replicated state machine of one shard: committed [`Command`]s applied to the ledger.
//!
//! Apply takes the entries openraft hands over and runs them through the pure ledger core
//! (under the write lock of [`SharedLedger`]); the changes collect in the store's journal.
//! A **checkpoint** writes the journal together with the last applied log id (and the
//! membership) in ONE RocksDB `WriteBatch`: every `raft.checkpoint_writes` journal writes (in
//! a phase of its own for each replica: [`CheckpointSchedule`]), on a membership change, and
//! before every snapshot. Apply only takes the journal (O(1)); the
//! shard's [`Checkpointer`] thread encodes and writes checkpoints in order, so apply never
//! waits on RocksDB. Checkpoints are written without RocksDB's write-ahead log (the Raft log
//! already holds what they cover) and reach disk with the next atomic memtable flush. After
//! a crash the ledger on disk is exactly the state after some applied log id, and Raft
//! re-applies the committed entries after it from its fsynced log, which is never purged
//! past a persisted checkpoint: purge follows snapshots, and a snapshot flushes its
//! checkpoint to disk before it is reported built. Callers are answered once their entry
//! is committed (fsynced on a majority) and applied in memory: the log, not the
//! checkpoint, is what makes an acknowledged transfer durable.
//!
//! openraft "builds" a snapshot every `raft.snapshot_logs_since_last` entries to purge the
//! log: a build only checkpoints the applied state and flushes it to disk. A snapshot's
//! data is read only to send it to a follower whose next entry was purged: the shard's
//! `ledger` and `transfers` records read from a RocksDB snapshot taken right after
//! the checkpoint of their applied log id is written (the checkpoint writer pauses for it),
//! so data and metadata always match; apply goes on meanwhile. Installing one replaces the
//! shard's records, applied id and membership in one write and reloads.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use sha2::{Digest, Sha256};

use super::{Command, CommandReply, NodeId, Op, RequestOutcome, TypeConfig, decode, encode};
use crate::ledger::{
    Account, BatchError, CreateAccountStatus, CreateTransferStatus, EventResult, StateMachine,
    Transfer, memory_store::Capacity,
};
use crate::storage::keys::{self, MetaKind, ShardId};
use crate::storage::ledger_store::{DurableStore, Journal};
use crate::storage::records::{self, ACCOUNT_BYTES, TRANSFER_BYTES};
use crate::storage::{CF_APPLIED, CF_LEDGER, CF_TRANSFERS, Storage, timed_step};

/// The ledger of one shard and how far it has applied the log.
#[derive(Debug)]
pub struct Ledger {
    /// The deterministic ledger core over the durable store.
    pub machine: StateMachine<DurableStore>,
    /// The last log entry applied.
    pub applied: Option<LogIdOf<TypeConfig>>,
    /// The membership as of `applied`.
    pub membership: StoredMembershipOf<TypeConfig>,
    /// When the next periodic checkpoint is due. Not replicated state: it only says when
    /// this replica writes what it applied.
    pub checkpoints: CheckpointSchedule,
}

/// Checkpoint phases a shard's replicas are spread over (a shard has 3 replicas).
pub const CHECKPOINT_STAGGER_SLOTS: u64 = 3;

/// When a replica's periodic checkpoints are due: every `every` journal writes, counted
/// over the replica's life (not since the last checkpoint), the first one `every × slot /
/// CHECKPOINT_STAGGER_SLOTS` writes early. The replicas of a shard apply the same writes; with
/// the same schedule they would write their checkpoints at the same log positions, three
/// bursts of CPU at once on the machines (one, in a dev or bench cluster) they share. With
/// slots 0, 1, 2 they checkpoint a third of a period apart. A checkpoint taken out of turn (a
/// snapshot, a membership change) only makes the next periodic one smaller: the phase stays,
/// and a journal never holds more than `every` writes plus one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointSchedule {
    every: u64,
    /// Journal writes taken into checkpoints so far.
    taken: u64,
    /// The count of writes (taken plus in the journal) at which the next one is due.
    due: u64,
}

impl CheckpointSchedule {
    /// Every `every` writes (at least 1), in phase `slot` (taken modulo
    /// [`CHECKPOINT_STAGGER_SLOTS`]).
    #[must_use]
    pub fn new(every: u64, slot: u64) -> Self {
        let every = every.max(1);
        let early = every / CHECKPOINT_STAGGER_SLOTS * (slot % CHECKPOINT_STAGGER_SLOTS);
        Self { every, taken: 0, due: every - early }
    }

    /// The slot of `node`'s replica of `shard`: replicas on consecutive node ids get
    /// different slots, and so do consecutive shards of one node.
    #[must_use]
    pub fn slot(node: u64, shard: ShardId) -> u64 {
        (node + u64::from(shard.0)) % CHECKPOINT_STAGGER_SLOTS
    }

    /// Whether a journal of `journal_writes` writes makes a checkpoint due.
    #[must_use]
    pub fn is_due(&self, journal_writes: usize) -> bool {
        self.taken + journal_writes as u64 >= self.due
    }

    /// Counts a journal of `journal_writes` writes taken into a checkpoint.
    pub fn taken(&mut self, journal_writes: usize) {
        self.taken += journal_writes as u64;
        while self.due <= self.taken {
            self.due += self.every;
        }
    }
}

/// The ledger shared between apply (writer) and the read path (readers). Apply holds the
/// write lock only while it runs a batch and writes it; reads hold the read lock briefly.
pub type SharedLedger = Arc<RwLock<Ledger>>;

/// A snapshot's bytes: the shard's `ledger` and `transfers` records, framed, with a
/// SHA-256 trailer.
/// Shared, not copied, between the cache and install (replication sends it in chunks).
pub type SnapshotData = bytes::Bytes;

/// openraft's view of one shard's state machine.
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    storage: Storage,
    shard: ShardId,
    /// The memory each load of the store allocates and touches first (`[memory]`).
    capacity: Capacity,
    ledger: SharedLedger,
    /// Writes the checkpoints.
    checkpointer: Arc<Checkpointer>,
    /// The last snapshot with data: read to serve a lagging follower, or installed.
    current: Arc<Mutex<Option<SnapshotOf<TypeConfig, SnapshotData>>>>,
    /// The last snapshot openraft had built: its checkpoint is on disk, so the log may be
    /// purged up to it; its data is never read (see [`RaftSnapshotBuilder`] below).
    built: Arc<Mutex<Option<SnapshotMetaOf<TypeConfig>>>>,
}

impl StateMachineStore {
    /// Loads the state machine of `shard` from disk (empty if new) into memory for
    /// `capacity` allocated first (again on every snapshot install), checkpointing at the
    /// default `raft.checkpoint_writes`, in slot 0.
    ///
    /// # Errors
    /// A RocksDB read error or a corrupt metadata record.
    pub fn open(storage: Storage, shard: ShardId, capacity: Capacity) -> io::Result<Self> {
        let ledger = load(&storage, shard, capacity)?;
        Ok(Self {
            storage: storage.clone(),
            shard,
            capacity,
            ledger: Arc::new(RwLock::new(ledger)),
            checkpointer: Arc::new(Checkpointer::start(storage.clone(), shard)?),
            current: Arc::new(Mutex::new(None)),
            built: Arc::new(Mutex::new(None)),
        })
    }

    /// Checkpoints every `writes` journal writes instead (`raft.checkpoint_writes`), in
    /// phase `slot` (see [`CheckpointSchedule`]).
    #[must_use]
    pub fn checkpoint_every(self, writes: u64, slot: u64) -> Self {
        self.ledger.write().checkpoints = CheckpointSchedule::new(writes, slot);
        self
    }

    /// The ledger, for the read path.
    #[must_use]
    pub fn ledger(&self) -> SharedLedger {
        self.ledger.clone()
    }
}

fn load(storage: &Storage, shard: ShardId, capacity: Capacity) -> io::Result<Ledger> {
    let store = DurableStore::load(storage, shard, capacity)?;
    let cf = storage.cf(CF_APPLIED);
    let get = |kind| storage.db().get_cf(cf, keys::meta(shard, kind)).map_err(io::Error::other);
    let applied = match get(MetaKind::Applied)? {
        Some(bytes) => decode(&bytes)?,
        None => None,
    };
    let membership = match get(MetaKind::Membership)? {
        Some(bytes) => decode(&bytes)?,
        None => StoredMembershipOf::<TypeConfig>::default(),
    };
    let every = crate::config::RaftConfig::default().checkpoint_writes;
    let checkpoints = CheckpointSchedule::new(every, 0);
    Ok(Ledger { machine: StateMachine::new(store), applied, membership, checkpoints })
}

/// Applies one command to the ledger; the changes stay in the store's journal until
/// [`persist`]. Public for `bench/benches/rocksdb_apply.rs`, which measures this path
/// without a Raft group.
pub fn apply_command(machine: &mut StateMachine<DurableStore>, command: &Command) -> CommandReply {
    let time = command.cluster_time_ns;
    type Requests<'a> = (&'a [u32], &'a [Option<bool>], &'a [u8]);
    let accounts = |machine: &mut StateMachine<DurableStore>,
                    (requests, imported, events): Requests<'_>| {
        let accounts = decode_records(events, ACCOUNT_BYTES, records::account_decode_event);
        let apply =
            |events: &[Account], imported| machine.create_accounts_judged(time, events, imported);
        apply_requests(requests, imported, &accounts, apply, CreateAccountStatus::code)
    };
    let transfers = |machine: &mut StateMachine<DurableStore>,
                     (requests, imported, events): Requests<'_>| {
        let transfers = decode_records(events, TRANSFER_BYTES, records::transfer_decode_event);
        let apply =
            |events: &[Transfer], imported| machine.create_transfers_judged(time, events, imported);
        apply_requests(requests, imported, &transfers, apply, CreateTransferStatus::code)
    };
    let requests = match &command.op {
        Op::CreateAccounts { requests, events } => accounts(machine, (requests, &[], events)),
        Op::CreateAccountsJudged { requests, imported, events } => {
            accounts(machine, (requests, imported, events))
        }
        Op::CreateTransfers { requests, events } => transfers(machine, (requests, &[], events)),
        Op::CreateTransfersJudged { requests, imported, events } => {
            transfers(machine, (requests, imported, events))
        }
        Op::Pulse => {
            if let Err(e) = machine.pulse(time) {
                tracing::warn!(error = %e, "pulse refused");
            }
            Vec::new()
        }
    };
    CommandReply { requests }
}

fn decode_records<T>(bytes: &[u8], size: usize, decode_one: fn(&[u8]) -> T) -> Vec<T> {
    assert_eq!(bytes.len() % size, 0, "command events are not whole records");
    bytes.chunks_exact(size).map(decode_one).collect()
}

/// Applies each request of a command as its own batch, judged imported or not by
/// `imported` (one per request, or empty: each by its own first event).
fn apply_requests<E, S: Copy>(
    requests: &[u32],
    imported: &[Option<bool>],
    events: &[E],
    mut apply: impl FnMut(&[E], Option<bool>) -> Result<Vec<EventResult<S>>, BatchError>,
    code: fn(S) -> u32,
) -> Vec<RequestOutcome> {
    let total: usize = requests.iter().map(|&n| n as usize).sum();
    assert_eq!(total, events.len(), "command request counts do not match its events");
    assert!(imported.is_empty() || imported.len() == requests.len(), "one judgement per request");
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut start = 0;
    for (index, &count) in requests.iter().enumerate() {
        let slice = &events[start..start + count as usize];
        start += count as usize;
        outcomes.push(match apply(slice, imported.get(index).copied().flatten()) {
            Ok(results) => Ok(results.iter().map(|r| (r.timestamp, code(r.status))).collect()),
            Err(e) => Err(e.to_string()),
        });
    }
    outcomes
}

/// Where a slow apply spent its time besides applying, for its warning.
#[derive(Debug, Default)]
struct ApplyWaits {
    /// Waiting for the ledger's write lock (readers: lookups, recovery, snapshot builds).
    lock: Duration,
    /// Waiting to queue checkpoints (the shard's writer was [`CHECKPOINTS_QUEUED_MAX`]
    /// behind).
    checkpoint_queue: Duration,
}

/// Applies entries under the write lock. Their changes stay in the store's journal until
/// a checkpoint is due (the ledger's [`CheckpointSchedule`]), the membership changed, or a
/// snapshot is built; then the journal is taken (O(1)) and handed, in order, to the
/// shard's [`Checkpointer`], which writes it with the applied log id in one write off the
/// apply path. Returns the replies in entry order.
fn apply_entries(
    checkpointer: &Checkpointer,
    ledger: &RwLock<Ledger>,
    entries: &[openraft::alias::EntryOf<TypeConfig>],
    waits: &mut ApplyWaits,
) -> io::Result<Vec<CommandReply>> {
    // A failed checkpoint write stops the node at its next apply, not only at its next
    // checkpoint (up to `raft.checkpoint_writes` writes later).
    Checkpointer::check(&checkpointer.failed)?;
    let asked = Instant::now();
    let mut ledger = ledger.write();
    waits.lock = asked.elapsed();
    let mut replies = Vec::with_capacity(entries.len());
    let mut membership_changed = false;
    for entry in entries {
        ledger.applied = Some(entry.log_id);
        let payload: &EntryPayload<Command, NodeId, openraft::BasicNode> = &entry.payload;
        replies.push(match payload {
            EntryPayload::Blank => CommandReply::default(),
            EntryPayload::Normal(command) => apply_command(&mut ledger.machine, command),
            EntryPayload::Membership(m) => {
                ledger.membership =
                    StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m.clone());
                membership_changed = true;
                CommandReply::default()
            }
        });
        // Checked after every entry (openraft may hand over thousands at once, e.g. on
        // catch-up): the journal stays within one entry of `raft.checkpoint_writes`.
        // Submitted under the lock, so checkpoints reach the writer in the order taken.
        let journal_writes = ledger.machine.store().journal_writes();
        if membership_changed || ledger.checkpoints.is_due(journal_writes) {
            let submitted = Instant::now();
            checkpointer.submit(Checkpoint::take(&mut ledger, membership_changed))?;
            waits.checkpoint_queue += submitted.elapsed();
            membership_changed = false;
        }
    }
    Ok(replies)
}

/// The state of a shard's ledger between two checkpoints, taken under the ledger's lock
/// and written later: the store's journal, the applied log id and (if it changed) the
/// membership.
#[derive(Debug)]
pub struct Checkpoint {
    journal: Journal,
    shard: ShardId,
    applied: Option<LogIdOf<TypeConfig>>,
    membership: Option<StoredMembershipOf<TypeConfig>>,
}

impl Checkpoint {
    /// Takes the journal out of `ledger` (O(1)) with its applied id, and the membership if
    /// `membership_changed`; counts it in the ledger's [`CheckpointSchedule`].
    pub fn take(ledger: &mut Ledger, membership_changed: bool) -> Self {
        let journal_writes = ledger.machine.store().journal_writes();
        ledger.checkpoints.taken(journal_writes);
        Self {
            journal: ledger.machine.store_mut().take_journal(),
            shard: ledger.machine.store().shard(),
            applied: ledger.applied,
            membership: membership_changed.then(|| ledger.membership.clone()),
        }
    }

    /// Writes it as ONE RocksDB `WriteBatch`, without the write-ahead log: the entries are
    /// already durable in the Raft log (never purged past a persisted checkpoint: purge
    /// follows snapshots, and a snapshot flushes its checkpoint first), and a crash before
    /// the next memtable flush only makes Raft re-apply them.
    ///
    /// # Errors
    /// The encoding of the applied id or the RocksDB write failed (the node must stop).
    pub fn write(self, storage: &Storage) -> io::Result<()> {
        let mut batch = WriteBatch::with_capacity_bytes(self.journal.bytes_max());
        self.journal.write_into(&mut batch, storage);
        let applied_cf = storage.cf(CF_APPLIED);
        batch.put_cf(applied_cf, keys::meta(self.shard, MetaKind::Applied), encode(&self.applied)?);
        if let Some(membership) = &self.membership {
            batch.put_cf(
                applied_cf,
                keys::meta(self.shard, MetaKind::Membership),
                encode(membership)?,
            );
        }
        storage.write_unlogged(batch).map_err(io::Error::other)
    }
}

/// Takes and writes a checkpoint at once (see [`Checkpoint`]). Public for
/// `bench/benches/rocksdb_apply.rs`.
///
/// # Errors
/// See [`Checkpoint::write`].
pub fn persist(storage: &Storage, ledger: &mut Ledger, membership_changed: bool) -> io::Result<()> {
    Checkpoint::take(ledger, membership_changed).write(storage)
}

/// Checkpoints waiting for the writer; apply blocks beyond (the writer is behind).
pub const CHECKPOINTS_QUEUED_MAX: usize = 2;

/// The checkpoint writers' nice value. Between the request path (Raft, apply, replies:
/// nice 0) and RocksDB's flushes and compactions (nice 19): a checkpoint is a burst of CPU
/// (~20 MB encoded and put into memtables) that can wait some milliseconds. At 0 the
/// request path waited behind those bursts (bench/RESULTS.md, 2026-12-05). [`CHECKPOINTS_QUEUED_MAX`]
/// bounds how far a starved writer falls behind: apply then waits for it.
pub const CHECKPOINT_WRITER_NICE: i32 = 10;

/// Sets the calling thread's nice value (on Linux a nice value belongs to a thread). A
/// refusal is logged and otherwise ignored: the writer is correct at any priority.
fn lower_this_thread_priority(shard: ShardId, nice: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::warn!(%shard, nice, error = %e, "could not lower the checkpoint writer's priority");
    }
}

enum Job {
    Write(Checkpoint),
    /// Answered once every job before it is done; then the writer waits until the
    /// receiver is told (or dropped) to go on.
    Pause(crossbeam_channel::Sender<io::Result<()>>, crossbeam_channel::Receiver<()>),
}

/// Writes one shard's checkpoints in a thread of its own, in the order submitted, so apply
/// never waits on RocksDB. After a failed write it writes nothing more and every later
/// submit or barrier fails: the node must stop rather than go on with a gap on disk.
///
/// Dropping it lets the thread write what is queued and waits for it: afterwards no
/// thread of its own still holds the database (a process must close RocksDB before it
/// exits, [`Storage::try_close`]; a detached writer still closing it aborted a test run).
#[derive(Debug)]
pub struct Checkpointer {
    tx: Option<crossbeam_channel::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            // A panic there was reported by the thread already; nothing more to do.
            let _ = thread.join();
        }
    }
}

impl Checkpointer {
    /// Starts the writer thread for `shard` on `storage`; it ends when this is dropped.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(storage: Storage, shard: ShardId) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(CHECKPOINTS_QUEUED_MAX);
        let failed = Arc::new(Mutex::new(None::<String>));
        let failed_writer = failed.clone();
        let thread = std::thread::Builder::new().name(format!("tally-ckpt-{}", shard.0)).spawn(move || {
            lower_this_thread_priority(shard, CHECKPOINT_WRITER_NICE);
            for job in rx {
                match job {
                    Job::Write(checkpoint) => {
                        if failed_writer.lock().is_some() {
                            continue;
                        }
                        let (written, slow) = timed_step(|| checkpoint.write(&storage));
                        if let Some(took_ms) = slow {
                            tracing::warn!(%shard, took_ms, "slow checkpoint write");
                        }
                        if let Err(e) = written {
                            tracing::error!(%shard, error = %e, "checkpoint write failed; the node must stop");
                            *failed_writer.lock() = Some(e.to_string());
                        }
                    }
                    Job::Pause(done, resume) => {
                        if done.send(Self::check(&failed_writer)).is_ok() {
                            // Ok (told) or Err (the pauser is gone): go on either way.
                            let _ = resume.recv();
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx: Some(tx), thread: Some(thread), failed })
    }

    fn check(failed: &Mutex<Option<String>>) -> io::Result<()> {
        match &*failed.lock() {
            None => Ok(()),
            Some(e) => Err(io::Error::other(format!("an earlier checkpoint write failed: {e}"))),
        }
    }

    fn stopped() -> io::Error {
        io::Error::other("checkpoint writer stopped")
    }

    fn sender(&self) -> io::Result<&crossbeam_channel::Sender<Job>> {
        self.tx.as_ref().ok_or_else(Self::stopped)
    }

    /// Queues `checkpoint` (blocks while [`CHECKPOINTS_QUEUED_MAX`] are waiting).
    ///
    /// # Errors
    /// An earlier write failed, or the writer stopped.
    pub fn submit(&self, checkpoint: Checkpoint) -> io::Result<()> {
        Self::check(&self.failed)?;
        self.sender()?.send(Job::Write(checkpoint)).map_err(|_| Self::stopped())
    }

    /// Waits until every checkpoint submitted before is written.
    ///
    /// # Errors
    /// A write failed, or the writer stopped.
    pub fn barrier(&self) -> io::Result<()> {
        // A pause let go as soon as it is reached.
        self.pause()?.wait()
    }

    /// Queues a pause after the checkpoints submitted before (blocks like [`Self::submit`]).
    /// [`Pause::wait`] returns once they are written; the writer then writes nothing more
    /// until the [`Pause`] is dropped.
    ///
    /// # Errors
    /// The writer stopped.
    pub fn pause(&self) -> io::Result<Pause> {
        let (done, written) = crossbeam_channel::bounded(1);
        let (resume, resumed) = crossbeam_channel::bounded(1);
        self.sender()?.send(Job::Pause(done, resumed)).map_err(|_| Self::stopped())?;
        Ok(Pause { written, _resume: resume })
    }
}

/// A queued pause of a [`Checkpointer`]; dropping it lets the writer go on.
pub struct Pause {
    written: crossbeam_channel::Receiver<io::Result<()>>,
    _resume: crossbeam_channel::Sender<()>,
}

impl Pause {
    /// Waits until every checkpoint submitted before the pause is written.
    ///
    /// # Errors
    /// A write failed, or the writer stopped.
    pub fn wait(&self) -> io::Result<()> {
        self.written.recv().map_err(|_| Checkpointer::stopped())?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        let ledger = self.ledger.read();
        Ok((ledger.applied, ledger.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>>
            + Unpin
            + OptionalSend,
    {
        let pairs: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let (entries, responders): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let (checkpointer, ledger) = (self.checkpointer.clone(), self.ledger.clone());
        let shard = self.shard;
        let replies = tokio::task::spawn_blocking(move || {
            let mut waits = ApplyWaits::default();
            let (replies, slow) =
                timed_step(|| apply_entries(&checkpointer, &ledger, &entries, &mut waits));
            if let Some(took_ms) = slow {
                tracing::warn!(
                    %shard,
                    took_ms,
                    entries = entries.len(),
                    lock_wait_ms = waits.lock.as_millis(),
                    checkpoint_queue_wait_ms = waits.checkpoint_queue.as_millis(),
                    "slow apply"
                );
            }
            replies
        })
        .await
        .map_err(io::Error::other)??;
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let (storage, shard, ledger) = (self.storage.clone(), self.shard, self.ledger.clone());
        let (checkpointer, capacity) = (self.checkpointer.clone(), self.capacity);
        let meta_owned = meta.clone();
        let data = snapshot.clone();
        tokio::task::spawn_blocking(move || {
            install(&storage, &checkpointer, shard, capacity, &ledger, &meta_owned, &data)
        })
        .await
        .map_err(io::Error::other)??;
        *self.current.lock() =
            Some(SnapshotOf::<TypeConfig, SnapshotData> { meta: meta.clone(), snapshot });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<TypeConfig, SnapshotData>>> {
        let built = self.built.lock().as_ref().and_then(|meta| meta.last_log_id);
        if let Some(current) = self.current.lock().clone()
            && current.meta.last_log_id >= built
        {
            return Ok(Some(current));
        }
        // Nothing read since the last build (or since a restart): read the applied state
        // now. It is at least as new as the last build, so it covers every purged entry.
        if self.ledger.read().applied.is_none() {
            return Ok(None);
        }
        let (storage, shard, ledger) = (self.storage.clone(), self.shard, self.ledger.clone());
        let checkpointer = self.checkpointer.clone();
        let snapshot =
            tokio::task::spawn_blocking(move || read(&storage, &checkpointer, shard, &ledger))
                .await
                .map_err(io::Error::other)??;
        tracing::info!(%shard, bytes = snapshot.snapshot.len(), last_log_id = ?snapshot.meta.last_log_id, "snapshot read to send");
        // A read runs beside apply and install: never replace a newer cached snapshot
        // (e.g. one installed meanwhile) with this one.
        let mut current = self.current.lock();
        if current.as_ref().is_none_or(|c| c.meta.last_log_id <= snapshot.meta.last_log_id) {
            *current = Some(snapshot.clone());
        }
        Ok(Some(snapshot))
    }
}

/// A build makes the applied state durable and reads nothing. openraft builds a snapshot
/// every `raft.snapshot_logs_since_last` entries on every replica to purge its log; all
/// that needs is the checkpoint of the snapshot's log id on disk. The records are read
/// only when a follower must be sent them ([`RaftStateMachine::get_current_snapshot`]),
/// which is rare. (Before 2026-12-04 every build read and hashed the whole shard, e.g.
/// ~500 MB at 1 M members, on each replica, and kept it in memory.)
impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
        let (storage, ledger) = (self.storage.clone(), self.ledger.clone());
        let checkpointer = self.checkpointer.clone();
        let meta =
            tokio::task::spawn_blocking(move || persist_applied(&storage, &checkpointer, &ledger))
                .await
                .map_err(io::Error::other)??;
        tracing::info!(shard = %self.shard, last_log_id = ?meta.last_log_id, "snapshot built (checkpoint on disk)");
        let mut built = self.built.lock();
        if built.as_ref().is_none_or(|b| b.last_log_id <= meta.last_log_id) {
            *built = Some(meta.clone());
        }
        // A snapshot read before this build will not be sent again: free its memory.
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| c.meta.last_log_id < meta.last_log_id) {
            *current = None;
        }
        Ok(SnapshotOf::<TypeConfig, SnapshotData> { meta, snapshot: SnapshotData::new() })
    }
}

/// Checkpoints the applied state and flushes it to disk; returns the snapshot meta it is
/// the state of. Later checkpoints may be flushed with it: the state on disk is then
/// newer, which is as good for purging the log up to this meta.
fn persist_applied(
    storage: &Storage,
    checkpointer: &Checkpointer,
    ledger: &RwLock<Ledger>,
) -> io::Result<SnapshotMetaOf<TypeConfig>> {
    // The lock is released before the write is waited for.
    let meta = checkpoint_applied(&mut ledger.write(), checkpointer)?;
    checkpointer.barrier()?;
    storage.flush_state().map_err(io::Error::other)?;
    Ok(meta)
}

/// Submits a checkpoint of the applied state (always one, so the persisted applied id is
/// the snapshot's even when the entries since the last changed nothing) and returns the
/// snapshot meta it is the state of.
fn checkpoint_applied(
    ledger: &mut Ledger,
    checkpointer: &Checkpointer,
) -> io::Result<SnapshotMetaOf<TypeConfig>> {
    checkpointer.submit(Checkpoint::take(ledger, false))?;
    Ok(SnapshotMetaOf::<TypeConfig> {
        last_log_id: ledger.applied,
        last_membership: ledger.membership.clone(),
    })
}

/// Reads the shard's records as of one applied log id (to send to a follower).
fn read(
    storage: &Storage,
    checkpointer: &Checkpointer,
    shard: ShardId,
    ledger: &RwLock<Ledger>,
) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
    let db = storage.db();
    let (meta, pause) = {
        let mut ledger = ledger.write();
        // The snapshot is read from RocksDB: checkpoint the applied state first, through
        // the writer after the checkpoints queued before it, and pause the writer right
        // after it. The lock is released before the writes are waited for.
        let meta = checkpoint_applied(&mut ledger, checkpointer)?;
        (meta, checkpointer.pause()?)
    };
    pause.wait()?;
    // Exactly the checkpoint of `meta`: the writer waits until the view is taken.
    let view = db.snapshot();
    drop(pause);
    // openraft may take a snapshot it is given as its snapshot position (it does at start)
    // and purge its log up to it: the checkpoint (and any after it) must be on disk.
    storage.flush_state().map_err(io::Error::other)?;
    let (start, end) = keys::shard_range(shard);
    let mut writer = SnapshotWriter::default();
    // `ledger` then `transfers`: install tells them apart by the record kind in the key.
    for family in [CF_LEDGER, CF_TRANSFERS] {
        let mut options = ReadOptions::default();
        options.set_snapshot(&view);
        options.set_iterate_upper_bound(end.as_bytes().to_vec());
        let mode = IteratorMode::From(start.as_bytes(), Direction::Forward);
        for item in db.iterator_cf_opt(storage.cf(family), options, mode) {
            let (key, value) = item.map_err(io::Error::other)?;
            writer.push(&key, &value);
        }
    }
    Ok(SnapshotOf::<TypeConfig, SnapshotData> { meta, snapshot: writer.finish().into() })
}

/// Replaces the shard's ledger with the snapshot's, in one write, then reloads it.
fn install(
    storage: &Storage,
    checkpointer: &Checkpointer,
    shard: ShardId,
    capacity: Capacity,
    ledger: &RwLock<Ledger>,
    meta: &SnapshotMetaOf<TypeConfig>,
    data: &[u8],
) -> io::Result<()> {
    let pairs = snapshot_pairs(data)?;
    let (start, end) = keys::shard_range(shard);
    let mut batch = WriteBatch::default();
    let (cf, transfers_cf) = (storage.cf(CF_LEDGER), storage.cf(CF_TRANSFERS));
    batch.delete_range_cf(cf, start, end);
    batch.delete_range_cf(transfers_cf, start, end);
    for (key, value) in pairs {
        if !key.starts_with(&shard.0.to_be_bytes()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot key of another shard",
            ));
        }
        let family = if keys::is_transfer_segment(key) { transfers_cf } else { cf };
        batch.put_cf(family, key, value);
    }
    let applied_cf = storage.cf(CF_APPLIED);
    batch.put_cf(applied_cf, keys::meta(shard, MetaKind::Applied), encode(&meta.last_log_id)?);
    batch.put_cf(
        applied_cf,
        keys::meta(shard, MetaKind::Membership),
        encode(&meta.last_membership)?,
    );
    let mut guard = ledger.write();
    // Checkpoints queued before must not land on top of the installed state; the journal
    // still in memory is dropped with the store the snapshot replaces.
    checkpointer.barrier()?;
    storage.db().write(batch).map_err(io::Error::other)?;
    storage.sync().map_err(io::Error::other)?;
    // The schedule stays: the dropped journal was never taken, so the phase is kept.
    let checkpoints = guard.checkpoints;
    *guard = load(storage, shard, capacity)?;
    guard.checkpoints = checkpoints;
    assert_eq!(guard.applied, meta.last_log_id, "installed snapshot reloads at its log id");
    tracing::info!(%shard, last_log_id = ?meta.last_log_id, "snapshot installed");
    Ok(())
}

/// Frames `(key, value)` pairs: `u32 LE length, bytes` twice per pair, then SHA-256.
#[derive(Default)]
struct SnapshotWriter {
    bytes: Vec<u8>,
}

impl SnapshotWriter {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            let len = u32::try_from(part.len()).expect("record under 4 GiB");
            self.bytes.extend_from_slice(&len.to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        let digest = Sha256::digest(&self.bytes);
        self.bytes.extend_from_slice(&digest);
        self.bytes
    }
}

/// Checks a snapshot's trailer and splits it into `(key, value)` pairs.
fn snapshot_pairs(data: &[u8]) -> io::Result<Vec<(&[u8], &[u8])>> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot {what}"));
    let body_len = data.len().checked_sub(32).ok_or_else(|| invalid("shorter than its digest"))?;
    let (mut body, digest) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(invalid("digest mismatch"));
    }
    let mut pairs = Vec::new();
    while !body.is_empty() {
        let key = frame(&mut body).ok_or_else(|| invalid("truncated key"))?;
        let value = frame(&mut body).ok_or_else(|| invalid("truncated value"))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn frame<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len_bytes: [u8; 4] = body.get(..4)?.try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let part = body.get(4..4 + len)?;
    *body = &body[4 + len..];
    Some(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DirectIo;

    #[test]
    fn snapshot_framing_round_trips_and_detects_damage() {
        // Proves the snapshot frame keeps every pair and a flipped byte is refused.
        let mut writer = SnapshotWriter::default();
        writer.push(b"k1", b"value-1");
        writer.push(b"", b"");
        writer.push(b"key-3", &[7; 300]);
        let mut data = writer.finish();
        let pairs = snapshot_pairs(&data).expect("valid snapshot");
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], (&b"k1"[..], &b"value-1"[..]));
        assert_eq!(pairs[2].1.len(), 300);
        data[5] ^= 1;
        assert!(snapshot_pairs(&data).is_err());
        assert!(snapshot_pairs(&[0; 10]).is_err());
    }

    fn log_id(index: u64) -> LogIdOf<TypeConfig> {
        use openraft::alias::LeaderIdOf;
        use openraft::vote::RaftLeaderIdExt;
        LogIdOf::<TypeConfig>::new(LeaderIdOf::<TypeConfig>::new_committed(1, 1), index)
    }

    /// Applies one request creating account `id` as if at log index `index`.
    fn create_account(machine: &StateMachineStore, id: u128, index: u64) {
        let account =
            Account { id: crate::ledger::AccountId(id), ledger: 1, code: 1, ..Account::default() };
        let op = Op::CreateAccounts {
            requests: vec![1],
            events: records::account_encode(&account).to_vec(),
        };
        let mut ledger = machine.ledger.write();
        apply_command(&mut ledger.machine, &Command { cluster_time_ns: 1_000, op });
        ledger.applied = Some(log_id(index));
    }

    fn unflushed(storage: &Storage, family: &str) -> u64 {
        let property = "rocksdb.num-entries-active-mem-table";
        storage.db().property_int_value_cf(storage.cf(family), property).unwrap().unwrap()
    }

    /// Feeds `entries` entries of `per_entry` writes to `schedule` the way apply does, with
    /// a checkpoint out of turn after the entries listed in `out_of_turn`; returns the
    /// write counts (over the run) at which periodic checkpoints were taken and the
    /// largest journal taken.
    fn run_schedule(
        mut schedule: CheckpointSchedule,
        entries: u64,
        per_entry: usize,
        out_of_turn: &[u64],
    ) -> (Vec<u64>, usize) {
        let (mut journal, mut written, mut periodic, mut largest) = (0, 0, Vec::new(), 0);
        for entry in 1..=entries {
            journal += per_entry;
            written += per_entry as u64;
            let periodic_due = schedule.is_due(journal);
            if periodic_due || out_of_turn.contains(&entry) {
                if periodic_due {
                    periodic.push(written);
                }
                largest = largest.max(journal);
                schedule.taken(journal);
                journal = 0;
            }
        }
        (periodic, largest)
    }

    #[test]
    fn replicas_checkpoint_a_third_of_a_period_apart_and_keep_their_phase() {
        // Proves the three slots spread a shard's checkpoints over the period, that a
        // checkpoint out of turn (a snapshot) does not pull them back into step, and that
        // a journal stays within `every` writes plus one entry.
        let (every, per_entry) = (3_000, 7);
        let mut firsts = Vec::new();
        for slot in 0..CHECKPOINT_STAGGER_SLOTS {
            let schedule = CheckpointSchedule::new(every, slot);
            let (periodic, largest) = run_schedule(schedule, 5_000, per_entry, &[]);
            let (with_snapshots, largest_too) =
                run_schedule(schedule, 5_000, per_entry, &[100, 101, 777, 2_500]);
            assert_eq!(with_snapshots, periodic, "slot {slot}: same positions");
            assert!((largest.max(largest_too) as u64) < every + per_entry as u64, "slot {slot}");
            assert!(periodic.len() >= 11, "slot {slot}: {} checkpoints", periodic.len());
            for pair in periodic.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(gap.abs_diff(every) < per_entry as u64, "slot {slot}: gap {gap}");
            }
            firsts.push(periodic[0]);
        }
        // A third of the period apart (within one entry): 3,000, 2,000 and 1,000 writes.
        for (slot, first) in firsts.iter().enumerate() {
            let expected = every - every / 3 * slot as u64;
            assert!(first.abs_diff(expected) < per_entry as u64, "slot {slot}: first at {first}");
        }
        // Three consecutive node ids of one shard, and three shards of one node, differ.
        let slots = |f: &dyn Fn(u64) -> u64| (1..=3).map(f).collect::<Vec<_>>();
        for spread in [
            slots(&|n| CheckpointSchedule::slot(n, ShardId(5))),
            slots(&|s| CheckpointSchedule::slot(2, ShardId(u32::try_from(s).unwrap()))),
        ] {
            let mut sorted = spread.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2], "{spread:?}");
        }
    }

    /// The nice value of this process's thread named `name` (Linux `/proc`), if any.
    fn nice_of_thread(name: &str) -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap();
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
            if comm.trim_end() == name {
                // The folder's name is the thread's id.
                let tid = task.file_name().to_str().unwrap().parse().unwrap();
                let pid = rustix::process::Pid::from_raw(tid).expect("a thread id is not 0");
                return Some(rustix::process::getpriority_process(Some(pid)).unwrap());
            }
        }
        None
    }

    #[test]
    fn the_checkpoint_writer_runs_below_the_request_path() {
        // Proves the writer thread lowers its own priority (and only its own: this
        // thread, like the request path, stays where it was).
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), DirectIo::Off).unwrap();
        let own = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = own().unwrap();
        let checkpointer = Checkpointer::start(storage.clone(), ShardId(4093)).unwrap();
        // Answered by the writer's loop, so after it set its priority.
        checkpointer.barrier().unwrap();
        assert_eq!(nice_of_thread("tally-ckpt-4093"), Some(CHECKPOINT_WRITER_NICE));
        assert_eq!(own().unwrap(), before, "the caller's priority is untouched");

        drop(checkpointer);
        close(storage);
    }

    /// Closes RocksDB before the process exits (its threads abort it otherwise). A dropped
    /// checkpoint writer has let go of its handle by then: dropping it waits for its thread.
    fn close(storage: Storage) {
        assert!(
            storage.try_close().is_ok(),
            "a dropped checkpoint writer still holds the database"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_build_persists_the_applied_state_and_the_data_is_read_only_to_be_sent() {
        // A build (every `snapshot_logs_since_last` entries, on every replica) must leave
        // the applied state on disk, since the log is purged after it, and read nothing;
        // the records are read when a follower needs them, at least as new as the build.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), DirectIo::Auto).unwrap();
        let mut machine =
            StateMachineStore::open(storage.clone(), ShardId(2), Capacity::default()).unwrap();
        create_account(&machine, 7, 3);

        let built = machine.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(3)));
        assert!(built.snapshot.is_empty(), "a build reads no records");
        for family in [CF_LEDGER, CF_APPLIED] {
            assert_eq!(unflushed(&storage, family), 0, "{family} flushed by the build");
        }

        let sent = machine.get_current_snapshot().await.unwrap().expect("a snapshot to send");
        assert_eq!(sent.meta.last_log_id, Some(log_id(3)));
        let pairs = snapshot_pairs(&sent.snapshot).unwrap();
        let account_key = keys::account(ShardId(2), crate::ledger::AccountId(7));
        assert!(pairs.iter().any(|(k, _)| *k == account_key.as_bytes()), "the account is in it");
        // Read once, then served from memory until a newer build.
        let again = machine.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(again.snapshot.as_ptr(), sent.snapshot.as_ptr());

        create_account(&machine, 8, 4);
        assert_eq!(machine.build_snapshot().await.unwrap().meta.last_log_id, Some(log_id(4)));
        assert!(machine.current.lock().is_none(), "the older read is dropped");
        let newer = machine.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(newer.meta.last_log_id, Some(log_id(4)), "never older than the last build");
        assert_eq!(snapshot_pairs(&newer.snapshot).unwrap().len(), pairs.len() + 1);

        drop(machine);
        close(storage);
    }
}
