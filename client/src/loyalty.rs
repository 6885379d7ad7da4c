//! Loyalty operations as ledger transfers (see `shared/DESIGN.md`, "Loyalty operations").
//!
//! | operation | transfers |
//! |---|---|
//! | earn | issuance account -> member (pending with a timeout while a return window runs) |
//! | redeem | member -> merchant, linked with one unit of item stock -> member's item account |
//! | expire | member -> expiry account, *balancing*: at most the points the member has |
//! | swap | member (ledger A) -> pool A, linked with pool B -> member (ledger B), at a quoted rate ([`swap`], `LedgerService.Swap`) |
//!
//! Stock never oversells because the stock account is created with
//! `debits_must_not_exceed_credits`: the unit leg fails when the stock is gone, and the
//! link makes the points leg fail with it.
//!
//! Every id is the caller's idempotency key: derive it from the order or event id upstream,
//! so a retry after a timeout resends the same id and can never apply twice.
//!
//! On a sharded cluster, give the accounts every member shares — merchants, item stock and
//! delivered accounts, the issuance account — **spread** ids
//! ([`tally_proto::routing::spread_account_id`]): they have a slice on every shard, so a
//! redemption or an earn touches only the member's shard instead of running as a
//! cross-shard transaction (`docs/SHARDING.md` §2).

use tally_proto::{uint128, v1};

/// A member's exchange of points of institution A for points of institution B at a quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swap {
    /// The two transfers' ids (idempotency keys; distinct).
    pub give_id: u128,
    /// The receive transfer's id.
    pub receive_id: u128,
    /// The member's account on ledger A (debited `points`).
    pub member_a_account: u128,
    /// Institution A's pool on ledger A (credited).
    pub pool_a_account: u128,
    /// Ledger A (institution A's point currency).
    pub ledger_a: u32,
    /// The give transfer's reason code.
    pub code_a: u16,
    /// Institution B's pool on ledger B (debited the points received).
    pub pool_b_account: u128,
    /// The member's account on ledger B (credited).
    pub member_b_account: u128,
    /// Ledger B.
    pub ledger_b: u32,
    /// The receive transfer's reason code.
    pub code_b: u16,
    /// Points given on ledger A.
    pub points: u128,
    /// Points received per point given: `rate.0 / rate.1`.
    pub rate: (u64, u32),
    /// How the points received are rounded.
    pub rounding: v1::Rounding,
    /// The quote the rate comes from and its expiry (ns since the Unix epoch).
    pub quote_id: u128,
    /// When the quote expires; a swap is refused after it (`TALLY:QuoteExpired`).
    pub quote_expires_at: u64,
}

/// The request of a swap, for [`crate::Client::swap`]: both transfers apply or neither
/// (across shards too); the amount received is computed by the node once and stored.
#[must_use]
pub fn swap(s: &Swap) -> v1::SwapRequest {
    v1::SwapRequest {
        give_id: uint128(s.give_id),
        receive_id: uint128(s.receive_id),
        member_a_account_id: uint128(s.member_a_account),
        pool_a_account_id: uint128(s.pool_a_account),
        ledger_a: s.ledger_a,
        code_a: u32::from(s.code_a),
        pool_b_account_id: uint128(s.pool_b_account),
        member_b_account_id: uint128(s.member_b_account),
        ledger_b: s.ledger_b,
        code_b: u32::from(s.code_b),
        amount: uint128(s.points),
        rate_numerator: s.rate.0,
        rate_denominator: s.rate.1,
        rounding: s.rounding as i32,
        quote_id: uint128(s.quote_id),
        quote_expires_at: s.quote_expires_at,
    }
}

/// Points earned by a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Earn {
    /// The transfer id (idempotency key).
    pub transfer_id: u128,
    /// The institution's issuance account (debited).
    pub issuance_account: u128,
    /// The member's account (credited).
    pub member_account: u128,
    /// Points earned.
    pub points: u128,
    /// The point currency.
    pub ledger: u32,
    /// Reason code (e.g. card spend).
    pub code: u16,
    /// If non-zero, the points stay pending for this many seconds (a return window) and
    /// must be posted, or they expire.
    pub pending_timeout_s: u32,
    /// Upstream reference (e.g. the card transaction id).
    pub reference: u128,
}

/// The transfer that earns the points.
#[must_use]
pub fn earn(e: &Earn) -> v1::Transfer {
    let pending = e.pending_timeout_s != 0;
    v1::Transfer {
        id: uint128(e.transfer_id),
        debit_account_id: uint128(e.issuance_account),
        credit_account_id: uint128(e.member_account),
        amount: uint128(e.points),
        user_data_128: uint128(e.reference),
        timeout: e.pending_timeout_s,
        ledger: e.ledger,
        code: u32::from(e.code),
        flags: if pending { v1::TransferFlag::Pending as u32 } else { 0 },
        ..Default::default()
    }
}

