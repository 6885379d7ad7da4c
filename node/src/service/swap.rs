//! Swaps between institutions (`docs/SHARDING.md` §4): a member gives points on ledger A
//! to institution A's pool and receives points on ledger B from institution B's pool, at a
//! quoted rate — two transfers linked into one chain, so both apply or neither. When their
//! accounts live on several shards the chain is a cross-shard transaction (four legs
//! through the transit accounts).
//!
//! **Quote expiry.** The node that takes the swap refuses it (`TALLY:QuoteExpired`) when
//! less than [`QUOTE_TIME_LEFT_MIN_NS`] of the quote is left by its clock; for a
//! cross-shard swap it checks again just before posting the decision and decides void if
//! the quote has expired by then. So a swap is never *decided* after its quote expired by
//! the deciding node's clock; its commit lands at most one Raft commit later. A swap on
//! one shard that meets a dry slice of a spread pool is checked again before the refill
//! and before it is proposed once more, and if its quote has expired it is settled as a
//! late swap (below), never proposed again. A resend of an applied swap reads `EXISTS`,
//! before or after the expiry.
//!
//! A refusal for the quote is final, also while an earlier attempt of the same swap (one
//! its client gave up on and resent) may still be in flight on some node: a swap on one
//! shard first has its give transfer's id burnt through that shard's log (an attempt
//! applied before is found and answered `EXISTS`; one applied after meets
//! `id_already_failed` and applies nothing); a cross-shard swap runs its transaction, the
//! same for every attempt, with the margin taken off its expiry, so that it is decided
//! void unless an earlier attempt's decision posted it (`LedgerApi::settle_late_swaps`).
//!
//! The amount received is computed here, once, with the request's rounding rule, and
//! stored as the receive transfer's amount; the rate, rounding, quote id and expiry are
//! stored in the transfers' user data (see `SwapRequest` in `ledger.proto`), so a lookup
//! shows exactly what was agreed. Nothing in the state machine reads a clock: the quote is
//! checked by the node, outside it.

use tally_proto::v1;
use tonic::Status;

use crate::ledger::{AccountId, Transfer, TransferFlags, TransferId};

/// A quote must have at least this long left for a swap to start.
pub const QUOTE_TIME_LEFT_MIN_NS: u64 = 1_000_000_000;

/// `amount × numerator / denominator`, rounded by `rounding`; `None` if it overflows
/// 128 bits.
#[must_use]
pub fn received(
    amount: u128,
    numerator: u64,
    denominator: u32,
    rounding: v1::Rounding,
) -> Option<u128> {
    let product = amount.checked_mul(u128::from(numerator))?;
    let denominator = u128::from(denominator);
    let (quotient, remainder) = (product / denominator, product % denominator);
    let up = match rounding {
        v1::Rounding::Unspecified | v1::Rounding::Down => false,
        v1::Rounding::Up => remainder != 0,
        // The remainder is below the 32-bit denominator: doubling it cannot overflow.
        v1::Rounding::HalfEven => match (remainder * 2).cmp(&denominator) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => quotient % 2 == 1,
            std::cmp::Ordering::Greater => true,
        },
    };
    if up { quotient.checked_add(1) } else { Some(quotient) }
}

fn invalid(reason: &str) -> Status {
    Status::invalid_argument(format!("TALLY:InvalidRequest: swap: {reason}"))
}

/// The refusal of a swap whose quote has expired (or, when it starts, has less than
/// [`QUOTE_TIME_LEFT_MIN_NS`] left).
#[must_use]
pub fn quote_expired(expires_at: u64, now: u64) -> Status {
    Status::failed_precondition(format!(
        "TALLY:QuoteExpired: the quote expires at {expires_at} ns and the cluster time is {now} \
         ns; a swap needs at least {QUOTE_TIME_LEFT_MIN_NS} ns of its quote left: get a new \
         quote (and new transfer ids)"
    ))
}

/// A validated swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swap {
    /// The give transfer (linked) and the receive transfer, in that order.
    pub transfers: [Transfer; 2],
    /// When the quote expires (ns, cluster time).
    pub expires_at: u64,
}

