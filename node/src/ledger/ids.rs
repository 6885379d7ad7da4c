//! Identifier newtypes. Ids are 128-bit, chosen by the client, and are the idempotency key:
//! wrapping them keeps an account id from being passed where a transfer id is meant.

use std::fmt;

/// The id of an [`Account`](super::Account). Valid ids are `1..u128::MAX`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u128);

/// The id of a [`Transfer`](super::Transfer). Valid ids are `1..u128::MAX`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u128);

macro_rules! id_impls {
    ($name:ident) => {
        impl $name {
            /// The zero id: "none" where a field is optional, invalid as an object's own id.
            pub const ZERO: Self = Self(0);
            /// The all-ones id, reserved (TigerBeetle's `int_max`).
            pub const MAX: Self = Self(u128::MAX);
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }
    };
}

id_impls!(AccountId);
id_impls!(TransferId);
