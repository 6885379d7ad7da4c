//! Spread accounts (`docs/SHARDING.md` §2): an account whose id carries
//! [`SPREAD_ID_TAG`](tally_proto::routing::SPREAD_ID_TAG) has one **slice**, with the same
//! id and fields, on every data shard. A transfer that names it applies to the slice on the
//! shard of its other account ([`route`](super::route)), so a redemption (member →
//! merchant, item stock → delivered) touches only the member's shard.
//!
//! - **Creation** goes first to the account's home shard (`shard_of(id)`), then, if that
//!   slice was created or exists with the same fields, to every other shard (one request
//!   per shard, all at once): so no slice is ever created with fields that differ from the
//!   home slice's. The result is `created` if any slice was created and the others
//!   existed, `exists` if all existed, else the refusal (the home shard's first).
//! - **Lookups** return the sum of the slices' balances; `get_account_transfers` merges
//!   the slices' histories by timestamp.
//! - **Dry slices.** A slice whose debit would exceed its credits answers `slice_dry`
//!   (the ledger's rule for spread ids; it does not burn the transfer id). The node that
//!   applied it (the shard's leader; a swap's quote forwarded to it with the request) then
//!   **refills** the slice from the others ([`LedgerApi::refill`]: half of each richest
//!   slice's available units, at least what is missing, each move an atomic cross-shard
//!   transaction) and retries the chain (at most [`REFILL_ROUNDS_MAX`] rounds), unless it
//!   is a swap whose quote has expired by then.
//!   When the slices together hold too little, the transfer's id is burnt (a transfer with
//!   that id from an account that never exists: `debit_account_not_found` records the id as
//!   failed) and the client gets `exceeds_credits`, exactly as on one shard: a resend reads
//!   `id_already_failed`. A slice's balance flags hold on every slice, so the sum never
//!   goes below zero: stock never oversells.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::try_join_all;
use tally_proto::routing::shard_of;
use tally_proto::v1;
use tokio::time::Instant;
use tonic::Status;

use super::ledger::LedgerApi;
use super::route;
use super::xshard::{self, INTERNAL_ID_HI};
use crate::ledger::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, AccountId, CreateAccountStatus as AS,
    CreateTransferStatus as TS, Transfer, TransferFlags, TransferId,
};
use crate::storage::keys::ShardId;

/// `slice_dry` on the wire (never sent to a client: see the module's documentation).
#[allow(clippy::cast_possible_wrap)] // 1000 fits.
pub const SLICE_DRY: i32 = TS::SliceDry.code() as i32;
/// Node-only wire status, never sent to a client: the events of a swap (a chain of a part
/// forwarded with [`SWAP_QUOTES_METADATA_KEY`](super::ledger::SWAP_QUOTES_METADATA_KEY))
/// that the shard's leader did not propose again because its quote lapsed while its slice
/// was dry. Not a ledger status.
pub const QUOTE_LAPSED: i32 = 2000;
/// Refill-and-retry rounds a request may spend on its dry slices (each round ends with
/// units moved, or with a slice found sold out); past it the request fails, retryably.
pub const REFILL_ROUNDS_MAX: usize = 16;
/// How long a refill waits when the units it needs are in flight between other slices
/// (pending moves started by other nodes) before the request retries.
pub const REFILL_WAIT: std::time::Duration = std::time::Duration::from_millis(10);
/// Code of the transfers that move units between two slices of a spread account.
pub const REBALANCE_CODE: u16 = u16::MAX - 2;

/// The burn of `t`'s id: `t` unlinked, from [`burn_account`], which the ledger refuses
/// with `debit_account_not_found` and records as failed; it creates nothing.
#[must_use]
pub fn burn_of(t: &Transfer) -> Transfer {
    Transfer { debit_account_id: burn_account(), flags: t.flags - TransferFlags::LINKED, ..*t }
}

/// The account a burn transfer debits: an internal id no account ever has.
#[must_use]
pub fn burn_account() -> AccountId {
    AccountId((u128::from(INTERNAL_ID_HI) << 64) | u128::from(u64::MAX - 1))
}

