//! An independent audit of a ledger's state: recomputes every account's four sums from the
//! stored transfers and their pending statuses, and checks invariants I1 (conservation per
//! ledger) and I2 (no balance flag violated). It shares no code with apply, so a bug in
//! apply cannot hide from it; tests run it after every scenario, and replicas can run it
//! after recovery.

use std::collections::BTreeMap;
use std::fmt;

use super::store::LedgerStore;
use super::{Account, AccountId, PendingStatus, StateMachine, TransferFlags};

/// The four sums of one account, or of one ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    /// Σ debits_pending.
    pub debits_pending: u128,
    /// Σ debits_posted.
    pub debits_posted: u128,
    /// Σ credits_pending.
    pub credits_pending: u128,
    /// Σ credits_posted.
    pub credits_posted: u128,
}

/// The first discrepancy found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// An account's stored sums differ from those recomputed from its transfers.
    AccountSums {
        /// The account.
        id: AccountId,
        /// As stored.
        stored: Sums,
        /// As recomputed.
        recomputed: Sums,
    },
    /// Σ debits ≠ Σ credits on a ledger (I1).
    Conservation {
        /// The ledger.
        ledger: u32,
        /// Its totals.
        totals: Sums,
    },
    /// An account breaks its own balance flag (I2).
    Overdraft(Account),
    /// A transfer is not in the state its flags and status require.
    Transfer(String),
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for AuditError {}

impl<S: LedgerStore> StateMachine<S> {
    /// Audits the whole state. Returns the per-ledger totals when everything holds.
    ///
    /// # Errors
    /// The first discrepancy found.
    #[allow(clippy::result_large_err)] // Cold path: a failed audit is a stop-the-world report.
    pub fn audit(&self) -> Result<BTreeMap<u32, Sums>, AuditError> {
        let recomputed = self.recompute_sums()?;
        let mut totals: BTreeMap<u32, Sums> = BTreeMap::new();
        let mut first_error = None;
        self.store.visit_accounts(&mut |account| {
            let stored = Sums {
                debits_pending: account.debits_pending,
                debits_posted: account.debits_posted,
                credits_pending: account.credits_pending,
                credits_posted: account.credits_posted,
            };
            let expected = recomputed.get(&account.id).copied().unwrap_or_default();
            if first_error.is_none() && stored != expected {
                first_error =
                    Some(AuditError::AccountSums { id: account.id, stored, recomputed: expected });
            }
            if first_error.is_none() && !account.within_limits() {
                first_error = Some(AuditError::Overdraft(*account));
            }
            let total = totals.entry(account.ledger).or_default();
            total.debits_pending += stored.debits_pending;
            total.debits_posted += stored.debits_posted;
            total.credits_pending += stored.credits_pending;
            total.credits_posted += stored.credits_posted;
        });
        if let Some(error) = first_error {
            return Err(error);
        }
        for (&ledger, &sums) in &totals {
            if sums.debits_pending != sums.credits_pending
                || sums.debits_posted != sums.credits_posted
            {
                return Err(AuditError::Conservation { ledger, totals: sums });
            }
        }
        Ok(totals)
    }

    /// Replays the transfer records into per-account sums.
    #[allow(clippy::result_large_err)]
    fn recompute_sums(&self) -> Result<BTreeMap<AccountId, Sums>, AuditError> {
        let mut sums: BTreeMap<AccountId, Sums> = BTreeMap::new();
        let mut error = None;
        self.store.visit_transfers(&mut |t| {
            let flags = t.flags;
            let (dr, cr) = (t.debit_account_id, t.credit_account_id);
            if flags.contains(TransferFlags::PENDING) {
                // Still reserved only while pending; resolutions are replayed by their own
                // records (posts, voids) or by the expired status.
                match self.store.pending_status(t.timestamp) {
                    Some(PendingStatus::Pending) => {
                        sums.entry(dr).or_default().debits_pending += t.amount;
                        sums.entry(cr).or_default().credits_pending += t.amount;
                    }
                    Some(_) => {}
                    None => error = Some(AuditError::Transfer(format!("no status: {t:?}"))),
                }
            } else if !flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
                // Single-phase transfers and posts move their (posted) amount; voids none.
                sums.entry(dr).or_default().debits_posted += t.amount;
                sums.entry(cr).or_default().credits_posted += t.amount;
            }
        });
        match error {
            Some(error) => Err(error),
            None => Ok(sums),
        }
    }
}
