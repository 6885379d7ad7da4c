//! The key layout of every column family. All integers are big-endian so RocksDB's byte
//! order is numeric order, and every key starts with the shard id so one node can host
//! many Raft groups in one RocksDB instance and a shard's keys form one contiguous range.

use crate::ledger::{AccountId, Expiry, TransferId};

/// A Raft group's id. Every key on disk and every internal RPC carries one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Kinds of record in the `ledger` and `transfers` column families (the byte after the
/// shard id); only transfer segments live in `transfers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LedgerKind {
    /// account id -> account.
    Account = 1,
    /// timestamp of a segment's first transfer -> the segment: up to
    /// `TRANSFER_SEGMENT_MAX` transfer records back to back, in timestamp order (which is
    /// insertion order). Transfers never change once created, so a checkpoint writes its
    /// new transfers as a few large values instead of one key each.
    TransferSegment = 2,
    /// transfer id that failed for a transient reason -> empty.
    FailedId = 3,
    /// pending transfer timestamp -> pending status.
    PendingStatus = 4,
    /// (expires_at, pending timestamp) -> empty.
    Expiry = 5,
    /// (account id, timestamp) -> balance after that transfer.
    Balance = 6,
    /// the last timestamp handed out -> u64.
    TimestampLast = 7,
}

/// Keys in the `raft_meta` and `applied` column families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MetaKind {
    /// `raft_meta`: the vote.
    Vote = 1,
    /// `raft_meta`: the last committed log id.
    Committed = 2,
    /// `raft_meta`: the last purged log id.
    LastPurged = 3,
    /// `applied`: the last applied log id.
    Applied = 4,
    /// `applied`: the membership as of the last applied entry.
    Membership = 5,
    /// `raft_meta`, under shard 0 (the node, not a group): the cluster's data-shard count,
    /// recorded on first start.
    ShardCount = 6,
}

/// A key made of the shard prefix and up to 32 more bytes, on the stack.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    bytes: [u8; 4 + 1 + 32],
    len: usize,
}

impl Key {
    fn new(shard: ShardId, kind: u8) -> Self {
        let mut key = Self { bytes: [0; 37], len: 0 };
        key.push(&shard.0.to_be_bytes());
        key.push(&[kind]);
        key
    }
    fn push(&mut self, part: &[u8]) -> &mut Self {
        self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
        self
    }
    /// The key's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// `[shard][kind]` .. `[shard][kind + 1]`: every record of that kind.
#[must_use]
pub fn ledger_range(shard: ShardId, kind: LedgerKind) -> (Key, Key) {
    (Key::new(shard, kind as u8), Key::new(shard, kind as u8 + 1))
}

/// `[shard]` .. `[shard + 1]`: every key of the shard in a column family.
#[must_use]
pub fn shard_range(shard: ShardId) -> (Key, Key) {
    let mut end = Key::new(ShardId(shard.0.checked_add(1).expect("shard id below u32::MAX")), 0);
    end.len = 4;
    let mut start = Key::new(shard, 0);
    start.len = 4;
    (start, end)
}

/// Key of an account record.
#[must_use]
pub fn account(shard: ShardId, id: AccountId) -> Key {
    *Key::new(shard, LedgerKind::Account as u8).push(&id.0.to_be_bytes())
}

/// Key of the transfer segment whose first transfer has `timestamp`.
#[must_use]
pub fn transfer_segment(shard: ShardId, timestamp: u64) -> Key {
    *Key::new(shard, LedgerKind::TransferSegment as u8).push(&timestamp.to_be_bytes())
}

/// Whether `key` (of the `ledger` or `transfers` family) is a transfer segment's.
#[must_use]
pub fn is_transfer_segment(key: &[u8]) -> bool {
    key.get(4) == Some(&(LedgerKind::TransferSegment as u8))
}

/// Key of a burnt transfer id.
#[must_use]
pub fn failed_id(shard: ShardId, id: TransferId) -> Key {
    *Key::new(shard, LedgerKind::FailedId as u8).push(&id.0.to_be_bytes())
}

/// Key of a pending status.
#[must_use]
pub fn pending_status(shard: ShardId, pending_timestamp: u64) -> Key {
    *Key::new(shard, LedgerKind::PendingStatus as u8).push(&pending_timestamp.to_be_bytes())
}

/// Key of an expiry index entry.
#[must_use]
pub fn expiry(shard: ShardId, e: Expiry) -> Key {
    *Key::new(shard, LedgerKind::Expiry as u8)
        .push(&e.expires_at.to_be_bytes())
        .push(&e.pending_timestamp.to_be_bytes())
}

/// Key of a balance snapshot.
#[must_use]
pub fn balance(shard: ShardId, account: AccountId, timestamp: u64) -> Key {
    *Key::new(shard, LedgerKind::Balance as u8)
        .push(&account.0.to_be_bytes())
        .push(&timestamp.to_be_bytes())
}

/// Key of the last handed-out timestamp.
#[must_use]
pub fn timestamp_last(shard: ShardId) -> Key {
    Key::new(shard, LedgerKind::TimestampLast as u8)
}

/// Key of a Raft log entry.
#[must_use]
pub fn log_entry(shard: ShardId, index: u64) -> Key {
    let mut key = Key::new(shard, 0);
    key.len = 4;
    *key.push(&index.to_be_bytes())
}

/// The log index in a `raft_log` key.
///
/// # Panics
/// On a key that is not 12 bytes (corruption).
#[must_use]
pub fn log_index_of(key: &[u8]) -> u64 {
    assert_eq!(key.len(), 12, "corrupt raft log key");
    u64::from_be_bytes(key[4..].try_into().expect("8 bytes"))
}

/// Key of a metadata record.
#[must_use]
pub fn meta(shard: ShardId, kind: MetaKind) -> Key {
    Key::new(shard, kind as u8)
}

/// Splits a record key of `kind` into the fixed-size fields after the prefix.
///
/// # Panics
/// On a key of the wrong length (corruption).
#[must_use]
pub fn suffix(key: &[u8], expected: usize) -> &[u8] {
    assert_eq!(key.len(), 5 + expected, "corrupt ledger key of {} bytes", key.len());
    &key[5..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_shard_then_kind_then_number() {
        // Proves big-endian keys give numeric order, which the ordered scans rely on.
        let s = ShardId(7);
        assert!(transfer_segment(s, 255).as_bytes() < transfer_segment(s, 256).as_bytes());
        assert!(log_entry(s, 255).as_bytes() < log_entry(s, 256).as_bytes());
        assert!(account(s, AccountId(u128::MAX)).as_bytes() < transfer_segment(s, 0).as_bytes());
        assert!(
            account(ShardId(6), AccountId(u128::MAX)).as_bytes()
                < account(s, AccountId(0)).as_bytes()
        );
        let (start, end) = shard_range(s);
        assert!(start.as_bytes() <= timestamp_last(s).as_bytes());
        assert!(timestamp_last(s).as_bytes() < end.as_bytes());
        assert_eq!(log_index_of(log_entry(s, 42).as_bytes()), 42);
    }
}
