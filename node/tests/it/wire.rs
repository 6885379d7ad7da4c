//! The wire contract against the ledger: status names and values, conversions, and the
//! edge's refusals of requests the ledger cannot take.

use tally_node::convert::{
    RequestError, account_from_proto, account_ids_from_proto, account_to_proto, filter_from_proto,
    transfer_from_proto, transfer_results_to_proto, transfer_to_proto, transfers_from_request,
};
use tally_node::ledger::{
    Account, AccountFlags, AccountId, CreateAccountStatus, CreateTransferResult,
    CreateTransferStatus, FilterError, Transfer, TransferFlags, TransferId,
};
use tally_proto::limits::{BATCH_EVENTS_MAX, QUERY_RESULTS_MAX};
use tally_proto::{Uint128, v1};

/// `ExceedsCredits` -> `EXCEEDS_CREDITS`.
fn screaming(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out.replace("DATA128", "DATA_128").replace("DATA64", "DATA_64").replace("DATA32", "DATA_32")
}

/// Every ledger status has the same number and name in the proto, and the proto has no
/// status the ledger lacks.
#[test]
fn status_values_and_names_match_the_proto() {
    for status in CreateTransferStatus::PRECEDENCE {
        let wire =
            v1::CreateTransferStatus::try_from(status.code() as i32).expect("defined on the wire");
        assert_eq!(
            wire.as_str_name(),
            format!("CREATE_TRANSFER_STATUS_{}", screaming(status.name()))
        );
    }
    for status in CreateAccountStatus::PRECEDENCE {
        let wire =
            v1::CreateAccountStatus::try_from(status.code() as i32).expect("defined on the wire");
        assert_eq!(
            wire.as_str_name(),
            format!("CREATE_ACCOUNT_STATUS_{}", screaming(status.name()))
        );
    }
    let wire_transfer =
        (0..2_000).filter(|&c| v1::CreateTransferStatus::try_from(c).is_ok()).count();
    let wire_account = (0..2_000).filter(|&c| v1::CreateAccountStatus::try_from(c).is_ok()).count();
    assert_eq!(wire_transfer, CreateTransferStatus::PRECEDENCE.len());
    assert_eq!(wire_account, CreateAccountStatus::PRECEDENCE.len());
}

/// Status numbers are TigerBeetle's: spot-check the ones clients depend on most.
#[test]
fn status_numbers_are_tigerbeetles() {
    assert_eq!(CreateTransferStatus::Exists.code(), 46);
    assert_eq!(CreateTransferStatus::ExceedsCredits.code(), 54);
    assert_eq!(CreateTransferStatus::IdAlreadyFailed.code(), 68);
    assert_eq!(CreateTransferStatus::PendingTransferExpired.code(), 35);
    assert_eq!(CreateAccountStatus::Exists.code(), 21);
    assert_eq!(CreateTransferStatus::from_code(18), None, "18 is retired");
}

/// Every field survives ledger -> proto -> ledger, at the edges of its range.
#[test]
fn conversions_round_trip() {
    let transfer = Transfer {
        id: TransferId(u128::MAX - 1),
        debit_account_id: AccountId(1 << 64),
        credit_account_id: AccountId(u128::from(u64::MAX)),
        amount: u128::MAX,
        pending_id: TransferId(3),
        user_data_128: 1 << 100,
        user_data_64: u64::MAX,
        user_data_32: u32::MAX,
        timeout: u32::MAX,
        ledger: u32::MAX,
        code: u16::MAX,
        flags: TransferFlags::from_bits_retain(u16::MAX),
        timestamp: u64::MAX,
    };
    assert_eq!(transfer_from_proto(0, &transfer_to_proto(&transfer)).unwrap(), transfer);
    let account = Account {
        id: AccountId(5),
        credits_posted: u128::MAX,
        code: 7,
        flags: AccountFlags::HISTORY | AccountFlags::LINKED,
        timestamp: 9,
        ..Account::default()
    };
    assert_eq!(account_from_proto(0, &account_to_proto(&account)).unwrap(), account);
    // Zero travels as an absent field.
    assert_eq!(account_to_proto(&Account::default()).id, None);
}

