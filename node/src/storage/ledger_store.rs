//! [`DurableStore`]: the ledger state of one shard, served from memory and kept in RocksDB.
//!
//! The state machine reads and writes through [`LedgerStore`]. This store answers every
//! read from an in-memory [`MemoryStore`] (so apply never waits on disk) and records every
//! write in a journal. At a checkpoint the caller takes the journal ([`DurableStore::take_journal`],
//! O(1)) and turns it into puts and deletes in a RocksDB `WriteBatch`
//! ([`Journal::write_into`]), which it writes atomically together with the applied log id. On start, [`DurableStore::load`] rebuilds the memory image from
//! the `ledger` column family, so a restarted node serves exactly what it persisted.
//!
//! What is on disk (see [`keys`](super::keys)): in the `transfers` column family the
//! transfers, in segments of up to [`TRANSFER_SEGMENT_MAX`] keyed by their first
//! timestamp; in `ledger` the accounts, burnt ids, pending statuses, the expiry index,
//! balance history and the last timestamp. The per-account transfer index is derived from
//! the transfers on load and is not stored.
//!
//! Memory: the whole shard's state is resident (about 0.3 KB per account and per transfer).
//! This bounds a shard's size by the node's memory; sharding spreads it.

use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;

use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{self, LedgerKind, ShardId};
use super::{CF_LEDGER, CF_TRANSFERS, Storage, records};
use crate::ledger::{
    Account, AccountBalance, AccountId, Expiry, LedgerStore, MemoryStore, PendingStatus, Transfer,
    TransferId, memory_store::Capacity,
};

/// Transfers per segment value (1 MiB of records).
pub const TRANSFER_SEGMENT_MAX: usize = 8192;

/// A write not yet in a `WriteBatch`, in the order the state machine made it.
#[derive(Clone, Debug)]
enum Op {
    /// An account's new value (only its last value per checkpoint is written).
    AccountPut(Account),
    AccountDelete(AccountId),
    TransferPut(Transfer),
    TransferDelete(u64),
    FailedPut(TransferId),
    PendingPut(u64, PendingStatus),
    PendingDelete(u64),
    ExpiryPut(Expiry),
    ExpiryDelete(Expiry),
    BalancePut(AccountId, AccountBalance),
    BalanceDelete(AccountId, u64),
}

/// Where a written journal leaves its emptied buffer for the store's next journal: one
/// slot per shard.
///
/// A busy shard's journal holds `raft.checkpoint_writes` writes, about 18 MB at the
/// default. Allocated afresh for every checkpoint, those pages were mapped and zeroed by
/// the kernel each time: 5 % of the machine's CPU in a 4-shard swap run (`clear_page_erms`
/// under the journal's pushes, `perf`, 2026-12-04). One slot is enough, since the writer
/// gives back one buffer per journal taken. Cost: a busy shard holds one journal's buffer
/// more while idle.
#[derive(Clone, Debug, Default)]
struct Spare(Arc<Mutex<Option<Vec<Op>>>>);

impl Spare {
    /// The spare buffer with room for at least `room` writes (or a new one).
    fn take(&self, room: usize) -> Vec<Op> {
        let mut ops = self.0.lock().take().unwrap_or_default();
        ops.reserve(room);
        ops
    }

    /// Keeps `ops` (emptied) for the next journal, unless the slot is taken.
    fn give(&self, mut ops: Vec<Op>) {
        ops.clear();
        if ops.capacity() > 0 {
            self.0.lock().get_or_insert(ops);
        }
    }
}

/// The durable ledger store of one shard (see the module docs).
#[derive(Clone, Debug)]
pub struct DurableStore {
    shard: ShardId,
    /// Every read is served from here.
    memory: MemoryStore,
    /// Writes since the journal was last taken, in order.
    journal: Vec<Op>,
    /// Whether `timestamp_last` changed since the journal was last taken.
    timestamp_last_dirty: bool,
    /// The buffer of a written journal, for the next one.
    spare: Spare,
}

