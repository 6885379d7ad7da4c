//! Invariant checks over accounts and transfers read back from a cluster.
//!
//! Input is plain `tally.v1` data: the accounts (lookups), the transfers the client saw
//! acknowledged as created, and the transfers found when reading them back. Output is one
//! verdict per invariant; a violation carries the smallest piece of evidence that proves it.

use std::collections::BTreeMap;
use std::fmt;

use tally_proto::{u128_of, v1};

/// One broken invariant and its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// I1: a ledger's debits and credits differ (posted or pending).
    Conservation {
        /// The ledger.
        ledger: u32,
        /// "posted" or "pending".
        phase: &'static str,
        /// Σ debits.
        debits: u128,
        /// Σ credits.
        credits: u128,
    },
    /// I2: an account breaks its own balance flag.
    Overdraft {
        /// The account id.
        account: u128,
        /// debits_pending + debits_posted (or credits, for the mirror flag).
        used: u128,
        /// credits_posted (or debits_posted).
        limit: u128,
    },
    /// I3: a transfer acknowledged as created is missing.
    Lost {
        /// The transfer id.
        transfer: u128,
    },
    /// I4: a transfer id is stored more than once.
    Duplicated {
        /// The transfer id.
        transfer: u128,
        /// How many times it was read back.
        copies: usize,
    },
    /// I4: the stored transfer differs from the one acknowledged.
    Altered {
        /// The transfer id.
        transfer: u128,
        /// The first field that differs.
        field: &'static str,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conservation { ledger, phase, debits, credits } => {
                write!(f, "I1 ledger {ledger}: {phase} debits {debits} != credits {credits}")
            }
            Self::Overdraft { account, used, limit } => {
                write!(f, "I2 account {account:#x}: {used} used against a limit of {limit}")
            }
            Self::Lost { transfer } => {
                write!(f, "I3 transfer {transfer:#x} acknowledged but missing")
            }
            Self::Duplicated { transfer, copies } => {
                write!(f, "I4 transfer {transfer:#x} stored {copies} times")
            }
            Self::Altered { transfer, field } => {
                write!(f, "I4 transfer {transfer:#x} stored with a different {field}")
            }
        }
    }
}

const DEBITS_MUST_NOT_EXCEED_CREDITS: u32 = v1::AccountFlag::DebitsMustNotExceedCredits as u32;
const CREDITS_MUST_NOT_EXCEED_DEBITS: u32 = v1::AccountFlag::CreditsMustNotExceedDebits as u32;

/// I1 and I2 over every account. Sums use checked arithmetic: an overflow is itself
/// reported as a conservation violation with saturated totals.
#[must_use]
pub fn check_accounts(accounts: &[v1::Account]) -> Vec<Violation> {
    let mut totals: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    let mut violations = Vec::new();
    for a in accounts {
        let sums =
            [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted].map(u128_of);
        let total = totals.entry(a.ledger).or_default();
        for (sum, value) in total.iter_mut().zip(sums) {
            *sum = sum.saturating_add(value);
        }
        let [debits_pending, debits_posted, credits_pending, credits_posted] = sums;
        let debits = debits_pending.saturating_add(debits_posted);
        let credits = credits_pending.saturating_add(credits_posted);
        if a.flags & DEBITS_MUST_NOT_EXCEED_CREDITS != 0 && debits > credits_posted {
            violations.push(Violation::Overdraft {
                account: u128_of(a.id),
                used: debits,
                limit: credits_posted,
            });
        }
        if a.flags & CREDITS_MUST_NOT_EXCEED_DEBITS != 0 && credits > debits_posted {
            violations.push(Violation::Overdraft {
                account: u128_of(a.id),
                used: credits,
                limit: debits_posted,
            });
        }
    }
    for (ledger, [debits_pending, debits_posted, credits_pending, credits_posted]) in totals {
        if debits_posted != credits_posted {
            violations.push(Violation::Conservation {
                ledger,
                phase: "posted",
                debits: debits_posted,
                credits: credits_posted,
            });
        }
        if debits_pending != credits_pending {
            violations.push(Violation::Conservation {
                ledger,
                phase: "pending",
                debits: debits_pending,
                credits: credits_pending,
            });
        }
    }
    violations
}

/// I3 and I4: every acknowledged transfer is read back exactly once with the fields the
/// client sent (the cluster fills in `timestamp`; for balancing transfers `amount` may be
/// lower; for posts and voids the zero fields are filled from the pending transfer).
#[must_use]
pub fn check_acknowledged(
    acknowledged: &[v1::Transfer],
    stored: &[v1::Transfer],
) -> Vec<Violation> {
    let mut by_id: BTreeMap<u128, Vec<&v1::Transfer>> = BTreeMap::new();
    for t in stored {
        by_id.entry(u128_of(t.id)).or_default().push(t);
    }
    let mut violations = Vec::new();
    for sent in acknowledged {
        let id = u128_of(sent.id);
        match by_id.get(&id).map(Vec::as_slice) {
            None | Some([]) => violations.push(Violation::Lost { transfer: id }),
            Some([found]) => {
                if let Some(field) = first_difference(sent, found) {
                    violations.push(Violation::Altered { transfer: id, field });
                }
            }
            Some(copies) => {
                violations.push(Violation::Duplicated { transfer: id, copies: copies.len() })
            }
        }
    }
    violations
}

