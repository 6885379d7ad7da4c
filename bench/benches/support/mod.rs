//! Helpers shared by the criterion benches (each bench uses part of them): a batch of
//! transfers with realistic field values, and the check that work succeeded.

#![allow(dead_code, reason = "each bench binary uses part of this module")]

use tally_bench::workload::Rng;
use tally_node::ledger::{AccountId, Transfer, TransferId};
use tally_node::raft::RequestOutcome;

/// Largest amount in a realistic transfer, in points.
const AMOUNT_MAX: u64 = 1_000_000;

/// A 128-bit id as a client makes them (random), never 0 nor `u128::MAX`.
fn id_random(rng: &mut Rng) -> u128 {
    let id = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    id.clamp(1, u128::MAX - 1)
}

/// `events` single-phase transfers between distinct random accounts of `1..=accounts`
/// (ledger 1), with random 128-bit ids and user data, amounts in `1..=AMOUNT_MAX` and codes
/// in `1..=10`: what a points mall sends, not the small sequential values that encode
/// shorter on the wire.
pub(crate) fn transfers_realistic(rng: &mut Rng, accounts: u64, events: usize) -> Vec<Transfer> {
    assert!(accounts >= 2, "a transfer needs two distinct accounts");
    let transfer = |rng: &mut Rng| {
        let debit = rng.below(accounts);
        let credit = (debit + 1 + rng.below(accounts - 1)) % accounts;
        Transfer {
            id: TransferId(id_random(rng)),
            debit_account_id: AccountId(u128::from(debit + 1)),
            credit_account_id: AccountId(u128::from(credit + 1)),
            amount: u128::from(1 + rng.below(AMOUNT_MAX)),
            user_data_128: id_random(rng),
            user_data_64: rng.next_u64(),
            user_data_32: u32::try_from(rng.below(1 << 32)).expect("below 2^32"),
            ledger: 1,
            code: u16::try_from(1 + rng.below(10)).expect("below 11"),
            ..Transfer::default()
        }
    };
    (0..events).map(|_| transfer(rng)).collect()
}

/// Asserts that a request was applied with `events` outcomes, every one `created` (the
/// kind's `Created` code), so that a bench counts only successful work.
pub(crate) fn assert_created(outcome: &RequestOutcome, events: usize, created: u32) {
    let outcomes = outcome.as_ref().expect("the request is applied, not refused");
    assert_eq!(outcomes.len(), events, "one outcome per event");
    assert!(outcomes.iter().all(|&(_, status)| status == created), "every event created");
}
