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

use std::collections::{BTreeMap, HashMap, HashSet};

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
    let floating = |t: &Transfer| t.flags.resolves_pending() && names_home(t).is_none();
    if !transfers.iter().any(floating) {
        // The common request: nothing to hash.
        return Vec::new();
    }
    // Sets, not lists: a request of 8,190 posts would otherwise cost 8,190² comparisons.
    let mut created: HashSet<TransferId> = HashSet::new();
    let mut listed: HashSet<TransferId> = HashSet::new();
    let mut find = Vec::new();
    for t in transfers {
        if floating(t) {
            if !created.contains(&t.pending_id) && listed.insert(t.pending_id) {
                find.push(t.pending_id);
            }
        } else {
            created.insert(t.id);
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

/// Whether account `id` exists on every shard (an internal account, or a spread
/// account's slices): a transfer's side on such an account *floats* to the shard of its
/// other side.
#[must_use]
pub fn floats(id: u128) -> bool {
    is_internal(id) || tally_proto::routing::is_spread(id)
}

/// Where one event of a chain goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lands {
    /// On this shard.
    On(u32),
    /// Its accounts are on two shards.
    Across,
    /// Both its accounts float: wherever its chain goes.
    Floats,
}

/// The shards of a transfer's debit and credit sides (`None` for a side that floats and
/// has no other side to follow).
fn sides(t: &Transfer, shards: u32) -> (Option<u32>, Option<u32>) {
    let at = |id: u128| (!floats(id)).then(|| shard_of(id, shards));
    let (debit, credit) = (at(t.debit_account_id.0), at(t.credit_account_id.0));
    (debit.or(credit), credit.or(debit))
}

/// The first account a transfer names that lives on one shard (not zero, not floating).
fn names_home(t: &Transfer) -> Option<u128> {
    [t.debit_account_id.0, t.credit_account_id.0].into_iter().find(|&id| id != 0 && !floats(id))
}

/// For each event that resolves a pending transfer, the latest earlier event of the
/// request that creates a transfer with its pending id (one that resolves none); `None`
/// for every other event. Empty when no event resolves a pending transfer.
fn creators(transfers: &[Transfer]) -> Vec<Option<usize>> {
    if !transfers.iter().any(|t| t.flags.resolves_pending()) {
        return Vec::new();
    }
    let mut latest: HashMap<TransferId, usize> = HashMap::new();
    transfers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.flags.resolves_pending() {
                latest.get(&t.pending_id).copied()
            } else {
                latest.insert(t.id, i);
                None
            }
        })
        .collect()
}

/// The shard of event `i`; `assigned` holds the shards of the events of earlier chains,
/// `creators` what [`creators`] found for the request.
fn transfer_lands(
    transfers: &[Transfer],
    i: usize,
    shards: u32,
    assigned: &[Option<ShardId>],
    creators: &[Option<usize>],
    pending_shard: &impl Fn(TransferId) -> Option<u32>,
) -> Lands {
    let t = &transfers[i];
    if t.flags.resolves_pending() {
        // A post or void goes where its pending transfer is: its accounts' shard if it
        // names one that does not float, else where an earlier event of the request that
        // creates it went (or goes, in this chain), else where a lookup found it, else the
        // pending id's shard (which answers not found).
        if let Some(id) = names_home(t) {
            return Lands::On(shard_of(id, shards));
        }
        let found = match creators[i] {
            Some(j) if j < assigned.len() => assigned[j].map(|s| Lands::On(s.0)),
            Some(j) => {
                match transfer_lands(transfers, j, shards, assigned, creators, pending_shard) {
                    Lands::Across => None,
                    lands => Some(lands),
                }
            }
            None => None,
        };
        return found.unwrap_or_else(|| {
            Lands::On(
                pending_shard(t.pending_id).unwrap_or_else(|| shard_of(t.pending_id.0, shards)),
            )
        });
    }
    match sides(t, shards) {
        (Some(debit), Some(credit)) if debit == credit => Lands::On(debit),
        (Some(_), Some(_)) => Lands::Across,
        _ => Lands::Floats,
    }
}

