//! Which data shard each event of a request belongs to (`docs/SHARDING.md` §1), as pure
//! functions of the events, the shard count and, for a post or void that names no account,
//! where its pending transfer lives.
//!
//! - An account lives on `shard_of(id)`.
//! - A transfer goes to the shard of its debit account. A post or void with no debit
//!   account goes to the shard of the pending transfer it resolves: an earlier event of the
//!   same request that creates it, else the shard a lookup on every shard found it on
//!   (`pending_shard`), else `shard_of(pending_id)`, where it is refused as not found.
//! - A linked chain stays whole: every event of a chain must belong to the chain's first
//!   event's shard.
//! - A transfer whose debit and credit accounts live on different shards, and a chain that
//!   spans shards, become a cross-shard transaction (`service::xshard`). A linked chain of
//!   accounts spanning shards is refused ([`RouteError`]).

use std::collections::BTreeMap;

use tally_proto::routing::shard_of;

use crate::ledger::{Account, AccountFlags, Transfer, TransferFlags, TransferId};
use crate::storage::keys::ShardId;

/// Why a request cannot be split into single-shard parts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A linked chain whose events belong to two shards.
    #[error(
        "event {index} belongs to shard {found} but its linked chain (from event {first}) to \
         shard {expected}: a chain must stay on one shard"
    )]
    ChainSpansShards {
        /// Index of the chain's first event.
        first: usize,
        /// Index of the event that leaves the chain's shard.
        index: usize,
        /// The chain's shard.
        expected: u32,
        /// The event's shard.
        found: u32,
    },
}

/// Assigns chains: `shard_of_event(i)` for each event, the first event of a chain deciding
/// for the whole chain (an event is linked to the next when `linked(i)`).
fn by_chain(
    events: usize,
    linked: impl Fn(usize) -> bool,
    mut shard_of_event: impl FnMut(usize) -> Result<u32, RouteError>,
) -> Result<Vec<ShardId>, RouteError> {
    let mut out = Vec::with_capacity(events);
    let mut chain: Option<(usize, u32)> = None;
    for index in 0..events {
        let shard = shard_of_event(index)?;
        let (first, expected) = *chain.get_or_insert((index, shard));
        if shard != expected {
            return Err(RouteError::ChainSpansShards { first, index, expected, found: shard });
        }
        out.push(ShardId(expected));
        if !linked(index) {
            chain = None;
        }
    }
    Ok(out)
}

/// The shard of each account.
///
/// # Errors
/// A linked chain of accounts spanning shards.
pub fn account_shards(accounts: &[Account], shards: u32) -> Result<Vec<ShardId>, RouteError> {
    by_chain(
        accounts.len(),
        |i| accounts[i].flags.contains(AccountFlags::LINKED),
        |i| Ok(shard_of(accounts[i].id.0, shards)),
    )
}

/// Pending ids that [`transfer_shards`] must look up on every shard: those of posts and
/// voids that name no debit account and resolve no transfer created earlier in the request.
#[must_use]
pub fn pending_to_find(transfers: &[Transfer], shards: u32) -> Vec<TransferId> {
    if shards == 1 {
        return Vec::new();
    }
    let mut created: Vec<TransferId> = Vec::new();
    let mut find = Vec::new();
    for t in transfers {
        if t.flags.resolves_pending() && t.debit_account_id.0 == 0 {
            if !created.contains(&t.pending_id) && !find.contains(&t.pending_id) {
                find.push(t.pending_id);
            }
        } else {
            created.push(t.id);
        }
    }
    find
}

/// Where each transfer of a request goes: `shards[i]` is the shard of event `i`, or `None`
/// if the event belongs to one of the cross-shard `transactions` (each a range of events:
/// a transfer whose accounts are on two shards, or a linked chain spanning shards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRoutes {
    /// Each event's shard; `None` inside a transaction.
    pub shards: Vec<Option<ShardId>>,
    /// The cross-shard transactions, in request order.
    pub transactions: Vec<std::ops::Range<usize>>,
}

