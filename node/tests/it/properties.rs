// Included once per store by `ledger_suite!` in main.rs.
//
// Property tests over random batches of accounts and mixed transfer kinds (single-phase,
// pending with timeouts, posts full and partial, voids, balancing, closing, resubmissions)
// with random linked chains and random time between batches. Amounts stay far from
// overflow here: overflow is covered case by case in `bad_input.rs`.

use proptest::prelude::*;
use tally_node::ledger::{
    Account, AccountFlags, CreateTransferStatus as S, LedgerStore, Transfer,
    TransferFlags, TransferId,
};

use crate::support::*;

const ACCOUNTS: u128 = 12;

#[derive(Clone, Debug)]
enum Kind {
    Single,
    Pending(u32),
    Post(bool),
    Void,
    BalancingDebit,
    BalancingCredit,
    ClosingPending,
    Resubmit,
}

#[derive(Clone, Debug)]
struct Spec {
    kind: Kind,
    debit: u128,
    credit: u128,
    amount: u128,
    pick: usize,
    linked: bool,
}

#[derive(Clone, Debug)]
struct Batch {
    advance_seconds: u64,
    events: Vec<Spec>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Single),
        3 => (0_u32..4).prop_map(Kind::Pending),
        2 => any::<bool>().prop_map(Kind::Post),
        1 => Just(Kind::Void),
        1 => Just(Kind::BalancingDebit),
        1 => Just(Kind::BalancingCredit),
        1 => Just(Kind::ClosingPending),
        1 => Just(Kind::Resubmit),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (kind(), 1..=ACCOUNTS, 1..=ACCOUNTS, 0_u128..300, any::<usize>(), prop::bool::weighted(0.25))
        .prop_map(|(kind, debit, credit, amount, pick, linked)| Spec { kind, debit, credit, amount, pick, linked })
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let batch = (0_u64..3, prop::collection::vec(spec(), 1..40))
        .prop_map(|(advance_seconds, events)| Batch { advance_seconds, events });
    prop::collection::vec(batch, 1..10)
}

/// Accounts 1..=12: members, a credit-limited account, history accounts, two ledgers.
fn population() -> Vec<Account> {
    (1..=ACCOUNTS)
        .map(|id| {
            let flags = match id {
                1..=4 | 9 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                5 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                6 | 11 => AccountFlags::HISTORY,
                _ => AccountFlags::empty(),
            };
            Account { ledger: if id <= 8 { 1 } else { 2 }, ..account(id, flags) }
        })
        .collect()
}

/// Turns specs into transfers. Deterministic, so replicas resolve the same batches.
#[derive(Default)]
struct Resolver {
    next_id: u128,
    submitted: Vec<Transfer>,
    pending_ids: Vec<u128>,
}

impl Resolver {
    fn resolve(&mut self, spec: &Spec) -> Transfer {
        self.next_id += 1;
        let id = 1_000 + self.next_id;
        let ledger = if spec.debit <= 8 { 1 } else { 2 };
        let base = Transfer { ledger, ..transfer(id, spec.debit, spec.credit, spec.amount) };
        let pick_pending = |r: &Self| r.pending_ids.get(spec.pick % r.pending_ids.len().max(1)).copied().unwrap_or(999_999);
        let mut t = match spec.kind {
            Kind::Single => base,
            Kind::Pending(timeout) => {
                self.pending_ids.push(id);
                Transfer { flags: TransferFlags::PENDING, timeout, ..base }
            }
            Kind::Post(full) => post(id, pick_pending(self), if full { u128::MAX } else { spec.amount }),
            Kind::Void => void(id, pick_pending(self)),
            Kind::BalancingDebit => Transfer { flags: TransferFlags::BALANCING_DEBIT, ..base },
            Kind::BalancingCredit => Transfer { flags: TransferFlags::BALANCING_CREDIT, ..base },
            Kind::ClosingPending => {
                self.pending_ids.push(id);
                Transfer { flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT, timeout: 1, ..base }
            }
            Kind::Resubmit if !self.submitted.is_empty() => {
                let mut again = self.submitted[spec.pick % self.submitted.len()];
                again.flags.remove(TransferFlags::LINKED);
                again
            }
            Kind::Resubmit => base,
        };
        if spec.linked {
            t.flags |= TransferFlags::LINKED;
        }
        self.submitted.push(t);
        t
    }

