//! Account routing: which data shard holds an account (`docs/SHARDING.md` §1).
//!
//! A fixed, documented function of the account id and the cluster's shard count, shared by
//! the node and every client, so that all of them, of any version, route an id to the same
//! shard. It must never change: changing it would move every account.

/// Data shards a cluster may have (fixed at creation); shard 0 is the metadata group.
pub const SHARDS_MAX: u32 = 1024;

/// gRPC metadata key of a **routed** ledger request: its value (a decimal shard id) says
/// that every event of the request belongs to that shard. A node answers such a request
/// only if it leads the shard (`UNAVAILABLE` `TALLY:NotLeader` with the leader's address
/// otherwise) and refuses one whose events belong elsewhere (`INVALID_ARGUMENT`
/// `TALLY:WrongShard`). Without it, the receiving node splits the request by shard itself
/// and forwards each part to its shard's leader.
pub const SHARD_METADATA_KEY: &str = "tally-shard";

/// gRPC metadata key of the shard map version (decimal) a client routed a ledger request
/// with. A node whose map is newer refuses the request with `FAILED_PRECONDITION`
/// `TALLY:StaleShardMap`, its own version under this key in the status's metadata; the
/// client fetches the map again (`AdminService.ListShards`) and resends the same request.
/// A request without it is not checked.
pub const MAP_VERSION_METADATA_KEY: &str = "tally-map-version";

/// gRPC metadata key a node sets, to [`OUTCOME_UNKNOWN`], on the error status of a write it
/// split into parts (by shard, or into a cross-shard transaction's steps) when one part
/// failed while others may have applied. Whatever the status's code, the request as a whole
/// may then be partly applied: resend it with the same ids, or look its ids up, to learn
/// which events exist. A status without it says nothing about other parts.
pub const OUTCOME_METADATA_KEY: &str = "tally-outcome";

/// The value of [`OUTCOME_METADATA_KEY`].
pub const OUTCOME_UNKNOWN: &str = "unknown";

/// The top 16 bits of a **spread** account's id (`docs/SHARDING.md` §2): such an account has
/// one slice, with the same id, on every data shard, and a transfer that names it applies
/// to the slice on the shard of its other account. Whether an account is spread is a fixed
/// function of its id, like its shard, so every node and client of any version routes a
/// transfer the same way (no registry that could be stale).
pub const SPREAD_ID_TAG: u16 = 0xFFFD;

/// Whether `account_id` is a spread account's (its top 16 bits are [`SPREAD_ID_TAG`]).
#[must_use]
pub const fn is_spread(account_id: u128) -> bool {
    (account_id >> 112) as u16 == SPREAD_ID_TAG
}

/// The spread account id made of `SPREAD_ID_TAG` and the low 112 bits of `n` (the caller's
/// own numbering: a merchant, an item's stock).
#[must_use]
pub const fn spread_account_id(n: u128) -> u128 {
    ((SPREAD_ID_TAG as u128) << 112) | (n & ((1 << 112) - 1))
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The data shard (`1..=shards`) of `account_id` in a cluster of `shards` data shards:
/// `1 + fmix64(lo ^ fmix64(hi)) mod shards`, with `hi`/`lo` the id's 64-bit halves.
///
/// # Panics
/// If `shards` is 0 or above [`SHARDS_MAX`] (the cluster configuration rejects both).
#[must_use]
pub const fn shard_of(account_id: u128, shards: u32) -> u32 {
    assert!(shards >= 1 && shards <= SHARDS_MAX, "1..=SHARDS_MAX data shards");
    #[allow(clippy::cast_possible_truncation)] // Splitting into halves is the intent.
    let (hi, lo) = ((account_id >> 64) as u64, account_id as u64);
    let mixed = fmix64(lo ^ fmix64(hi));
    #[allow(clippy::cast_possible_truncation)] // Below `shards`, which is a u32.
    let index = (mixed % shards as u64) as u32;
    1 + index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_never_changes() {
        // Golden values computed independently (a Python transcription of the documented
        // function, 2026-12-01): if this fails, the routing function changed and every
        // existing cluster would look for its accounts on the wrong shards.
        for (id, shards, shard) in [
            (1, 16, 13),
            (2, 16, 8),
            (3, 16, 15),
            (0, 16, 1),
            (1 << 64, 16, 3),
            ((7 << 64) | 42, 1024, 579),
            (u128::MAX, 1024, 891),
            (123_456_789, 4, 3),
            (1, 1, 1),
        ] {
            assert_eq!(shard_of(id, shards), shard, "account {id:#x} of {shards} shards");
        }
    }

    #[test]
    fn spread_ids_are_tagged_in_their_top_16_bits() {
        assert!(is_spread(spread_account_id(7)));
        assert_eq!(spread_account_id(7), (0xFFFD << 112) | 7);
        assert_eq!(spread_account_id(u128::MAX), u128::MAX >> 16 | (0xFFFD << 112));
        assert!(!is_spread(7) && !is_spread(u128::MAX) && !is_spread(0xFFFE << 112));
        assert!(!is_spread((0xFFFF_FFFF_FFFF_FFFE << 64) | 2), "internal ids are not spread");
    }

    #[test]
    fn sequential_and_structured_ids_spread_evenly() {
        // Ids are often sequential, or carry a prefix in the high half: each shard of 16
        // gets within 10 % of its share of 160,000 such ids.
        for make in [|i: u128| i, |i: u128| (42 << 64) | i, |i: u128| i << 64, |i: u128| i << 20] {
            let mut counts = [0_u32; 16];
            for i in 0..160_000 {
                let shard = shard_of(make(i), 16);
                assert!((1..=16).contains(&shard));
                counts[shard as usize - 1] += 1;
            }
            assert!(counts.iter().all(|&c| (9_000..=11_000).contains(&c)), "{counts:?}");
        }
    }

    #[test]
    #[should_panic(expected = "1..=SHARDS_MAX")]
    fn zero_shards_is_refused() {
        let _ = shard_of(1, 0);
    }
}
