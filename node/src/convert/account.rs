//! `tally.v1.Account` <-> [`Account`].

use tally_proto::{u128_of, uint128, v1};

use super::{RequestError, batch_size_check, u16_field};
use crate::ledger::{Account, AccountFlags, AccountId};

/// Decodes one account; `index` names it in errors.
///
/// # Errors
/// `FieldOutOfRange` when `code` or `flags` do not fit in 16 bits.
pub fn account_from_proto(index: usize, a: &v1::Account) -> Result<Account, RequestError> {
    Ok(Account {
        id: AccountId(u128_of(a.id)),
        debits_pending: u128_of(a.debits_pending),
        debits_posted: u128_of(a.debits_posted),
        credits_pending: u128_of(a.credits_pending),
        credits_posted: u128_of(a.credits_posted),
        user_data_128: u128_of(a.user_data_128),
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        reserved: a.reserved,
        ledger: a.ledger,
        code: u16_field(index, "code", a.code)?,
        flags: AccountFlags::from_bits_retain(u16_field(index, "flags", a.flags)?),
        timestamp: a.timestamp,
    })
}

/// Decodes a `CreateAccounts` request.
///
/// # Errors
/// A size limit, or a field out of range.
pub fn accounts_from_request(
    request: &v1::CreateAccountsRequest,
) -> Result<Vec<Account>, RequestError> {
    batch_size_check(request.accounts.len())?;
    request.accounts.iter().enumerate().map(|(i, a)| account_from_proto(i, a)).collect()
}

/// Encodes an account.
#[must_use]
pub fn account_to_proto(a: &Account) -> v1::Account {
    v1::Account {
        id: uint128(a.id.0),
        debits_pending: uint128(a.debits_pending),
        debits_posted: uint128(a.debits_posted),
        credits_pending: uint128(a.credits_pending),
        credits_posted: uint128(a.credits_posted),
        user_data_128: uint128(a.user_data_128),
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        reserved: a.reserved,
        ledger: a.ledger,
        code: u32::from(a.code),
        flags: u32::from(a.flags.bits()),
        timestamp: a.timestamp,
    }
}