    fn batch(&mut self, batch: &Batch) -> Vec<Transfer> {
        batch.events.iter().map(|spec| self.resolve(spec)).collect()
    }
}

fn funded() -> Ledger<super::Store> {
    let mut ledger = Ledger::new(super::new_store());
    ledger.create_accounts(&population());
    // Fund the members from the plain accounts of their ledger.
    let funding: Vec<Transfer> = [1, 2, 3, 4]
        .into_iter()
        .map(|id| transfer(id, 7, id, 1_000))
        .chain([Transfer { ledger: 2, ..transfer(5, 10, 9, 1_000) }, transfer(6, 5, 8, 500)])
        .collect();
    assert!(ledger.create_transfers(&funding).iter().all(|s| *s == S::Created));
    ledger
}

/// Every stored object, for comparing states without the clock.
fn snapshot<T: LedgerStore>(store: &T) -> (Vec<Account>, Vec<Transfer>, Vec<TransferId>) {
    let (mut accounts, mut transfers, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    store.visit_accounts(&mut |a| accounts.push(*a));
    store.visit_transfers(&mut |t| transfers.push(*t));
    store.visit_failed_ids(&mut |id| failed.push(id));
    (accounts, transfers, failed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// I1 and I2 after every batch: per ledger Σ debits = Σ credits (posted and pending),
    /// every account's sums equal those recomputed from its transfers, no flag violated.
    #[test]
    fn conservation_and_balance_limits_hold(batches in batches()) {
        let mut ledger = funded();
        let mut resolver = Resolver::default();
        for batch in &batches {
            ledger.advance_seconds(batch.advance_seconds);
            let transfers = resolver.batch(batch);
            ledger.create_transfers(&transfers);
            ledger.audit();
        }
    }

    /// Two replicas applying the same batches at the same cluster times return the same
    /// results and reach identical state digests.
    #[test]
    fn replicas_reach_identical_digests(batches in batches()) {
        let mut one = funded();
        let mut two = funded();
        let (mut resolver_one, mut resolver_two) = (Resolver::default(), Resolver::default());
        prop_assert_eq!(one.machine.digest(), two.machine.digest());
        for batch in &batches {
            one.advance_seconds(batch.advance_seconds);
            two.advance_seconds(batch.advance_seconds);
            let results_one = one.create_transfers_full(&resolver_one.batch(batch));
            let results_two = two.create_transfers_full(&resolver_two.batch(batch));
            prop_assert_eq!(results_one, results_two);
            prop_assert_eq!(one.machine.digest(), two.machine.digest());
        }
    }

    /// I4: re-applying any batch moves no points and creates nothing; every event that was
    /// created reads back as `exists` with its original timestamp (or fails as part of a
    /// chain). The one thing a replay may add is a burnt id: an event that originally only
    /// failed because its chain failed is evaluated again, and if it now fails for a
    /// transient reason its id is burnt, exactly as in TigerBeetle.
    #[test]
    fn replaying_a_batch_changes_nothing(batches in batches()) {
        let mut ledger = funded();
        let mut resolver = Resolver::default();
        for batch in &batches {
            ledger.advance_seconds(batch.advance_seconds);
            let transfers = resolver.batch(batch);
            let first = ledger.create_transfers_full(&transfers);
            let (accounts, stored, burnt) = snapshot(ledger.machine.store());
            let replay = ledger.create_transfers_full(&transfers);
            let (accounts_after, stored_after, burnt_after) = snapshot(ledger.machine.store());
            prop_assert_eq!(&accounts, &accounts_after);
            prop_assert_eq!(&stored, &stored_after);
            for id in burnt_after.iter().filter(|id| !burnt.contains(id)) {
                let position = transfers.iter().position(|t| t.id == *id);
                prop_assert!(position.is_some_and(|i| first[i].status == S::LinkedEventFailed), "{:?}", id);
            }
            for (index, (was, now)) in first.iter().zip(&replay).enumerate() {
                prop_assert_ne!(now.status, S::Created, "event {} created twice", index);
                let chained = transfers[index].flags.contains(TransferFlags::LINKED)
                    || (index > 0 && transfers[index - 1].flags.contains(TransferFlags::LINKED));
                if was.status == S::Created && !chained {
                    prop_assert_eq!(now.status, S::Exists, "event {}", index);
                    prop_assert_eq!(now.timestamp, was.timestamp, "event {}", index);
                }
                if was.status.transient() && !chained {
                    prop_assert_eq!(now.status, S::IdAlreadyFailed, "event {}", index);
                }
            }
        }
    }

    /// I5: a linked chain that failed left no transfer behind (and the audit shows no
    /// balance was left changed by it).
    #[test]
    fn failed_linked_chains_leave_no_trace(batches in batches()) {
        let mut ledger = funded();
        let mut resolver = Resolver::default();
        for batch in &batches {
            ledger.advance_seconds(batch.advance_seconds);
            let transfers = resolver.batch(batch);
            let before = snapshot(ledger.machine.store()).1;
            let results = ledger.create_transfers(&transfers);
            let mut start = 0;
            for index in 0..transfers.len() {
                if transfers[index].flags.contains(TransferFlags::LINKED) && index + 1 < transfers.len() {
                    continue;
                }
                let chain = start..=index;
                start = index + 1;
                let failed = chain.clone().any(|i| results[i] != S::Created);
                if !failed {
                    continue;
                }
                for i in chain.clone() {
                    let id = transfers[i].id;
                    let created_elsewhere = (0..transfers.len())
                        .any(|j| !chain.contains(&j) && transfers[j].id == id && results[j] == S::Created);
                    let existed = created_elsewhere || before.iter().any(|t| t.id == id);
                    let found = ledger.machine.lookup_transfers(&[id]);
                    prop_assert!(existed || found.is_empty(), "rolled-back transfer {:?} stored", id);
                    prop_assert_ne!(results[i], S::Created);
                }
            }
            ledger.audit();
        }
    }
}

fn account_spec() -> impl Strategy<Value = (u128, u16, u32, bool)> {
    // Small id range so that resubmissions and `exists_with_different_*` happen; flag bits
    // include reserved and mutually exclusive combinations.
    (0_u128..40, any::<u16>(), 0_u32..3, prop::bool::weighted(0.3))
}

fn account_batches() -> impl Strategy<Value = Vec<Vec<(u128, u16, u32, bool)>>> {
    prop::collection::vec(prop::collection::vec(account_spec(), 1..20), 1..8)
}

fn account_event((id, flags, ledger, linked): (u128, u16, u32, bool)) -> Account {
    let mut flags = AccountFlags::from_bits_retain(flags & 0x804e) - AccountFlags::IMPORTED;
    flags.set(AccountFlags::LINKED, linked);
    Account { ledger, flags, ..account(id, flags) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random account batches with linked chains: replicas agree, a replay creates nothing
    /// new, and an account from a failed chain does not exist afterwards (unless it existed
    /// before or was created outside the chain).
    #[test]
    fn account_batches_are_deterministic_atomic_and_idempotent(batches in account_batches()) {
        use tally_node::ledger::CreateAccountStatus as A;
        let mut one = Ledger::new(super::new_store());
        let mut two = Ledger::new(super::new_store());
        for batch in &batches {
            let events: Vec<Account> = batch.iter().copied().map(account_event).collect();
            let before = snapshot(one.machine.store()).0;
            let results = one.create_accounts(&events);
            prop_assert_eq!(&results, &two.create_accounts(&events));
            prop_assert_eq!(one.machine.digest(), two.machine.digest());
            let mut start = 0;
            for index in 0..events.len() {
                if events[index].flags.contains(AccountFlags::LINKED) && index + 1 < events.len() {
                    continue;
                }
                let chain = start..=index;
                start = index + 1;
                if chain.clone().all(|i| results[i] == A::Created) {
                    continue;
                }
                for i in chain.clone() {
                    let id = events[i].id;
                    let elsewhere = (0..events.len()).any(|j| !chain.contains(&j) && events[j].id == id && results[j] == A::Created);
                    let existed = before.iter().any(|a| a.id == id);
                    prop_assert!(existed || elsewhere || one.machine.lookup_accounts(&[id]).is_empty());
                }
            }
            let after = snapshot(one.machine.store()).0;
            let replay = one.create_accounts(&events);
            prop_assert_eq!(&replay, &two.create_accounts(&events));
            prop_assert!(replay.iter().all(|s| *s != A::Created));
            prop_assert_eq!(&after, &snapshot(one.machine.store()).0);
            one.audit();
        }
    }
}
