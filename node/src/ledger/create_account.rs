//! Creating one account: TigerBeetle's `create_account`, check for check, in its order.

use super::store::LedgerStore;
use super::{Account, AccountFlags, AccountId, CreateAccountStatus as Status, StateMachine};

impl<S: LedgerStore> StateMachine<S> {
    /// Validates and inserts `a`. Returns the status and the timestamp to report.
    pub(super) fn create_account(&mut self, timestamp_event: u64, a: &Account) -> (Status, u64) {
        assert!(timestamp_event > self.store.timestamp_last());
        match self.create_account_checked(timestamp_event, a) {
            Ok(timestamp) => (Status::Created, timestamp),
            Err((status, timestamp)) => (status, timestamp.unwrap_or(timestamp_event)),
        }
    }

    /// `Err` carries the status and, for `Exists`, the existing account's timestamp.
    fn create_account_checked(
        &mut self,
        timestamp_event: u64,
        a: &Account,
    ) -> Result<u64, (Status, Option<u64>)> {
        let fail = |status| Err((status, None));
        if a.reserved != 0 {
            return fail(Status::ReservedField);
        }
        if a.flags.has_reserved_bits() {
            return fail(Status::ReservedFlag);
        }
        if a.id == AccountId::ZERO {
            return fail(Status::IdMustNotBeZero);
        }
        if a.id == AccountId::MAX {
            return fail(Status::IdMustNotBeIntMax);
        }
        if let Some(existing) = self.store.account(a.id) {
            return Err(account_exists(a, &existing));
        }
        if a.flags.contains(
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ) {
            return fail(Status::FlagsAreMutuallyExclusive);
        }
        if a.debits_pending != 0 {
            return fail(Status::DebitsPendingMustBeZero);
        }
        if a.debits_posted != 0 {
            return fail(Status::DebitsPostedMustBeZero);
        }
        if a.credits_pending != 0 {
            return fail(Status::CreditsPendingMustBeZero);
        }
        if a.credits_posted != 0 {
            return fail(Status::CreditsPostedMustBeZero);
        }
        if a.ledger == 0 {
            return fail(Status::LedgerMustNotBeZero);
        }
        if a.code == 0 {
            return fail(Status::CodeMustNotBeZero);
        }
        let timestamp = if a.flags.contains(AccountFlags::IMPORTED) {
            // After the idempotency checks, so that an import can be resumed and read `exists`.
            assert!(a.timestamp > 0, "the batch loop checked the range");
            if a.timestamp <= self.store.account_timestamp_max()
                || self.store.transfer_at(a.timestamp).is_some()
            {
                return fail(Status::ImportedEventTimestampMustNotRegress);
            }
            a.timestamp
        } else {
            assert_eq!(a.timestamp, 0);
            timestamp_event
        };
        let account = Account {
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            reserved: 0,
            timestamp,
            ..*a
        };
        self.write_account_insert(&account);
        Ok(timestamp)
    }
}

/// Compares a resubmitted account with the stored one, field by field in TigerBeetle's order.
fn account_exists(a: &Account, e: &Account) -> (Status, Option<u64>) {
    assert_eq!(a.id, e.id);
    let status = if a.flags != e.flags {
        Status::ExistsWithDifferentFlags
    } else if a.user_data_128 != e.user_data_128 {
        Status::ExistsWithDifferentUserData128
    } else if a.user_data_64 != e.user_data_64 {
        Status::ExistsWithDifferentUserData64
    } else if a.user_data_32 != e.user_data_32 {
        Status::ExistsWithDifferentUserData32
    } else if a.ledger != e.ledger {
        Status::ExistsWithDifferentLedger
    } else if a.code != e.code {
        Status::ExistsWithDifferentCode
    } else {
        return (Status::Exists, Some(e.timestamp));
    };
    (status, None)
}
