//! Accounts: one balance in one point currency (`ledger`), kept as four running sums.
//!
//! The balance is never stored as one number: `debits_pending`, `debits_posted`,
//! `credits_pending` and `credits_posted` are kept apart so that reservations (pending
//! transfers) and the two sides of double-entry bookkeeping stay auditable. The flags
//! `debits_must_not_exceed_credits` / `credits_must_not_exceed_debits` count pending amounts
//! too, so a reservation can never be spent twice.

use bitflags::bitflags;

use super::AccountId;

bitflags! {
    /// `Account.flags`, bit for bit TigerBeetle's `AccountFlags` (u16).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AccountFlags: u16 {
        /// Link this event with the next one in the batch: the chain succeeds or fails whole.
        const LINKED = 1 << 0;
        /// `debits_pending + debits_posted <= credits_posted` at all times.
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1;
        /// `credits_pending + credits_posted <= debits_posted` at all times.
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2;
        /// Keep the balance after every transfer, for `get_account_balances`.
        const HISTORY = 1 << 3;
        /// The event carries its own timestamp (migration from another system).
        const IMPORTED = 1 << 4;
        /// Closed: only voiding a pending transfer may still touch the account.
        const CLOSED = 1 << 5;
    }
}

impl AccountFlags {
    /// Whether any bit outside the defined flags is set.
    #[must_use]
    pub const fn has_reserved_bits(self) -> bool {
        self.bits() & !Self::all().bits() != 0
    }
}

/// An account, field for field TigerBeetle's `Account`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    /// Client-chosen, unique, not 0 and not `u128::MAX`.
    pub id: AccountId,
    /// Sum of the amounts of pending transfers debiting this account.
    pub debits_pending: u128,
    /// Sum of the amounts of posted transfers debiting this account.
    pub debits_posted: u128,
    /// Sum of the amounts of pending transfers crediting this account.
    pub credits_pending: u128,
    /// Sum of the amounts of posted transfers crediting this account.
    pub credits_posted: u128,
    /// Opaque client data.
    pub user_data_128: u128,
    /// Opaque client data.
    pub user_data_64: u64,
    /// Opaque client data.
    pub user_data_32: u32,
    /// Must be zero.
    pub reserved: u32,
    /// The point currency; transfers only move points within one ledger.
    pub ledger: u32,
    /// Chart-of-accounts code; not zero.
    pub code: u16,
    /// See [`AccountFlags`].
    pub flags: AccountFlags,
    /// Cluster time of creation, nanoseconds; unique across accounts and transfers of a shard.
    pub timestamp: u64,
}

impl Account {
    /// Would debiting `amount` more break `debits_must_not_exceed_credits`?
    /// Callers have already proven that the sums cannot overflow (`overflows_debits`).
    #[must_use]
    pub fn debits_exceed_credits(&self, amount: u128) -> bool {
        self.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && sum3(self.debits_pending, self.debits_posted, amount) > self.credits_posted
    }

    /// Would crediting `amount` more break `credits_must_not_exceed_debits`?
    #[must_use]
    pub fn credits_exceed_debits(&self, amount: u128) -> bool {
        self.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && sum3(self.credits_pending, self.credits_posted, amount) > self.debits_posted
    }

    /// Whether the account, as it stands, honours its own balance flags (invariant I2).
    #[must_use]
    pub fn within_limits(&self) -> bool {
        !self.debits_exceed_credits(0) && !self.credits_exceed_debits(0)
    }

    /// The balance part of the account, stamped with `timestamp`.
    #[must_use]
    pub fn balance_at(&self, timestamp: u64) -> AccountBalance {
        AccountBalance {
            timestamp,
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

/// An account's balance right after the transfer with the same timestamp
/// (TigerBeetle's `AccountBalance`). Recorded only for accounts with `HISTORY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountBalance {
    /// The timestamp of the transfer that produced this balance.
    pub timestamp: u64,
    /// See [`Account::debits_pending`].
    pub debits_pending: u128,
    /// See [`Account::debits_posted`].
    pub debits_posted: u128,
    /// See [`Account::credits_pending`].
    pub credits_pending: u128,
    /// See [`Account::credits_posted`].
    pub credits_posted: u128,
}

fn sum3(a: u128, b: u128, c: u128) -> u128 {
    a.checked_add(b)
        .and_then(|ab| ab.checked_add(c))
        .expect("account sums are proven not to overflow before they are compared")
}