/// Whether `id` is one of Tally's internal account ids (high half
/// [`INTERNAL_ID_HI`](super::xshard::INTERNAL_ID_HI)).
#[must_use]
pub fn is_internal(id: u128) -> bool {
    super::xshard::is_internal(id)
}

/// The shard of a chain whose every account floats: its first transfer id's shard, for a
/// client's request however it was routed (so a resend routed differently lands on the
/// same shard, where the id is already taken); a node's own events between internal
/// accounts (legs, aliases, markers, burns, sent routed) go where they were sent.
fn floating_home(
    chain: &[Transfer],
    shards: u32,
    pending_shard: &impl Fn(TransferId) -> Option<u32>,
) -> u32 {
    let internal = chain
        .iter()
        .any(|t| is_internal(t.debit_account_id.0) || is_internal(t.credit_account_id.0));
    let sent_to = if internal { pending_shard(chain[0].id) } else { None };
    sent_to.unwrap_or_else(|| shard_of(chain[0].id.0, shards))
}

/// The (debit, credit) shard of each transfer of a cross-shard `chain`: each account's
/// own shard; a floating side follows its transfer's other side, and a transfer whose
/// both sides float goes to the chain's first shard (that of its first account that does
/// not float). A pure function of the chain, so a resend plans the same legs.
#[must_use]
pub fn placement(chain: &[Transfer], shards: u32) -> Vec<(ShardId, ShardId)> {
    let home = chain
        .iter()
        .flat_map(|t| [t.debit_account_id.0, t.credit_account_id.0])
        .find(|&id| !floats(id))
        .map_or_else(|| shard_of(chain[0].id.0, shards), |id| shard_of(id, shards));
    chain
        .iter()
        .map(|t| {
            let (debit, credit) = sides(t, shards);
            (ShardId(debit.unwrap_or(home)), ShardId(credit.unwrap_or(home)))
        })
        .collect()
}