fn first_difference(sent: &v1::Transfer, found: &v1::Transfer) -> Option<&'static str> {
    let balancing =
        (v1::TransferFlag::BalancingDebit as u32) | (v1::TransferFlag::BalancingCredit as u32);
    let resolving = (v1::TransferFlag::PostPendingTransfer as u32)
        | (v1::TransferFlag::VoidPendingTransfer as u32);
    // A zero field in a post or void means "as the pending transfer"; only a given value binds.
    let given = |value: u128| sent.flags & resolving == 0 || value != 0;
    // A balancing amount is an upper limit; a post or void resolves its own amount.
    let amount_ok = if sent.flags & balancing != 0 {
        u128_of(found.amount) <= u128_of(sent.amount)
    } else {
        sent.flags & resolving != 0 || sent.amount == found.amount
    };
    let checks: [(&'static str, bool); 9] = [
        ("flags", sent.flags == found.flags),
        (
            "debit_account_id",
            !given(u128_of(sent.debit_account_id))
                || sent.debit_account_id == found.debit_account_id,
        ),
        (
            "credit_account_id",
            !given(u128_of(sent.credit_account_id))
                || sent.credit_account_id == found.credit_account_id,
        ),
        ("amount", amount_ok),
        ("pending_id", sent.pending_id == found.pending_id),
        (
            "user_data_128",
            !given(u128_of(sent.user_data_128)) || sent.user_data_128 == found.user_data_128,
        ),
        ("ledger", !given(u128::from(sent.ledger)) || sent.ledger == found.ledger),
        ("code", !given(u128::from(sent.code)) || sent.code == found.code),
        ("timeout", sent.timeout == found.timeout),
    ];
    checks.into_iter().find(|(_, ok)| !ok).map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use tally_proto::uint128;

    use super::*;

    fn account(id: u128, ledger: u32, flags: u32, sums: [u128; 4]) -> v1::Account {
        v1::Account {
            id: uint128(id),
            debits_pending: uint128(sums[0]),
            debits_posted: uint128(sums[1]),
            credits_pending: uint128(sums[2]),
            credits_posted: uint128(sums[3]),
            ledger,
            code: 1,
            flags,
            ..Default::default()
        }
    }

    fn transfer(id: u128, amount: u128) -> v1::Transfer {
        v1::Transfer {
            id: uint128(id),
            debit_account_id: uint128(1),
            credit_account_id: uint128(2),
            amount: uint128(amount),
            ledger: 1,
            code: 1,
            ..Default::default()
        }
    }

    /// A consistent ledger passes.
    #[test]
    fn consistent_state_passes() {
        let accounts = [
            account(1, 1, DEBITS_MUST_NOT_EXCEED_CREDITS, [5, 30, 0, 100]),
            account(2, 1, 0, [0, 100, 5, 30]),
            account(3, 2, 0, [0, 0, 0, 0]),
        ];
        assert_eq!(check_accounts(&accounts), []);
        let sent = [transfer(1, 30)];
        let stored = [v1::Transfer { timestamp: 99, ..transfer(1, 30) }];
        assert_eq!(check_acknowledged(&sent, &stored), []);
    }

    /// Points created from nothing, an overdraft, a lost, a duplicated and an altered
    /// transfer are each reported with their evidence.
    #[test]
    fn each_violation_is_reported() {
        let accounts = [
            account(1, 1, DEBITS_MUST_NOT_EXCEED_CREDITS, [0, 120, 0, 100]),
            account(2, 1, 0, [0, 100, 0, 121]),
        ];
        let violations = check_accounts(&accounts);
        assert_eq!(
            violations,
            [
                Violation::Overdraft { account: 1, used: 120, limit: 100 },
                Violation::Conservation { ledger: 1, phase: "posted", debits: 220, credits: 221 },
            ]
        );
        assert_eq!(violations[1].to_string(), "I1 ledger 1: posted debits 220 != credits 221");
        let sent = [transfer(1, 10), transfer(2, 10), transfer(3, 10)];
        let stored = [transfer(2, 10), transfer(2, 10), transfer(3, 11)];
        assert_eq!(
            check_acknowledged(&sent, &stored),
            [
                Violation::Lost { transfer: 1 },
                Violation::Duplicated { transfer: 2, copies: 2 },
                Violation::Altered { transfer: 3, field: "amount" },
            ]
        );
    }

    /// Balancing transfers may store less than the limit sent; posts fill zero fields.
    #[test]
    fn balancing_and_posts_are_compared_by_their_meaning() {
        let balancing =
            v1::Transfer { flags: v1::TransferFlag::BalancingDebit as u32, ..transfer(1, 50) };
        let stored = v1::Transfer { amount: uint128(20), ..balancing };
        assert_eq!(check_acknowledged(&[balancing], &[stored]), []);
        let over = v1::Transfer { amount: uint128(60), ..balancing };
        assert_eq!(
            check_acknowledged(&[balancing], &[over]),
            [Violation::Altered { transfer: 1, field: "amount" }]
        );
        let post = v1::Transfer {
            id: uint128(9),
            pending_id: uint128(1),
            amount: uint128(u128::MAX),
            flags: v1::TransferFlag::PostPendingTransfer as u32,
            ..Default::default()
        };
        let posted = v1::Transfer {
            amount: uint128(50),
            debit_account_id: uint128(1),
            credit_account_id: uint128(2),
            ledger: 1,
            code: 1,
            ..post
        };
        assert_eq!(check_acknowledged(&[post], &[posted]), []);
    }
}
