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
//!   spans shards, are refused until cross-shard transactions land ([`RouteError`]).

use std::collections::BTreeMap;

use tally_proto::routing::shard_of;

use crate::ledger::{Account, AccountFlags, Transfer, TransferFlags, TransferId};
use crate::storage::keys::ShardId;

/// Why a request cannot be split into single-shard parts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A transfer between accounts of two shards.
    #[error(
        "transfer {index} debits an account of shard {debit} and credits one of shard {credit}: \
         cross-shard transfers are not supported yet (docs/SHARDING.md §3)"
    )]
    CrossShard {
        /// Index of the event in the request.
        index: usize,
        /// The debit account's shard.
        debit: u32,
        /// The credit account's shard.
        credit: u32,
    },
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

/// The shard of each transfer; `pending_shard` answers where the pending transfers of
/// [`pending_to_find`] were found.
///
/// # Errors
/// A cross-shard transfer or a chain spanning shards.
pub fn transfer_shards(
    transfers: &[Transfer],
    shards: u32,
    pending_shard: impl Fn(TransferId) -> Option<u32>,
) -> Result<Vec<ShardId>, RouteError> {
    by_chain(
        transfers.len(),
        |i| transfers[i].flags.contains(TransferFlags::LINKED),
        |i| {
            let t = &transfers[i];
            if t.flags.resolves_pending() {
                if t.debit_account_id.0 != 0 {
                    return Ok(shard_of(t.debit_account_id.0, shards));
                }
                let earlier = transfers[..i]
                    .iter()
                    .find(|e| e.id == t.pending_id && !e.flags.resolves_pending())
                    .map(|e| shard_of(e.debit_account_id.0, shards));
                let found = earlier.or_else(|| pending_shard(t.pending_id));
                return Ok(found.unwrap_or_else(|| shard_of(t.pending_id.0, shards)));
            }
            let debit = shard_of(t.debit_account_id.0, shards);
            if t.debit_account_id.0 != 0 && t.credit_account_id.0 != 0 {
                let credit = shard_of(t.credit_account_id.0, shards);
                if credit != debit {
                    return Err(RouteError::CrossShard { index: i, debit, credit });
                }
            }
            Ok(debit)
        },
    )
}

/// Event indexes by shard, each list in request order.
#[must_use]
pub fn group(shards: &[ShardId]) -> BTreeMap<ShardId, Vec<usize>> {
    let mut groups: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (index, &shard) in shards.iter().enumerate() {
        groups.entry(shard).or_default().push(index);
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
        // A transfer goes to its debit account's shard; a chain on one shard is kept; one
        // leaving its shard, and a transfer across shards, are refused naming the event.
        let (a, b, c) = ids();
        let none = |_| None;
        let ok = [
            transfer(10, a, c, TransferFlags::LINKED),
            transfer(11, c, a, TransferFlags::empty()),
            transfer(12, b, b, TransferFlags::empty()),
        ];
        let shards = transfer_shards(&ok, 4, none).unwrap();
        let (sa, sb) = (ShardId(shard_of(a, 4)), ShardId(shard_of(b, 4)));
        assert_eq!(shards, vec![sa, sa, sb]);
        assert_eq!(group(&shards), BTreeMap::from([(sa, vec![0, 1]), (sb, vec![2])]));

        let across = [transfer(10, a, b, TransferFlags::empty())];
        assert!(matches!(
            transfer_shards(&across, 4, none),
            Err(RouteError::CrossShard { index: 0, .. })
        ));
        let chain =
            [transfer(10, a, c, TransferFlags::LINKED), transfer(11, b, b, TransferFlags::empty())];
        assert!(matches!(
            transfer_shards(&chain, 4, none),
            Err(RouteError::ChainSpansShards { first: 0, index: 1, .. })
        ));
        // One shard: everything is shard 1.
        assert_eq!(transfer_shards(&across, 1, none).unwrap(), vec![ShardId(1)]);
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
        let sb = ShardId(shard_of(b, 4));
        assert_eq!(transfer_shards(&same_request, 4, |_| None).unwrap(), vec![sb, sb]);

        let alone = [resolve];
        assert_eq!(pending_to_find(&alone, 4), vec![TransferId(20)]);
        assert_eq!(pending_to_find(&alone, 1), Vec::<TransferId>::new());
        let found = |id: TransferId| (id == TransferId(20)).then_some(shard_of(a, 4));
        assert_eq!(transfer_shards(&alone, 4, found).unwrap(), vec![ShardId(shard_of(a, 4))]);
        assert_eq!(transfer_shards(&alone, 4, |_| None).unwrap(), vec![ShardId(shard_of(20, 4))]);
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
