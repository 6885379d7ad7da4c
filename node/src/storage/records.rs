//! Fixed-size, little-endian encodings of the ledger records kept on disk.
//!
//! Every record has one exact length; a decode of any other length, or of flag bits the
//! ledger does not define, is corruption and panics (the node stops rather than guess).
//! Each encoder is paired with a decoder, and a round-trip test covers every field.

use crate::ledger::{
    Account, AccountBalance, AccountFlags, AccountId, PendingStatus, Transfer, TransferFlags,
    TransferId,
};

/// Encoded length of an [`Account`].
pub const ACCOUNT_BYTES: usize = 16 * 6 + 8 + 4 * 3 + 2 + 2 + 8;
/// Encoded length of a [`Transfer`].
pub const TRANSFER_BYTES: usize = 16 * 6 + 8 + 4 * 3 + 2 + 2 + 8;
/// Encoded length of an [`AccountBalance`].
pub const BALANCE_BYTES: usize = 8 + 16 * 4;

struct Writer<const N: usize> {
    bytes: [u8; N],
    at: usize,
}

impl<const N: usize> Writer<N> {
    fn new() -> Self {
        Self { bytes: [0; N], at: 0 }
    }
    fn put(&mut self, field: &[u8]) -> &mut Self {
        self.bytes[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
        self
    }
    fn finish(&self) -> [u8; N] {
        assert_eq!(self.at, N, "record encoder wrote {} of {N} bytes", self.at);
        self.bytes
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const K: usize>(&mut self) -> [u8; K] {
        let (head, rest) = self.bytes.split_at(K);
        self.bytes = rest;
        head.try_into().expect("split_at returned K bytes")
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
}

fn reader<'a>(bytes: &'a [u8], expected: usize, what: &str) -> Reader<'a> {
    assert_eq!(bytes.len(), expected, "corrupt {what} record: {} bytes", bytes.len());
    Reader { bytes }
}

/// Encodes an account.
#[must_use]
pub fn account_encode(a: &Account) -> [u8; ACCOUNT_BYTES] {
    Writer::<ACCOUNT_BYTES>::new()
        .put(&a.id.0.to_le_bytes())
        .put(&a.debits_pending.to_le_bytes())
        .put(&a.debits_posted.to_le_bytes())
        .put(&a.credits_pending.to_le_bytes())
        .put(&a.credits_posted.to_le_bytes())
        .put(&a.user_data_128.to_le_bytes())
        .put(&a.user_data_64.to_le_bytes())
        .put(&a.user_data_32.to_le_bytes())
        .put(&a.reserved.to_le_bytes())
        .put(&a.ledger.to_le_bytes())
        .put(&a.code.to_le_bytes())
        .put(&a.flags.bits().to_le_bytes())
        .put(&a.timestamp.to_le_bytes())
        .finish()
}

/// Decodes a stored account.
///
/// # Panics
/// On a record of the wrong length or with undefined flag bits (corruption: the ledger
/// stores no account with such bits).
#[must_use]
pub fn account_decode(bytes: &[u8]) -> Account {
    let account = account_decode_event(bytes);
    assert!(!account.flags.has_reserved_bits(), "corrupt account record: flags");
    account
}

/// Decodes an account of a request (a Raft command's event): undefined flag bits are kept,
/// for the ledger to answer `reserved_flag` as it does for any other event it refuses.
///
/// # Panics
/// On a record of the wrong length.
#[must_use]
pub fn account_decode_event(bytes: &[u8]) -> Account {
    let mut r = reader(bytes, ACCOUNT_BYTES, "account");
    Account {
        id: AccountId(r.u128()),
        debits_pending: r.u128(),
        debits_posted: r.u128(),
        credits_pending: r.u128(),
        credits_posted: r.u128(),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        reserved: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: AccountFlags::from_bits_retain(r.u16()),
        timestamp: r.u64(),
    }
}

/// Encodes a transfer.
#[must_use]
pub fn transfer_encode(t: &Transfer) -> [u8; TRANSFER_BYTES] {
    Writer::<TRANSFER_BYTES>::new()
        .put(&t.id.0.to_le_bytes())
        .put(&t.debit_account_id.0.to_le_bytes())
        .put(&t.credit_account_id.0.to_le_bytes())
        .put(&t.amount.to_le_bytes())
        .put(&t.pending_id.0.to_le_bytes())
        .put(&t.user_data_128.to_le_bytes())
        .put(&t.user_data_64.to_le_bytes())
        .put(&t.user_data_32.to_le_bytes())
        .put(&t.timeout.to_le_bytes())
        .put(&t.ledger.to_le_bytes())
        .put(&t.code.to_le_bytes())
        .put(&t.flags.bits().to_le_bytes())
        .put(&t.timestamp.to_le_bytes())
        .finish()
}

/// Decodes a stored transfer.
///
/// # Panics
/// On a record of the wrong length or with undefined flag bits (corruption: the ledger
/// stores no transfer with such bits).
#[must_use]
pub fn transfer_decode(bytes: &[u8]) -> Transfer {
    let transfer = transfer_decode_event(bytes);
    assert!(!transfer.flags.has_reserved_bits(), "corrupt transfer record: flags");
    transfer
}

/// Decodes a transfer of a request (a Raft command's event): undefined flag bits are kept,
/// for the ledger to answer `reserved_flag` as it does for any other event it refuses.
///
/// # Panics
/// On a record of the wrong length.
#[must_use]
pub fn transfer_decode_event(bytes: &[u8]) -> Transfer {
    let mut r = reader(bytes, TRANSFER_BYTES, "transfer");
    Transfer {
        id: TransferId(r.u128()),
        debit_account_id: AccountId(r.u128()),
        credit_account_id: AccountId(r.u128()),
        amount: r.u128(),
        pending_id: TransferId(r.u128()),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        timeout: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: TransferFlags::from_bits_retain(r.u16()),
        timestamp: r.u64(),
    }
}

/// Encodes a balance snapshot.
#[must_use]
pub fn balance_encode(b: &AccountBalance) -> [u8; BALANCE_BYTES] {
    Writer::<BALANCE_BYTES>::new()
        .put(&b.timestamp.to_le_bytes())
        .put(&b.debits_pending.to_le_bytes())
        .put(&b.debits_posted.to_le_bytes())
        .put(&b.credits_pending.to_le_bytes())
        .put(&b.credits_posted.to_le_bytes())
        .finish()
}

/// Decodes a balance snapshot.
///
/// # Panics
/// On a record of the wrong length (corruption).
#[must_use]
pub fn balance_decode(bytes: &[u8]) -> AccountBalance {
    let mut r = reader(bytes, BALANCE_BYTES, "balance");
    AccountBalance {
        timestamp: r.u64(),
        debits_pending: r.u128(),
        debits_posted: r.u128(),
        credits_pending: r.u128(),
        credits_posted: r.u128(),
    }
}

/// Encodes a pending status as one byte.
#[must_use]
pub fn pending_status_encode(status: PendingStatus) -> [u8; 1] {
    [status as u8]
}

/// Decodes a pending status.
///
/// # Panics
/// On an undefined value (corruption).
#[must_use]
pub fn pending_status_decode(bytes: &[u8]) -> PendingStatus {
    match bytes {
        [1] => PendingStatus::Pending,
        [2] => PendingStatus::Posted,
        [3] => PendingStatus::Voided,
        [4] => PendingStatus::Expired,
        _ => panic!("corrupt pending status record: {bytes:?}"),
    }
}

/// Decodes a big-endian `u64` (keys and counters).
///
/// # Panics
/// On a value that is not 8 bytes (corruption).
#[must_use]
pub fn u64_decode(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("corrupt u64 record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct(seed: u8) -> u128 {
        u128::from_le_bytes([seed; 16]) ^ 0x0123_4567_89ab_cdef
    }

    #[test]
    fn a_request_event_keeps_undefined_flag_bits_for_the_ledger_to_refuse() {
        // A Raft command's events come from clients: undefined bits reach the ledger
        // (which answers `reserved_flag`) instead of stopping the replica.
        let t = Transfer { flags: TransferFlags::from_bits_retain(1 << 9), ..Transfer::default() };
        assert_eq!(transfer_decode_event(&transfer_encode(&t)).flags.bits(), 1 << 9);
        let a = Account { flags: AccountFlags::from_bits_retain(1 << 6), ..Account::default() };
        assert_eq!(account_decode_event(&account_encode(&a)).flags.bits(), 1 << 6);
    }

    #[test]
    #[should_panic(expected = "corrupt transfer record: flags")]
    fn a_stored_transfer_with_undefined_flag_bits_is_corruption() {
        let t = Transfer { flags: TransferFlags::from_bits_retain(1 << 9), ..Transfer::default() };
        let _ = transfer_decode(&transfer_encode(&t));
    }

    #[test]
    fn every_account_field_round_trips() {
        // Proves no field is dropped, truncated or swapped by the account encoding.
        let a = Account {
            id: AccountId(distinct(1)),
            debits_pending: distinct(2),
            debits_posted: distinct(3),
            credits_pending: distinct(4),
            credits_posted: distinct(5),
            user_data_128: distinct(6),
            user_data_64: 7 << 56 | 7,
            user_data_32: 8 << 24 | 8,
            reserved: 0,
            ledger: 9 << 24 | 9,
            code: 10 << 8 | 10,
            flags: AccountFlags::all(),
            timestamp: 11 << 56 | 11,
        };
        assert_eq!(account_decode(&account_encode(&a)), a);
    }

    #[test]
    fn every_transfer_and_balance_field_round_trips() {
        // Proves the transfer and balance encodings keep every field.
        let t = Transfer {
            id: TransferId(distinct(1)),
            debit_account_id: AccountId(distinct(2)),
            credit_account_id: AccountId(distinct(3)),
            amount: distinct(4),
            pending_id: TransferId(distinct(5)),
            user_data_128: distinct(6),
            user_data_64: 7 << 56 | 7,
            user_data_32: 8 << 24 | 8,
            timeout: 9 << 24 | 9,
            ledger: 10 << 24 | 10,
            code: 11 << 8 | 11,
            flags: TransferFlags::all(),
            timestamp: 12 << 56 | 12,
        };
        assert_eq!(transfer_decode(&transfer_encode(&t)), t);
        let b = AccountBalance {
            timestamp: 1 << 60 | 1,
            debits_pending: distinct(2),
            debits_posted: distinct(3),
            credits_pending: distinct(4),
            credits_posted: distinct(5),
        };
        assert_eq!(balance_decode(&balance_encode(&b)), b);
        for s in [
            PendingStatus::Pending,
            PendingStatus::Posted,
            PendingStatus::Voided,
            PendingStatus::Expired,
        ] {
            assert_eq!(pending_status_decode(&pending_status_encode(s)), s);
        }
    }

    #[test]
    #[should_panic(expected = "corrupt account record")]
    fn a_truncated_record_is_corruption() {
        // Proves a short read stops the node instead of yielding a zeroed account.
        let _ = account_decode(&[0; ACCOUNT_BYTES - 1]);
    }
}
