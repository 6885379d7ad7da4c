//! `tally.v1.Transfer` <-> [`Transfer`].

use tally_proto::{u128_of, uint128, v1};

use super::{RequestError, batch_size_check, u16_field};
use crate::ledger::{AccountId, Transfer, TransferFlags, TransferId};

/// Decodes one transfer; `index` names it in errors.
///
/// # Errors
/// `FieldOutOfRange` when `code` or `flags` do not fit in 16 bits.
pub fn transfer_from_proto(index: usize, t: &v1::Transfer) -> Result<Transfer, RequestError> {
    Ok(Transfer {
        id: TransferId(u128_of(t.id)),
        debit_account_id: AccountId(u128_of(t.debit_account_id)),
        credit_account_id: AccountId(u128_of(t.credit_account_id)),
        amount: u128_of(t.amount),
        pending_id: TransferId(u128_of(t.pending_id)),
        user_data_128: u128_of(t.user_data_128),
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timeout: t.timeout,
        ledger: t.ledger,
        code: u16_field(index, "code", t.code)?,
        flags: TransferFlags::from_bits_retain(u16_field(index, "flags", t.flags)?),
        timestamp: t.timestamp,
    })
}

/// Decodes a `CreateTransfers` request.
///
/// # Errors
/// A size limit, or a field out of range.
pub fn transfers_from_request(
    request: &v1::CreateTransfersRequest,
) -> Result<Vec<Transfer>, RequestError> {
    batch_size_check(request.transfers.len())?;
    request.transfers.iter().enumerate().map(|(i, t)| transfer_from_proto(i, t)).collect()
}

/// Encodes a transfer.
#[must_use]
pub fn transfer_to_proto(t: &Transfer) -> v1::Transfer {
    v1::Transfer {
        id: uint128(t.id.0),
        debit_account_id: uint128(t.debit_account_id.0),
        credit_account_id: uint128(t.credit_account_id.0),
        amount: uint128(t.amount),
        pending_id: uint128(t.pending_id.0),
        user_data_128: uint128(t.user_data_128),
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timeout: t.timeout,
        ledger: t.ledger,
        code: u32::from(t.code),
        flags: u32::from(t.flags.bits()),
        timestamp: t.timestamp,
    }
}
