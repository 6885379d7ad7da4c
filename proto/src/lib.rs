//! The `tally.v1` wire contract shared by the node, the client library and the tools.
//!
//! Layout:
//! - `proto/tally/v1/ledger.proto` — the contract itself; every field documents its unit and
//!   limit. Compiled by `build.rs` with protox, so no system `protoc` is needed.
//! - [`v1`] — the generated prost messages and tonic client/server stubs.
//! - [`raft_v1`] — the internal node-to-node replication service (`tally/raft/v1/raft.proto`).
//! - [`limits`] — every protocol limit (`*_max`), with compile-time asserts that tie them to
//!   the gRPC message size.
//! - [`routing`] — which data shard holds an account (`shard_of`), fixed for all versions.
//! - [`auth`] — the cluster key a node's calls carry (`tally-node-key`).
//! - [`u128`](crate::Uint128) conversions — `Uint128 { lo, hi }` to and from `u128`.

pub mod auth;
pub mod limits;
pub mod routing;

/// Generated code for package `tally.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tally.v1");

    /// The encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tally_descriptor");
}

/// Generated code for package `tally.raft.v1`: the internal replication service between
/// nodes (not for applications).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod raft_v1 {
    tonic::include_proto!("tally.raft.v1");
}

pub use v1::Uint128;

impl From<u128> for Uint128 {
    fn from(value: u128) -> Self {
        #[allow(clippy::cast_possible_truncation)] // Splitting into halves is the intent.
        Uint128 { lo: value as u64, hi: (value >> 64) as u64 }
    }
}

impl From<Uint128> for u128 {
    fn from(value: Uint128) -> Self {
        (u128::from(value.hi) << 64) | u128::from(value.lo)
    }
}

/// Reads an optional `Uint128` field: absent means zero, as the contract says.
#[must_use]
pub fn u128_of(field: Option<Uint128>) -> u128 {
    field.map_or(0, u128::from)
}

/// Writes a `Uint128` field. Zero is written as absent, which is what the contract means by
/// zero and saves 20 bytes on the wire.
#[must_use]
pub fn uint128(value: u128) -> Option<Uint128> {
    (value != 0).then(|| Uint128::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splitting into halves and joining them back is the identity, at the edges too.
    #[test]
    fn uint128_round_trips() {
        for value in
            [0, 1, u128::from(u64::MAX), u128::from(u64::MAX) + 1, u128::MAX - 1, u128::MAX]
        {
            assert_eq!(u128::from(Uint128::from(value)), value);
            assert_eq!(u128_of(uint128(value)), value);
        }
        assert_eq!(Uint128::from(u128::MAX - 1), Uint128 { lo: u64::MAX - 1, hi: u64::MAX });
        assert_eq!(uint128(0), None);
    }
}