/// The lock a refill of one spread account holds.
type SliceLock = Arc<tokio::sync::Mutex<()>>;

/// One lock per spread account being refilled (at most one entry per spread account).
#[derive(Debug, Default)]
pub struct Refills {
    locks: parking_lot::Mutex<HashMap<u128, SliceLock>>,
    moves: AtomicU64,
}

impl Refills {
    fn lock_for(&self, account: u128) -> SliceLock {
        self.locks.lock().entry(account).or_default().clone()
    }

    /// A fresh id for a move between slices: unique per process (a counter) and across
    /// nodes and restarts (a random key and the clock). Read by the node, never by the
    /// state machine.
    fn move_id(&self, account: u128, from: ShardId, to: ShardId) -> TransferId {
        use std::hash::BuildHasher as _;
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let key = KEY.get_or_init(std::collections::hash_map::RandomState::new);
        let n = self.moves.fetch_add(1, Ordering::Relaxed);
        let now = super::batcher::cluster_time_now_ns();
        let hi = key.hash_one((account, from.0, to.0, n, now));
        let lo = key.hash_one((n, now, hi));
        TransferId((u128::from(hi) << 64) | u128::from(lo))
    }
}

/// Units a slice holds counting pending credits too (a move between slices is pending on
/// both sides until it is decided): what decides that an account is sold out.
#[must_use]
pub fn held(slice: &Account) -> u128 {
    slice
        .credits_posted
        .saturating_add(slice.credits_pending)
        .saturating_sub(slice.debits_posted.saturating_add(slice.debits_pending))
}

/// Units a slice can still give: credits posted less debits posted and pending.
#[must_use]
pub fn available(slice: &Account) -> u128 {
    slice.credits_posted.saturating_sub(slice.debits_posted.saturating_add(slice.debits_pending))
}

/// The slices' sum: balances added, the other fields the home slice's (or the first one
/// found's).
#[must_use]
pub fn sum(slices: &[(ShardId, Account)], home: ShardId) -> Option<Account> {
    let base = slices.iter().find(|(s, _)| *s == home).or_else(|| slices.first())?.1;
    let add = |f: fn(&Account) -> u128| {
        slices.iter().fold(0_u128, |total, (_, a)| total.saturating_add(f(a)))
    };
    Some(Account {
        debits_pending: add(|a| a.debits_pending),
        debits_posted: add(|a| a.debits_posted),
        credits_pending: add(|a| a.credits_pending),
        credits_posted: add(|a| a.credits_posted),
        ..base
    })
}

/// The linked chains of `transfers`, as index ranges.
fn chains_of(transfers: &[Transfer]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, t) in transfers.iter().enumerate() {
        if !t.flags.contains(TransferFlags::LINKED) || i + 1 == transfers.len() {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out
}

/// Events answered `slice_dry` on one shard, for a client's own transfer (legs and moves
/// of cross-shard transactions are the coordinator's to handle).
fn dry_events(
    transfers: &[Transfer],
    shards: &[Option<ShardId>],
    outcomes: &[(u64, i32)],
) -> Vec<usize> {
    (0..transfers.len())
        .filter(|&i| outcomes[i].1 == SLICE_DRY && shards[i].is_some())
        .filter(|&i| {
            let t = &transfers[i];
            !route::is_internal(t.debit_account_id.0) && !route::is_internal(t.credit_account_id.0)
        })
        .collect()
}

/// What dry requests need from each slice (spread account, shard): the least one of them
/// needs and the total.
#[derive(Debug, Default)]
pub(super) struct Needs(BTreeMap<(u128, ShardId), (u128, u128)>);

impl Needs {
    /// A dry chain (or transaction) needs `amount` from `slice`.
    pub(super) fn add(&mut self, slice: (u128, ShardId), amount: u128) {
        let (least, total) = self.0.entry(slice).or_insert((amount, 0));
        *least = (*least).min(amount);
        *total = total.saturating_add(amount);
    }
}

/// A chain not proposed again after its slice ran dry because its quote (`not_after`, a
/// swap's expiry) had expired by then; its outcomes are left as they were (`slice_dry`
/// among them). The node that took the swap settles it ([`LedgerApi::settle_late_swaps`]);
/// a shard leader that settled a forwarded part answers its events [`QUOTE_LAPSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QuoteLapsed {
    /// Index of the chain's first transfer.
    pub start: usize,
    /// Index after the chain's last transfer.
    pub end: usize,
    /// The cluster time at which it was found expired.
    pub now: u64,
}

