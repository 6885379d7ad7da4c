//! Workloads: which operations a load run sends, drawn from a seeded generator so the same
//! seed sends the same operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::population::PopulationSpec;

/// Points per redemption or earn are drawn uniformly from `1..=POINTS_PER_OP_MAX`.
pub const POINTS_PER_OP_MAX: u32 = 100;

/// How long a swap's quote is valid from when the operation is drawn (a run is at most
/// an hour, and an open-loop operation is drawn before its intended send time).
pub const QUOTE_VALIDITY_NS: u64 = 600 * 1_000_000_000;

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Redemptions: member, merchant and item uniform.
    RedeemUniform,
    /// Redemptions: members Zipf-distributed (`--zipf-exponent`), merchant and item uniform.
    RedeemZipf,
    /// Redemptions: every one credits merchant 0 and takes a unit of one of the hot items.
    FlashSale,
    /// Earns: institution issuance -> a uniform member.
    Earn,
    /// Earn 30%, redeem (uniform) 60%, balance lookup 10%.
    Mixed,
    /// Swaps: a uniform member gives points on ledger A for points on ledger B (its own
    /// account at institution B) at [`SWAP_RATE`](crate::population::SWAP_RATE), through
    /// the two institutions' (spread) pools: usually a cross-shard transaction, since the
    /// member's two accounts live on different shards. Tally only.
    Swap,
}

/// Which members swap (`--swap-shards`): whether a swap's two member accounts (ledger A,
/// ledger B) share a shard decides whether it is a single-shard swap or a cross-shard
/// transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SwapShards {
    /// Any member: on `n` shards about `1/n` of the swaps stay on one shard.
    #[default]
    Any,
    /// Only members whose two accounts share a shard: every swap is single-shard.
    Same,
    /// Only members whose two accounts are on different shards: every swap is a
    /// cross-shard transaction (needs at least two shards).
    Cross,
}

impl SwapShards {
    /// The kebab-case name used on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Same => "same",
            Self::Cross => "cross",
        }
    }
}

impl Workload {
    /// The kebab-case name used on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::RedeemUniform => "redeem-uniform",
            Self::RedeemZipf => "redeem-zipf",
            Self::FlashSale => "flash-sale",
            Self::Earn => "earn",
            Self::Mixed => "mixed",
            Self::Swap => "swap",
        }
    }
}

/// One operation of a workload. `seq` numbers the operation within the run (its transfer
/// ids derive from it, see [`crate::population::Ids::transfer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Member pays `points` to a merchant and takes one unit of an item, all or nothing.
    Redeem {
        /// Operation number.
        seq: u64,
        /// Member index.
        member: u32,
        /// Merchant index.
        merchant: u32,
        /// Item index.
        item: u32,
        /// Points paid.
        points: u32,
    },
    /// The institution issues `points` to a member.
    Earn {
        /// Operation number.
        seq: u64,
        /// Member index.
        member: u32,
        /// Points earned.
        points: u32,
    },
    /// A member swaps `points` of ledger A for ledger B's at a quote expiring at
    /// `quote_expires_at` (ns since the epoch; the quote id is `seq`).
    Swap {
        /// Operation number.
        seq: u64,
        /// Member index.
        member: u32,
        /// Points given.
        points: u32,
        /// The quote's expiry.
        quote_expires_at: u64,
    },
    /// A linearizable read of a member's balance.
    Lookup {
        /// Member index.
        member: u32,
    },
}

impl Op {
    /// Whether the operation writes.
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, Self::Lookup { .. })
    }

    /// Transfers the operation creates.
    #[must_use]
    pub fn transfers(&self) -> u64 {
        match self {
            Self::Redeem { .. } | Self::Swap { .. } => 2,
            Self::Earn { .. } => 1,
            Self::Lookup { .. } => 0,
        }
    }
}

/// Draws operations of one workload. Operation numbers come from a counter shared by all
/// generators of the run, so ids never repeat.
#[derive(Debug)]
pub struct OpGenerator {
    workload: Workload,
    spec: PopulationSpec,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    seqs: Arc<AtomicU64>,
    swappers: Option<Arc<[u32]>>,
}

