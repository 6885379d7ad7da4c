//! Builders and a small driver shared by the ledger tests.

use tally_node::ledger::{
    Account, AccountFlags, AccountId, CreateAccountStatus, CreateTransferResult,
    CreateTransferStatus, LedgerStore, StateMachine, Transfer, TransferFlags, TransferId,
};

/// One second of cluster time, in nanoseconds.
pub const SECOND_NS: u64 = 1_000_000_000;

/// A state machine with a cluster clock that tests move by hand.
pub struct Ledger<S: LedgerStore> {
    pub machine: StateMachine<S>,
    /// The cluster time proposed for the next batch.
    pub now: u64,
}

impl<S: LedgerStore> Ledger<S> {
    pub fn new(store: S) -> Self {
        Self { machine: StateMachine::new(store), now: 1_000 * SECOND_NS }
    }

    pub fn create_accounts(&mut self, accounts: &[Account]) -> Vec<CreateAccountStatus> {
        let results = self.machine.create_accounts(self.now, accounts).expect("batch accepted");
        self.now += SECOND_NS / 1000;
        results.into_iter().map(|r| r.status).collect()
    }

    pub fn create_transfers_full(&mut self, transfers: &[Transfer]) -> Vec<CreateTransferResult> {
        let results = self.machine.create_transfers(self.now, transfers).expect("batch accepted");
        self.now += SECOND_NS / 1000;
        results
    }

    pub fn create_transfers(&mut self, transfers: &[Transfer]) -> Vec<CreateTransferStatus> {
        self.create_transfers_full(transfers).into_iter().map(|r| r.status).collect()
    }

    pub fn transfer(&mut self, transfer: Transfer) -> CreateTransferStatus {
        self.create_transfers(&[transfer])[0]
    }

    pub fn account(&self, id: u128) -> Account {
        self.machine.lookup_accounts(&[AccountId(id)]).pop().expect("account exists")
    }

    /// (debits_pending, debits_posted, credits_pending, credits_posted) of an account.
    pub fn sums(&self, id: u128) -> (u128, u128, u128, u128) {
        let a = self.account(id);
        (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
    }

    pub fn advance_seconds(&mut self, seconds: u64) {
        self.now += seconds * SECOND_NS;
    }

    /// Runs the independent audit and fails the test on any discrepancy.
    pub fn audit(&self) {
        if let Err(error) = self.machine.audit() {
            panic!("audit failed: {error}");
        }
    }
}

/// An account on ledger 1 with code 1.
pub fn account(id: u128, flags: AccountFlags) -> Account {
    Account { id: AccountId(id), ledger: 1, code: 1, flags, ..Account::default() }
}

/// A member: cannot go negative.
pub fn member(id: u128) -> Account {
    account(id, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
}

/// An unconstrained account (an issuance or merchant account).
pub fn plain(id: u128) -> Account {
    account(id, AccountFlags::empty())
}

/// A single-phase transfer on ledger 1 with code 1.
pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

/// A pending transfer with a timeout in seconds (0 = none).
pub fn pending(id: u128, debit: u128, credit: u128, amount: u128, timeout: u32) -> Transfer {
    Transfer { flags: TransferFlags::PENDING, timeout, ..transfer(id, debit, credit, amount) }
}

/// Posts `pending_id` for `amount` (`u128::MAX` = in full); accounts, ledger, code left 0.
pub fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

/// Voids `pending_id`.
pub fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

/// Adds the LINKED flag.
pub fn linked(mut t: Transfer) -> Transfer {
    t.flags |= TransferFlags::LINKED;
    t
}