/// The shard of one transfer, or `None` if its accounts are on two shards.
fn transfer_shard(
    transfers: &[Transfer],
    i: usize,
    shards: u32,
    pending_shard: &impl Fn(TransferId) -> Option<u32>,
) -> Option<u32> {
    let t = &transfers[i];
    if t.flags.resolves_pending() {
        if t.debit_account_id.0 != 0 {
            return Some(shard_of(t.debit_account_id.0, shards));
        }
        let earlier = transfers[..i]
            .iter()
            .find(|e| e.id == t.pending_id && !e.flags.resolves_pending())
            .map(|e| shard_of(e.debit_account_id.0, shards));
        let found = earlier.or_else(|| pending_shard(t.pending_id));
        return Some(found.unwrap_or_else(|| shard_of(t.pending_id.0, shards)));
    }
    // Internal accounts (cross-shard transit, sinks) exist on every shard: an event
    // follows its other account, or the routed shard if both are internal.
    let (debit_internal, credit_internal) =
        (is_internal(t.debit_account_id.0), is_internal(t.credit_account_id.0));
    match (debit_internal, credit_internal) {
        (true, true) => {
            return Some(pending_shard(t.id).unwrap_or_else(|| shard_of(t.id.0, shards)));
        }
        (true, false) => return Some(shard_of(t.credit_account_id.0, shards)),
        (false, true) => return Some(shard_of(t.debit_account_id.0, shards)),
        (false, false) => {}
    }
    let debit = shard_of(t.debit_account_id.0, shards);
    if t.debit_account_id.0 != 0 && t.credit_account_id.0 != 0 {
        let credit = shard_of(t.credit_account_id.0, shards);
        if credit != debit {
            return None;
        }
    }
    Some(debit)
}

/// Whether `id` is one of Tally's internal account ids (high half
/// [`INTERNAL_ID_HI`](super::xshard::INTERNAL_ID_HI)).
#[must_use]
pub fn is_internal(id: u128) -> bool {
    super::xshard::is_internal(id)
}

/// Routes the transfers of a request; `pending_shard` answers where the pending transfers
/// of [`pending_to_find`] were found. A linked chain stays whole: on one shard if all its
/// events are, else one cross-shard transaction.
#[must_use]
pub fn transfer_routes(
    transfers: &[Transfer],
    shards: u32,
    pending_shard: impl Fn(TransferId) -> Option<u32>,
) -> TransferRoutes {
    let mut routes =
        TransferRoutes { shards: Vec::with_capacity(transfers.len()), transactions: Vec::new() };
    let mut start = 0;
    while start < transfers.len() {
        let mut end = start;
        while end + 1 < transfers.len() && transfers[end].flags.contains(TransferFlags::LINKED) {
            end += 1;
        }
        let chain: Vec<Option<u32>> =
            (start..=end).map(|i| transfer_shard(transfers, i, shards, &pending_shard)).collect();
        match chain[0] {
            Some(first) if chain.iter().all(|&s| s == Some(first)) => {
                routes.shards.extend(chain.iter().map(|_| Some(ShardId(first))));
            }
            _ => {
                routes.shards.extend(chain.iter().map(|_| None));
                routes.transactions.push(start..end + 1);
            }
        }
        start = end + 1;
    }
    routes
}