/// Routes the transfers of a request; `pending_shard` answers where the pending transfers
/// of [`pending_to_find`] were found. A linked chain stays whole: on one shard if all its
/// events are (a transfer whose accounts all float follows its chain), else one
/// cross-shard transaction.
#[must_use]
pub fn transfer_routes(
    transfers: &[Transfer],
    shards: u32,
    pending_shard: impl Fn(TransferId) -> Option<u32>,
) -> TransferRoutes {
    let mut routes =
        TransferRoutes { shards: Vec::with_capacity(transfers.len()), transactions: Vec::new() };
    let creators = creators(transfers);
    let mut start = 0;
    while start < transfers.len() {
        let mut end = start;
        while end + 1 < transfers.len() && transfers[end].flags.contains(TransferFlags::LINKED) {
            end += 1;
        }
        let chain: Vec<Lands> = (start..=end)
            .map(|i| {
                transfer_lands(transfers, i, shards, &routes.shards, &creators, &pending_shard)
            })
            .collect();
        let mut on = chain.iter().filter_map(|l| match l {
            Lands::On(shard) => Some(*shard),
            _ => None,
        });
        let first = on.next();
        let across = chain.contains(&Lands::Across) || on.any(|s| Some(s) != first);
        if across {
            routes.shards.extend(chain.iter().map(|_| None));
            routes.transactions.push(start..end + 1);
        } else {
            let shard = first
                .unwrap_or_else(|| floating_home(&transfers[start..=end], shards, &pending_shard));
            routes.shards.extend(chain.iter().map(|_| Some(ShardId(shard))));
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

        // The latest earlier creation of the id counts (the ledger refuses the second as
        // `exists`, the post follows it all the same); a post before any creation and a
        // post of a post's id are looked up; one lookup per pending id.
        let mut resolve_post = transfer(23, 0, 0, post);
        resolve_post.pending_id = TransferId(21);
        let twice = [
            resolve,
            transfer(20, a, a, TransferFlags::PENDING),
            transfer(20, b, b, TransferFlags::PENDING),
            resolve,
            resolve_post,
            resolve_post,
        ];
        assert_eq!(pending_to_find(&twice, 4), vec![TransferId(20), TransferId(21)]);
        let lookup = |id: TransferId| Some(shard_of(id.0 + 1000, 4));
        let routes = transfer_routes(&twice, 4, lookup);
        let (looked_up, at) = (lookup(TransferId(20)), lookup(TransferId(21)));
        let expected: Vec<Option<u32>> = vec![
            looked_up,
            Some(shard_of(a, 4)),
            Some(shard_of(b, 4)),
            Some(shard_of(b, 4)),
            at,
            at,
        ];
        assert_eq!(routes.shards, expected.into_iter().map(|s| s.map(ShardId)).collect::<Vec<_>>());
    }

    #[test]
    fn a_spread_account_follows_its_other_account() {
        // Member a, member b on another shard; merchant, stock and delivered spread.
        use tally_proto::routing::spread_account_id;
        let (a, b, _) = ids();
        let (merchant, stock, delivered) =
            (spread_account_id(1), spread_account_id(2), spread_account_id(3));
        let (sa, sb) = (ShardId(shard_of(a, 4)), ShardId(shard_of(b, 4)));
        let none = |_| None;
        // A redemption (points leg linked with the unit leg) stays on the member's shard,
        // whatever the spread ids' own shards are; so does a refund from the merchant.
        let redeem = [
            transfer(10, a, merchant, TransferFlags::LINKED),
            transfer(11, stock, delivered, TransferFlags::empty()),
            transfer(12, merchant, b, TransferFlags::empty()),
        ];
        let routes = transfer_routes(&redeem, 4, none);
        assert_eq!(routes.shards, vec![Some(sa), Some(sa), Some(sb)]);
        assert!(routes.transactions.is_empty());
        // Two spread accounts alone: the transfer id's shard.
        let alone = [transfer(13, stock, delivered, TransferFlags::empty())];
        assert_eq!(transfer_routes(&alone, 4, none).shards, vec![Some(ShardId(shard_of(13, 4)))]);
        // A chain over two members' shards is one transaction; each spread side is placed
        // beside its transfer's member, a transfer between spread accounts on the chain's
        // first shard.
        let chain = [
            transfer(14, a, merchant, TransferFlags::LINKED),
            transfer(15, stock, delivered, TransferFlags::LINKED),
            transfer(16, merchant, b, TransferFlags::empty()),
        ];
        let routes = transfer_routes(&chain, 4, none);
        assert_eq!(routes.transactions, vec![0..3]);
        assert_eq!(placement(&chain, 4), vec![(sa, sa), (sa, sa), (sb, sb)]);
        // A post names no account: it follows its pending transfer to the member's shard.
        let mut post = transfer(18, 0, 0, TransferFlags::POST_PENDING_TRANSFER);
        post.pending_id = TransferId(17);
        let two_phase = [transfer(17, merchant, b, TransferFlags::PENDING), post];
        assert_eq!(transfer_routes(&two_phase, 4, none).shards, vec![Some(sb), Some(sb)]);
        // A transfer between spread accounts lands on its id's shard also in a request
        // routed elsewhere (a resend routed differently must find its id taken)...
        let routed_elsewhere = |_| Some(shard_of(13, 4) % 4 + 1);
        let routes = transfer_routes(&alone, 4, routed_elsewhere);
        assert_eq!(routes.shards, vec![Some(ShardId(shard_of(13, 4)))]);
        // ... and a post that names only spread accounts is looked up, or follows the
        // event that created its pending transfer, wherever that went.
        let mut post_spread = transfer(20, stock, delivered, TransferFlags::POST_PENDING_TRANSFER);
        post_spread.pending_id = TransferId(19);
        assert_eq!(pending_to_find(&[post_spread], 4), vec![TransferId(19)]);
        let pending = transfer(19, stock, delivered, TransferFlags::PENDING);
        let request = [transfer(18, a, merchant, TransferFlags::LINKED), pending, post_spread];
        assert!(pending_to_find(&request, 4).is_empty());
        assert_eq!(transfer_routes(&request, 4, none).shards, vec![Some(sa); 3]);
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
