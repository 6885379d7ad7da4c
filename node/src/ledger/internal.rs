//! Tally's internal accounts and the ids of the transfers that resolve their pending legs
//! (`docs/SHARDING.md` §3b, §3d), here because one ledger rule depends on them: a pending
//! transfer with an internal account on either side, or with [`LEG_TIMEOUT`], is a leg of
//! a cross-shard transaction, and only the post or void with the id derived from it
//! ([`post_id`], [`void_id`]) may resolve it. Any other post or void of it is refused with `pending_transfer_reserved`
//! ([`CreateTransferStatus::PendingTransferReserved`](super::CreateTransferStatus)), so a
//! client that learnt a leg's id (legs are listed by `get_account_transfers`) cannot post
//! or void it behind its transaction's decision. (The node refuses client requests that
//! carry those derived ids, or any transfer id in their range [`RESOLUTION_ID_HI`],
//! `service::ledger`.) Pure functions of the ids: deterministic.

use sha2::{Digest as _, Sha256};

use super::TransferId;

/// High 64 bits of the ids of Tally's internal accounts (transit, sink, alias accounts).
pub const INTERNAL_ID_HI: u64 = 0xFFFF_FFFF_FFFF_FFFE;

/// Ledgers from this one up are Tally's own (`u32::MAX` holds the alias accounts of
/// cross-shard transactions, `u32::MAX - 1` the shard map's records): a client's account or
/// transfer on one is refused at the edge, so a client's events can never pass for an
/// alias, a marker or a map record.
pub const RESERVED_LEDGER_MIN: u32 = u32::MAX - 1;

/// Transfer codes from this one up are Tally's own (aliases, moves between a spread
/// account's slices, markers, internal accounts and tombstones, and the records of
/// cross-shard pending transfers and their resolutions): refused in a client's transfers
/// at the edge, so a client's transfer can never pass for one of them (a move, for
/// instance, is never burnt when it fails). 65532..=65535 until 2026-12-07; four more were
/// reserved with cross-shard pending transfers.
pub const RESERVED_CODE_MIN: u16 = u16::MAX - 7;

/// The timeout of a pending leg between two of a client's accounts (a transfer of a
/// cross-shard transaction whose accounts share a shard other than its primary): the mark
/// that makes it a leg for the rule above, as an internal account marks the others. A
/// cross-shard transfer is single-phase, so a leg's timeout carries nothing of the transfer
/// (lookups show the transfer with timeout 0); this one expires after 136 years, i.e.
/// never. Refused in a client's transfers at the edge.
pub const LEG_TIMEOUT: u32 = u32::MAX;

/// Whether pending transfer `p` is a leg of a cross-shard transaction: it has an internal
/// account, or [`LEG_TIMEOUT`].
#[must_use]
pub fn is_leg(p: &super::Transfer) -> bool {
    has_internal_account(p) || p.timeout == LEG_TIMEOUT
}

/// Whether `t` debits or credits an internal account: only Tally can have made it
/// (clients may not name one).
#[must_use]
pub fn has_internal_account(t: &super::Transfer) -> bool {
    is_internal(t.debit_account_id.0) || is_internal(t.credit_account_id.0)
}

/// Whether `id` is an internal account's.
#[must_use]
pub const fn is_internal(id: u128) -> bool {
    (id >> 64) as u64 == INTERNAL_ID_HI
}