impl QuoteLapsed {
    fn of(chain: &Range<usize>, now: u64) -> Self {
        Self { start: chain.start, end: chain.end, now }
    }
}

/// Each event's quote expiry in a request whose every chain is a swap: its chain's first
/// (give) transfer's `user_data_64` ([`super::swap::Swap`]).
#[must_use]
pub fn swap_quotes(transfers: &[Transfer]) -> Vec<u64> {
    chains_of(transfers)
        .into_iter()
        .flat_map(|chain| {
            let at = transfers[chain.start].user_data_64;
            chain.map(move |_| at)
        })
        .collect()
}

/// The cluster time against which a dry swap's quote is checked before it is proposed
/// again (failpoint `spread::retry_clock`: every quote has expired).
fn retry_clock_ns() -> u64 {
    fail::fail_point!("spread::retry_clock", |_| u64::MAX);
    super::batcher::cluster_time_now_ns()
}

impl LedgerApi {
    /// Refills every slice of `needed` at once; adds to `sold_out` those whose account
    /// holds too little.
    pub(super) async fn refill_all(
        &self,
        needed: &Needs,
        sold_out: &mut HashSet<(u128, ShardId)>,
        deadline: Instant,
    ) -> Result<(), Status> {
        let refills = needed.0.iter().map(|(&(account, shard), &(least, total))| async move {
            let refilled = self.refill(account, shard, least, total, deadline).await?;
            Ok::<_, Status>(((account, shard), refilled))
        });
        for (key, refilled) in try_join_all(refills).await? {
            if !refilled {
                sold_out.insert(key);
            }
        }
        Ok(())
    }