impl OpGenerator {
    /// A generator seeded with `seed`.
    ///
    /// # Panics
    /// If the Zipf exponent is not a positive finite number (validated at the edge).
    #[must_use]
    pub fn new(
        workload: Workload,
        spec: PopulationSpec,
        zipf_exponent: f64,
        seed: u64,
        seqs: Arc<AtomicU64>,
    ) -> Self {
        let zipf = (workload == Workload::RedeemZipf).then(|| {
            Zipf::new(f64::from(spec.members), zipf_exponent).expect("validated exponent")
        });
        Self { workload, spec, rng: SmallRng::seed_from_u64(seed), zipf, seqs, swappers: None }
    }

    /// Swaps drawn uniformly from the members `swappers` (indexes below the population's
    /// member count) instead of from every member; `None` keeps every member.
    ///
    /// # Panics
    /// If `swappers` is empty or names a member outside the population.
    #[must_use]
    pub fn with_swappers(mut self, swappers: Option<Arc<[u32]>>) -> Self {
        if let Some(list) = &swappers {
            assert!(!list.is_empty(), "at least one member swaps");
            assert!(list.iter().all(|&m| m < self.spec.members), "swappers are members");
        }
        self.swappers = swappers;
        self
    }

    fn seq(&self) -> u64 {
        self.seqs.fetch_add(1, Ordering::Relaxed)
    }

    fn points(&mut self) -> u32 {
        self.rng.random_range(1..=POINTS_PER_OP_MAX)
    }

    fn uniform_member(&mut self) -> u32 {
        self.rng.random_range(0..self.spec.members)
    }

    fn redeem(&mut self, member: u32, merchant: u32, item: u32) -> Op {
        Op::Redeem { seq: self.seq(), member, merchant, item, points: self.points() }
    }

    fn redeem_uniform(&mut self) -> Op {
        let member = self.uniform_member();
        let merchant = self.rng.random_range(0..self.spec.merchants);
        let item = self.rng.random_range(0..self.spec.items);
        self.redeem(member, merchant, item)
    }

    fn earn(&mut self) -> Op {
        let member = self.uniform_member();
        Op::Earn { seq: self.seq(), member, points: self.points() }
    }