/// One unit of an item, moved from its stock account to the member's item account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockLeg {
    /// The transfer id of the unit leg.
    pub transfer_id: u128,
    /// The item's stock account (debited; must have `debits_must_not_exceed_credits`).
    pub stock_account: u128,
    /// The member's account for this item (credited).
    pub member_item_account: u128,
    /// The item ledger (units, not points).
    pub ledger: u32,
    /// Reason code.
    pub code: u16,
}

/// A redemption in the points mall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redemption {
    /// The transfer id of the points leg.
    pub transfer_id: u128,
    /// The member (debited; must have `debits_must_not_exceed_credits`).
    pub member_account: u128,
    /// The merchant (credited).
    pub merchant_account: u128,
    /// Points spent.
    pub points: u128,
    /// The point currency.
    pub ledger: u32,
    /// Reason code.
    pub code: u16,
    /// The mall's order id.
    pub order_id: u128,
    /// One unit of stock to take with the points, all or nothing.
    pub stock: Option<StockLeg>,
}

/// The transfers of a redemption: the points leg, linked with the stock leg if any.
#[must_use]
pub fn redeem(r: &Redemption) -> Vec<v1::Transfer> {
    let points = v1::Transfer {
        id: uint128(r.transfer_id),
        debit_account_id: uint128(r.member_account),
        credit_account_id: uint128(r.merchant_account),
        amount: uint128(r.points),
        user_data_128: uint128(r.order_id),
        ledger: r.ledger,
        code: u32::from(r.code),
        ..Default::default()
    };
    let Some(stock) = r.stock else { return vec![points] };
    let unit = v1::Transfer {
        id: uint128(stock.transfer_id),
        debit_account_id: uint128(stock.stock_account),
        credit_account_id: uint128(stock.member_item_account),
        amount: uint128(1),
        user_data_128: uint128(r.order_id),
        ledger: stock.ledger,
        code: u32::from(stock.code),
        ..Default::default()
    };
    vec![v1::Transfer { flags: v1::TransferFlag::Linked as u32, ..points }, unit]
}

/// Points expiring from a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expire {
    /// The transfer id.
    pub transfer_id: u128,
    /// The member (debited).
    pub member_account: u128,
    /// The institution's expiry account (credited).
    pub expiry_account: u128,
    /// At most this many points expire; fewer if the member has fewer.
    pub points_max: u128,
    /// The point currency.
    pub ledger: u32,
    /// Reason code.
    pub code: u16,
}

/// The transfer that expires points: balancing, so it never fails for lack of points and
/// never takes more than the member has.
#[must_use]
pub fn expire(e: &Expire) -> v1::Transfer {
    v1::Transfer {
        id: uint128(e.transfer_id),
        debit_account_id: uint128(e.member_account),
        credit_account_id: uint128(e.expiry_account),
        amount: uint128(e.points_max),
        ledger: e.ledger,
        code: u32::from(e.code),
        flags: v1::TransferFlag::BalancingDebit as u32,
        ..Default::default()
    }
}

#[cfg(test)]
impl Redemption {
    pub(crate) fn example() -> Self {
        Self {
            transfer_id: 100,
            member_account: 1,
            merchant_account: 2,
            points: 50,
            ledger: 1,
            code: 10,
            order_id: 7,
            stock: None,
        }
    }
}

#[cfg(test)]
impl StockLeg {
    pub(crate) fn example() -> Self {
        Self { transfer_id: 101, stock_account: 3, member_item_account: 4, ledger: 2, code: 11 }
    }
}

#[cfg(test)]
mod tests {
    use tally_node::convert::{transfer_from_proto, transfer_results_to_proto};
    use tally_node::ledger::{
        Account, AccountFlags, AccountId, CreateTransferStatus as S, MemoryStore, StateMachine,
    };

    use super::*;

    fn account(id: u128, ledger: u32, flags: AccountFlags) -> Account {
        Account { id: AccountId(id), ledger, code: 1, flags, ..Account::default() }
    }

