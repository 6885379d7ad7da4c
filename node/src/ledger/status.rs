//! Per-event outcomes: TigerBeetle's names, numeric values and order of precedence.
//!
//! Each enum is declared in order of precedence: when an event breaks several rules, the
//! status listed first is the one returned. `PRECEDENCE` exposes that order to tests. The
//! numeric values are TigerBeetle's (not in precedence order, because TigerBeetle kept old
//! numbers stable when it inserted new checks); success is 0, as in TigerBeetle's `ok`.

macro_rules! statuses {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum $name {
            $(
                #[doc = concat!("TigerBeetle's `", stringify!($variant), "` (", stringify!($value), ").")]
                $variant = $value,
            )*
        }

        impl $name {
            /// Every status, most important first.
            pub const PRECEDENCE: &[$name] = &[$($name::$variant,)*];

            /// The wire value.
            #[must_use]
            pub const fn code(self) -> u32 {
                self as u32
            }

            /// The status with wire value `code`, if there is one.
            #[must_use]
            pub const fn from_code(code: u32) -> Option<Self> {
                match code {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The variant's name, as written in the source (`ExceedsCredits`).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

statuses! {
    /// The outcome of one `create_accounts` event.
    CreateAccountStatus {
        Created = 0,
        LinkedEventFailed = 1,
        LinkedEventChainOpen = 2,
        ImportedEventExpected = 22,
        ImportedEventNotExpected = 23,
        TimestampMustBeZero = 3,
        ImportedEventTimestampOutOfRange = 24,
        ImportedEventTimestampMustNotAdvance = 25,
        ReservedField = 4,
        ReservedFlag = 5,
        IdMustNotBeZero = 6,
        IdMustNotBeIntMax = 7,
        ExistsWithDifferentFlags = 15,
        ExistsWithDifferentUserData128 = 16,
        ExistsWithDifferentUserData64 = 17,
        ExistsWithDifferentUserData32 = 18,
        ExistsWithDifferentLedger = 19,
        ExistsWithDifferentCode = 20,
        Exists = 21,
        FlagsAreMutuallyExclusive = 8,
        DebitsPendingMustBeZero = 9,
        DebitsPostedMustBeZero = 10,
        CreditsPendingMustBeZero = 11,
        CreditsPostedMustBeZero = 12,
        LedgerMustNotBeZero = 13,
        CodeMustNotBeZero = 14,
        ImportedEventTimestampMustNotRegress = 26,
    }
}

statuses! {
    /// The outcome of one `create_transfers` event.
    CreateTransferStatus {
        Created = 0,
        LinkedEventFailed = 1,
        LinkedEventChainOpen = 2,
        ImportedEventExpected = 56,
        ImportedEventNotExpected = 57,
        TimestampMustBeZero = 3,
        ImportedEventTimestampOutOfRange = 58,
        ImportedEventTimestampMustNotAdvance = 59,
        ReservedFlag = 4,
        IdMustNotBeZero = 5,
        IdMustNotBeIntMax = 6,
        ExistsWithDifferentFlags = 36,
        ExistsWithDifferentPendingId = 40,
        ExistsWithDifferentTimeout = 44,
        ExistsWithDifferentDebitAccountId = 37,
        ExistsWithDifferentCreditAccountId = 38,
        ExistsWithDifferentAmount = 39,
        ExistsWithDifferentUserData128 = 41,
        ExistsWithDifferentUserData64 = 42,
        ExistsWithDifferentUserData32 = 43,
        ExistsWithDifferentLedger = 67,
        ExistsWithDifferentCode = 45,
        Exists = 46,
        IdAlreadyFailed = 68,
        FlagsAreMutuallyExclusive = 7,
        DebitAccountIdMustNotBeZero = 8,
        DebitAccountIdMustNotBeIntMax = 9,
        CreditAccountIdMustNotBeZero = 10,
        CreditAccountIdMustNotBeIntMax = 11,
        AccountsMustBeDifferent = 12,
        PendingIdMustBeZero = 13,
        PendingIdMustNotBeZero = 14,
        PendingIdMustNotBeIntMax = 15,
        PendingIdMustBeDifferent = 16,
        TimeoutReservedForPendingTransfer = 17,
        ClosingTransferMustBePending = 64,
        LedgerMustNotBeZero = 19,
        CodeMustNotBeZero = 20,
        DebitAccountNotFound = 21,
        CreditAccountNotFound = 22,
        AccountsMustHaveTheSameLedger = 23,
        TransferMustHaveTheSameLedgerAsAccounts = 24,
        PendingTransferNotFound = 25,
        PendingTransferNotPending = 26,
        PendingTransferReserved = 1001,
        PendingTransferHasDifferentDebitAccountId = 27,
        PendingTransferHasDifferentCreditAccountId = 28,
        PendingTransferHasDifferentLedger = 29,
        PendingTransferHasDifferentCode = 30,
        ExceedsPendingTransferAmount = 31,
        PendingTransferHasDifferentAmount = 32,
        PendingTransferAlreadyPosted = 33,
        PendingTransferAlreadyVoided = 34,
        PendingTransferExpired = 35,
        ImportedEventTimestampMustNotRegress = 60,
        ImportedEventTimestampMustPostdateDebitAccount = 61,
        ImportedEventTimestampMustPostdateCreditAccount = 62,
        ImportedEventTimeoutMustBeZero = 63,
        DebitAccountAlreadyClosed = 65,
        CreditAccountAlreadyClosed = 66,
        OverflowsDebitsPending = 47,
        OverflowsCreditsPending = 48,
        OverflowsDebitsPosted = 49,
        OverflowsCreditsPosted = 50,
        OverflowsDebits = 51,
        OverflowsCredits = 52,
        OverflowsTimeout = 53,
        ExceedsCredits = 54,
        ExceedsDebits = 55,
        SliceDry = 1000,
    }
}

impl CreateTransferStatus {
    /// Whether the outcome depends on the ledger's state at the time (an account that did
    /// not exist yet, a balance that was too low). A transfer that fails this way burns its
    /// id: retrying the same id returns `IdAlreadyFailed`, so a retry can never succeed
    /// later and double-apply an intent the client already saw fail.
    #[must_use]
    pub const fn transient(self) -> bool {
        matches!(
            self,
            Self::DebitAccountNotFound
                | Self::CreditAccountNotFound
                | Self::PendingTransferNotFound
                | Self::ExceedsCredits
                | Self::ExceedsDebits
                | Self::DebitAccountAlreadyClosed
                | Self::CreditAccountAlreadyClosed
        )
    }
}

/// What the batch loop needs to know about a status type, so that one loop serves both
/// accounts and transfers.
pub(crate) trait BatchStatus: Copy + Eq {
    const CREATED: Self;
    const LINKED_EVENT_FAILED: Self;
    const LINKED_EVENT_CHAIN_OPEN: Self;
    const IMPORTED_EVENT_EXPECTED: Self;
    const IMPORTED_EVENT_NOT_EXPECTED: Self;
    const TIMESTAMP_MUST_BE_ZERO: Self;
    const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self;
    const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self;
}

macro_rules! batch_status {
    ($name:ident) => {
        impl BatchStatus for $name {
            const CREATED: Self = Self::Created;
            const LINKED_EVENT_FAILED: Self = Self::LinkedEventFailed;
            const LINKED_EVENT_CHAIN_OPEN: Self = Self::LinkedEventChainOpen;
            const IMPORTED_EVENT_EXPECTED: Self = Self::ImportedEventExpected;
            const IMPORTED_EVENT_NOT_EXPECTED: Self = Self::ImportedEventNotExpected;
            const TIMESTAMP_MUST_BE_ZERO: Self = Self::TimestampMustBeZero;
            const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self =
                Self::ImportedEventTimestampOutOfRange;
            const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self =
                Self::ImportedEventTimestampMustNotAdvance;
        }
    };
}

batch_status!(CreateAccountStatus);
batch_status!(CreateTransferStatus);

/// The outcome of one create event and the timestamp that goes with it: the object's
/// timestamp when `Created` or `Exists`, otherwise the cluster time of the rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventResult<S> {
    /// Cluster time, nanoseconds.
    pub timestamp: u64,
    /// The outcome.
    pub status: S,
}

/// Result of one `create_accounts` event.
pub type CreateAccountResult = EventResult<CreateAccountStatus>;
/// Result of one `create_transfers` event.
pub type CreateTransferResult = EventResult<CreateTransferStatus>;