    /// Refills the dry slices of `outcomes` and retries their chains until none is dry,
    /// then refuses, with `exceeds_credits`, the transfers whose slices together hold too
    /// little (burning each one's id). `shards` are the events' shards as routed. A refill
    /// lost to concurrent redemptions of the same slice is retried, at most
    /// [`REFILL_ROUNDS_MAX`] rounds within the request's deadline; past either, the request
    /// fails with `TALLY:Timeout` (retryable: nothing dry was burnt; a resend reads
    /// `exists` for what did apply).
    ///
    /// `not_after` is empty or holds, per transfer, the quote expiry of its chain (swaps;
    /// their parts forwarded to other shards' leaders carry the quotes, and come back
    /// [`QUOTE_LAPSED`] for a chain that lapsed there, registered here as lapsed too). A
    /// chain whose quote has expired (by the cluster time, before a refill and again before
    /// it is proposed once more) is left as it is and returned, as a cross-shard one is
    /// decided void then. (The cluster time in a lapsed swap's answer is this node's, read
    /// when it registers a chain a leader found lapsed.)
    pub(super) async fn settle_dry(
        &self,
        transfers: &[Transfer],
        wire: &[v1::Transfer],
        shards: &[Option<ShardId>],
        routed_to: Option<ShardId>,
        not_after: &[u64],
        outcomes: &mut [(u64, i32)],
    ) -> Result<Vec<QuoteLapsed>, Status> {
        let deadline = self.deadline();
        let chains = chains_of(transfers);
        // Each event's chain, by index (one pass; the chains are in order).
        let chain_index: Vec<usize> =
            chains.iter().enumerate().flat_map(|(k, c)| c.clone().map(move |_| k)).collect();
        let chain_of = |i: usize| &chains[chain_index[i]];
        let slice =
            |i: usize| (transfers[i].debit_account_id.0, shards[i].expect("dry on a shard"));
        let mut sold_out: HashSet<(u128, ShardId)> = HashSet::new();
        // Chains whose quote lapsed while their slice was dry, by first index.
        let mut lapsed: BTreeMap<usize, QuoteLapsed> = BTreeMap::new();
        // Takes out of `dry` the events of chains whose quote has expired by now: they
        // are neither refilled for nor proposed again.
        let lapse = |dry: &mut Vec<usize>, lapsed: &mut BTreeMap<usize, QuoteLapsed>| {
            if not_after.is_empty() {
                return;
            }
            let now = retry_clock_ns();
            dry.retain(|&i| {
                let chain = chain_of(i);
                match not_after.get(chain.start) {
                    Some(&at) if now > at => {
                        lapsed.entry(chain.start).or_insert(QuoteLapsed::of(chain, now));
                        false
                    }
                    _ => true,
                }
            });
        };
        for round in 0.. {
            // Chains the shard's leader found lapsed (a part forwarded with quotes).
            for (i, _) in outcomes.iter().enumerate().filter(|(_, o)| o.1 == QUOTE_LAPSED) {
                let chain = chain_of(i);
                let now = super::batcher::cluster_time_now_ns();
                lapsed.entry(chain.start).or_insert(QuoteLapsed::of(chain, now));
            }
            let mut dry: Vec<usize> = dry_events(transfers, shards, outcomes)
                .into_iter()
                .filter(|&i| {
                    !sold_out.contains(&slice(i)) && !lapsed.contains_key(&chain_of(i).start)
                })
                .collect();
            lapse(&mut dry, &mut lapsed);
            if dry.is_empty() {
                break;
            }
            if round == REFILL_ROUNDS_MAX || Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "TALLY:Timeout: {} transfers still find their spread account's slice dry \
                     after {round} refills while other slices hold units (concurrent \
                     redemptions took them); resend the request unchanged",
                    dry.len()
                )));
            }
            // Per slice: the smallest and the total amount its dry chains need from it (a
            // chain may debit the slice more than once: all of them count).
            let mut needed = Needs::default();
            for &i in &dry {
                let chain = chain_of(i);
                let (account, _) = slice(i);
                let amount = transfers[chain.clone()]
                    .iter()
                    .filter(|t| t.debit_account_id.0 == account)
                    .fold(0_u128, |sum, t| sum.saturating_add(t.amount));
                needed.add(slice(i), amount);
            }
            self.refill_all(&needed, &mut sold_out, deadline).await?;
            // The refill took time: a swap is proposed again only if its quote still holds
            // (as a cross-shard one is decided only then).
            lapse(&mut dry, &mut lapsed);
            let retried: BTreeSet<usize> = dry
                .iter()
                .filter(|&&i| !sold_out.contains(&slice(i)))
                .map(|&i| chain_index[i])
                .collect();
            let indexes: Vec<usize> = retried.into_iter().flat_map(|k| chains[k].clone()).collect();
            if indexes.is_empty() {
                break;
            }
            let sub: Vec<Transfer> = indexes.iter().map(|&i| transfers[i]).collect();
            let sub_wire: Vec<v1::Transfer> = indexes.iter().map(|&i| wire[i]).collect();
            let sub_shards: Vec<Option<ShardId>> = indexes.iter().map(|&i| shards[i]).collect();
            let swap_quotes = !not_after.is_empty();
            // Judged by its own first event: each resent chain's first event passed the
            // check on `imported` (it, or an event after it, came back dry), so the
            // request's flag is its own.
            let routing = (&sub_shards[..], routed_to, None);
            let again = self.write_transfers(&sub, &sub_wire, routing, swap_quotes).await?;
            for (&i, outcome) in indexes.iter().zip(again) {
                outcomes[i] = outcome;
            }
        }
        // What is still dry is sold out: the slices together hold less than it needs.
        let dry: Vec<usize> = dry_events(transfers, shards, outcomes)
            .into_iter()
            .filter(|&i| !lapsed.contains_key(&chain_of(i).start))
            .collect();
        let mut burns: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
        for &i in &dry {
            burns.entry(slice(i).1).or_default().push(i);
        }
        let burnt = burns.into_iter().map(|(shard, indexes)| async move {
            // Each burn alone (not linked): a linked burn would read `linked_event_chain_open`
            // or `linked_event_failed`, which burn nothing.
            let events = indexes.iter().map(|&i| burn_of(&transfers[i]));
            let results = self.transfers_on(shard, events.collect(), deadline).await?;
            Ok::<_, Status>(indexes.into_iter().zip(results).collect::<Vec<_>>())
        });
        for (i, (timestamp, status)) in try_join_all(burnt).await?.into_iter().flatten() {
            let answer = if xshard::exists_differently(status) {
                // A resend of the same transfer got through in the meantime.
                TS::Exists
            } else if status == TS::DebitAccountNotFound.code()
                || status == TS::IdAlreadyFailed.code()
            {
                TS::ExceedsCredits
            } else {
                // The id is not burnt: saying `exceeds_credits` would let a resend succeed
                // after the client was told it failed.
                return Err(Status::internal(format!(
                    "TALLY:Internal: transfer {:#x} found its spread account sold out, but its \
                     id could not be marked failed (status {status}); resend the request",
                    transfers[i].id.0
                )));
            };
            outcomes[i] = (timestamp, i32::try_from(answer.code()).expect("small"));
        }
        Ok(lapsed.into_values().collect())
    }

    /// Refills the slice of spread `account` on `shard`, whose dry transfers need `least`
    /// units each at least and `needed` in all: moves half of each richest other slice's
    /// available units (at least what is missing, at most what they hold), each move a
    /// cross-shard transaction from that slice to this one. `true` if a retry may now
    /// succeed (units moved, or the slice already holds `least`); `false` when the slices
    /// together hold less than `least` (sold out) or the account does not limit its debits.
    pub(super) async fn refill(
        &self,
        account: u128,
        shard: ShardId,
        least: u128,
        needed: u128,
        deadline: Instant,
    ) -> Result<bool, Status> {
        // One refill of an account at a time on this node: each one reads the slices as
        // the previous left them (moves are resolved before it returns).
        let lock = self.refills().lock_for(account);
        let _one_at_a_time = lock.lock().await;
        let slices = self.slices(AccountId(account), deadline).await?;
        let Some(target) = slices.iter().find(|(s, _)| *s == shard).map(|(_, a)| *a) else {
            tracing::warn!(account = %format!("{account:#x}"), %shard, "refill: no slice on the dry shard");
            return Ok(false);
        };
        if !target.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
            tracing::warn!(account = %format!("{account:#x}"), %shard, "refill: the slice does not limit its debits");
            return Ok(false);
        }
        let here = available(&target);
        if here >= least {
            return Ok(true);
        }
        let missing = needed - here;
        let mut donors: Vec<(ShardId, u128)> = slices
            .iter()
            .filter(|(s, _)| *s != shard)
            .map(|(s, a)| (*s, available(a)))
            .filter(|(_, units)| *units > 0)
            .collect();
        donors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // Units moving between slices (another node's refill) are pending on both sides:
        // counted here, so they never make the account look sold out.
        let held_now = |slices: &[(ShardId, Account)]| {
            slices.iter().fold(0_u128, |total, (_, a)| total.saturating_add(held(a)))
        };
        if held_now(&slices) < least {
            // The slices are read one shard at a time: a move between two of them can be
            // seen on neither side (its debit leg read after it was created, its credit
            // leg read before). Confirm after the moves in flight have had time to land.
            tokio::time::sleep(REFILL_WAIT).await;
            let again = self.slices(AccountId(account), deadline).await?;
            let held = held_now(&again);
            if held < least {
                tracing::info!(account = %format!("{account:#x}"), %shard, held, least, slices = again.len(), "spread account sold out");
                return Ok(false);
            }
            return Ok(true);
        }
        if donors.iter().fold(here, |total, d| total.saturating_add(d.1)) < least {
            // The units are in flight between other slices: let them land, then retry.
            tokio::time::sleep(REFILL_WAIT).await;
            return Ok(true);
        }
        let mut moves = Vec::new();
        let mut remaining = missing;
        for (donor, units) in donors {
            if remaining == 0 {
                break;
            }
            let take = units.div_ceil(2).max(remaining).min(units);
            moves.push(Transfer {
                id: self.refills().move_id(account, donor, shard),
                debit_account_id: AccountId(account),
                credit_account_id: AccountId(account),
                amount: take,
                user_data_32: donor.0,
                ledger: target.ledger,
                code: REBALANCE_CODE,
                ..Transfer::default()
            });
            remaining -= take.min(remaining);
        }
        let chains: Vec<xshard::Placed<'_>> = moves
            .iter()
            .map(|t| (std::slice::from_ref(t), vec![(ShardId(t.user_data_32), shard)]))
            .collect();
        // A move that finds its giving slice dry is not refilled in turn (this refill
        // holds the account's lock): it is voided, and the next round reads again.
        let outcomes = self.run_transactions(&chains, &[], false, deadline).await?;
        for (t, outcome) in moves.iter().zip(outcomes) {
            tracing::debug!(account = %format!("{account:#x}"), from = t.user_data_32, to = %shard, units = t.amount, status = outcome.results[0].1, "slice refill");
        }
        Ok(true)
    }

    /// Every slice of spread account `id` found, with its shard (linearizable reads).
    pub(super) async fn slices(
        &self,
        id: AccountId,
        deadline: Instant,
    ) -> Result<Vec<(ShardId, Account)>, Status> {
        Ok(self.slices_of(&[id], deadline).await?.remove(&id.0).unwrap_or_default())
    }

    /// The slices of each of the spread accounts `ids` found, with their shards: one
    /// linearizable lookup per shard for all of them (each id asked once).
    async fn slices_of(
        &self,
        ids: &[AccountId],
        deadline: Instant,
    ) -> Result<HashMap<u128, Vec<(ShardId, Account)>>, Status> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let unique = &unique;
        let parts = (1..=self.shard_count()).map(|s| async move {
            let found = self.lookup_accounts_on(ShardId(s), unique.clone(), deadline).await?;
            Ok::<_, Status>(found.into_iter().map(move |a| (ShardId(s), a)))
        });
        let mut by_id: HashMap<u128, Vec<(ShardId, Account)>> = HashMap::new();
        for (shard, account) in try_join_all(parts).await?.into_iter().flatten() {
            by_id.entry(account.id.0).or_default().push((shard, account));
        }
        Ok(by_id)
    }

    /// The sums of the spread accounts `ids`; missing if no slice exists.
    pub(super) async fn spread_sums(
        &self,
        ids: &[AccountId],
        deadline: Instant,
    ) -> Result<HashMap<u128, Account>, Status> {
        let count = self.shard_count();
        Ok(self
            .slices_of(ids, deadline)
            .await?
            .into_iter()
            .filter_map(|(id, slices)| Some((id, sum(&slices, ShardId(shard_of(id, count)))?)))
            .collect())
    }

    /// Creates the spread `accounts` (none linked) on every shard; one (timestamp, wire
    /// status) per account, merged as the module's documentation says.
    pub(super) async fn create_spread(
        &self,
        accounts: &[Account],
        deadline: Instant,
    ) -> Result<Vec<(u64, i32)>, Status> {
        let count = self.shard_count();
        let home = |a: &Account| ShardId(shard_of(a.id.0, count));
        let ok = |status: u32| status == AS::Created.code() || status == AS::Exists.code();
        // 1. The home slices: a request whose fields differ from an existing account is
        // refused here, before any other slice is created with those fields.
        let mut by_home: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
        for (i, account) in accounts.iter().enumerate() {
            by_home.entry(home(account)).or_default().push(i);
        }
        let homes = by_home.iter().map(|(&shard, indexes)| async move {
            let part = indexes.iter().map(|&i| accounts[i]).collect();
            let outcomes = self.accounts_on(shard, part, deadline).await?;
            Ok::<_, Status>(indexes.iter().copied().zip(outcomes).collect::<Vec<_>>())
        });
        let mut at_home = vec![(0, 0); accounts.len()];
        for (i, outcome) in try_join_all(homes).await?.into_iter().flatten() {
            at_home[i] = outcome;
        }
        // 2. The other slices, with the fields the home slice holds (created or equal).
        let parts = (1..=count).map(ShardId).map(|shard| {
            let indexes: Vec<usize> = (0..accounts.len())
                .filter(|&i| ok(at_home[i].1) && home(&accounts[i]) != shard)
                .collect();
            async move {
                if indexes.is_empty() {
                    return Ok(Vec::new());
                }
                let part = indexes.iter().map(|&i| accounts[i]).collect();
                let outcomes = self.accounts_on(shard, part, deadline).await?;
                Ok::<_, Status>(indexes.into_iter().zip(outcomes).collect::<Vec<_>>())
            }
        });
        let mut result: Vec<(u64, u32)> = at_home.clone();
        for (i, (timestamp, status)) in try_join_all(parts).await?.into_iter().flatten() {
            if !ok(status) && ok(result[i].1) {
                result[i] = (timestamp, status);
            } else if status == AS::Created.code() && result[i].1 == AS::Exists.code() {
                result[i] = (at_home[i].0, status);
            }
        }
        Ok(result
            .into_iter()
            .map(|(timestamp, status)| (timestamp, i32::try_from(status).expect("small")))
            .collect())
    }

    /// `get_account_transfers` of spread account `filter.account_id`: every slice's
    /// answer, merged by timestamp (newest first if `reversed`), at most `filter.limit`.
    pub(super) async fn spread_transfers(
        &self,
        filter: &AccountFilter,
        deadline: Instant,
    ) -> Result<Vec<Transfer>, Status> {
        let parts = (1..=self.shard_count())
            .map(|s| self.account_transfers_on(ShardId(s), *filter, deadline));
        let mut all: Vec<Transfer> = try_join_all(parts).await?.into_iter().flatten().collect();
        all.sort_by_key(|t| (t.timestamp, t.id));
        if filter.flags.contains(AccountFilterFlags::REVERSED) {
            all.reverse();
        }
        all.truncate(filter.limit as usize);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(credits: u128, debits: u128, pending: u128) -> Account {
        Account {
            id: AccountId(tally_proto::routing::spread_account_id(9)),
            credits_posted: credits,
            debits_posted: debits,
            debits_pending: pending,
            ledger: 2,
            code: 1,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::default()
        }
    }

    #[test]
    fn a_spread_account_is_the_sum_of_its_slices() {
        let slices = [(ShardId(2), slice(10, 3, 1)), (ShardId(1), slice(5, 5, 0))];
        let total = sum(&slices, ShardId(1)).unwrap();
        assert_eq!((total.credits_posted, total.debits_posted, total.debits_pending), (15, 8, 1));
        assert_eq!(available(&slices[0].1), 6);
        assert_eq!(available(&slices[1].1), 0);
        assert_eq!(available(&slice(1, 3, 0)), 0, "never negative");
        // A move in flight: pending on the giving slice and on the receiving one.
        let receiving = Account { credits_pending: 4, ..slice(0, 0, 0) };
        assert_eq!((available(&receiving), held(&receiving)), (0, 4));
        assert_eq!((available(&slice(4, 0, 4)), held(&slice(4, 0, 4))), (0, 0));
        assert!(sum(&[], ShardId(1)).is_none());
    }

    #[test]
    fn chains_are_cut_after_each_unlinked_transfer() {
        let t = |linked: bool| Transfer {
            flags: if linked { TransferFlags::LINKED } else { TransferFlags::empty() },
            ..Transfer::default()
        };
        assert_eq!(chains_of(&[t(true), t(false), t(false), t(true)]), vec![0..2, 2..3, 3..4]);
    }

    #[test]
    fn the_burn_account_is_internal_and_never_a_transit_or_sink() {
        assert!(route::is_internal(burn_account().0));
        for ledger in [0, 1, u32::MAX] {
            assert_ne!(burn_account(), xshard::transit(ledger));
            assert_ne!(burn_account(), xshard::sink(ledger));
        }
    }
}