/// SHA-256 of `tag` and `parts`, truncated to 128 bits.
#[must_use]
pub fn derived(tag: &[u8], parts: &[&[u8]]) -> u128 {
    let mut hash = Sha256::new();
    hash.update(tag);
    for part in parts {
        hash.update(part);
    }
    let digest = hash.finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// High 32 bits of every id Tally derives for resolving a leg ([`post_id`], [`void_id`],
/// [`client_post_id`], [`client_void_id`]). No client transfer may have an id in this
/// range (refused at the edge, [`is_reserved_transfer_id`]), so a client can never take
/// one of those ids first with a transfer of its own: a transfer under a leg's post id
/// made before Tally's post would leave the leg pending and its transaction half applied
/// (`docs/SHARDING.md` §3d). The other 96 bits are SHA-256 of a tag and the leg's id.
pub const RESOLUTION_ID_HI: u32 = 0xFFFF_FFFE;

/// Whether a transfer `id` lies in the range of Tally's resolution ids
/// ([`RESOLUTION_ID_HI`]): refused in a client's transfers.
#[must_use]
pub const fn is_reserved_transfer_id(id: u128) -> bool {
    (id >> 96) as u32 == RESOLUTION_ID_HI
}

/// One kind of resolution of a leg: its hash tag.
#[derive(Clone, Copy)]
enum Resolution {
    Post,
    Void,
    ClientPost,
    ClientVoid,
}

impl Resolution {
    const fn tag(self) -> &'static [u8] {
        match self {
            Self::Post => b"tally-post",
            Self::Void => b"tally-void",
            Self::ClientPost => b"tally-client-post",
            Self::ClientVoid => b"tally-client-void",
        }
    }

    /// The ids of this resolution of `leg`: the one Tally uses, in the reserved range, and
    /// the one it used before 2026-12-07 (the same hash, all 128 bits of it). The earlier
    /// id is still accepted by the ledger rule (a log written before holds resolutions
    /// under it, and replaying that log must give the same state) and still read by
    /// lookups, but never written again: a client may take it with a plain transfer and
    /// blocks nothing.
    fn ids(self, leg: TransferId) -> [TransferId; 2] {
        let hash = derived(self.tag(), &[&leg.0.to_le_bytes()]);
        let low_96 = hash & ((1_u128 << 96) - 1);
        [TransferId((u128::from(RESOLUTION_ID_HI) << 96) | low_96), TransferId(hash)]
    }

    fn id(self, leg: TransferId) -> TransferId {
        self.ids(leg)[0]
    }
}

/// The id of the transfer that posts leg `leg`.
#[must_use]
pub fn post_id(leg: TransferId) -> TransferId {
    Resolution::Post.id(leg)
}

/// The id of the transfer that voids leg `leg`.
#[must_use]
pub fn void_id(leg: TransferId) -> TransferId {
    Resolution::Void.id(leg)
}

/// The id of a client's post of a cross-shard pending transfer, applied to its debit leg
/// `leg` (`docs/SHARDING.md` §3e). Unlike [`post_id`], a post with this id is a client's
/// decision, checked as any post is (a closed account refuses it): it is not the
/// completion of a decided transaction.
#[must_use]
pub fn client_post_id(leg: TransferId) -> TransferId {
    Resolution::ClientPost.id(leg)
}

/// The id of a client's void of a cross-shard pending transfer, applied to its debit leg
/// `leg` (see [`client_post_id`]).
#[must_use]
pub fn client_void_id(leg: TransferId) -> TransferId {
    Resolution::ClientVoid.id(leg)
}

/// Every id Tally's post of leg `leg` may be stored under: [`post_id`], then the id used
/// before 2026-12-07 (for lookups of transactions decided before; a record found under
/// one posts `leg` only if its `pending_id` is `leg`).
#[must_use]
pub fn post_ids(leg: TransferId) -> [TransferId; 2] {
    Resolution::Post.ids(leg)
}

/// Every id a client's post of debit leg `leg` may be stored under: [`client_post_id`],
/// then the id used before 2026-12-07. For lookups; a record found under one resolves
/// `leg` only if its `pending_id` is `leg`.
#[must_use]
pub fn client_post_ids(leg: TransferId) -> [TransferId; 2] {
    Resolution::ClientPost.ids(leg)
}

/// Every id a client's post or void of debit leg `leg` may be stored under (posts first;
/// see [`client_post_ids`]).
#[must_use]
pub fn client_decision_ids(leg: TransferId) -> [TransferId; 4] {
    let [post, post_before] = Resolution::ClientPost.ids(leg);
    let [void, void_before] = Resolution::ClientVoid.ids(leg);
    [post, post_before, void, void_before]
}

