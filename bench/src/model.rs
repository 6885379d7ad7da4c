//! What the store must hold: a sequential model of every account's posted debits and
//! credits, fed with the operations that were applied, and the checks that compare it with
//! what the store reads back.

use serde::Serialize;

use crate::population::{Ids, PopulationSpec};
use crate::scenario::Op;

/// What a write operation's request said happened to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged as applied (every leg created, durable).
    Ok,
    /// Refused with this result code (nothing applied).
    Failed(u32),
    /// The request failed (timeout, transport, node error): applied or not, unknown.
    Unknown,
}

/// Posted debits and credits of one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Σ posted debits.
    pub debits: u128,
    /// Σ posted credits.
    pub credits: u128,
}

/// An account of the population, with what the model expects of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Its id.
    pub id: u128,
    /// What it is, e.g. `member 17`.
    pub role: Role,
    /// Its index within the role.
    pub index: u32,
    /// Expected posted totals.
    pub balance: Balance,
}

/// The role of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A member's points.
    Member,
    /// A merchant's points.
    Merchant,
    /// An item's stock.
    Stock,
    /// An item's delivered units.
    Delivered,
    /// The institution's issuance account.
    Issuance,
    /// The stock supply account.
    Supply,
    /// A member's account at institution B (swaps).
    MemberB,
    /// Institution A's swap pool.
    PoolA,
    /// Institution B's swap pool.
    PoolB,
}

impl Role {
    /// The id of the account of this role at `index` (the index of a single account is 0).
    #[must_use]
    pub fn id(self, ids: &Ids, index: u32) -> u128 {
        match self {
            Self::Member => ids.member(index),
            Self::Merchant => ids.merchant(index),
            Self::Stock => ids.stock(index),
            Self::Delivered => ids.delivered(index),
            Self::Issuance => ids.issuance(),
            Self::Supply => ids.supply(),
            Self::MemberB => ids.member_b(index),
            Self::PoolA => ids.pool_a(),
            Self::PoolB => ids.pool_b(),
        }
    }
}

/// The sequential model: the population right after setup plus every applied operation.
#[derive(Clone, Debug)]
pub struct Model {
    spec: PopulationSpec,
    members: Vec<Balance>,
    merchants: Vec<Balance>,
    stock: Vec<Balance>,
    delivered: Vec<Balance>,
    issuance: Balance,
    supply: Balance,
    members_b: Vec<Balance>,
    pools: [Balance; 2],
    applied: u64,
}

impl Model {
    /// The population right after setup: every member earned `member_points`, every item
    /// got `stock` units from supply.
    #[must_use]
    pub fn new(spec: PopulationSpec) -> Self {
        let members = u128::from(spec.members);
        let items = u128::from(spec.items);
        let points = u128::from(spec.member_points);
        let stock = u128::from(spec.stock);
        Self {
            spec,
            members: vec![Balance { debits: 0, credits: points }; spec.members as usize],
            merchants: vec![Balance::default(); spec.merchants as usize],
            stock: vec![Balance { debits: 0, credits: stock }; spec.items as usize],
            delivered: vec![Balance::default(); spec.items as usize],
            issuance: Balance { debits: members * points, credits: 0 },
            supply: Balance { debits: items * stock, credits: 0 },
            members_b: vec![Balance::default(); if spec.swaps { spec.members as usize } else { 0 }],
            pools: [Balance::default(); 2],
            applied: 0,
        }
    }

    /// The population.
    #[must_use]
    pub fn spec(&self) -> PopulationSpec {
        self.spec
    }