    fn swap(&mut self) -> Op {
        let member = match &self.swappers {
            Some(list) => list[self.rng.random_range(0..list.len())],
            None => self.uniform_member(),
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let now_ns = now.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let quote_expires_at = now_ns.saturating_add(QUOTE_VALIDITY_NS);
        Op::Swap { seq: self.seq(), member, points: self.points(), quote_expires_at }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        match self.workload {
            Workload::RedeemUniform => self.redeem_uniform(),
            Workload::RedeemZipf => {
                // Zipf draws ranks 1..=members; rank 1 is the hottest member.
                let rank =
                    self.zipf.as_ref().expect("built for this workload").sample(&mut self.rng);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let member = (rank as u32).clamp(1, self.spec.members) - 1;
                let merchant = self.rng.random_range(0..self.spec.merchants);
                let item = self.rng.random_range(0..self.spec.items);
                self.redeem(member, merchant, item)
            }
            Workload::FlashSale => {
                let member = self.uniform_member();
                let item = self.rng.random_range(0..self.spec.hot_items);
                self.redeem(member, 0, item)
            }
            Workload::Earn => self.earn(),
            Workload::Swap => self.swap(),
            Workload::Mixed => match self.rng.random_range(0..100) {
                0..30 => self.earn(),
                30..90 => self.redeem_uniform(),
                _ => Op::Lookup { member: self.uniform_member() },
            },
        }
    }

    /// The next `n` operations.
    pub fn batch(&mut self, n: usize) -> Vec<Op> {
        (0..n).map(|_| self.next_op()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PopulationSpec {
        PopulationSpec {
            members: 1000,
            merchants: 10,
            items: 20,
            hot_items: 3,
            member_points: 100,
            stock: 10,
            swaps: false,
        }
    }

    fn generate(workload: Workload, seed: u64, n: usize) -> Vec<Op> {
        let seqs = Arc::new(AtomicU64::new(0));
        OpGenerator::new(workload, spec(), 0.99, seed, seqs).batch(n)
    }

    #[test]
    fn same_seed_same_operations() {
        assert_eq!(generate(Workload::Mixed, 5, 500), generate(Workload::Mixed, 5, 500));
        assert_ne!(generate(Workload::Mixed, 5, 500), generate(Workload::Mixed, 6, 500));
    }

    #[test]
    fn flash_sale_hits_one_merchant_and_the_hot_items() {
        for op in generate(Workload::FlashSale, 1, 2000) {
            let Op::Redeem { merchant, item, points, .. } = op else { panic!("{op:?}") };
            assert_eq!(merchant, 0);
            assert!(item < 3);
            assert!((1..=POINTS_PER_OP_MAX).contains(&points));
        }
    }

    #[test]
    fn zipf_concentrates_on_the_first_members() {
        let ops = generate(Workload::RedeemZipf, 2, 20_000);
        let hottest = ops.iter().filter(|op| matches!(op, Op::Redeem { member: 0, .. })).count();
        // Member 0 of 1000 under s = 0.99 draws about 13%; uniform would give 0.1%.
        assert!(hottest > 1_500, "member 0 drew {hottest} of 20000");
        assert!(ops.iter().all(|op| matches!(op, Op::Redeem { member, .. } if *member < 1000)));
    }

    #[test]
    fn swaps_carry_a_quote_valid_for_the_run() {
        let ops = generate(Workload::Swap, 4, 100);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let now_ns = u64::try_from(now.as_nanos()).unwrap();
        for op in ops {
            let Op::Swap { member, points, quote_expires_at, .. } = op else {
                panic!("{op:?} is not a swap")
            };
            assert!(member < 1000 && (1..=POINTS_PER_OP_MAX).contains(&points));
            assert!(quote_expires_at > now_ns + QUOTE_VALIDITY_NS / 2, "{quote_expires_at}");
        }
    }

    #[test]
    fn swaps_draw_only_the_chosen_members_and_all_of_them() {
        let chosen: Arc<[u32]> = Arc::from(vec![3, 500, 999]);
        let seqs = Arc::new(AtomicU64::new(0));
        let generator = OpGenerator::new(Workload::Swap, spec(), 0.99, 7, seqs);
        let ops = generator.with_swappers(Some(chosen.clone())).batch(300);
        let mut drawn = std::collections::BTreeSet::new();
        for op in ops {
            let Op::Swap { member, .. } = op else { panic!("{op:?} is not a swap") };
            assert!(chosen.contains(&member), "member {member} was not chosen");
            drawn.insert(member);
        }
        assert_eq!(drawn.len(), 3, "each chosen member swaps: {drawn:?}");
    }

    #[test]
    #[should_panic(expected = "swappers are members")]
    fn swappers_outside_the_population_are_refused() {
        let seqs = Arc::new(AtomicU64::new(0));
        let generator = OpGenerator::new(Workload::Swap, spec(), 0.99, 7, seqs);
        let _ = generator.with_swappers(Some(Arc::from(vec![1000])));
    }

    #[test]
    fn mixed_has_the_documented_shares() {
        let ops = generate(Workload::Mixed, 3, 10_000);
        let earns = ops.iter().filter(|op| matches!(op, Op::Earn { .. })).count();
        let lookups = ops.iter().filter(|op| !op.is_write()).count();
        assert!((2_700..3_300).contains(&earns), "{earns}");
        assert!((800..1_200).contains(&lookups), "{lookups}");
        let seqs: std::collections::HashSet<u64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Redeem { seq, .. } | Op::Earn { seq, .. } | Op::Swap { seq, .. } => Some(*seq),
                Op::Lookup { .. } => None,
            })
            .collect();
        assert_eq!(seqs.len(), 10_000 - lookups, "operation numbers never repeat");
    }
}