/// How a post or void `t` of leg `t.pending_id` may resolve it, if its id is one Tally
/// derives (either id of [`Resolution::ids`]): `Some(true)` completes a decided
/// transaction ([`post_id`], [`void_id`]), `Some(false)` carries a client's decision
/// ([`client_post_id`], [`client_void_id`]).
#[must_use]
pub fn derived_resolution(t: &super::Transfer, post: bool) -> Option<bool> {
    let (completion, client) = if post {
        (Resolution::Post, Resolution::ClientPost)
    } else {
        (Resolution::Void, Resolution::ClientVoid)
    };
    let is = |kind: Resolution| kind.ids(t.pending_id).contains(&t.id);
    if is(completion) {
        Some(true)
    } else if is(client) {
        Some(false)
    } else {
        None
    }
}

/// Whether `t` is a post or void with an id Tally derives for its own resolutions of a
/// leg (either kind): a client may not send one.
#[must_use]
pub fn is_derived_resolution(t: &super::Transfer) -> bool {
    t.flags.resolves_pending()
        && (derived_resolution(t, true).is_some() || derived_resolution(t, false).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ids_are_recognised_by_their_high_half() {
        assert!(is_internal(u128::from(INTERNAL_ID_HI) << 64));
        assert!(is_internal((u128::from(INTERNAL_ID_HI) << 64) | 7));
        assert!(!is_internal(7));
        assert!(!is_internal(u128::MAX));
    }

    #[test]
    fn a_leg_has_one_post_id_and_one_void_id() {
        let leg = TransferId(42);
        assert_eq!(post_id(leg), post_id(TransferId(42)));
        assert_ne!(post_id(leg), void_id(leg));
        assert_ne!(post_id(leg), post_id(TransferId(43)));
        let ids = [post_id(leg), void_id(leg), client_post_id(leg), client_void_id(leg)];
        for (i, a) in ids.iter().enumerate() {
            assert!(ids[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn a_derived_resolution_says_its_kind() {
        use super::super::{Transfer, TransferFlags};
        let leg = TransferId(42);
        let post = |id| Transfer {
            id,
            pending_id: leg,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::default()
        };
        assert_eq!(derived_resolution(&post(post_id(leg)), true), Some(true));
        assert_eq!(derived_resolution(&post(client_post_id(leg)), true), Some(false));
        assert_eq!(derived_resolution(&post(TransferId(7)), true), None);
        // A void's ids are not a post's.
        assert_eq!(derived_resolution(&post(void_id(leg)), true), None);
        assert!(is_derived_resolution(&post(client_void_id(leg))));
        assert!(!is_derived_resolution(&post(TransferId(7))));
        // The ids used before 2026-12-07 (the whole hash) still resolve the same way.
        let [_, post_before] = Resolution::Post.ids(leg);
        let [_, client_void_before] = Resolution::ClientVoid.ids(leg);
        assert_eq!(derived_resolution(&post(post_before), true), Some(true));
        assert!(is_derived_resolution(&post(client_void_before)));
        assert_eq!(derived_resolution(&post(client_void_before), true), None);
    }

    #[test]
    fn resolution_ids_are_in_the_reserved_range_and_share_their_hash_with_the_earlier_ones() {
        for leg in [1, 42, u128::MAX - 1, u128::from(INTERNAL_ID_HI) << 64].map(TransferId) {
            for kind in
                [Resolution::Post, Resolution::Void, Resolution::ClientPost, Resolution::ClientVoid]
            {
                let [id, before] = kind.ids(leg);
                assert!(is_reserved_transfer_id(id.0), "{:#x}", id.0);
                assert_eq!(id.0 & ((1 << 96) - 1), before.0 & ((1 << 96) - 1));
                assert_ne!(id, before);
            }
        }
        assert_eq!(client_decision_ids(TransferId(9))[..2], client_post_ids(TransferId(9)));
        assert!(!is_reserved_transfer_id(7));
        assert!(!is_reserved_transfer_id(u128::MAX));
        assert!(!is_reserved_transfer_id(u128::MAX << 96));
        assert!(is_reserved_transfer_id(u128::from(RESOLUTION_ID_HI) << 96));
    }
}
