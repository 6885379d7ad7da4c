//! An in-memory [`LedgerStore`]: the reference implementation, and the fast path of the
//! apply benchmark. Hash maps use a fixed hasher (`FxHash`, no random seed) and are never
//! iterated where order could reach an output: the `visit_*` methods sort first.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::split_map::{SplitMap, SplitSet};
use super::store::{Expiry, LedgerStore};
use super::{Account, AccountBalance, AccountId, PendingStatus, Transfer, TransferId};

/// No transfer: the end of an account's chain.
const NONE: u32 = u32::MAX;
/// Every `SKIP`-th transfer of an account's chain is also kept in a short list (oldest
/// first), so a scan from a timestamp starts within `SKIP` steps of it instead of walking
/// every newer transfer (oldest first) or every transfer newer than its end (newest
/// first): 4 bytes per `SKIP` transfers, for the accounts that have that many.
const SKIP: u32 = 64;

/// One account and the head of its transfer chain, kept together so that a transfer
/// touches one map entry per account.
#[derive(Clone, Debug)]
struct AccountEntry {
    account: Account,
    /// Index in `transfers` of the newest transfer touching the account, or `NONE`.
    transfer_last: u32,
    /// Transfers in its chain.
    transfer_count: u32,
}

/// A transfer and the links of the two per-account chains it belongs to. The per-account
/// index is a linked list threaded through the transfers, newest first: appending costs no
/// memory access beyond the account entry and the transfer being written anyway.
#[derive(Clone, Debug)]
struct TransferEntry {
    transfer: Transfer,
    /// The debit account's previous transfer, or `NONE`.
    prev_debit: u32,
    /// The credit account's previous transfer, or `NONE`.
    prev_credit: u32,
}

impl TransferEntry {
    /// The previous transfer in `account`'s chain.
    fn prev(&self, account: AccountId) -> u32 {
        if self.transfer.debit_account_id == account { self.prev_debit } else { self.prev_credit }
    }
}

/// What a store allocates and touches when it is created (`[memory]` in a node's
/// configuration, per shard replica): see [`MemoryStore::with_capacity`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Accounts.
    pub accounts: usize,
    /// Transfers.
    pub transfers: usize,
}

impl Capacity {
    /// About how many bytes [`MemoryStore::with_capacity`] takes for it: each entry, plus
    /// its index slot at the lowest load a hash table keeps (half full, with its control
    /// byte). An upper estimate, for checking a configuration against the machine.
    #[must_use]
    pub fn bytes(self) -> u64 {
        let slot = |entry: usize| 2 * (entry + 1);
        let account = slot(std::mem::size_of::<(AccountId, AccountEntry)>());
        let transfer =
            std::mem::size_of::<TransferEntry>() + slot(std::mem::size_of::<(TransferId, u32)>());
        (self.accounts as u64) * (account as u64) + (self.transfers as u64) * (transfer as u64)
    }
}