/// Event indexes by shard, each list in request order (events without a shard skipped).
#[must_use]
pub fn group(shards: &[Option<ShardId>]) -> BTreeMap<ShardId, Vec<usize>> {
    let mut groups: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (index, shard) in shards.iter().enumerate() {
        if let Some(shard) = shard {
            groups.entry(*shard).or_default().push(index);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::AccountId;

    /// Two account ids on different shards of 4, and one more on the first's shard.
    fn ids() -> (u128, u128, u128) {
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let c = (b + 1..).find(|&i| shard_of(i, 4) == shard_of(a, 4)).unwrap();
        (a, b, c)
    }

    fn transfer(id: u128, debit: u128, credit: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id: TransferId(id),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount: 1,
            ledger: 1,
            code: 1,
            flags,
            ..Transfer::default()
        }
    }

    #[test]
    fn transfers_follow_their_debit_account_and_chains_stay_whole() {
        // A transfer goes to its debit account's shard and a chain on one shard stays
        // there; a transfer across shards, or a chain leaving its shard, becomes one
        // cross-shard transaction spanning the whole chain.
        let (a, b, c) = ids();
        let none = |_| None;
        let (sa, sb) = (Some(ShardId(shard_of(a, 4))), Some(ShardId(shard_of(b, 4))));
        let ok = [
            transfer(10, a, c, TransferFlags::LINKED),
            transfer(11, c, a, TransferFlags::empty()),
            transfer(12, b, b, TransferFlags::empty()),
        ];
        let routes = transfer_routes(&ok, 4, none);
        assert_eq!(routes.shards, vec![sa, sa, sb]);
        assert!(routes.transactions.is_empty());
        let groups = group(&routes.shards);
        assert_eq!(groups, BTreeMap::from([(sa.unwrap(), vec![0, 1]), (sb.unwrap(), vec![2])]));

        let mixed = [
            transfer(10, b, b, TransferFlags::empty()),
            transfer(11, a, b, TransferFlags::empty()),
            transfer(12, a, c, TransferFlags::LINKED),
            transfer(13, b, b, TransferFlags::empty()),
        ];
        let routes = transfer_routes(&mixed, 4, none);
        assert_eq!(routes.shards, vec![sb, None, None, None]);
        assert_eq!(routes.transactions, vec![1..2, 2..4]);
        assert_eq!(group(&routes.shards), BTreeMap::from([(sb.unwrap(), vec![0])]));
        // One shard: everything is shard 1.
        let one = transfer_routes(&mixed, 1, none);
        assert!(one.shards.iter().all(|s| *s == Some(ShardId(1))) && one.transactions.is_empty());
    }

    #[test]
    fn a_post_without_accounts_follows_its_pending_transfer() {
        // Created earlier in the request, found by lookup, or unknown (the pending id's
        // shard, which will answer "not found").
        let (a, b, _) = ids();
        let post = TransferFlags::POST_PENDING_TRANSFER;
        let mut resolve = transfer(21, 0, 0, post);
        resolve.pending_id = TransferId(20);
        let same_request = [transfer(20, b, b, TransferFlags::PENDING), resolve];
        assert_eq!(pending_to_find(&same_request, 4), Vec::<TransferId>::new());
        let sb = Some(ShardId(shard_of(b, 4)));
        assert_eq!(transfer_routes(&same_request, 4, |_| None).shards, vec![sb, sb]);

        let alone = [resolve];
        assert_eq!(pending_to_find(&alone, 4), vec![TransferId(20)]);
        assert_eq!(pending_to_find(&alone, 1), Vec::<TransferId>::new());
        let found = |id: TransferId| (id == TransferId(20)).then_some(shard_of(a, 4));
        let routes = transfer_routes(&alone, 4, found);
        assert_eq!(routes.shards, vec![Some(ShardId(shard_of(a, 4)))]);
        let unknown = transfer_routes(&alone, 4, |_| None);
        assert_eq!(unknown.shards, vec![Some(ShardId(shard_of(20, 4)))]);
    }

    #[test]
    fn account_chains_stay_on_one_shard() {
        let (a, b, c) = ids();
        let account = |id: u128, flags: AccountFlags| Account {
            id: AccountId(id),
            ledger: 1,
            code: 1,
            flags,
            ..Account::default()
        };
        let sa = ShardId(shard_of(a, 4));
        let ok = [account(a, AccountFlags::LINKED), account(c, AccountFlags::empty())];
        assert_eq!(account_shards(&ok, 4).unwrap(), vec![sa, sa]);
        let spans = [account(a, AccountFlags::LINKED), account(b, AccountFlags::empty())];
        assert!(matches!(account_shards(&spans, 4), Err(RouteError::ChainSpansShards { .. })));
    }
}