/// The writes of one shard's store between two checkpoints, taken out of the store in O(1)
/// so that encoding and writing them can happen off the apply path.
#[derive(Debug)]
pub struct Journal {
    shard: ShardId,
    ops: Vec<Op>,
    timestamp_last: Option<u64>,
    /// Where its buffer goes once it is dropped (written).
    spare: Spare,
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.ops));
    }
}

impl Journal {
    /// Writes recorded (every account write counts, though each account is written once).
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// An upper bound of the bytes [`Self::write_into`] puts into a batch (a record, its
    /// key and the batch's framing per write), to size the batch once.
    #[must_use]
    pub fn bytes_max(&self) -> usize {
        (self.ops.len() + 1) * (records::TRANSFER_BYTES + 64)
    }

    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.timestamp_last.is_none()
    }

    /// Puts the writes into `batch`: the new transfers as segments of up to
    /// [`TRANSFER_SEGMENT_MAX`] (column family `transfers`); each account once, with its
    /// last value, in key order, and every other write in the order it was made (`ledger`).
    ///
    /// # Panics
    /// If a transfer removal does not undo the newest transfer of this journal (the state
    /// machine only removes a transfer to roll back the batch that inserted it, and
    /// checkpoints fall between batches).
    pub fn write_into(self, batch: &mut WriteBatch, storage: &Storage) {
        let shard = self.shard;
        let (cf, transfers_cf) = (storage.cf(CF_LEDGER), storage.cf(CF_TRANSFERS));
        // One pass over the journal, which is larger than the CPU's caches (about 130 k
        // writes of 136 bytes at the default `raft.checkpoint_writes`): transfers are encoded
        // as they come, the other writes of `ledger` go into the batch in order, and account
        // writes are noted, to be written once each below. (Three passes and a hash set of
        // the accounts seen took 5.5 % of the bench machine's CPU at peak.)
        let mut transfers: Vec<u8> = Vec::with_capacity(self.ops.len() * records::TRANSFER_BYTES);
        let mut timestamps: Vec<u64> = Vec::new();
        let mut accounts: Vec<(AccountId, Option<&Account>)> = Vec::new();
        for op in &self.ops {
            match *op {
                Op::AccountPut(ref account) => accounts.push((account.id, Some(account))),
                Op::AccountDelete(id) => accounts.push((id, None)),
                Op::TransferPut(ref t) => {
                    transfers.extend_from_slice(&records::transfer_encode(t));
                    timestamps.push(t.timestamp);
                }
                Op::TransferDelete(ts) => {
                    let newest = timestamps.pop();
                    assert_eq!(
                        newest,
                        Some(ts),
                        "a removed transfer is the newest of its checkpoint"
                    );
                    transfers.truncate(timestamps.len() * records::TRANSFER_BYTES);
                }
                Op::FailedPut(id) => batch.put_cf(cf, keys::failed_id(shard, id), []),
                Op::PendingPut(ts, s) => batch.put_cf(
                    cf,
                    keys::pending_status(shard, ts),
                    records::pending_status_encode(s),
                ),
                Op::PendingDelete(ts) => batch.delete_cf(cf, keys::pending_status(shard, ts)),
                Op::ExpiryPut(e) => batch.put_cf(cf, keys::expiry(shard, e), []),
                Op::ExpiryDelete(e) => batch.delete_cf(cf, keys::expiry(shard, e)),
                Op::BalancePut(a, b) => batch.put_cf(
                    cf,
                    keys::balance(shard, a, b.timestamp),
                    records::balance_encode(&b),
                ),
                Op::BalanceDelete(a, ts) => batch.delete_cf(cf, keys::balance(shard, a, ts)),
            }
        }
        let segments = transfers.chunks(TRANSFER_SEGMENT_MAX * records::TRANSFER_BYTES);
        for (segment, first) in segments.zip(timestamps.iter().step_by(TRANSFER_SEGMENT_MAX)) {
            batch.put_cf(transfers_cf, keys::transfer_segment(shard, *first), segment);
        }
        // Each account once, with its last value, in key order: a stable sort by id keeps
        // each account's writes in journal order, so the last of each run is the newest.
        accounts.sort_by_key(|(id, _)| *id);
        for run in accounts.chunk_by(|a, b| a.0 == b.0) {
            let (id, value) = run[run.len() - 1];
            let key = keys::account(shard, id);
            match value {
                Some(account) => batch.put_cf(cf, key, records::account_encode(account)),
                None => batch.delete_cf(cf, key),
            }
        }
        if let Some(last) = self.timestamp_last {
            batch.put_cf(cf, keys::timestamp_last(shard), last.to_be_bytes());
        }
    }
}

