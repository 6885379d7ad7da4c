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
    /// filter yields nothing. In one go: see [`Self::account_query_start`] for the same
    /// in steps.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        self.account_query_whole(filter, Self::get_account_transfers_step)
    }

    /// `filter`'s account query run to its end in one go, by `step`.
    fn account_query_whole<T>(
        &self,
        filter: &AccountFilter,
        step: fn(&Self, &AccountFilter, &mut AccountQuery, &mut Vec<T>),
    ) -> Vec<T> {
        let mut out = Vec::new();
        let mut query = self.account_query_start(filter);
        while !query.done() {
            step(self, filter, &mut query, &mut out);
        }
        out
    }

    /// Starts `filter`'s account query, to be run in steps of at most
    /// [`QUERY_VISITS_PER_STEP`] transfers visited ([`Self::get_account_transfers_step`],
    /// [`Self::get_account_balances_step`]), each under its own hold of the ledger, so that
    /// a filter matching little of a hot account's history holds the ledger's writes up
    /// for one step at a time, not for the whole walk. The query reads the transfers up
    /// to the newest one now, and transfers never change once created: what is applied
    /// between steps is not read (bar an imported transfer, whose timestamp its importer
    /// chose below that cut, and which a later step may then read: it exists by the
    /// answer's time, so the answer is still linearizable).
    pub fn account_query_start(&self, filter: &AccountFilter) -> AccountQuery {
        let (timestamp_min, timestamp_max) = filter.timestamp_range();
        AccountQuery {
            timestamp_min,
            timestamp_max: timestamp_max.min(self.store.timestamp_last()),
            emitted: 0,
            done: filter.validate().is_err(),
        }
    }

    /// One step of [`Self::account_query_start`]'s query: the matching transfers it finds
    /// are added to `out`.
    pub fn get_account_transfers_step(
        &self,
        filter: &AccountFilter,
        query: &mut AccountQuery,
        out: &mut Vec<Transfer>,
    ) {
        self.scan_matching(filter, query, &mut |transfer| out.push(*transfer));
    }

    /// One step of [`Self::account_query_start`]'s query for balances: the balance right
    /// after each matching transfer is added to `out`; none unless the account exists and
    /// keeps `HISTORY`.
    pub fn get_account_balances_step(
        &self,
        filter: &AccountFilter,
        query: &mut AccountQuery,
        out: &mut Vec<AccountBalance>,
    ) {
        let history = self
            .store
            .account(filter.account_id)
            .is_some_and(|account| account.flags.contains(super::AccountFlags::HISTORY));
        if !history {
            query.done = true;
            return;
        }
        self.scan_matching(filter, query, &mut |transfer| {
            let balance = self.store.balance_at(filter.account_id, transfer.timestamp);
            out.push(balance.expect("a history account has a balance per transfer"));
        });
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
    /// the account exists and keeps `HISTORY`, or if the filter is invalid. In one go.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Vec<AccountBalance> {
        self.account_query_whole(filter, Self::get_account_balances_step)
    }

    /// Visits at most [`QUERY_VISITS_PER_STEP`] of the account's transfers in `query`'s
    /// range, emitting those that match, and narrows the range to what is left.
    fn scan_matching(
        &self,
        filter: &AccountFilter,
        query: &mut AccountQuery,
        emit: &mut dyn FnMut(&Transfer),
    ) {
        if query.done {
            return;
        }
        let limit = filter.limit.min(QUERY_RESULTS_MAX) as usize;
        let reversed = filter.flags.contains(AccountFilterFlags::REVERSED);
        let mut visits = 0_usize;
        let mut last = None;
        self.store.account_transfers_scan(
            filter.account_id,
            query.timestamp_min,
            query.timestamp_max,
            reversed,
            &mut |timestamp| {
                let transfer = self.store.transfer_at(timestamp).expect("indexed transfers exist");
                if matches(filter, &transfer) {
                    emit(&transfer);
                    query.emitted += 1;
                }
                visits += 1;
                last = Some(timestamp);
                let stop = query.emitted == limit || visits == QUERY_VISITS_PER_STEP;
                if stop { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            },
        );
        // Go on after the last transfer visited, if the step stopped at its visits.
        let rest = match last {
            Some(at) if query.emitted < limit && visits == QUERY_VISITS_PER_STEP => {
                if reversed {
                    at.checked_sub(1).map(|max| (query.timestamp_min, max))
                } else {
                    at.checked_add(1).map(|min| (min, query.timestamp_max))
                }
            }
            _ => None,
        };
        match rest {
            Some((min, max)) if min <= max => {
                (query.timestamp_min, query.timestamp_max) = (min, max)
            }
            _ => query.done = true,
        }
    }
}

/// Transfers an account query visits (matching its filter or not) in one step, under one
/// hold of the shard's ledger ([`StateMachine::account_query_start`]): a few ms.
pub const QUERY_VISITS_PER_STEP: usize = 16_384;

/// How far an account query has come: the part of its timestamp range still to walk and
/// the results found so far.
#[derive(Clone, Debug)]
pub struct AccountQuery {
    timestamp_min: u64,
    timestamp_max: u64,
    emitted: usize,
    done: bool,
}

impl AccountQuery {
    /// Whether the query has its answer (its limit reached, or its range walked).
    #[must_use]
    pub fn done(&self) -> bool {
        self.done
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
