// Included once per store by `ledger_suite!` in main.rs.
//
// One case per `CreateAccountStatus`, plus a coverage check and precedence cases.

use std::collections::BTreeSet;

use tally_node::ledger::{Account, AccountFlags, AccountId, CreateAccountStatus as S};
use tally_proto::limits::TIMESTAMP_MAX;

use crate::support::*;

fn existing() -> Account {
    Account { user_data_128: 1, user_data_64: 2, user_data_32: 3, ..plain(1) }
}

fn imported(mut a: Account, timestamp: u64) -> Account {
    a.flags |= AccountFlags::IMPORTED;
    a.timestamp = timestamp;
    a
}

fn linked(mut a: Account) -> Account {
    a.flags |= AccountFlags::LINKED;
    a
}

/// (batch, index, expected status), applied after account 1 exists.
fn cases(now: u64) -> Vec<(Vec<Account>, usize, S)> {
    vec![
        (vec![plain(10)], 0, S::Created),
        (vec![linked(plain(10)), plain(0)], 0, S::LinkedEventFailed),
        (vec![linked(plain(10))], 0, S::LinkedEventChainOpen),
        (vec![imported(plain(10), now - 1), plain(11)], 1, S::ImportedEventExpected),
        (vec![plain(10), imported(plain(11), now - 1)], 1, S::ImportedEventNotExpected),
        (vec![Account { timestamp: 7, ..plain(10) }], 0, S::TimestampMustBeZero),
        (vec![imported(plain(10), 0)], 0, S::ImportedEventTimestampOutOfRange),
        (vec![imported(plain(10), TIMESTAMP_MAX)], 0, S::ImportedEventTimestampMustNotAdvance),
        (vec![Account { reserved: 1, ..plain(10) }], 0, S::ReservedField),
        (vec![account(10, AccountFlags::from_bits_retain(1 << 12))], 0, S::ReservedFlag),
        (vec![plain(0)], 0, S::IdMustNotBeZero),
        (vec![plain(u128::MAX)], 0, S::IdMustNotBeIntMax),
        (vec![Account { flags: AccountFlags::HISTORY, ..existing() }], 0, S::ExistsWithDifferentFlags),
        (vec![Account { user_data_128: 9, ..existing() }], 0, S::ExistsWithDifferentUserData128),
        (vec![Account { user_data_64: 9, ..existing() }], 0, S::ExistsWithDifferentUserData64),
        (vec![Account { user_data_32: 9, ..existing() }], 0, S::ExistsWithDifferentUserData32),
        (vec![Account { ledger: 2, ..existing() }], 0, S::ExistsWithDifferentLedger),
        (vec![Account { code: 2, ..existing() }], 0, S::ExistsWithDifferentCode),
        (vec![existing()], 0, S::Exists),
        (
            vec![account(
                10,
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            )],
            0,
            S::FlagsAreMutuallyExclusive,
        ),
        (vec![Account { debits_pending: 1, ..plain(10) }], 0, S::DebitsPendingMustBeZero),
        (vec![Account { debits_posted: 1, ..plain(10) }], 0, S::DebitsPostedMustBeZero),
        (vec![Account { credits_pending: 1, ..plain(10) }], 0, S::CreditsPendingMustBeZero),
        (vec![Account { credits_posted: 1, ..plain(10) }], 0, S::CreditsPostedMustBeZero),
        (vec![Account { ledger: 0, ..plain(10) }], 0, S::LedgerMustNotBeZero),
        (vec![Account { code: 0, ..plain(10) }], 0, S::CodeMustNotBeZero),
        (vec![imported(plain(10), 1)], 0, S::ImportedEventTimestampMustNotRegress),
    ]
}

/// Every case produces exactly its status.
#[test]
fn each_account_status_is_returned_in_its_situation() {
    for (batch, index, expect) in cases(5_000 * SECOND_NS) {
        let mut ledger = Ledger::new(super::new_store());
        assert_eq!(ledger.create_accounts(&[existing()]), vec![S::Created]);
        ledger.now = 5_000 * SECOND_NS;
        let results = ledger.create_accounts(&batch);
        assert_eq!(results[index], expect, "{batch:?}: {results:?}");
        ledger.audit();
    }
}

/// The table above has a case for every status the enum defines.
#[test]
fn every_account_status_has_a_case() {
    let covered: BTreeSet<u32> = cases(1).iter().map(|c| c.2.code()).collect();
    let all: BTreeSet<u32> = S::PRECEDENCE.iter().map(|s| s.code()).collect();
    let missing: Vec<_> = all.difference(&covered).filter_map(|&c| S::from_code(c)).collect();
    assert!(missing.is_empty(), "statuses without a case: {missing:?}");
}

/// When an account breaks several rules, the first in precedence wins.
#[test]
fn account_precedence_picks_the_first_rule_broken() {
    let table = vec![
        (Account { timestamp: 7, reserved: 1, ..plain(0) }, S::TimestampMustBeZero),
        (Account { reserved: 1, flags: AccountFlags::from_bits_retain(1 << 12), ..plain(0) }, S::ReservedField),
        (Account { flags: AccountFlags::from_bits_retain(1 << 12), ..plain(0) }, S::ReservedFlag),
        (Account { ledger: 0, ..plain(0) }, S::IdMustNotBeZero),
        // Exists checks come before field checks: a resubmission with bad balances reads
        // as a different account, not as a malformed one.
        (Account { debits_posted: 5, code: 0, ..existing() }, S::ExistsWithDifferentCode),
        (Account { user_data_32: 5, ledger: 9, ..existing() }, S::ExistsWithDifferentUserData32),
        (Account { debits_posted: 5, ledger: 0, ..plain(10) }, S::DebitsPostedMustBeZero),
        (Account { ledger: 0, code: 0, ..plain(10) }, S::LedgerMustNotBeZero),
    ];
    for (event, expect) in table {
        let mut ledger = Ledger::new(super::new_store());
        assert_eq!(ledger.create_accounts(&[existing()]), vec![S::Created]);
        assert_eq!(ledger.create_accounts(&[event]), vec![expect], "{event:?}");
    }
    // Ids that are not created are not found afterwards.
    let ledger = Ledger::new(super::new_store());
    assert!(ledger.machine.lookup_accounts(&[AccountId(0), AccountId(10)]).is_empty());
}