impl DurableStore {
    /// An empty store for `shard` (a new shard, or before installing a snapshot).
    #[must_use]
    pub fn new(shard: ShardId) -> Self {
        Self::with_capacity(shard, Capacity::default())
    }

    /// An empty store for `shard` with its memory for `capacity` allocated and touched
    /// ([`MemoryStore::with_capacity`]).
    #[must_use]
    pub fn with_capacity(shard: ShardId, capacity: Capacity) -> Self {
        Self {
            shard,
            memory: MemoryStore::with_capacity(capacity.accounts, capacity.transfers),
            journal: Vec::new(),
            timestamp_last_dirty: false,
            spare: Spare::default(),
        }
    }

    /// The shard this store belongs to.
    #[must_use]
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Whether writes are waiting to be taken.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        !self.journal.is_empty() || self.timestamp_last_dirty
    }

    /// Writes waiting to be taken (every account write counts).
    #[must_use]
    pub fn journal_writes(&self) -> usize {
        self.journal.len()
    }

    /// Takes every write since the journal was last taken, leaving it empty; O(1).
    pub fn take_journal(&mut self) -> Journal {
        let timestamp_last =
            std::mem::take(&mut self.timestamp_last_dirty).then(|| self.memory.timestamp_last());
        // The next journal gets the same room up front: growing a Vec of ~100k writes by
        // doubling copies it several times per checkpoint. A written journal's buffer is
        // used again where there is one ([`Spare`]).
        let room = self.spare.take(self.journal.capacity());
        Journal {
            shard: self.shard,
            ops: std::mem::replace(&mut self.journal, room),
            timestamp_last,
            spare: self.spare.clone(),
        }
    }

    /// Moves every write since the journal was last taken into `batch`; see
    /// [`Journal::write_into`].
    pub fn drain_into(&mut self, batch: &mut WriteBatch, storage: &Storage) {
        self.take_journal().write_into(batch, storage);
    }

    /// Rebuilds the store of `shard` from the `ledger` and `transfers` column families, into
    /// memory for `capacity` allocated and touched first.
    ///
    /// # Errors
    /// A RocksDB read error, or data in the layout of a tallyd before 2026-12-04
    /// (transfers in the `ledger` family), which this version cannot read.
    ///
    /// # Panics
    /// On a corrupt record (the node must not serve a guess).
    pub fn load(storage: &Storage, shard: ShardId, capacity: Capacity) -> io::Result<Self> {
        let (cf, transfers_cf) = (storage.cf(CF_LEDGER), storage.cf(CF_TRANSFERS));
        let db = storage.db();
        let mut old_layout = false;
        scan(db, cf, shard, LedgerKind::TransferSegment, &mut |_, _| old_layout = true)?;
        if old_layout {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{shard}: transfers stored in the `ledger` column family (the layout of a \
                     tallyd before 2026-12-04); this version keeps them in `transfers` and \
                     cannot read this data: start the node in an empty data_dir and let it \
                     catch up from the cluster"
                ),
            ));
        }
        let mut store = Self::with_capacity(shard, capacity);
        let memory = &mut store.memory;
        scan(db, cf, shard, LedgerKind::Account, &mut |_, v| {
            memory.account_insert(&records::account_decode(v));
        })?;
        scan(db, transfers_cf, shard, LedgerKind::TransferSegment, &mut |_, segment| {
            assert_eq!(segment.len() % records::TRANSFER_BYTES, 0, "a segment holds whole records");
            for record in segment.chunks_exact(records::TRANSFER_BYTES) {
                let t = records::transfer_decode(record);
                memory.transfer_insert(&t);
                memory.account_transfer_append(t.debit_account_id, t.timestamp);
                memory.account_transfer_append(t.credit_account_id, t.timestamp);
            }
        })?;
        scan(db, cf, shard, LedgerKind::FailedId, &mut |k, _| {
            let id = u128::from_be_bytes(keys::suffix(k, 16).try_into().expect("16 bytes"));
            memory.transfer_failed_insert(TransferId(id));
        })?;
        scan(db, cf, shard, LedgerKind::PendingStatus, &mut |k, v| {
            let ts = records::u64_decode(keys::suffix(k, 8));
            memory.pending_status_set(ts, records::pending_status_decode(v));
        })?;
        scan(db, cf, shard, LedgerKind::Expiry, &mut |k, _| {
            let suffix = keys::suffix(k, 16);
            let expires_at = records::u64_decode(&suffix[..8]);
            let pending_timestamp = records::u64_decode(&suffix[8..]);
            memory.expiry_insert(Expiry { expires_at, pending_timestamp });
        })?;
        scan(db, cf, shard, LedgerKind::Balance, &mut |k, v| {
            let suffix = keys::suffix(k, 24);
            let account = u128::from_be_bytes(suffix[..16].try_into().expect("16 bytes"));
            let balance = records::balance_decode(v);
            assert_eq!(records::u64_decode(&suffix[16..]), balance.timestamp);
            memory.balance_append(AccountId(account), &balance);
        })?;
        if let Some(v) =
            db.get_pinned_cf(cf, keys::timestamp_last(shard)).map_err(io::Error::other)?
        {
            memory.timestamp_last_set(records::u64_decode(&v));
        }
        Ok(store)
    }
}