    /// Write operations applied so far (after setup).
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Records that `op` was applied (exactly once).
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Redeem { member, merchant, item, points, .. } => {
                let points = u128::from(points);
                self.members[member as usize].debits += points;
                self.merchants[merchant as usize].credits += points;
                self.stock[item as usize].debits += 1;
                self.delivered[item as usize].credits += 1;
            }
            Op::Earn { member, points, .. } => {
                let points = u128::from(points);
                self.issuance.debits += points;
                self.members[member as usize].credits += points;
            }
            Op::Swap { member, points, .. } => {
                let points = u128::from(points);
                let received = swap_received(points);
                self.members[member as usize].debits += points;
                self.pools[0].credits += points;
                self.pools[1].debits += received;
                self.members_b[member as usize].credits += received;
            }
            Op::Lookup { .. } => return,
        }
        self.applied += 1;
    }

    /// Every account of the population as (role, index within the role, expected totals).
    pub fn entries(&self) -> impl Iterator<Item = (Role, u32, Balance)> + '_ {
        fn role(role: Role, balances: &[Balance]) -> impl Iterator<Item = (Role, u32, Balance)> {
            balances.iter().zip(0_u32..).map(move |(&balance, index)| (role, index, balance))
        }
        role(Role::Member, &self.members)
            .chain(role(Role::Merchant, &self.merchants))
            .chain(role(Role::Stock, &self.stock))
            .chain(role(Role::Delivered, &self.delivered))
            .chain(role(Role::Issuance, std::slice::from_ref(&self.issuance)))
            .chain(role(Role::Supply, std::slice::from_ref(&self.supply)))
            .chain(role(Role::MemberB, &self.members_b))
            .chain(role(Role::PoolA, if self.spec.swaps { &self.pools[..1] } else { &[] }))
            .chain(role(Role::PoolB, if self.spec.swaps { &self.pools[1..] } else { &[] }))
    }

    /// Every account of the population with its id and expected totals.
    pub fn accounts<'a>(&'a self, ids: &'a Ids) -> impl Iterator<Item = Expected> + 'a {
        self.entries().map(|(role, index, balance)| Expected {
            id: role.id(ids, index),
            role,
            index,
            balance,
        })
    }
}

/// Points received for `points` given, at [`SWAP_RATE`](crate::population::SWAP_RATE)
/// rounded down (what the node computes and stores).
#[must_use]
pub fn swap_received(points: u128) -> u128 {
    let (numerator, denominator) = crate::population::SWAP_RATE;
    points * u128::from(numerator) / u128::from(denominator)
}

/// The result of one verification check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// How many items were checked.
    pub checked: u64,
    /// How many violated it.
    pub violations: u64,
    /// The first violations, or a summary when it held.
    pub detail: String,
}

/// Counts violations of one check and keeps the first few as counterexamples.
#[derive(Debug)]
pub struct CheckBuilder {
    name: String,
    checked: u64,
    violations: u64,
    examples: Vec<String>,
    summary: String,
}

/// Counterexamples kept per check.
const EXAMPLES_MAX: usize = 5;

impl CheckBuilder {
    /// A check called `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            checked: 0,
            violations: 0,
            examples: Vec::new(),
            summary: String::new(),
        }
    }

    /// Counts one item; if `holds` is false, records `example()` as a counterexample.
    pub fn expect(&mut self, holds: bool, example: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            self.violations += 1;
            if self.examples.len() < EXAMPLES_MAX {
                self.examples.push(example());
            }
        }
    }

    /// Items checked so far.
    #[must_use]
    pub fn checked_count(&self) -> u64 {
        self.checked
    }

    /// Sets the text shown when the check held.
    pub fn summary(&mut self, text: String) {
        self.summary = text;
    }

    /// The finished check; it fails if nothing was checked (it would prove nothing).
    #[must_use]
    pub fn finish(self) -> Check {
        self.finish_with(false)
    }

    /// The finished check of something that may legitimately not occur (e.g. unknown
    /// outcomes): passes when nothing was checked.
    #[must_use]
    pub fn finish_optional(self) -> Check {
        self.finish_with(true)
    }

    fn finish_with(self, empty_passes: bool) -> Check {
        let passed = self.violations == 0 && (self.checked > 0 || empty_passes);
        let detail = if self.checked == 0 && !empty_passes {
            "nothing was checked".to_owned()
        } else if self.checked == 0 {
            "none occurred".to_owned()
        } else if passed {
            self.summary
        } else {
            format!("{} violation(s), e.g.: {}", self.violations, self.examples.join("; "))
        };
        Check {
            name: self.name,
            passed,
            checked: self.checked,
            violations: self.violations,
            detail,
        }
    }
}

/// What a read-back found of one write operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing of it is stored.
    Absent,
    /// All of it is stored exactly as sent.
    Identical,
    /// Part of it, or something different, is stored.
    Damaged,
}

