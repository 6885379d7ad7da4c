//! The edge between the `tally.v1` wire types and the ledger core, one file per type.
//!
//! Decoding validates what the wire can express but the ledger cannot: event counts
//! against `BATCH_EVENTS_MAX`, 16-bit fields carried in `uint32`, a query `limit` above
//! `QUERY_RESULTS_MAX`, an invalid filter. Such a request is refused whole with a
//! [`RequestError`] that names the event index and the field, and nothing of it is applied.
//! Everything the ledger itself judges (ids, flags, balances) is left to the ledger, which
//! answers per event.

mod account;
mod filter;
mod result;
mod transfer;

use std::fmt;

use tally_proto::limits::{BATCH_EVENTS_MAX, U16_FIELD_MAX};

pub use account::{account_from_proto, account_to_proto, accounts_from_request};
pub use filter::{balance_to_proto, filter_from_proto, filter_to_proto};
pub use result::{account_results_to_proto, transfer_results_to_proto};
pub use transfer::{transfer_from_proto, transfer_to_proto, transfers_from_request};

use crate::ledger::{AccountId, FilterError, TransferId};

/// Why a request was refused whole. Maps to gRPC `INVALID_ARGUMENT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The request has no events.
    Empty,
    /// More events than the limit.
    TooManyEvents {
        /// Events in the request.
        events: usize,
        /// `BATCH_EVENTS_MAX`.
        max: u32,
    },
    /// A 16-bit field carried a larger value.
    FieldOutOfRange {
        /// Index of the event in the request.
        index: usize,
        /// The field's name in the proto.
        field: &'static str,
        /// The value sent.
        value: u32,
        /// The largest value allowed.
        max: u32,
    },
    /// A query without its `filter`.
    FilterMissing,
    /// The filter breaks a rule.
    Filter(FilterError),
    /// A query `limit` above `QUERY_RESULTS_MAX`.
    LimitTooLarge {
        /// The limit asked for.
        limit: u32,
        /// `QUERY_RESULTS_MAX`.
        max: u32,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the request has no events; send 1 to {BATCH_EVENTS_MAX}"),
            Self::TooManyEvents { events, max } => {
                write!(f, "the request has {events} events; batch_events_max is {max}")
            }
            Self::FieldOutOfRange { index, field, value, max } => {
                write!(f, "event {index}: {field} = {value} is above its maximum {max}")
            }
            Self::FilterMissing => write!(f, "filter is required"),
            Self::Filter(error) => write!(f, "filter: {}", filter_error_text(*error)),
            Self::LimitTooLarge { limit, max } => {
                write!(
                    f,
                    "filter.limit = {limit} is above query_results_max {max}; page with timestamp_min/timestamp_max"
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}

fn filter_error_text(error: FilterError) -> &'static str {
    match error {
        FilterError::AccountId => "account_id must not be 0 or 2^128-1",
        FilterError::TimestampMin => "timestamp_min must be below 2^63",
        FilterError::TimestampMax => "timestamp_max must be below 2^63",
        FilterError::TimestampRange => "timestamp_min must not exceed timestamp_max",
        FilterError::Limit => "limit must not be 0",
        FilterError::NoDirection => "flags must include DEBITS or CREDITS",
        FilterError::ReservedFlag => "flags has undefined bits set",
    }
}

/// Checks an event count against `1..=BATCH_EVENTS_MAX`.
///
/// # Errors
/// `Empty` or `TooManyEvents`.
pub fn batch_size_check(events: usize) -> Result<(), RequestError> {
    if events == 0 {
        return Err(RequestError::Empty);
    }
    if events > BATCH_EVENTS_MAX as usize {
        return Err(RequestError::TooManyEvents { events, max: BATCH_EVENTS_MAX });
    }
    Ok(())
}

/// Narrows a `uint32` wire field to the 16 bits the ledger keeps.
fn u16_field(index: usize, field: &'static str, value: u32) -> Result<u16, RequestError> {
    u16::try_from(value).map_err(|_| RequestError::FieldOutOfRange {
        index,
        field,
        value,
        max: U16_FIELD_MAX,
    })
}

/// Decodes the ids of a lookup request.
///
/// # Errors
/// `Empty` or `TooManyEvents`.
pub fn account_ids_from_proto(
    ids: &[tally_proto::Uint128],
) -> Result<Vec<AccountId>, RequestError> {
    batch_size_check(ids.len())?;
    Ok(ids.iter().map(|&id| AccountId(id.into())).collect())
}

/// Decodes the ids of a lookup request.
///
/// # Errors
/// `Empty` or `TooManyEvents`.
pub fn transfer_ids_from_proto(
    ids: &[tally_proto::Uint128],
) -> Result<Vec<TransferId>, RequestError> {
    batch_size_check(ids.len())?;
    Ok(ids.iter().map(|&id| TransferId(id.into())).collect())
}
