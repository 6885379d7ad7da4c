//! A state digest: SHA-256 over every record in a canonical order. Two replicas that
//! applied the same batches at the same cluster times must have equal digests; tests and
//! (later) the replication layer compare them.

use sha2::{Digest as _, Sha256};

use super::StateMachine;
use super::store::LedgerStore;

impl<S: LedgerStore> StateMachine<S> {
    /// SHA-256 of the whole ledger state, independent of how the store keeps it.
    pub fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.store.timestamp_last().to_le_bytes());
        self.store.visit_accounts(&mut |a| {
            for value in [a.id.0, a.debits_pending, a.debits_posted, a.credits_pending] {
                hash.update(value.to_le_bytes());
            }
            for value in [a.credits_posted, a.user_data_128] {
                hash.update(value.to_le_bytes());
            }
            hash.update(a.user_data_64.to_le_bytes());
            for value in [a.user_data_32, a.reserved, a.ledger] {
                hash.update(value.to_le_bytes());
            }
            hash.update(a.code.to_le_bytes());
            hash.update(a.flags.bits().to_le_bytes());
            hash.update(a.timestamp.to_le_bytes());
        });
        hash.update(b"transfers");
        self.store.visit_transfers(&mut |t| {
            for value in [t.id.0, t.debit_account_id.0, t.credit_account_id.0, t.amount] {
                hash.update(value.to_le_bytes());
            }
            hash.update(t.pending_id.0.to_le_bytes());
            hash.update(t.user_data_128.to_le_bytes());
            hash.update(t.user_data_64.to_le_bytes());
            for value in [t.user_data_32, t.timeout, t.ledger] {
                hash.update(value.to_le_bytes());
            }
            hash.update(t.code.to_le_bytes());
            hash.update(t.flags.bits().to_le_bytes());
            hash.update(t.timestamp.to_le_bytes());
        });
        hash.update(b"failed");
        self.store.visit_failed_ids(&mut |id| hash.update(id.0.to_le_bytes()));
        hash.update(b"pending");
        self.store.visit_pending_statuses(&mut |timestamp, status| {
            hash.update(timestamp.to_le_bytes());
            hash.update([status as u8]);
        });
        hash.update(b"expiries");
        self.store.visit_expiries(&mut |e| {
            hash.update(e.expires_at.to_le_bytes());
            hash.update(e.pending_timestamp.to_le_bytes());
        });
        hash.update(b"balances");
        self.store.visit_balances(&mut |id, b| {
            hash.update(id.0.to_le_bytes());
            hash.update(b.timestamp.to_le_bytes());
            for value in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
                hash.update(value.to_le_bytes());
            }
        });
        hash.finalize().into()
    }
}