/// The checks on write operations read back one by one: acknowledged ones are stored
/// exactly as sent, refused ones left nothing, unknown ones applied all or nothing. Feeds
/// every applied operation into the model.
#[derive(Debug)]
pub struct ReadBack {
    acknowledged: CheckBuilder,
    refused: CheckBuilder,
    unknown: CheckBuilder,
    unknown_applied: u64,
    unknown_absent: u64,
}

impl Default for ReadBack {
    fn default() -> Self {
        Self {
            acknowledged: CheckBuilder::new("acknowledged operations stored exactly as sent"),
            refused: CheckBuilder::new("refused operations left nothing stored"),
            unknown: CheckBuilder::new("unknown outcomes resolved all or nothing"),
            unknown_applied: 0,
            unknown_absent: 0,
        }
    }
}

impl ReadBack {
    /// Judges one operation by what was found; `shown` describes what is stored, for a
    /// counterexample.
    pub fn record(
        &mut self,
        model: &mut Model,
        op: &Op,
        outcome: Outcome,
        found: Found,
        shown: impl Fn() -> String,
    ) {
        match outcome {
            Outcome::Ok => {
                self.acknowledged
                    .expect(found == Found::Identical, || format!("{op:?}: {}", shown()));
                if found == Found::Identical {
                    model.apply(op);
                }
            }
            Outcome::Failed(code) => self.refused.expect(found == Found::Absent, || {
                format!("{op:?} refused (code {code}): {}", shown())
            }),
            Outcome::Unknown => {
                self.unknown.expect(found != Found::Damaged, || format!("{op:?}: {}", shown()));
                match found {
                    Found::Identical => {
                        self.unknown_applied += 1;
                        model.apply(op);
                    }
                    Found::Absent => self.unknown_absent += 1,
                    Found::Damaged => {}
                }
            }
        }
    }

    /// The three checks.
    #[must_use]
    pub fn finish(mut self) -> Vec<Check> {
        let read = self.acknowledged.checked_count();
        self.acknowledged.summary(format!("{read} operations read back"));
        self.refused
            .summary(format!("{} operations, nothing stored", self.refused.checked_count()));
        self.unknown.summary(format!(
            "{} applied, {} not applied",
            self.unknown_applied, self.unknown_absent
        ));
        vec![
            self.acknowledged.finish_optional(),
            self.refused.finish_optional(),
            self.unknown.finish_optional(),
        ]
    }
}

/// The checks on the accounts read back: each equals the model, each ledger conserves (I1),
/// no member overdrawn and no item oversold (I2).
#[derive(Debug)]
pub struct AccountChecks {
    /// Stored totals equal the model's.
    pub equal: CheckBuilder,
    /// Per ledger, debits equal credits.
    pub conservation: CheckBuilder,
    /// No member below zero.
    pub overdrawn: CheckBuilder,
    /// No stock below zero, no item delivered more than stocked.
    pub oversold: CheckBuilder,
}

impl Default for AccountChecks {
    fn default() -> Self {
        Self {
            equal: CheckBuilder::new(
                "every account equals the model (each operation counted once)",
            ),
            conservation: CheckBuilder::new("conservation per ledger (I1)"),
            overdrawn: CheckBuilder::new("no member overdrawn (I2)"),
            oversold: CheckBuilder::new("no item oversold (I2)"),
        }
    }
}

impl AccountChecks {
    /// The four checks.
    #[must_use]
    pub fn finish(mut self, model: &Model) -> Vec<Check> {
        let spec = model.spec();
        let accounts = self.equal.checked_count();
        self.equal.summary(format!("{accounts} accounts, {} operations applied", model.applied()));
        self.overdrawn.summary(format!("{} members", spec.members));
        self.oversold.summary(format!("{} items", spec.items));
        let ledgers = self.conservation.checked_count();
        self.conservation.summary(format!("{ledgers} ledgers balance"));
        vec![
            self.equal.finish(),
            self.conservation.finish(),
            self.overdrawn.finish(),
            self.oversold.finish(),
        ]
    }
}

