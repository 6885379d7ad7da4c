//! `AccountFilter`: selects one account's transfers or historical balances
//! (TigerBeetle's `AccountFilter`, without its reserved bytes).

use bitflags::bitflags;

use super::AccountId;
use super::state_machine::timestamp_valid;

bitflags! {
    /// `AccountFilter.flags`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AccountFilterFlags: u32 {
        /// Include transfers where the account is debited.
        const DEBITS = 1 << 0;
        /// Include transfers where the account is credited.
        const CREDITS = 1 << 1;
        /// Newest first.
        const REVERSED = 1 << 2;
    }
}

/// Query parameters. Zero means "no filter" for the optional fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountFilter {
    /// The account; not 0, not `u128::MAX`.
    pub account_id: AccountId,
    /// Only transfers with this `user_data_128` (0 = any).
    pub user_data_128: u128,
    /// Only transfers with this `user_data_64` (0 = any).
    pub user_data_64: u64,
    /// Only transfers with this `user_data_32` (0 = any).
    pub user_data_32: u32,
    /// Only transfers with this `code` (0 = any).
    pub code: u16,
    /// Lower timestamp bound, inclusive (0 = none).
    pub timestamp_min: u64,
    /// Upper timestamp bound, inclusive (0 = none).
    pub timestamp_max: u64,
    /// Most results to return; not 0. Capped at `QUERY_RESULTS_MAX`.
    pub limit: u32,
    /// See [`AccountFilterFlags`].
    pub flags: AccountFilterFlags,
}

/// Why a filter is invalid. The ledger answers an invalid filter with no results, as
/// TigerBeetle does; the gRPC edge reports the reason instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    /// `account_id` is 0 or `u128::MAX`.
    AccountId,
    /// `timestamp_min` is at or above 2^63.
    TimestampMin,
    /// `timestamp_max` is at or above 2^63.
    TimestampMax,
    /// `timestamp_min` > `timestamp_max` (both set).
    TimestampRange,
    /// `limit` is 0.
    Limit,
    /// Neither `DEBITS` nor `CREDITS` is set.
    NoDirection,
    /// Undefined flag bits are set.
    ReservedFlag,
}

impl AccountFilter {
    /// TigerBeetle's validity rules for a filter.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.account_id == AccountId::ZERO || self.account_id == AccountId::MAX {
            return Err(FilterError::AccountId);
        }
        if self.timestamp_min != 0 && !timestamp_valid(self.timestamp_min) {
            return Err(FilterError::TimestampMin);
        }
        if self.timestamp_max != 0 && !timestamp_valid(self.timestamp_max) {
            return Err(FilterError::TimestampMax);
        }
        if self.timestamp_max != 0 && self.timestamp_min > self.timestamp_max {
            return Err(FilterError::TimestampRange);
        }
        if self.limit == 0 {
            return Err(FilterError::Limit);
        }
        if !self.flags.intersects(AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS) {
            return Err(FilterError::NoDirection);
        }
        if self.flags.bits() & !AccountFilterFlags::all().bits() != 0 {
            return Err(FilterError::ReservedFlag);
        }
        Ok(())
    }

    /// The inclusive timestamp range the filter selects.
    #[must_use]
    pub fn timestamp_range(&self) -> (u64, u64) {
        let max = if self.timestamp_max == 0 { u64::MAX } else { self.timestamp_max };
        (self.timestamp_min, max)
    }
}
