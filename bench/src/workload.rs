//! Deterministic workloads: the same seed gives the same batches on every run, so numbers
//! from different runs and machines measure the same work.

use tally_node::ledger::{
    Account, AccountId, MemoryStore, StateMachine, Transfer, TransferFlags, TransferId,
};
use tally_proto::limits::BATCH_EVENTS_MAX;

/// Cluster time at which the population is created (1 s after the epoch).
pub const START_NS: u64 = 1_000_000_000;

/// A small, fast, deterministic generator (xorshift64*). Not for anything but workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// A ledger with `accounts` unconstrained accounts (ids `1..=accounts`, ledger 1, code 1),
/// created in full batches, with room reserved for `transfers` transfers (as a deployment
/// sizes its memory up front, so that growth does not pause apply).
///
/// # Panics
/// If an account is not created (a bug in the ledger).
#[must_use]
pub fn population(accounts: u64, transfers: usize) -> StateMachine<MemoryStore> {
    let capacity = usize::try_from(accounts).expect("fits in memory");
    let mut machine = StateMachine::new(MemoryStore::with_capacity(capacity, transfers));
    let ids: Vec<u64> = (1..=accounts).collect();
    for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
        let batch: Vec<Account> = chunk
            .iter()
            .map(|&id| Account {
                id: AccountId(u128::from(id)),
                ledger: 1,
                code: 1,
                ..Account::default()
            })
            .collect();
        let results = machine.create_accounts(START_NS, &batch).expect("batch within limits");
        assert!(
            results.iter().all(|r| r.status == tally_node::ledger::CreateAccountStatus::Created)
        );
    }
    machine
}

/// Generates transfer batches between random distinct accounts, with fresh ids.
#[derive(Clone, Debug)]
pub struct TransferGenerator {
    rng: Rng,
    accounts: u64,
    next_id: u128,
}

impl TransferGenerator {
    /// Transfers among accounts `1..=accounts` (at least 2).
    #[must_use]
    pub fn new(accounts: u64, seed: u64) -> Self {
        assert!(accounts >= 2);
        Self { rng: Rng::new(seed), accounts, next_id: 1 << 64 }
    }

    fn id(&mut self) -> TransferId {
        self.next_id += 1;
        TransferId(self.next_id)
    }

    fn pair(&mut self) -> (AccountId, AccountId) {
        let debit = self.rng.below(self.accounts);
        let offset = 1 + self.rng.below(self.accounts - 1);
        let credit = (debit + offset) % self.accounts;
        (AccountId(u128::from(debit + 1)), AccountId(u128::from(credit + 1)))
    }

    fn simple(&mut self) -> Transfer {
        let (debit_account_id, credit_account_id) = self.pair();
        Transfer {
            id: self.id(),
            debit_account_id,
            credit_account_id,
            amount: u128::from(1 + self.rng.below(100)),
            ledger: 1,
            code: 1,
            ..Transfer::default()
        }
    }

    /// `events` single-phase transfers.
    pub fn simple_batch(&mut self, events: usize) -> Vec<Transfer> {
        (0..events).map(|_| self.simple()).collect()
    }

    /// `events / 2` pairs of a pending transfer followed by its full post, in one batch.
    pub fn pending_post_batch(&mut self, events: usize) -> Vec<Transfer> {
        let mut batch = Vec::with_capacity(events);
        for _ in 0..events / 2 {
            let pending = Transfer { flags: TransferFlags::PENDING, timeout: 60, ..self.simple() };
            let post = Transfer {
                id: self.id(),
                pending_id: pending.id,
                amount: u128::MAX,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Transfer::default()
            };
            batch.extend([pending, post]);
        }
        batch
    }

    /// `events / 2` linked chains of two single-phase transfers.
    pub fn linked_pairs_batch(&mut self, events: usize) -> Vec<Transfer> {
        let mut batch = Vec::with_capacity(events);
        for _ in 0..events / 2 {
            let first = Transfer { flags: TransferFlags::LINKED, ..self.simple() };
            batch.extend([first, self.simple()]);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small population applies all three batch kinds without a single failure, and the
    /// audit holds afterwards: the benchmark measures successful work only.
    #[test]
    fn workloads_apply_cleanly() {
        let mut machine = population(1_000, 2_000);
        let mut generator = TransferGenerator::new(1_000, 7);
        let mut now = START_NS + 1_000_000;
        for batch in [
            generator.simple_batch(500),
            generator.pending_post_batch(500),
            generator.linked_pairs_batch(500),
        ] {
            let results = machine.create_transfers(now, &batch).unwrap();
            assert_eq!(results.len(), 500);
            assert!(
                results
                    .iter()
                    .all(|r| r.status == tally_node::ledger::CreateTransferStatus::Created)
            );
            now += 1_000_000;
        }
        let totals = machine.audit().unwrap();
        assert!(totals[&1].debits_posted > 0);
        assert_eq!(totals[&1].debits_pending, 0);
    }

    /// The same seed gives the same batches.
    #[test]
    fn generator_is_deterministic() {
        let a = TransferGenerator::new(100, 3).simple_batch(50);
        let b = TransferGenerator::new(100, 3).simple_batch(50);
        assert_eq!(a, b);
        assert!(a.iter().all(|t| t.debit_account_id != t.credit_account_id));
    }
}
