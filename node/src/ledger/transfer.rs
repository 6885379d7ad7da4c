//! Transfers: a movement of `amount` points from one account to another on the same ledger,
//! either at once (single-phase) or in two phases: a pending transfer reserves the amount,
//! and a later post (full or partial) or void resolves it exactly once, or it expires at
//! `timestamp + timeout` in cluster time.

use bitflags::bitflags;

use super::{AccountId, TransferId};

bitflags! {
    /// `Transfer.flags`, bit for bit TigerBeetle's `TransferFlags` (u16).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TransferFlags: u16 {
        /// Link this event with the next one in the batch: the chain succeeds or fails whole.
        const LINKED = 1 << 0;
        /// Reserve the amount instead of moving it.
        const PENDING = 1 << 1;
        /// Post the pending transfer named by `pending_id`.
        const POST_PENDING_TRANSFER = 1 << 2;
        /// Void the pending transfer named by `pending_id`.
        const VOID_PENDING_TRANSFER = 1 << 3;
        /// Move at most `amount`, as much as the debit account can give.
        const BALANCING_DEBIT = 1 << 4;
        /// Move at most `amount`, as much as the credit account can take.
        const BALANCING_CREDIT = 1 << 5;
        /// Close the debit account (pending only; a void or expiry reopens it).
        const CLOSING_DEBIT = 1 << 6;
        /// Close the credit account (pending only; a void or expiry reopens it).
        const CLOSING_CREDIT = 1 << 7;
        /// The event carries its own timestamp (migration from another system).
        const IMPORTED = 1 << 8;
    }
}

impl TransferFlags {
    /// Whether any bit outside the defined flags is set.
    #[must_use]
    pub const fn has_reserved_bits(self) -> bool {
        self.bits() & !Self::all().bits() != 0
    }

    /// Whether this transfer posts or voids a pending transfer.
    #[must_use]
    pub const fn resolves_pending(self) -> bool {
        self.intersects(Self::POST_PENDING_TRANSFER.union(Self::VOID_PENDING_TRANSFER))
    }
}

/// A transfer, field for field TigerBeetle's `Transfer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Client-chosen, unique, not 0 and not `u128::MAX`; the idempotency key.
    pub id: TransferId,
    /// The account debited.
    pub debit_account_id: AccountId,
    /// The account credited.
    pub credit_account_id: AccountId,
    /// Points moved (for a balancing transfer as requested: the upper limit).
    pub amount: u128,
    /// For a post or void: the pending transfer resolved. Otherwise zero.
    pub pending_id: TransferId,
    /// Opaque client data.
    pub user_data_128: u128,
    /// Opaque client data.
    pub user_data_64: u64,
    /// Opaque client data.
    pub user_data_32: u32,
    /// Pending transfers only: seconds until expiry in cluster time; 0 = never.
    pub timeout: u32,
    /// The point currency of both accounts.
    pub ledger: u32,
    /// Reason code; not zero.
    pub code: u16,
    /// See [`TransferFlags`].
    pub flags: TransferFlags,
    /// Cluster time, nanoseconds; unique and increasing per shard.
    pub timestamp: u64,
}

/// Nanoseconds per second, for `timeout` (seconds) against timestamps (nanoseconds).
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

impl Transfer {
    /// The cluster time at which this pending transfer expires, if it has a timeout.
    #[must_use]
    pub fn expires_at(&self) -> Option<u64> {
        (self.timeout != 0).then(|| {
            let timeout_ns = u64::from(self.timeout) * NANOS_PER_SECOND;
            self.timestamp.checked_add(timeout_ns).expect("overflows_timeout was checked")
        })
    }
}

/// The life of a pending transfer. Kept apart from the immutable transfer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingStatus {
    /// Reserved, not yet resolved.
    Pending = 1,
    /// Resolved by a post.
    Posted = 2,
    /// Resolved by a void.
    Voided = 3,
    /// Resolved by its timeout.
    Expired = 4,
}
