//! `tally.v1.AccountFilter` -> [`AccountFilter`], and `AccountBalance` back to the wire.

use tally_proto::limits::QUERY_RESULTS_MAX;
use tally_proto::{u128_of, uint128, v1};

use super::{RequestError, u16_field};
use crate::ledger::{AccountBalance, AccountFilter, AccountFilterFlags, AccountId};

/// Decodes and validates a query filter. Unlike the ledger, which answers an invalid filter
/// with nothing, the edge says what is wrong.
///
/// # Errors
/// `FilterMissing`, a field out of range, `LimitTooLarge` or the filter rule broken.
pub fn filter_from_proto(
    filter: Option<&v1::AccountFilter>,
) -> Result<AccountFilter, RequestError> {
    let f = filter.ok_or(RequestError::FilterMissing)?;
    let decoded = AccountFilter {
        account_id: AccountId(u128_of(f.account_id)),
        user_data_128: u128_of(f.user_data_128),
        user_data_64: f.user_data_64,
        user_data_32: f.user_data_32,
        code: u16_field(0, "filter.code", f.code)?,
        timestamp_min: f.timestamp_min,
        timestamp_max: f.timestamp_max,
        limit: f.limit,
        flags: AccountFilterFlags::from_bits_retain(f.flags),
    };
    decoded.validate().map_err(RequestError::Filter)?;
    if decoded.limit > QUERY_RESULTS_MAX {
        return Err(RequestError::LimitTooLarge { limit: decoded.limit, max: QUERY_RESULTS_MAX });
    }
    Ok(decoded)
}

/// Encodes a filter (to forward a query to another node).
#[must_use]
pub fn filter_to_proto(f: &AccountFilter) -> v1::AccountFilter {
    v1::AccountFilter {
        account_id: uint128(f.account_id.0),
        user_data_128: uint128(f.user_data_128),
        user_data_64: f.user_data_64,
        user_data_32: f.user_data_32,
        code: u32::from(f.code),
        timestamp_min: f.timestamp_min,
        timestamp_max: f.timestamp_max,
        limit: f.limit,
        flags: f.flags.bits(),
    }
}

/// Encodes a historical balance.
#[must_use]
pub fn balance_to_proto(b: &AccountBalance) -> v1::AccountBalance {
    v1::AccountBalance {
        timestamp: b.timestamp,
        debits_pending: uint128(b.debits_pending),
        debits_posted: uint128(b.debits_posted),
        credits_pending: uint128(b.credits_pending),
        credits_posted: uint128(b.credits_posted),
    }
}