/// The in-memory ledger store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    accounts: SplitMap<AccountId, AccountEntry>,
    account_timestamps: SplitSet<u64>,
    account_timestamp_max: u64,
    /// The index of every [`SKIP`]-th transfer of an account's chain (the `SKIP`-th, the
    /// `2·SKIP`-th, … oldest), for accounts with at least `SKIP` transfers.
    skips: SplitMap<AccountId, Vec<u32>>,
    /// Balance after each transfer, ascending, for accounts with `HISTORY` only.
    balances: SplitMap<AccountId, Vec<AccountBalance>>,
    /// Every transfer, in ascending timestamp order (inserts only ever append).
    transfers: Vec<TransferEntry>,
    /// Transfer id to its index in `transfers`.
    transfer_index: SplitMap<TransferId, u32>,
    failed_ids: SplitSet<TransferId>,
    pending_statuses: SplitMap<u64, PendingStatus>,
    expiries: BTreeSet<Expiry>,
    timestamp_last: u64,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with memory for `accounts` accounts and `transfers` transfers
    /// allocated *and touched* up front, as TigerBeetle allocates all its memory at start:
    /// applying into it then never pauses to grow a table or to fault in fresh pages. Costs
    /// start-up time (about a second per ten million transfers) and resident memory
    /// ([`Capacity::bytes`]). Beyond `transfers` the store grows as usual.
    #[must_use]
    pub fn with_capacity(accounts: usize, transfers: usize) -> Self {
        let mut store = Self::default();
        // Filling and clearing keeps a table's memory, now faulted in. Reserved first, so
        // that the filling does not grow parts early (split_map's staggered growth).
        store.accounts.reserve(accounts);
        let account =
            AccountEntry { account: Account::default(), transfer_last: NONE, transfer_count: 0 };
        store.accounts.extend((0..accounts).map(|i| (AccountId(i as u128), account.clone())));
        store.accounts.clear();
        let blank =
            TransferEntry { transfer: Transfer::default(), prev_debit: NONE, prev_credit: NONE };
        store.transfers.resize(transfers, blank);
        store.transfers.clear();
        store.transfer_index.reserve(transfers);
        store.transfer_index.extend((0..transfers).map(|i| (TransferId(i as u128), 0)));
        store.transfer_index.clear();
        store
    }

    fn entry_mut(&mut self, id: AccountId) -> &mut AccountEntry {
        self.accounts.get_mut(&id).expect("the state machine only indexes existing accounts")
    }

    /// The index of the newest transfer, which must have `timestamp` and touch `account`.
    fn newest_index(&self, account: AccountId, timestamp: u64) -> u32 {
        let entry = self.transfers.last().expect("a transfer was just inserted");
        let t = &entry.transfer;
        assert_eq!(t.timestamp, timestamp, "only the newest transfer is indexed");
        assert!(t.debit_account_id == account || t.credit_account_id == account);
        u32::try_from(self.transfers.len() - 1).expect("below NONE")
    }
}