/// Whether every check passed.
#[must_use]
pub fn all_passed(checks: &[Check]) -> bool {
    !checks.is_empty() && checks.iter().all(|c| c.passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PopulationSpec {
        PopulationSpec {
            members: 3,
            merchants: 2,
            items: 2,
            hot_items: 1,
            member_points: 50,
            stock: 4,
            swaps: false,
        }
    }

    #[test]
    fn the_model_conserves_and_counts() {
        let mut model = Model::new(spec());
        model.apply(&Op::Redeem { seq: 1, member: 2, merchant: 1, item: 1, points: 30 });
        model.apply(&Op::Earn { seq: 2, member: 0, points: 5 });
        model.apply(&Op::Lookup { member: 0 });
        assert_eq!(model.applied(), 2);
        let ids = Ids::new(9);
        let accounts: Vec<Expected> = model.accounts(&ids).collect();
        assert_eq!(accounts.len() as u64, spec().accounts());
        let total = |f: fn(&Balance) -> u128| accounts.iter().map(|a| f(&a.balance)).sum::<u128>();
        assert_eq!(total(|b| b.debits), total(|b| b.credits), "the model conserves");
        let member2 = accounts.iter().find(|a| a.id == ids.member(2)).unwrap();
        assert_eq!(member2.balance, Balance { debits: 30, credits: 50 });
        let delivered1 = accounts.iter().find(|a| a.id == ids.delivered(1)).unwrap();
        assert_eq!((delivered1.role, delivered1.balance.credits), (Role::Delivered, 1));
    }

    #[test]
    fn a_swap_moves_points_between_two_ledgers_at_the_rate() {
        let spec = PopulationSpec { swaps: true, ..spec() };
        let mut model = Model::new(spec);
        let quote_expires_at = 1;
        model.apply(&Op::Swap { seq: 1, member: 1, points: 7, quote_expires_at });
        let ids = Ids::new(9);
        let accounts: Vec<Expected> = model.accounts(&ids).collect();
        assert_eq!(accounts.len() as u64, spec.accounts());
        let balance = |id: u128| accounts.iter().find(|a| a.id == id).unwrap().balance;
        // 7 x 3/2 = 10.5, rounded down.
        assert_eq!(balance(ids.member(1)), Balance { debits: 7, credits: 50 });
        assert_eq!(balance(ids.pool_a()), Balance { debits: 0, credits: 7 });
        assert_eq!(balance(ids.pool_b()), Balance { debits: 10, credits: 0 });
        assert_eq!(balance(ids.member_b(1)), Balance { debits: 0, credits: 10 });
    }

    fn redeem(seq: u64) -> Op {
        Op::Redeem { seq, member: 0, merchant: 0, item: 0, points: 10 }
    }

    #[test]
    fn read_back_catches_lost_partial_and_leaked_writes() {
        let cases = [
            // (outcome, what was found, check that must fail, applied to the model)
            (Outcome::Ok, Found::Identical, None, true),
            (Outcome::Ok, Found::Absent, Some(0), false),
            (Outcome::Ok, Found::Damaged, Some(0), false),
            (Outcome::Failed(54), Found::Absent, None, false),
            (Outcome::Failed(54), Found::Identical, Some(1), false),
            (Outcome::Unknown, Found::Absent, None, false),
            (Outcome::Unknown, Found::Identical, None, true),
            (Outcome::Unknown, Found::Damaged, Some(2), false),
        ];
        for (outcome, found, failing, applied) in cases {
            let mut model = Model::new(spec());
            let mut read_back = ReadBack::default();
            read_back.record(&mut model, &redeem(1), outcome, found, || "shown".into());
            let checks = read_back.finish();
            for (i, check) in checks.iter().enumerate() {
                assert_eq!(check.passed, failing != Some(i), "{outcome:?} {found:?}: {check:?}");
            }
            assert_eq!(model.applied(), u64::from(applied), "{outcome:?} {found:?}");
        }
    }

    #[test]
    fn a_check_with_a_violation_fails_and_shows_it() {
        let mut check = CheckBuilder::new("x");
        check.expect(true, || unreachable!());
        check.expect(false, || "account 5".into());
        let check = check.finish();
        assert!(!check.passed);
        assert_eq!((check.checked, check.violations), (2, 1));
        assert!(check.detail.contains("account 5"));
        assert!(!CheckBuilder::new("empty").finish().passed, "an empty check proves nothing");
    }
}
