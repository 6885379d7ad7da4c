//! Reads: lookups by id and the per-account queries. Reads never change state.

use std::ops::ControlFlow;

use tally_proto::limits::QUERY_RESULTS_MAX;

use super::filter::{AccountFilter, AccountFilterFlags};
use super::store::LedgerStore;
use super::{
    Account, AccountBalance, AccountId, PendingStatus, StateMachine, Transfer, TransferId,
};

impl<S: LedgerStore> StateMachine<S> {
    /// The accounts found, in the order of `ids`; missing ids are skipped.
    pub fn lookup_accounts(&self, ids: &[AccountId]) -> Vec<Account> {
        ids.iter().filter_map(|&id| self.store.account(id)).collect()
    }

    /// The transfers found, in the order of `ids`; missing ids are skipped.
    pub fn lookup_transfers(&self, ids: &[TransferId]) -> Vec<Transfer> {
        ids.iter().filter_map(|&id| self.store.transfer(id)).collect()
    }

    /// The pending transfer `id` with the state of its life (pending, posted, voided or
    /// expired): `None` if no transfer has that id or it is not a pending transfer. A
    /// pending transfer whose timeout has passed reads `Pending` until the expiry sweep
    /// has released it.
    pub fn pending_transfer(&self, id: TransferId) -> Option<(Transfer, PendingStatus)> {
        let t = self.store.transfer(id)?;
        Some((t, self.store.pending_status(t.timestamp)?))
    }

    /// Transfers touching `filter.account_id` that match the filter, in timestamp order
    /// (newest first with `REVERSED`), at most `min(limit, QUERY_RESULTS_MAX)`. An invalid
    /// filter yields nothing.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let mut out = Vec::new();
        self.scan_matching(filter, &mut |transfer| out.push(*transfer));
        out
    }

    /// Visits every transfer from `timestamp_min` on, in timestamp order, until `visit`
    /// breaks (for the node's own background walks, e.g. cross-shard recovery: time
    /// proportional to the transfers visited, whichever accounts they touch).
    pub fn scan_transfers(
        &self,
        timestamp_min: u64,
        visit: &mut dyn FnMut(&Transfer) -> ControlFlow<()>,
    ) {
        self.store.transfers_scan(timestamp_min, visit);
    }

    /// The balances of `filter.account_id` right after each matching transfer. Empty unless
    /// the account exists and keeps `HISTORY`, or if the filter is invalid.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Vec<AccountBalance> {
        let history = self
            .store
            .account(filter.account_id)
            .is_some_and(|account| account.flags.contains(super::AccountFlags::HISTORY));
        let mut out = Vec::new();
        if history {
            self.scan_matching(filter, &mut |transfer| {
                let balance = self.store.balance_at(filter.account_id, transfer.timestamp);
                out.push(balance.expect("a history account has a balance per transfer"));
            });
        }
        out
    }

    fn scan_matching(&self, filter: &AccountFilter, emit: &mut dyn FnMut(&Transfer)) {
        if filter.validate().is_err() {
            return;
        }
        let limit = filter.limit.min(QUERY_RESULTS_MAX) as usize;
        let (timestamp_min, timestamp_max) = filter.timestamp_range();
        let reversed = filter.flags.contains(AccountFilterFlags::REVERSED);
        let mut emitted = 0_usize;
        self.store.account_transfers_scan(
            filter.account_id,
            timestamp_min,
            timestamp_max,
            reversed,
            &mut |timestamp| {
                let transfer = self.store.transfer_at(timestamp).expect("indexed transfers exist");
                if matches(filter, &transfer) {
                    emit(&transfer);
                    emitted += 1;
                }
                if emitted == limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            },
        );
    }
}

fn matches(filter: &AccountFilter, t: &Transfer) -> bool {
    let debit = filter.flags.contains(AccountFilterFlags::DEBITS)
        && t.debit_account_id == filter.account_id;
    let credit = filter.flags.contains(AccountFilterFlags::CREDITS)
        && t.credit_account_id == filter.account_id;
    (debit || credit)
        && (filter.user_data_128 == 0 || filter.user_data_128 == t.user_data_128)
        && (filter.user_data_64 == 0 || filter.user_data_64 == t.user_data_64)
        && (filter.user_data_32 == 0 || filter.user_data_32 == t.user_data_32)
        && (filter.code == 0 || filter.code == t.code)
}