impl LedgerStore for MemoryStore {
    /// Looks up every id that applying `transfers` (a run of `WARM_EVENTS` events) will look
    /// up. Each lookup in a large table misses the CPU's caches (1 M accounts of 160 bytes,
    /// millions of transfer-index slots), and in the apply loop each miss waits for the one
    /// before it; here the lookups are independent of each other, so the CPU overlaps their
    /// misses. The values go to `black_box` so the loads are not optimised away. (At peak,
    /// before this pass, `SplitMap::get` took 7.2 % of all CPU samples, 91 % of them on the
    /// load of the entry's key: `bench/RESULTS.md`, 2026-12-06.)
    fn warm_transfers(&self, transfers: &[Transfer]) {
        use std::hint::black_box;
        for t in transfers {
            black_box(self.transfer_index.get(&t.id).copied());
            for id in [t.debit_account_id, t.credit_account_id] {
                black_box(self.accounts.get(&id).map(|e| (e.account.timestamp, e.transfer_last)));
            }
            if t.pending_id != TransferId::ZERO
                && let Some(&index) = self.transfer_index.get(&t.pending_id)
            {
                black_box(self.transfers.get(index as usize).map(|e| e.transfer.timestamp));
            }
        }
    }

    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts.get(&id).map(|entry| entry.account)
    }

    fn account_insert(&mut self, account: &Account) {
        let entry = AccountEntry { account: *account, transfer_last: NONE, transfer_count: 0 };
        assert!(self.accounts.insert(account.id, entry).is_none(), "account inserted twice");
        let reused = self.account_timestamps.insert(account.timestamp, ()).is_some();
        assert!(!reused, "account timestamp reused");
        self.account_timestamp_max = self.account_timestamp_max.max(account.timestamp);
    }

    fn account_update(&mut self, account: &Account) {
        let entry = self.entry_mut(account.id);
        assert_eq!(entry.account.timestamp, account.timestamp, "an update keeps the timestamp");
        entry.account = *account;
    }

    fn account_remove(&mut self, id: AccountId) {
        let entry = self.accounts.remove(&id).expect("removing an account that exists");
        assert_eq!(entry.transfer_last, NONE, "an account with transfers is never removed");
        assert!(!self.balances.contains_key(&id));
        self.account_timestamps.remove(&entry.account.timestamp);
        if entry.account.timestamp == self.account_timestamp_max {
            self.account_timestamp_max =
                self.account_timestamps.iter().map(|(&t, ())| t).max().unwrap_or(0);
        }
    }

    fn account_timestamp_exists(&self, timestamp: u64) -> bool {
        self.account_timestamps.contains_key(&timestamp)
    }

    fn account_timestamp_max(&self) -> u64 {
        self.account_timestamp_max
    }

    fn transfer(&self, id: TransferId) -> Option<Transfer> {
        self.transfer_index.get(&id).map(|&index| self.transfers[index as usize].transfer)
    }

    fn transfer_at(&self, timestamp: u64) -> Option<Transfer> {
        let index =
            self.transfers.binary_search_by_key(&timestamp, |e| e.transfer.timestamp).ok()?;
        Some(self.transfers[index].transfer)
    }

    fn transfer_insert(&mut self, transfer: &Transfer) {
        assert!(transfer.timestamp > self.transfer_timestamp_max(), "transfers are appended");
        let index = u32::try_from(self.transfers.len()).expect("at most 2^32-1 transfers");
        assert_ne!(index, NONE, "at most 2^32-1 transfers in memory");
        let previous = self.transfer_index.insert(transfer.id, index);
        assert!(previous.is_none(), "transfer inserted twice");
        let entry = TransferEntry { transfer: *transfer, prev_debit: NONE, prev_credit: NONE };
        self.transfers.push(entry);
    }

    fn transfer_remove(&mut self, id: TransferId) {
        let newest = self.transfers.pop().expect("removing a transfer that exists");
        assert_eq!(newest.transfer.id, id, "only the newest transfer can be removed");
        self.transfer_index.remove(&id);
    }

    fn transfer_timestamp_max(&self) -> u64 {
        self.transfers.last().map_or(0, |e| e.transfer.timestamp)
    }

    fn transfer_failed(&self, id: TransferId) -> bool {
        !self.failed_ids.is_empty() && self.failed_ids.contains_key(&id)
    }

    fn transfer_failed_insert(&mut self, id: TransferId) {
        assert!(!self.transfer_index.contains_key(&id), "a created transfer's id cannot fail");
        self.failed_ids.insert(id, ());
    }

    fn pending_status(&self, pending_timestamp: u64) -> Option<PendingStatus> {
        self.pending_statuses.get(&pending_timestamp).copied()
    }

    fn pending_status_set(&mut self, pending_timestamp: u64, status: PendingStatus) {
        self.pending_statuses.insert(pending_timestamp, status);
    }

    fn pending_status_remove(&mut self, pending_timestamp: u64) {
        self.pending_statuses.remove(&pending_timestamp).expect("removing a status that exists");
    }

    fn expiry_insert(&mut self, expiry: Expiry) {
        assert!(self.expiries.insert(expiry), "expiry inserted twice");
    }

    fn expiry_remove(&mut self, expiry: Expiry) {
        assert!(self.expiries.remove(&expiry), "removing an expiry that exists");
    }

    fn expiry_due(&self, now: u64, limit: usize, out: &mut Vec<Expiry>) {
        out.extend(self.expiries.iter().take_while(|e| e.expires_at <= now).take(limit));
    }

    fn expiry_next(&self) -> Option<u64> {
        self.expiries.first().map(|e| e.expires_at)
    }

    fn account_transfer_append(&mut self, account: AccountId, timestamp: u64) {
        let index = self.newest_index(account, timestamp);
        let head = self.entry_mut(account);
        let previous = std::mem::replace(&mut head.transfer_last, index);
        head.transfer_count += 1;
        if head.transfer_count.is_multiple_of(SKIP) {
            match self.skips.get_mut(&account) {
                Some(skips) => skips.push(index),
                None => {
                    self.skips.insert(account, vec![index]);
                }
            }
        }
        let entry = &mut self.transfers[index as usize];
        if entry.transfer.debit_account_id == account {
            entry.prev_debit = previous;
        } else {
            entry.prev_credit = previous;
        }
    }

    fn account_transfer_pop(&mut self, account: AccountId, timestamp: u64) {
        let index = self.newest_index(account, timestamp);
        let previous = self.transfers[index as usize].prev(account);
        let head = self.entry_mut(account);
        assert_eq!(head.transfer_last, index, "only the newest index entry can be undone");
        head.transfer_last = previous;
        let skipped = head.transfer_count.is_multiple_of(SKIP);
        head.transfer_count -= 1;
        if skipped {
            let skips = self.skips.get_mut(&account).expect("a skip was recorded");
            assert_eq!(skips.pop(), Some(index), "the newest skip is the popped transfer");
            if skips.is_empty() {
                self.skips.remove(&account);
            }
        }
    }

    fn account_transfers_scan(
        &self,
        account: AccountId,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) {
        let Some(head) = self.accounts.get(&account) else { return };
        if head.transfer_last == NONE || timestamp_min > timestamp_max {
            return;
        }
        let timestamp = |index: u32| self.transfers[index as usize].transfer.timestamp;
        let skips: &[u32] = self.skips.get(&account).map_or(&[], Vec::as_slice);
        if reversed {
            // Start at the oldest skip newer than the range (or the head): within SKIP steps
            // of it.
            let first_after = skips.partition_point(|&i| timestamp(i) <= timestamp_max);
            let mut index = skips.get(first_after).copied().unwrap_or(head.transfer_last);
            while index != NONE {
                let t = timestamp(index);
                if t < timestamp_min {
                    return;
                }
                if t <= timestamp_max && visit(t).is_break() {
                    return;
                }
                index = self.transfers[index as usize].prev(account);
            }
            return;
        }
        // Oldest first: the chain runs newest first, so walk it in segments ending at the
        // skips (and at the head), each from its end back to the segment before, and visit
        // each segment reversed. The first segment is the one holding `timestamp_min`: the
        // skip before it is older than that, so no segment is longer than SKIP.
        let first = skips.partition_point(|&i| timestamp(i) < timestamp_min);
        let ends = skips[first..].iter().copied().chain(std::iter::once(head.transfer_last));
        let mut floor = timestamp_min; // visit timestamps >= floor in this segment
        let mut segment = Vec::with_capacity(SKIP as usize);
        for end in ends {
            segment.clear();
            let mut index = end;
            while index != NONE && timestamp(index) >= floor {
                segment.push(timestamp(index));
                index = self.transfers[index as usize].prev(account);
            }
            for &t in segment.iter().rev() {
                if t > timestamp_max || visit(t).is_break() {
                    return;
                }
            }
            floor = timestamp(end).saturating_add(1);
        }
    }

    fn transfers_scan(
        &self,
        timestamp_min: u64,
        visit: &mut dyn FnMut(&Transfer) -> ControlFlow<()>,
    ) {
        let start = self.transfers.partition_point(|e| e.transfer.timestamp < timestamp_min);
        let _ = self.transfers[start..].iter().try_for_each(|e| visit(&e.transfer));
    }

    fn balance_append(&mut self, account: AccountId, balance: &AccountBalance) {
        assert!(self.accounts.contains_key(&account));
        if let Some(balances) = self.balances.get_mut(&account) {
            assert!(balances.last().is_none_or(|last| last.timestamp < balance.timestamp));
            balances.push(*balance);
        } else {
            self.balances.insert(account, vec![*balance]);
        }
    }

    fn balance_pop(&mut self, account: AccountId, timestamp: u64) {
        let balances = self.balances.get_mut(&account).expect("a balance was appended");
        assert_eq!(balances.pop().map(|b| b.timestamp), Some(timestamp));
        if balances.is_empty() {
            self.balances.remove(&account);
        }
    }

    fn balance_at(&self, account: AccountId, timestamp: u64) -> Option<AccountBalance> {
        let balances = self.balances.get(&account)?;
        let index = balances.binary_search_by_key(&timestamp, |b| b.timestamp).ok()?;
        Some(balances[index])
    }

    fn timestamp_last(&self) -> u64 {
        self.timestamp_last
    }

    fn timestamp_last_set(&mut self, timestamp: u64) {
        self.timestamp_last = timestamp;
    }

    fn visit_accounts(&self, visit: &mut dyn FnMut(&Account)) {
        let sorted: BTreeMap<_, _> = self.accounts.iter().collect();
        sorted.values().for_each(|entry| visit(&entry.account));
    }

    fn visit_transfers(&self, visit: &mut dyn FnMut(&Transfer)) {
        self.transfers.iter().for_each(|entry| visit(&entry.transfer));
    }

    fn visit_failed_ids(&self, visit: &mut dyn FnMut(TransferId)) {
        let sorted: BTreeSet<_> = self.failed_ids.iter().map(|(&id, ())| id).collect();
        sorted.into_iter().for_each(visit);
    }

    fn visit_pending_statuses(&self, visit: &mut dyn FnMut(u64, PendingStatus)) {
        let sorted: BTreeMap<_, _> = self.pending_statuses.iter().collect();
        sorted.into_iter().for_each(|(&timestamp, &status)| visit(timestamp, status));
    }

    fn visit_expiries(&self, visit: &mut dyn FnMut(Expiry)) {
        self.expiries.iter().copied().for_each(visit);
    }

    fn visit_balances(&self, visit: &mut dyn FnMut(AccountId, &AccountBalance)) {
        let sorted: BTreeMap<_, _> = self.balances.iter().collect();
        for (&id, balances) in sorted {
            balances.iter().for_each(|balance| visit(id, balance));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Capacity, MemoryStore};
    use crate::ledger::{Account, AccountId, LedgerStore, Transfer, TransferId};

    /// A store made with room for accounts and transfers holds none of the placeholders
    /// that touched its memory, keeps the room, and works like an empty store.
    #[test]
    fn a_store_with_capacity_starts_empty_and_keeps_its_room() {
        let store = MemoryStore::with_capacity(1_000, 5_000);
        assert_eq!(store.transfers.len(), 0);
        assert!(store.transfers.capacity() >= 5_000);
        assert!(store.transfer_index.is_empty() && store.accounts.is_empty());
        assert_eq!(store.transfer_timestamp_max(), 0);
        for i in [0_u128, 1, 999, 4_999] {
            assert!(store.account(AccountId(i)).is_none(), "placeholder account {i} left");
            assert!(store.transfer(TransferId(i)).is_none(), "placeholder transfer {i} left");
        }
        let mut store = store;
        store.account_insert(&Account {
            id: AccountId(7),
            ledger: 1,
            code: 1,
            timestamp: 1,
            ..Account::default()
        });
        let t = Transfer {
            id: TransferId(0),
            debit_account_id: AccountId(7),
            credit_account_id: AccountId(7),
            timestamp: 2,
            ..Transfer::default()
        };
        store.transfer_insert(&t);
        assert_eq!(store.transfer(TransferId(0)), Some(t));
        assert!(Capacity { accounts: 1_000, transfers: 5_000 }.bytes() >= 5_000 * 128);
        assert_eq!(Capacity::default().bytes(), 0);
    }
}