/// Visits every record of `kind` in `shard`, in key order.
fn scan(
    db: &rocksdb::DB,
    cf: &ColumnFamily,
    shard: ShardId,
    kind: LedgerKind,
    visit: &mut dyn FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let (start, end) = keys::ledger_range(shard, kind);
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(end.as_bytes().to_vec());
    let mode = IteratorMode::From(start.as_bytes(), Direction::Forward);
    for item in db.iterator_cf_opt(cf, options, mode) {
        let (key, value) = item.map_err(io::Error::other)?;
        visit(&key, &value);
    }
    Ok(())
}

impl LedgerStore for DurableStore {
    fn account(&self, id: AccountId) -> Option<Account> {
        self.memory.account(id)
    }
    fn warm_transfers(&self, transfers: &[Transfer]) {
        self.memory.warm_transfers(transfers);
    }
    fn account_insert(&mut self, account: &Account) {
        self.memory.account_insert(account);
        self.journal.push(Op::AccountPut(*account));
    }
    fn account_update(&mut self, account: &Account) {
        self.memory.account_update(account);
        self.journal.push(Op::AccountPut(*account));
    }
    fn account_remove(&mut self, id: AccountId) {
        self.memory.account_remove(id);
        self.journal.push(Op::AccountDelete(id));
    }
    fn account_timestamp_exists(&self, timestamp: u64) -> bool {
        self.memory.account_timestamp_exists(timestamp)
    }
    fn account_timestamp_max(&self) -> u64 {
        self.memory.account_timestamp_max()
    }
    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        self.memory.transfer(id)
    }
    fn transfer_at(&self, timestamp: u64) -> Option<Transfer> {
        self.memory.transfer_at(timestamp)
    }
    fn transfer_insert(&mut self, transfer: &Transfer) {
        self.memory.transfer_insert(transfer);
        self.journal.push(Op::TransferPut(*transfer));
    }
    fn transfer_remove(&mut self, id: TransferId) {
        let timestamp = self.memory.transfer(id).expect("removed transfer exists").timestamp;
        self.memory.transfer_remove(id);
        self.journal.push(Op::TransferDelete(timestamp));
    }
    fn transfer_timestamp_max(&self) -> u64 {
        self.memory.transfer_timestamp_max()
    }
    fn transfer_failed(&self, id: TransferId) -> bool {
        self.memory.transfer_failed(id)
    }
    fn transfer_failed_insert(&mut self, id: TransferId) {
        self.memory.transfer_failed_insert(id);
        self.journal.push(Op::FailedPut(id));
    }
    fn pending_status(&self, pending_timestamp: u64) -> Option<PendingStatus> {
        self.memory.pending_status(pending_timestamp)
    }
    fn pending_status_set(&mut self, pending_timestamp: u64, status: PendingStatus) {
        self.memory.pending_status_set(pending_timestamp, status);
        self.journal.push(Op::PendingPut(pending_timestamp, status));
    }
    fn pending_status_remove(&mut self, pending_timestamp: u64) {
        self.memory.pending_status_remove(pending_timestamp);
        self.journal.push(Op::PendingDelete(pending_timestamp));
    }
    fn expiry_insert(&mut self, expiry: Expiry) {
        self.memory.expiry_insert(expiry);
        self.journal.push(Op::ExpiryPut(expiry));
    }
    fn expiry_remove(&mut self, expiry: Expiry) {
        self.memory.expiry_remove(expiry);
        self.journal.push(Op::ExpiryDelete(expiry));
    }
    fn expiry_due(&self, now: u64, limit: usize, out: &mut Vec<Expiry>) {
        self.memory.expiry_due(now, limit, out);
    }
    fn expiry_next(&self) -> Option<u64> {
        self.memory.expiry_next()
    }
    fn account_transfer_append(&mut self, account: AccountId, timestamp: u64) {
        // Derived from the transfers on load; nothing to persist.
        self.memory.account_transfer_append(account, timestamp);
    }
    fn account_transfer_pop(&mut self, account: AccountId, timestamp: u64) {
        self.memory.account_transfer_pop(account, timestamp);
    }
    fn account_transfers_scan(
        &self,
        account: AccountId,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) {
        self.memory.account_transfers_scan(account, timestamp_min, timestamp_max, reversed, visit);
    }
    fn transfers_scan(
        &self,
        timestamp_min: u64,
        visit: &mut dyn FnMut(&Transfer) -> ControlFlow<()>,
    ) {
        self.memory.transfers_scan(timestamp_min, visit);
    }
    fn balance_append(&mut self, account: AccountId, balance: &AccountBalance) {
        self.memory.balance_append(account, balance);
        self.journal.push(Op::BalancePut(account, *balance));
    }
    fn balance_pop(&mut self, account: AccountId, timestamp: u64) {
        self.memory.balance_pop(account, timestamp);
        self.journal.push(Op::BalanceDelete(account, timestamp));
    }
    fn balance_at(&self, account: AccountId, timestamp: u64) -> Option<AccountBalance> {
        self.memory.balance_at(account, timestamp)
    }
    fn timestamp_last(&self) -> u64 {
        self.memory.timestamp_last()
    }
    fn timestamp_last_set(&mut self, timestamp: u64) {
        self.memory.timestamp_last_set(timestamp);
        self.timestamp_last_dirty = true;
    }
    fn visit_accounts(&self, visit: &mut dyn FnMut(&Account)) {
        self.memory.visit_accounts(visit);
    }
    fn visit_transfers(&self, visit: &mut dyn FnMut(&Transfer)) {
        self.memory.visit_transfers(visit);
    }
    fn visit_failed_ids(&self, visit: &mut dyn FnMut(TransferId)) {
        self.memory.visit_failed_ids(visit);
    }
    fn visit_pending_statuses(&self, visit: &mut dyn FnMut(u64, PendingStatus)) {
        self.memory.visit_pending_statuses(visit);
    }
    fn visit_expiries(&self, visit: &mut dyn FnMut(Expiry)) {
        self.memory.visit_expiries(visit);
    }
    fn visit_balances(&self, visit: &mut dyn FnMut(AccountId, &AccountBalance)) {
        self.memory.visit_balances(visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_accounts(store: &mut DurableStore, ids: std::ops::Range<u128>) {
        for id in ids {
            store.account_insert(&Account {
                id: AccountId(id),
                ledger: 1,
                code: 1,
                timestamp: u64::try_from(id).expect("small"),
                ..Account::default()
            });
        }
    }

    fn account_ids(journal: &Journal) -> Vec<u128> {
        journal
            .ops
            .iter()
            .map(|op| match op {
                Op::AccountPut(account) => account.id.0,
                other => panic!("unexpected write {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_written_journal_gives_its_buffer_to_a_later_one_emptied() {
        let mut store = DurableStore::new(ShardId(0));
        write_accounts(&mut store, 1..1001);
        let first = store.take_journal();
        let buffer = first.ops.as_ptr();
        assert_eq!(account_ids(&first), (1..1001).collect::<Vec<_>>());
        // Written (dropped) while the store fills its next journal.
        drop(first);
        write_accounts(&mut store, 1001..1501);
        let second = store.take_journal();
        assert_ne!(second.ops.as_ptr(), buffer, "the journal being filled had its own buffer");
        assert_eq!(account_ids(&second), (1001..1501).collect::<Vec<_>>());
        write_accounts(&mut store, 1501..1601);
        let third = store.take_journal();
        assert_eq!(third.ops.as_ptr(), buffer, "the first journal's buffer was used again");
        assert_eq!(account_ids(&third), (1501..1601).collect::<Vec<_>>(), "and held nothing old");
        assert!(third.ops.capacity() >= 1000, "with its room");
        // One of the two buffers given back is kept.
        drop((second, third));
        assert!(store.spare.0.lock().is_some());
    }

    /// What a journal writes reloads as the journal's last state: an account written many
    /// times holds its last value, a rolled-back account and rolled-back transfers (here
    /// across a segment boundary) are gone, and the transfers fill whole segments in order.
    #[test]
    fn a_written_journal_reloads_as_its_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), crate::config::DirectIo::Off).unwrap();
        let shard = ShardId(2);
        let mut store = DurableStore::new(shard);
        write_accounts(&mut store, 1..4);
        let inserted = 2 * TRANSFER_SEGMENT_MAX + 2;
        for i in 0..inserted {
            let n = u64::try_from(i).unwrap();
            store.transfer_insert(&Transfer {
                id: TransferId(u128::from(n) + 1),
                debit_account_id: AccountId(1),
                credit_account_id: AccountId(2),
                amount: 1,
                ledger: 1,
                code: 1,
                timestamp: 1_000 + n,
                ..Transfer::default()
            });
            let mut debit = store.account(AccountId(1)).unwrap();
            debit.debits_posted += 1;
            store.account_update(&debit);
        }
        // Roll back the newest three: the third segment empties, the second loses one.
        let kept = inserted - 3;
        for i in (kept..inserted).rev() {
            store.transfer_remove(TransferId(u128::try_from(i).unwrap() + 1));
        }
        store.account_remove(AccountId(3));
        let mut batch = WriteBatch::default();
        store.drain_into(&mut batch, &storage);
        storage.db().write(batch).unwrap();

        let loaded = DurableStore::load(&storage, shard, Capacity::default()).unwrap();
        let debit = loaded.account(AccountId(1)).unwrap();
        assert_eq!(debit.debits_posted, u128::try_from(inserted).unwrap(), "last value kept");
        assert!(loaded.account(AccountId(2)).is_some());
        assert!(loaded.account(AccountId(3)).is_none(), "rolled-back account is absent");
        for i in 0..inserted {
            let id = TransferId(u128::try_from(i).unwrap() + 1);
            assert_eq!(loaded.transfer(id).is_some(), i < kept, "transfer {i}");
        }
        let segments: Vec<usize> = storage
            .db()
            .iterator_cf(storage.cf(CF_TRANSFERS), IteratorMode::Start)
            .map(|item| item.unwrap().1.len() / records::TRANSFER_BYTES)
            .collect();
        assert_eq!(segments, [TRANSFER_SEGMENT_MAX, kept - TRANSFER_SEGMENT_MAX]);
    }
}