    /// A points mall with member 1 (200 points), merchant 2, an item with 3 units of stock
    /// (account 3, stocked from warehouse 5) and the member's item account 4.
    fn mall() -> StateMachine<MemoryStore> {
        let limited = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        let mut machine = StateMachine::new(MemoryStore::new());
        let accounts = [
            account(1, 1, limited),
            account(2, 1, AccountFlags::empty()),
            account(3, 2, limited),
            account(4, 2, AccountFlags::empty()),
            account(5, 2, AccountFlags::empty()),
            account(6, 1, AccountFlags::empty()),
            account(7, 1, AccountFlags::empty()),
        ];
        machine.create_accounts(1, &accounts).unwrap();
        let issue = Earn {
            transfer_id: 1,
            issuance_account: 6,
            member_account: 1,
            points: 200,
            ledger: 1,
            code: 1,
            pending_timeout_s: 0,
            reference: 0,
        };
        let stock = v1::Transfer {
            id: uint128(2),
            debit_account_id: uint128(5),
            credit_account_id: uint128(3),
            amount: uint128(3),
            ledger: 2,
            code: 1,
            ..Default::default()
        };
        apply(&mut machine, 2, &[earn(&issue), stock]);
        machine
    }

    fn apply(
        machine: &mut StateMachine<MemoryStore>,
        now: u64,
        transfers: &[v1::Transfer],
    ) -> Vec<S> {
        let decoded: Vec<_> =
            transfers.iter().enumerate().map(|(i, t)| transfer_from_proto(i, t).unwrap()).collect();
        let results = machine.create_transfers(now, &decoded).unwrap();
        assert_eq!(transfer_results_to_proto(&results).results.len(), transfers.len());
        results.into_iter().map(|r| r.status).collect()
    }

    /// Five redemptions of an item with three units: three succeed, two fail on stock and
    /// take no points (the link holds), and the stock never goes below zero.
    #[test]
    fn redeem_with_stock_never_oversells() {
        let mut machine = mall();
        let mut statuses = Vec::new();
        for order in 0..5_u128 {
            let leg = StockLeg { transfer_id: 1_000 + order, ..StockLeg::example() };
            let r = Redemption {
                transfer_id: 100 + order,
                points: 10,
                order_id: order,
                stock: Some(leg),
                ..Redemption::example()
            };
            statuses.push(apply(&mut machine, 10 + u64::try_from(order).unwrap(), &redeem(&r)));
        }
        let ok = vec![S::Created, S::Created];
        let sold_out = vec![S::LinkedEventFailed, S::ExceedsCredits];
        assert_eq!(statuses, [ok.clone(), ok.clone(), ok, sold_out.clone(), sold_out]);
        let member = machine.lookup_accounts(&[AccountId(1)])[0];
        assert_eq!(member.debits_posted, 30, "only the three sold units cost points");
        let stock = machine.lookup_accounts(&[AccountId(3)])[0];
        assert_eq!((stock.credits_posted, stock.debits_posted), (3, 3));
        machine.audit().unwrap();
    }

    /// A redemption the member cannot afford takes no stock either.
    #[test]
    fn unaffordable_redemption_takes_no_stock() {
        let mut machine = mall();
        let r =
            Redemption { points: 500, stock: Some(StockLeg::example()), ..Redemption::example() };
        assert_eq!(apply(&mut machine, 10, &redeem(&r)), [S::ExceedsCredits, S::LinkedEventFailed]);
        assert_eq!(machine.lookup_accounts(&[AccountId(3)])[0].debits_posted, 0);
    }

    /// Expiry takes at most what the member has, and never fails for lack of points.
    #[test]
    fn expire_takes_at_most_the_balance() {
        let mut machine = mall();
        let e = Expire {
            transfer_id: 300,
            member_account: 1,
            expiry_account: 7,
            points_max: 1_000,
            ledger: 1,
            code: 3,
        };
        assert_eq!(apply(&mut machine, 10, &[expire(&e)]), [S::Created]);
        let member = machine.lookup_accounts(&[AccountId(1)])[0];
        assert_eq!(member.debits_posted, 200);
        let again = Expire { transfer_id: 301, ..e };
        assert_eq!(apply(&mut machine, 11, &[expire(&again)]), [S::Created]);
        assert_eq!(machine.lookup_transfers(&[tally_node::ledger::TransferId(301)])[0].amount, 0);
    }

    /// Earning with a return window reserves the points; they are not spendable until posted.
    #[test]
    fn pending_earn_is_not_spendable() {
        let mut machine = mall();
        let e = Earn {
            transfer_id: 400,
            issuance_account: 6,
            member_account: 1,
            points: 100,
            ledger: 1,
            code: 1,
            pending_timeout_s: 3_600,
            reference: 9,
        };
        let t = earn(&e);
        assert_eq!(t.flags, v1::TransferFlag::Pending as u32);
        assert_eq!(apply(&mut machine, 10, &[t]), [S::Created]);
        let r = Redemption { points: 250, ..Redemption::example() };
        assert_eq!(apply(&mut machine, 11, &redeem(&r)), [S::ExceedsCredits]);
    }
}