impl Swap {
    /// Validates `r`: the two transfers it makes.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming the field: a missing id or account, equal ids, an amount
    /// or a rate of zero, no rounding rule, or an amount received of zero or beyond 128
    /// bits. (Accounts, ledgers and codes are checked by the ledger, per transfer.)
    pub fn from_request(r: &v1::SwapRequest) -> Result<Self, Status> {
        let id = |field: Option<tally_proto::Uint128>, name: &str| {
            let value = tally_proto::u128_of(field);
            if value == 0 { Err(invalid(&format!("{name} is required"))) } else { Ok(value) }
        };
        let (give_id, receive_id) = (id(r.give_id, "give_id")?, id(r.receive_id, "receive_id")?);
        if give_id == receive_id {
            return Err(invalid("give_id and receive_id must differ"));
        }
        for (name, id) in [("give_id", give_id), ("receive_id", receive_id)] {
            if let Some(why) = super::ledger::reserved_transfer_id(id) {
                return Err(invalid(&format!("{name}: {why}")));
            }
        }
        let member_a = id(r.member_a_account_id, "member_a_account_id")?;
        let pool_a = id(r.pool_a_account_id, "pool_a_account_id")?;
        let pool_b = id(r.pool_b_account_id, "pool_b_account_id")?;
        let member_b = id(r.member_b_account_id, "member_b_account_id")?;
        let amount = id(r.amount, "amount (above 0)")?;
        if r.rate_numerator == 0 || r.rate_denominator == 0 {
            return Err(invalid("rate_numerator and rate_denominator must be above 0"));
        }
        let rounding = match v1::Rounding::try_from(r.rounding) {
            Ok(v1::Rounding::Unspecified) | Err(_) => {
                return Err(invalid(&format!(
                    "rounding must be DOWN, UP or HALF_EVEN, not {}",
                    r.rounding
                )));
            }
            Ok(rounding) => rounding,
        };
        let amount_b = received(amount, r.rate_numerator, r.rate_denominator, rounding)
            .ok_or_else(|| invalid("amount × rate_numerator exceeds 128 bits"))?;
        if amount_b == 0 {
            return Err(invalid("the amount received rounds to 0"));
        }
        let code = |value: u32, name: &str| {
            u16::try_from(value).map_err(|_| invalid(&format!("{name} must fit 16 bits")))
        };
        let (code_a, code_b) = (code(r.code_a, "code_a")?, code(r.code_b, "code_b")?);
        for (side, code, ledger) in [("a", code_a, r.ledger_a), ("b", code_b, r.ledger_b)] {
            if let Some(why) = super::ledger::reserved_code_or_ledger(code, ledger) {
                return Err(invalid(&format!("side {side}: {why}")));
            }
        }
        let quote_id = tally_proto::u128_of(r.quote_id);
        let give = Transfer {
            id: TransferId(give_id),
            debit_account_id: AccountId(member_a),
            credit_account_id: AccountId(pool_a),
            amount,
            user_data_128: quote_id,
            user_data_64: r.quote_expires_at,
            user_data_32: u32::try_from(i32::from(rounding)).expect("positive"),
            ledger: r.ledger_a,
            code: code_a,
            flags: TransferFlags::LINKED,
            ..Transfer::default()
        };
        let receive = Transfer {
            id: TransferId(receive_id),
            debit_account_id: AccountId(pool_b),
            credit_account_id: AccountId(member_b),
            amount: amount_b,
            user_data_128: quote_id,
            user_data_64: r.rate_numerator,
            user_data_32: r.rate_denominator,
            ledger: r.ledger_b,
            code: code_b,
            ..Transfer::default()
        };
        Ok(Self { transfers: [give, receive], expires_at: r.quote_expires_at })
    }

    /// Whether a swap may start at cluster time `now`.
    ///
    /// # Errors
    /// `TALLY:QuoteExpired`: the quote has less than [`QUOTE_TIME_LEFT_MIN_NS`] left.
    pub fn check_quote(&self, now: u64) -> Result<(), Status> {
        if self.expires_at.saturating_sub(now) < QUOTE_TIME_LEFT_MIN_NS {
            return Err(quote_expired(self.expires_at, now));
        }
        Ok(())
    }

