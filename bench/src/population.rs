//! The loyalty population a load run works on, and the ids of its accounts and transfers.
//!
//! | account | ledger | count | flags | set up with |
//! |---|---|---|---|---|
//! | institution issuance | points | 1 | none | debited by every earn |
//! | member | points | `members` | `debits_must_not_exceed_credits` | `member_points` earned |
//! | merchant | points | `merchants` | none | 0 |
//! | item stock | units | `items` | `debits_must_not_exceed_credits` | `stock` units from supply |
//! | item delivered | units | `items` | none | credited one unit per redemption |
//! | supply | units | 1 | none | debited once per item at setup |
//!
//! A redemption is the points leg (member -> merchant, linked) and the unit leg (item stock
//! -> item delivered): all or nothing, and stock never oversells because the stock account
//! cannot go below zero. Items `0..hot_items` are the flash-sale items.
//!
//! Every id carries a per-run nonce in its high 64 bits (below 2^48: the top 16 bits tag
//! the spread accounts), so runs against a long-lived cluster never collide with earlier
//! runs. Merchants, stock, delivered, issuance and supply accounts are **spread**: one
//! slice per shard, so a redemption or an earn stays on its member's shard.

use serde::Serialize;

/// The point currency.
pub const POINTS_LEDGER: u32 = 1;
/// Item units.
pub const UNITS_LEDGER: u32 = 2;
/// A second institution's points (what a swap receives).
pub const POINTS_B_LEDGER: u32 = 3;
/// Transfer codes of a swap's two transfers.
pub const CODE_SWAP_GIVE: u16 = 40;
/// See [`CODE_SWAP_GIVE`].
pub const CODE_SWAP_RECEIVE: u16 = 41;
/// Points of institution B received per point of A given (`numerator / denominator`),
/// rounded down.
pub const SWAP_RATE: (u64, u32) = (3, 2);
/// Transfer code of a redemption's points leg.
pub const CODE_REDEEM: u16 = 10;
/// Transfer code of a redemption's unit leg.
pub const CODE_DELIVER: u16 = 11;
/// Transfer code of an earn.
pub const CODE_EARN: u16 = 20;
/// Transfer code of the stock set up at the start.
pub const CODE_RESTOCK: u16 = 30;

/// How large the population is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PopulationSpec {
    /// Members (each with one points account).
    pub members: u32,
    /// Merchants (each with one points account).
    pub merchants: u32,
    /// Items (each with a stock and a delivered account).
    pub items: u32,
    /// Items `0..hot_items` are the flash-sale items.
    pub hot_items: u32,
    /// Points each member starts with.
    pub member_points: u64,
    /// Units of stock each item starts with.
    pub stock: u64,
    /// Whether swaps run: each member then also has an account on ledger B, and the two
    /// institutions a pool each.
    pub swaps: bool,
}

impl PopulationSpec {
    /// Checks the sizes are usable.
    ///
    /// # Errors
    /// A message naming the offending size.
    pub fn validate(&self) -> Result<(), String> {
        if self.members == 0 || self.merchants == 0 || self.items == 0 {
            return Err("--members, --merchants and --items must be at least 1".into());
        }
        if self.members > MEMBERS_MAX {
            return Err(format!("--members must be at most {MEMBERS_MAX}"));
        }
        if self.hot_items == 0 || self.hot_items > self.items {
            return Err(format!("--hot-items must be 1..={} (the item count)", self.items));
        }
        Ok(())
    }

    /// Accounts the population has in all.
    #[must_use]
    pub fn accounts(&self) -> u64 {
        let swappers = if self.swaps { u64::from(self.members) + 2 } else { 0 };
        u64::from(self.members)
            + u64::from(self.merchants)
            + 2 * u64::from(self.items)
            + 2
            + swappers
    }
}

/// Upper bound on members: their index must fit the id layout with room to spare.
pub const MEMBERS_MAX: u32 = 1 << 30;

/// What an account is, in the id layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Member = 1,
    Merchant = 2,
    Stock = 3,
    Delivered = 4,
    Issuance = 5,
    Supply = 6,
    MemberB = 7,
    PoolA = 8,
    PoolB = 9,
}

/// The ids of one run's accounts and transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    nonce: u64,
    spread: bool,
}

impl Ids {
    /// Ids under `nonce` (non-zero; e.g. the start time of the run in milliseconds).
    #[must_use]
    pub fn new(nonce: u64) -> Self {
        assert_ne!(nonce, 0, "a zero nonce would give zero ids");
        assert!(nonce < 1 << 48, "the top 16 bits of an id tag spread accounts");
        Self { nonce, spread: true }
    }

    /// The same ids with the shared accounts spread (the default) or ordinary.
    #[must_use]
    pub fn with_spread(self, spread: bool) -> Self {
        Self { spread, ..self }
    }

    /// The run's nonce.
    #[must_use]
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    fn account(&self, kind: Kind, index: u32) -> u128 {
        let id =
            (u128::from(self.nonce) << 64) | (u128::from(kind as u8) << 48) | u128::from(index);
        // Every account a redemption or an earn shares with other members is spread (a
        // slice on every shard), so each redemption and earn touches only its member's
        // shard (`docs/SHARDING.md` §2).
        if matches!(kind, Kind::Member | Kind::MemberB) || !self.spread {
            id
        } else {
            tally_proto::routing::spread_account_id(id)
        }
    }