/// 16-bit fields above 65535 are refused whole, naming the event and the field.
#[test]
fn sixteen_bit_fields_out_of_range_are_refused() {
    let good = transfer_to_proto(&Transfer { id: TransferId(1), ..Transfer::default() });
    let bad = v1::Transfer { code: 70_000, ..good };
    let request = v1::CreateTransfersRequest { transfers: vec![good, bad] };
    let error = transfers_from_request(&request).unwrap_err();
    assert_eq!(
        error,
        RequestError::FieldOutOfRange { index: 1, field: "code", value: 70_000, max: 65_535 }
    );
    assert_eq!(error.to_string(), "event 1: code = 70000 is above its maximum 65535");
    let flags = v1::Transfer { flags: 1 << 16, ..good };
    assert!(matches!(
        transfer_from_proto(3, &flags),
        Err(RequestError::FieldOutOfRange { index: 3, field: "flags", .. })
    ));
}

/// Batch sizes are enforced at the edge: empty and oversized requests are refused.
#[test]
fn batch_limits_are_enforced_at_the_edge() {
    let empty = v1::CreateTransfersRequest { transfers: vec![] };
    assert_eq!(transfers_from_request(&empty).unwrap_err(), RequestError::Empty);
    let oversized = v1::CreateTransfersRequest {
        transfers: vec![v1::Transfer::default(); BATCH_EVENTS_MAX as usize + 1],
    };
    let error = transfers_from_request(&oversized).unwrap_err();
    assert_eq!(error, RequestError::TooManyEvents { events: 8191, max: BATCH_EVENTS_MAX });
    assert!(error.to_string().contains("batch_events_max is 8190"));
    let full = v1::CreateTransfersRequest {
        transfers: vec![v1::Transfer::default(); BATCH_EVENTS_MAX as usize],
    };
    assert_eq!(transfers_from_request(&full).unwrap().len(), BATCH_EVENTS_MAX as usize);
    let ids = vec![Uint128::from(1); BATCH_EVENTS_MAX as usize + 1];
    assert!(matches!(account_ids_from_proto(&ids), Err(RequestError::TooManyEvents { .. })));
}

/// The edge explains a bad filter instead of answering with nothing.
#[test]
fn filters_are_validated_with_reasons() {
    let good = v1::AccountFilter {
        account_id: Some(Uint128::from(1)),
        limit: 10,
        flags: 1,
        ..Default::default()
    };
    assert_eq!(filter_from_proto(Some(&good)).unwrap().account_id, AccountId(1));
    assert_eq!(filter_from_proto(None).unwrap_err(), RequestError::FilterMissing);
    let no_direction = v1::AccountFilter { flags: 4, ..good };
    assert_eq!(
        filter_from_proto(Some(&no_direction)).unwrap_err(),
        RequestError::Filter(FilterError::NoDirection)
    );
    assert_eq!(
        RequestError::Filter(FilterError::NoDirection).to_string(),
        "filter: flags must include DEBITS or CREDITS"
    );
    let too_many = v1::AccountFilter { limit: QUERY_RESULTS_MAX + 1, ..good };
    assert!(matches!(filter_from_proto(Some(&too_many)), Err(RequestError::LimitTooLarge { .. })));
    let no_account = v1::AccountFilter { account_id: None, ..good };
    assert_eq!(
        filter_from_proto(Some(&no_account)).unwrap_err(),
        RequestError::Filter(FilterError::AccountId)
    );
}

/// Results keep their order, timestamps and numeric statuses on the wire.
#[test]
fn results_encode_in_order() {
    let results = [
        CreateTransferResult { timestamp: 5, status: CreateTransferStatus::Created },
        CreateTransferResult { timestamp: 6, status: CreateTransferStatus::ExceedsCredits },
    ];
    let reply = transfer_results_to_proto(&results);
    assert_eq!(reply.results.len(), 2);
    assert_eq!(reply.results[0].status(), v1::CreateTransferStatus::Created);
    assert_eq!(reply.results[1].status(), v1::CreateTransferStatus::ExceedsCredits);
    assert_eq!(reply.results[1].timestamp, 6);
}