    /// Whether `found` (a lookup of the two ids) is this swap, already applied.
    #[must_use]
    pub fn applied_as(&self, found: &[Transfer]) -> bool {
        let same = |a: &Transfer, b: &Transfer| Transfer { timestamp: 0, ..*a } == *b;
        found.len() == 2
            && same(&found[0], &self.transfers[0])
            && same(&found[1], &self.transfers[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::Rounding::{Down, HalfEven, Up};

    #[test]
    fn rounding_rules() {
        // 5 × 1/2 = 2.5: down 2, up 3, half-even 2 (even); 7 × 1/2 = 3.5: half-even 4.
        assert_eq!(received(5, 1, 2, Down), Some(2));
        assert_eq!(received(5, 1, 2, Up), Some(3));
        assert_eq!(received(5, 1, 2, HalfEven), Some(2));
        assert_eq!(received(7, 1, 2, HalfEven), Some(4));
        // 10 × 2/3 = 6.67: down 6, up 7, half-even 7; 10 × 1/3 = 3.33: half-even 3.
        assert_eq!(received(10, 2, 3, Down), Some(6));
        assert_eq!(received(10, 2, 3, Up), Some(7));
        assert_eq!(received(10, 2, 3, HalfEven), Some(7));
        assert_eq!(received(10, 1, 3, HalfEven), Some(3));
        // Exact: every rule agrees.
        for rule in [Down, Up, HalfEven] {
            assert_eq!(received(100, 3, 2, rule), Some(150));
        }
        // Overflow is reported, not wrapped.
        assert_eq!(received(u128::MAX, 2, 1, Down), None);
        assert_eq!(
            received(u128::MAX, 1, u32::MAX, HalfEven),
            Some(u128::MAX / u128::from(u32::MAX))
        );
    }

    fn request() -> v1::SwapRequest {
        let u = tally_proto::uint128;
        v1::SwapRequest {
            give_id: u(1),
            receive_id: u(2),
            member_a_account_id: u(10),
            pool_a_account_id: u(11),
            ledger_a: 1,
            code_a: 5,
            pool_b_account_id: u(20),
            member_b_account_id: u(21),
            ledger_b: 2,
            code_b: 6,
            amount: u(100),
            rate_numerator: 3,
            rate_denominator: 2,
            rounding: HalfEven as i32,
            quote_id: u(77),
            quote_expires_at: 50_000_000_000,
        }
    }

    #[test]
    fn a_swap_is_a_linked_pair_that_stores_its_quote() {
        let swap = Swap::from_request(&request()).unwrap();
        let [give, receive] = swap.transfers;
        assert_eq!((give.debit_account_id.0, give.credit_account_id.0, give.amount), (10, 11, 100));
        assert_eq!((give.ledger, give.code, give.flags), (1, 5, TransferFlags::LINKED));
        assert_eq!(
            (give.user_data_128, give.user_data_64, give.user_data_32),
            (77, 50_000_000_000, 3)
        );
        assert_eq!((receive.debit_account_id.0, receive.credit_account_id.0), (20, 21));
        assert_eq!((receive.amount, receive.ledger, receive.code), (150, 2, 6));
        assert_eq!((receive.user_data_128, receive.user_data_64, receive.user_data_32), (77, 3, 2));
        assert!(receive.flags.is_empty());
        // A swap needs a second of its quote left to start.
        assert!(swap.check_quote(48_900_000_000).is_ok());
        let late = swap.check_quote(49_500_000_000).unwrap_err();
        assert!(late.message().contains("TALLY:QuoteExpired"), "{late}");
        // A lookup of the applied swap is recognised; another swap's is not.
        let stored = [Transfer { timestamp: 9, ..give }, Transfer { timestamp: 9, ..receive }];
        assert!(swap.applied_as(&stored));
        assert!(!swap.applied_as(&[Transfer { amount: 1, ..stored[0] }, stored[1]]));
        assert!(!swap.applied_as(&stored[..1]));
    }

    /// A change that makes a request invalid.
    type Breaker = fn(&mut v1::SwapRequest);

    #[test]
    fn bad_swaps_are_refused_naming_the_field() {
        let cases: [(Breaker, &str); 8] = [
            (|r| r.give_id = None, "give_id is required"),
            (|r| r.receive_id = r.give_id, "must differ"),
            (|r| r.pool_b_account_id = None, "pool_b_account_id"),
            (|r| r.rate_denominator = 0, "rate_denominator"),
            (|r| r.rounding = 0, "rounding"),
            (
                |r| {
                    (r.amount, r.rate_numerator, r.rate_denominator) =
                        (tally_proto::uint128(1), 1, 3);
                    r.rounding = Down as i32;
                },
                "rounds to 0",
            ),
            (|r| r.code_b = 70_000, "code_b"),
            (|r| r.receive_id = tally_proto::uint128(0xFFFF_FFFE << 96 | 5), "receive_id: id"),
        ];
        for (i, (break_it, expected)) in cases.into_iter().enumerate() {
            let mut r = request();
            break_it(&mut r);
            let e = Swap::from_request(&r).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "case {i}");
            assert!(e.message().contains(expected), "case {i}: {e}");
        }
    }
}