    /// Member `index`'s points account.
    #[must_use]
    pub fn member(&self, index: u32) -> u128 {
        self.account(Kind::Member, index)
    }

    /// Merchant `index`'s points account.
    #[must_use]
    pub fn merchant(&self, index: u32) -> u128 {
        self.account(Kind::Merchant, index)
    }

    /// Item `index`'s stock account.
    #[must_use]
    pub fn stock(&self, index: u32) -> u128 {
        self.account(Kind::Stock, index)
    }

    /// Item `index`'s delivered account.
    #[must_use]
    pub fn delivered(&self, index: u32) -> u128 {
        self.account(Kind::Delivered, index)
    }

    /// The institution's issuance account.
    #[must_use]
    pub fn issuance(&self) -> u128 {
        self.account(Kind::Issuance, 0)
    }

    /// The members (indexes below `members`) whose two accounts, on ledger A and ledger
    /// B, are on the same data shard (`same`) or on different ones (`!same`), in a cluster
    /// of `shards` data shards (`tally_proto::routing::shard_of`). With one shard every
    /// member's accounts share it.
    ///
    /// # Panics
    /// If `shards` is 0 or above `tally_proto::routing::SHARDS_MAX`.
    #[must_use]
    pub fn swappers(&self, members: u32, shards: u32, same: bool) -> Vec<u32> {
        use tally_proto::routing::shard_of;
        (0..members)
            .filter(|&i| {
                (shard_of(self.member(i), shards) == shard_of(self.member_b(i), shards)) == same
            })
            .collect()
    }

    /// Member `index`'s account at institution B (ledger B; credited by swaps).
    #[must_use]
    pub fn member_b(&self, index: u32) -> u128 {
        self.account(Kind::MemberB, index)
    }

    /// Institution A's swap pool (ledger A; credited by swaps).
    #[must_use]
    pub fn pool_a(&self) -> u128 {
        self.account(Kind::PoolA, 0)
    }

    /// Institution B's swap pool (ledger B; debited by swaps, no balance limit).
    #[must_use]
    pub fn pool_b(&self) -> u128 {
        self.account(Kind::PoolB, 0)
    }

    /// The supply account that stock comes from.
    #[must_use]
    pub fn supply(&self) -> u128 {
        self.account(Kind::Supply, 0)
    }

    /// The first transfer id of operation `seq` (a redemption's points leg, an earn).
    #[must_use]
    pub fn transfer(&self, seq: u64) -> u128 {
        (u128::from(self.nonce) << 64) | (1 << 63) | (u128::from(seq) << 1)
    }

    /// The second transfer id of operation `seq` (a redemption's unit leg).
    #[must_use]
    pub fn transfer_second(&self, seq: u64) -> u128 {
        self.transfer(seq) | 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_accounts_are_spread_unless_asked_otherwise() {
        use tally_proto::routing::is_spread;
        let ids = Ids::new(7);
        let shared = |ids: Ids| {
            [ids.merchant(1), ids.stock(1), ids.delivered(1), ids.issuance(), ids.supply()]
        };
        assert!(shared(ids).iter().all(|&id| is_spread(id)));
        assert!(!is_spread(ids.member(1)));
        assert!(!shared(ids.with_spread(false)).iter().any(|&id| is_spread(id)));
        assert_eq!(ids.with_spread(false).member(1), ids.member(1));
    }

    #[test]
    fn swappers_split_the_members_by_where_their_two_accounts_live() {
        use tally_proto::routing::shard_of;
        let ids = Ids::new(7);
        let (same, cross) = (ids.swappers(4000, 4, true), ids.swappers(4000, 4, false));
        assert_eq!(same.len() + cross.len(), 4000, "every member is on one side");
        // Each member's two accounts share one of 4 shards with probability 1/4.
        assert!((800..1200).contains(&same.len()), "{} of 4000 on one shard", same.len());
        for &i in &same {
            assert_eq!(shard_of(ids.member(i), 4), shard_of(ids.member_b(i), 4));
        }
        for &i in &cross {
            assert_ne!(shard_of(ids.member(i), 4), shard_of(ids.member_b(i), 4));
        }
        assert_eq!(ids.swappers(100, 1, true).len(), 100);
        assert!(ids.swappers(100, 1, false).is_empty());
    }

    #[test]
    fn ids_are_distinct_across_kinds_and_legs() {
        let ids = Ids::new(7);
        let accounts = [
            ids.member(0),
            ids.merchant(0),
            ids.stock(0),
            ids.delivered(0),
            ids.issuance(),
            ids.supply(),
            ids.member(MEMBERS_MAX - 1),
        ];
        let unique: std::collections::HashSet<_> = accounts.iter().collect();
        assert_eq!(unique.len(), accounts.len());
        assert!(accounts.iter().all(|&id| id != 0 && id != u128::MAX));
        assert_ne!(ids.transfer(1), ids.transfer_second(1));
        assert_ne!(ids.transfer_second(1), ids.transfer(2));
        assert_ne!(Ids::new(8).member(0), ids.member(0));
    }

    #[test]
    fn validation_names_the_size() {
        let spec = PopulationSpec {
            members: 10,
            merchants: 1,
            items: 5,
            hot_items: 6,
            member_points: 1,
            stock: 1,
            swaps: false,
        };
        assert!(spec.validate().unwrap_err().contains("--hot-items"));
        assert_eq!(PopulationSpec { hot_items: 5, ..spec }.accounts(), 10 + 1 + 10 + 2);
    }
}
