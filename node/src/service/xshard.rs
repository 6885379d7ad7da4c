//! Cross-shard transactions (`docs/SHARDING.md` §3, §3a), built only from ledger
//! primitives, so the state machine stays TigerBeetle's and every step is an ordinary
//! Raft-replicated, idempotent create on one shard.
//!
//! A transaction T is a transfer whose accounts live on two shards, or a linked chain that
//! spans shards; T is named by the [`digest`] D of its transfers (shown in logs as
//! `transaction`), its primary shard P is its first transfer's debit account's shard. For each transfer `X_k` (k = 0..n):
//! - **Legs**: if its accounts share a shard, one leg debit → credit there (outside the
//!   primary with timeout `LEG_TIMEOUT`, which marks it as a leg); else a leg debit →
//!   transit on the debit shard and one transit → credit on the credit shard (a
//!   per-ledger *transit* account on every shard; a sink beside it receives tombstones). Leg ids are derived from (D, k, side), D being the [`digest`] of T's
//!   transfers (so another request reusing T's id gets legs of its own). Legs on P are
//!   single-phase; leg (0, debit), on P, is the **decision leg**. Legs on the other
//!   shards are pending, with no timeout.
//! - **Alias**: on the debit shard, a zero-amount transfer with `X_k`'s own id between two
//!   internal accounts, `user_data_128 = D`, `user_data_64 = n | k << 16 | ledger₀ << 32`,
//!   `user_data_32 = P`. It claims the id (a later transfer with the same id gets
//!   `exists_*`), lets a lookup of `X_k` find its legs, and names the legs on its shard for
//!   recovery. A shard with legs but no alias gets a **marker** instead (same fields, a
//!   derived id).
//!
//! Steps: (1) prepare — each shard involved but P creates its aliases (or marker) and
//! pending legs as one linked chain: legs exist only with the record that names them;
//! (2) decide — if everything was created, P creates its own part (its aliases and its
//! legs, single-phase) as one linked chain, the *last agent*: created, the decision leg
//! exists and T is decided post. Otherwise (something was refused, a quote expired, or
//! P's chain itself was refused) the decision leg's id is claimed with a zero-amount
//! *tombstone* (transit → sink): T is decided void, and the decision leg can never be
//! created. An id is created once, so whichever of the two comes first — coordinator, a
//! resend through another node, recovery — is T's durable decision for all; (3) resolve —
//! post (or void) every leg outside P; a leg that was never created gets a tombstone under
//! its id, so that a late prepare of it is refused. The reply says `created` only after
//! P's chain is committed.
//!
//! Recovery ([`recover`]): every shard leader walks the aliases and markers on its shard and, for each
//! one old enough whose legs are still pending, decides T with "void unless posted" on P
//! (the tombstone) and resolves its legs accordingly. Legs on P are never pending, so P
//! has nothing to recover. (Transactions prepared before 2026-12-05 have a *pending*
//! decision leg on P, created with P's other legs at prepare and posted as the decision;
//! "void unless posted" reads both kinds.)
//!
//! Only Tally resolves a leg: the ledger refuses a post or void of a pending transfer with
//! an internal account (or `LEG_TIMEOUT`) unless its id is [`post_id`] or [`void_id`] of it
//! (`pending_transfer_reserved`, `ledger::internal`), and a node refuses client requests
//! that carry those ids.
//!
//! Scope: single-phase transfers (flags: only `linked`), and a pending transfer alone
//! ([`Plan::pending`]; its posts and voids and the following of its legs are in
//! `xpending`, §3e); a balancing, closing or imported transfer across shards, or a pending
//! one in a chain, is refused (`INVALID_ARGUMENT`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use futures_util::future::try_join_all;
use tokio::time::Instant;
use tonic::Status;

use super::ledger::{LedgerApi, LocalShard};
use super::spread::REBALANCE_CODE;

use crate::ledger::{
    Account, AccountId, CreateTransferStatus as TS, PendingStatus, Transfer, TransferFlags,
    TransferId,
};
use crate::storage::keys::ShardId;
use tally_proto::limits::BATCH_EVENTS_MAX;

pub use crate::ledger::internal::{INTERNAL_ID_HI, is_internal, post_id, void_id};
use crate::ledger::internal::{derived, has_internal_account};

/// The ledger of aliases (reserved: a user ledger must be below it).
pub const INTERNAL_LEDGER: u32 = u32::MAX;
/// Code of internal accounts, aliases and tombstones.
pub const INTERNAL_CODE: u16 = u16::MAX;
/// Code of markers.
pub const MARKER_CODE: u16 = u16::MAX - 1;
/// Code of aliases (since 2026-12-04; earlier aliases have [`INTERNAL_CODE`] and another
/// `user_data_64` layout, see [`alias_parts`]).
pub const ALIAS_CODE: u16 = u16::MAX - 3;
/// Code of the alias of a cross-shard *pending* transfer X on its debit shard (§3e): it
/// names X's credit shard in `user_data_32` (an ordinary alias names the primary, which
/// here is its own shard).
pub const PENDING_ALIAS_CODE: u16 = u16::MAX - 4;
/// Code of the marker of a cross-shard pending transfer X on its credit shard: its id is
/// X's own, so that a post or void of X routed there by its credit account reads
/// `pending_transfer_not_pending` (which burns nothing) and is carried to X's debit shard.
pub const PENDING_MARKER_CODE: u16 = u16::MAX - 5;
/// Code of the alias of a client's post or void Y of a cross-shard pending transfer X, on
/// X's debit shard: it claims Y's id, with `user_data_128 = X`, `user_data_64` a
/// fingerprint of Y ([`fingerprint`]) and `user_data_32` X's credit shard.
pub const RESOLUTION_ALIAS_CODE: u16 = u16::MAX - 6;
const _: () = assert!(
    PENDING_ALIAS_CODE >= crate::ledger::internal::RESERVED_CODE_MIN
        && PENDING_MARKER_CODE >= crate::ledger::internal::RESERVED_CODE_MIN
        && RESOLUTION_ALIAS_CODE >= crate::ledger::internal::RESERVED_CODE_MIN
        && ALIAS_CODE >= crate::ledger::internal::RESERVED_CODE_MIN
        && REBALANCE_CODE >= crate::ledger::internal::RESERVED_CODE_MIN
        && super::shard_map::MAP_LEDGER >= crate::ledger::internal::RESERVED_LEDGER_MIN,
    "Tally's own codes and ledgers are in the ranges clients are refused"
);
// (INTERNAL_LEDGER is u32::MAX, the top of the reserved range by definition.)
/// Time a transaction may take from its first leg's prepare to its decision, seconds: a
/// coordinator (or a resend) that would send its primary's chain later decides it void
/// instead. Checked by the deciding node against the prepared legs' timestamps (never by
/// the state machine), so a transaction's transfers read back with timestamps at most this
/// far (and one Raft commit) before the moment they became visible.
pub const TXN_TIMEOUT_S: u32 = 10;
/// Transfers in one transaction, at most (a chain's length within `BATCH_EVENTS_MAX`).
pub const TXN_TRANSFERS_MAX: usize = 1024;

/// The transit account of `ledger` (one on every shard).
#[must_use]
pub fn transit(ledger: u32) -> AccountId {
    AccountId((u128::from(INTERNAL_ID_HI) << 64) | (u128::from(ledger) << 1))
}

/// The sink beside `ledger`'s transit account (credited by tombstones).
#[must_use]
pub fn sink(ledger: u32) -> AccountId {
    AccountId(transit(ledger).0 | 1)
}

/// The digest that names a transaction: SHA-256 (truncated to 128 bits) of its transfers,
/// every field as sent. Leg, marker and decision ids derive from it, not from the first
/// transfer's id alone: a *different* request that reuses that id gets its own legs and
/// its own decision (and `exists_with_different_*` on the reused ids), so it can never
/// resolve, or be resolved by, another transaction's legs; a resend of the *same* request
/// derives the same ids and reads `exists`.
#[must_use]
pub fn digest(transfers: &[Transfer]) -> u128 {
    let encoded: Vec<[u8; crate::storage::records::TRANSFER_BYTES]> =
        transfers.iter().map(crate::storage::records::transfer_encode).collect();
    let parts: Vec<&[u8]> = encoded.iter().map(<[u8; _]>::as_slice).collect();
    derived(b"tally-txn", &parts)
}

/// The id of leg (`k`, `side`) of transaction `t` (its [`digest`]; side 0 = debit, 1 =
/// credit).
#[must_use]
pub fn leg_id(t: u128, k: u32, side: u8) -> TransferId {
    TransferId(derived(b"tally-leg", &[&t.to_le_bytes(), &k.to_le_bytes(), &[side]]))
}

/// The id of the marker on `shard` of transaction `t` (its [`digest`]) of `n` transfers.
#[must_use]
pub fn marker_id(t: u128, shard: ShardId, n: u32) -> TransferId {
    TransferId(derived(
        b"tally-marker",
        &[&t.to_le_bytes(), &shard.0.to_le_bytes(), &n.to_le_bytes()],
    ))
}

/// A chain of transfers with the (debit, credit) shard of each (`route::placement`).
pub type Placed<'a> = (&'a [Transfer], Vec<(ShardId, ShardId)>);

/// How one cross-shard transaction ended.
#[derive(Clone, Debug)]
pub(super) struct Settled {
    /// The outcome (timestamp, wire status) of each transfer of its chain, in order.
    pub results: Vec<(u64, i32)>,
    /// Decided void because its quote had expired: (quote expiry, this node's cluster
    /// time then), both ns.
    pub expired: Option<(u64, u64)>,
}

/// One leg of a planned transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    /// Where it lives.
    pub shard: ShardId,
    /// Which transfer of the transaction.
    pub k: u32,
    /// 0 debit side, 1 credit side.
    pub side: u8,
    /// The pending transfer.
    pub transfer: Transfer,
}

/// A transaction's legs and aliases, computed from its transfers alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// T's [`digest`] (what its leg, marker and decision ids derive from).
    pub t: u128,
    /// T's primary shard.
    pub primary: ShardId,
    /// The legs; `legs[0]` is the decision leg. Legs on the primary are single-phase
    /// (created only as the decision), the others pending.
    pub legs: Vec<Leg>,
    /// One alias per transfer, with its shard.
    pub aliases: Vec<(ShardId, Transfer)>,
    /// One marker per shard with legs.
    pub markers: BTreeMap<ShardId, Transfer>,
    /// A cross-shard *pending* transfer (§3e): its debit leg, on the primary, is pending
    /// with the transfer's timeout and is created as the decision; from then on both legs
    /// follow that leg's life (a client's post or void of it, or its expiry) instead of
    /// being posted.
    pub pending: bool,
}

/// Whether `transfers` is one cross-shard pending transfer (flags exactly `pending`, not
/// in a chain: §3e's scope).
fn lone_pending(transfers: &[Transfer]) -> bool {
    transfers.len() == 1 && transfers[0].flags == TransferFlags::PENDING
}

/// The first transfer of `transfers` whose flags a cross-shard transaction cannot carry yet.
fn unsupported(transfers: &[Transfer]) -> Option<usize> {
    if lone_pending(transfers) {
        return None;
    }
    transfers.iter().position(|t| !(t.flags - TransferFlags::LINKED).is_empty())
}

/// The first transfer of `transfers` (a cross-shard chain) with a field the ledger would
/// refuse on one shard but that the legs would not carry (their ids, timeouts and
/// timestamps are Tally's own), with the reason.
fn malformed(transfers: &[Transfer]) -> Option<(usize, &'static str)> {
    let last = transfers.len() - 1;
    transfers.iter().enumerate().find_map(|(i, t)| {
        if t.timestamp != 0 {
            Some((i, "timestamp must be zero"))
        } else if t.timeout != 0 && !t.flags.contains(TransferFlags::PENDING) {
            Some((i, "timeout must be zero (only pending transfers time out)"))
        } else if t.pending_id.0 != 0 {
            Some((i, "pending_id must be zero (only post and void name a pending transfer)"))
        } else if i == last && t.flags.contains(TransferFlags::LINKED) {
            Some((i, "the chain is open (its last transfer is linked)"))
        } else {
            None
        }
    })
}

impl Plan {
    /// Plans the transaction of `transfers` (a chain, or one transfer) whose debit and
    /// credit sides are on `placement`'s shards (`route::placement`; a rebalancing move
    /// between two slices of a spread account names them itself).
    ///
    /// # Errors
    /// A transfer with flags other than `linked`, or too many transfers.
    pub fn new(transfers: &[Transfer], placement: &[(ShardId, ShardId)]) -> Result<Self, String> {
        assert_eq!(transfers.len(), placement.len(), "one placement per transfer");
        if let Some(i) = unsupported(transfers) {
            return Err(format!(
                "transfer {i} of a cross-shard transaction has flags {:#x}: across shards, a \
                 transfer is single-phase (alone or in a linked chain) or a pending transfer \
                 alone (not linked); balancing, closing and imported transfers, and pending \
                 transfers in a chain, must keep their accounts on one shard",
                transfers[i].flags.bits()
            ));
        }
        if let Some((i, reason)) = malformed(transfers) {
            return Err(format!("transfer {i} of a cross-shard transaction: {reason}"));
        }
        if transfers.len() > TXN_TRANSFERS_MAX {
            return Err(format!(
                "a cross-shard transaction holds at most {TXN_TRANSFERS_MAX} transfers"
            ));
        }
        let n = u32::try_from(transfers.len()).expect("bounded above");
        let t = digest(transfers);
        let primary = placement[0].0;
        let pending = lone_pending(transfers);
        let mut legs = Vec::new();
        let mut aliases = Vec::new();
        for ((k, x), &(ds, cs)) in (0..n).zip(transfers).zip(placement) {
            // On the primary, single-phase: created only with the decision.
            let leg =
                |shard: ShardId, id: TransferId, debit: AccountId, credit: AccountId| Transfer {
                    id,
                    debit_account_id: debit,
                    credit_account_id: credit,
                    amount: x.amount,
                    pending_id: TransferId(0),
                    user_data_128: x.user_data_128,
                    user_data_64: x.user_data_64,
                    user_data_32: x.user_data_32,
                    // A pending transfer's debit leg carries its timeout: its expiry on the
                    // primary is the transfer's.
                    timeout: if pending && shard == primary { x.timeout } else { 0 },
                    ledger: x.ledger,
                    code: x.code,
                    flags: if shard == primary && !pending {
                        TransferFlags::empty()
                    } else {
                        TransferFlags::PENDING
                    },
                    timestamp: 0,
                };
            if ds == cs {
                // One leg: single-phase on the primary (created only as the decision, never
                // pending); elsewhere pending with `LEG_TIMEOUT`, the mark that lets only
                // Tally resolve it (it has no internal account). Until 2026-12-06 it had
                // timeout 0: a plain pending transfer a client that saw it in an account's
                // history could post or void against the decision.
                let mut one = leg(ds, leg_id(t, k, 0), x.debit_account_id, x.credit_account_id);
                if ds != primary {
                    one.timeout = crate::ledger::internal::LEG_TIMEOUT;
                }
                legs.push(Leg { shard: ds, k, side: 0, transfer: one });
            } else {
                let via = transit(x.ledger);
                let debit = leg(ds, leg_id(t, k, 0), x.debit_account_id, via);
                let credit = leg(cs, leg_id(t, k, 1), via, x.credit_account_id);
                legs.push(Leg { shard: ds, k, side: 0, transfer: debit });
                legs.push(Leg { shard: cs, k, side: 1, transfer: credit });
            }
            let alias = Transfer {
                id: x.id,
                debit_account_id: transit(INTERNAL_LEDGER),
                credit_account_id: sink(INTERNAL_LEDGER),
                amount: 0,
                pending_id: TransferId(0),
                user_data_128: t,
                user_data_64: names(n, k, transfers[0].ledger),
                user_data_32: if pending { cs.0 } else { primary.0 },
                timeout: 0,
                ledger: INTERNAL_LEDGER,
                code: if pending { PENDING_ALIAS_CODE } else { ALIAS_CODE },
                flags: TransferFlags::empty(),
                timestamp: 0,
            };
            aliases.push((ds, alias));
        }
        // A shard with legs but no alias (only credit legs there) gets a marker instead.
        let mut markers = BTreeMap::new();
        for leg in legs.iter().filter(|l| !aliases.iter().any(|(s, _)| *s == l.shard)) {
            markers.entry(leg.shard).or_insert_with(|| Transfer {
                // A pending transfer's marker takes its id (§3e): a post or void of it
                // routed to its credit shard finds it there.
                id: if pending { transfers[0].id } else { marker_id(t, leg.shard, n) },
                debit_account_id: transit(INTERNAL_LEDGER),
                credit_account_id: sink(INTERNAL_LEDGER),
                amount: 0,
                pending_id: TransferId(0),
                user_data_128: t,
                user_data_64: names(n, 0, transfers[0].ledger),
                user_data_32: primary.0,
                timeout: 0,
                ledger: INTERNAL_LEDGER,
                code: if pending { PENDING_MARKER_CODE } else { MARKER_CODE },
                flags: TransferFlags::empty(),
                timestamp: 0,
            });
        }
        Ok(Self { t, primary, legs, aliases, markers, pending })
    }

    /// The internal accounts each shard needs: transit and sink of every ledger with a
    /// leg there, and the alias accounts where there are aliases.
    #[must_use]
    pub fn internal_accounts(&self) -> BTreeMap<ShardId, Vec<Account>> {
        let account = |id: AccountId, ledger: u32| Account {
            id,
            ledger,
            code: INTERNAL_CODE,
            ..Account::default()
        };
        let mut out: BTreeMap<ShardId, Vec<Account>> = BTreeMap::new();
        let mut add = |shard: ShardId, ledger: u32| {
            let list = out.entry(shard).or_default();
            for id in [transit(ledger), sink(ledger)] {
                if !list.iter().any(|a| a.id == id) {
                    list.push(account(id, ledger));
                }
            }
        };
        for leg in &self.legs {
            add(leg.shard, leg.transfer.ledger);
        }
        for shard in self.aliases.iter().map(|(s, _)| s).chain(self.markers.keys()) {
            add(*shard, INTERNAL_LEDGER);
        }
        out
    }

    /// Per shard, its chain: its aliases (or its marker, on a shard without one), then
    /// its legs, with each event's place (`Alias(k)`, `Marker`, `Leg(i)`), as **one
    /// linked chain**: the shard's legs are created together with the record that names
    /// them for recovery (an alias or a marker carries T, n, P and ledger₀), or nothing
    /// is. So a resend that finds the chain's first event `exists` (same fields: the same
    /// plan) knows the whole chain was created ([`settle_chains`]). Every shard with an
    /// alias has a leg (a transfer's debit leg is on its alias's shard), so the chain
    /// always ends with a leg. The primary's chain is the decision ([`Plan::decision`]),
    /// the others' the prepare ([`Plan::prepare`]).
    #[must_use]
    pub fn chains(&self) -> BTreeMap<ShardId, Vec<(Place, Transfer)>> {
        let mut out: BTreeMap<ShardId, Vec<(Place, Transfer)>> = BTreeMap::new();
        for (k, (shard, alias)) in self.aliases.iter().enumerate() {
            out.entry(*shard).or_default().push((Place::Alias(k), *alias));
        }
        for (shard, marker) in &self.markers {
            out.entry(*shard).or_default().push((Place::Marker(*shard), *marker));
        }
        for (i, leg) in self.legs.iter().enumerate() {
            out.entry(leg.shard).or_default().push((Place::Leg(i), leg.transfer));
        }
        for events in out.values_mut() {
            let last = events.len() - 1;
            for (j, (_, event)) in events.iter_mut().enumerate() {
                event.flags.set(TransferFlags::LINKED, j < last);
            }
        }
        out
    }

    /// The prepare requests: every shard's chain but the primary's.
    #[must_use]
    pub fn prepare(&self) -> BTreeMap<ShardId, Vec<(Place, Transfer)>> {
        let mut chains = self.chains();
        chains.remove(&self.primary);
        chains
    }

    /// The primary's chain, created once every other shard's is: its aliases and its
    /// legs, single-phase, the decision leg among them. Created, it is the post decision.
    #[must_use]
    pub fn decision(&self) -> Vec<(Place, Transfer)> {
        self.chains().remove(&self.primary).expect("the decision leg is on the primary")
    }

    /// The tombstone of the decision leg: the void decision, unless the leg exists.
    #[must_use]
    pub fn void_decision(&self) -> Transfer {
        let leg = self.legs[0].transfer;
        tombstone(leg.id, leg.ledger)
    }
}

/// What an event of a prepare request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The alias of transfer k.
    Alias(usize),
    /// The marker on this shard.
    Marker(ShardId),
    /// Leg i of the plan.
    Leg(usize),
    /// The tombstone of the decision leg.
    VoidDecision,
}

/// A transaction's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every leg is posted.
    Post,
    /// Every leg is voided (or tombstoned).
    Void,
}

/// The post of `leg`.
#[must_use]
pub fn post_of(leg: TransferId) -> Transfer {
    Transfer {
        id: post_id(leg),
        pending_id: leg,
        amount: u128::MAX,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

/// The void of `leg`.
#[must_use]
pub fn void_of(leg: TransferId) -> Transfer {
    Transfer {
        id: void_id(leg),
        pending_id: leg,
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

/// The tombstone that occupies the id of a leg (of `ledger`) that was never created.
#[must_use]
pub fn tombstone(leg: TransferId, ledger: u32) -> Transfer {
    Transfer {
        id: leg,
        debit_account_id: transit(ledger),
        credit_account_id: sink(ledger),
        ledger,
        code: INTERNAL_CODE,
        ..Transfer::default()
    }
}

/// Whether `t` has the shape only a leg of a cross-shard transaction has: on a user
/// ledger, with that ledger's transit account on one side, not a tombstone. Clients cannot
/// name a transit account, so no client transfer has it — unlike Tally's records on the
/// alias ledger (aliases, markers, resolution aliases), which have internal accounts too
/// but ids a client chooses (its transfers' own): "has an internal account" alone let a
/// client's alias, created under a decision leg's id, pass for that leg (review of
/// 2026-12-06).
#[must_use]
pub fn leg_shaped(t: &Transfer) -> bool {
    let via = transit(t.ledger);
    t.ledger != INTERNAL_LEDGER
        && (t.debit_account_id == via || t.credit_account_id == via)
        && !is_tombstone(t)
}

/// `records` (found on several shards) by id, for reading legs: Tally's own records on the
/// alias ledger are left out (never legs, and their ids are a client's choice, so one can
/// sit under a leg's id), and where an id was found twice a [`leg_shaped`] record wins (a
/// client's plain transfer under a leg's id on another shard must not hide the leg).
#[must_use]
pub fn by_id_preferring_legs(
    records: Vec<Transfer>,
) -> std::collections::HashMap<TransferId, Transfer> {
    let mut out: std::collections::HashMap<TransferId, Transfer> = std::collections::HashMap::new();
    for record in records.into_iter().filter(|x| x.ledger != INTERNAL_LEDGER) {
        match out.entry(record.id) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(record);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                if leg_shaped(&record) && !leg_shaped(slot.get()) {
                    slot.insert(record);
                }
            }
        }
    }
    out
}

/// Whether `t` is a tombstone (a zero-amount transfer from a transit account to its sink).
#[must_use]
pub fn is_tombstone(t: &Transfer) -> bool {
    t.code == INTERNAL_CODE && t.credit_account_id == sink(t.ledger)
}

/// The decision a void of the (existing) decision leg reports: `Some` if it was already
/// decided. A single-phase decision leg (`pending_transfer_not_pending`) was created by
/// its primary's chain: the post decision. A pending one (prepared before 2026-12-05) was
/// posted, voided or expired.
#[must_use]
pub fn decided_by(status: u32) -> Option<Decision> {
    match TS::from_code(status)? {
        TS::Created | TS::Exists => None,
        TS::PendingTransferAlreadyPosted | TS::PendingTransferNotPending => Some(Decision::Post),
        TS::PendingTransferAlreadyVoided | TS::PendingTransferExpired => Some(Decision::Void),
        // A post or void is only ever sent to a leg known to exist (a `not found` would burn
        // its id): anything else is not a decision.
        _ => None,
    }
}

/// Whether a prepare status leaves the event in place (created now or by an earlier try).
#[must_use]
pub fn prepared(status: u32) -> bool {
    status == TS::Created.code() || status == TS::Exists.code()
}

/// Whether a create found its id taken by a transfer with other fields.
#[must_use]
pub fn exists_differently(status: u32) -> bool {
    matches!(
        TS::from_code(status),
        Some(
            TS::ExistsWithDifferentFlags
                | TS::ExistsWithDifferentPendingId
                | TS::ExistsWithDifferentTimeout
                | TS::ExistsWithDifferentDebitAccountId
                | TS::ExistsWithDifferentCreditAccountId
                | TS::ExistsWithDifferentAmount
                | TS::ExistsWithDifferentUserData128
                | TS::ExistsWithDifferentUserData64
                | TS::ExistsWithDifferentUserData32
                | TS::ExistsWithDifferentLedger
                | TS::ExistsWithDifferentCode
        )
    )
}

/// How often a node looks for transactions to recover on the shards it leads.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Aliases and markers a recovery pass takes up per shard, at most.
pub const RECOVERY_MARKERS_MAX: u32 = 1024;
/// Transfers a recovery pass walks per shard to find them, at most (it walks the shard's
/// transfers in timestamp order under the ledger's read lock: this bounds how long it
/// holds it, to a few milliseconds).
pub const RECOVERY_SCAN_MAX: usize = 65_536;
/// Time a node spends per tick ([`RECOVERY_INTERVAL`]) on recovery passes, at most: a
/// shard whose pass stopped at a limit gets another pass at once, within this budget (the
/// shards taken in turn, starting one further each tick), so recovery keeps up with any
/// rate of cross-shard transactions the budget covers rather than 1024 a second.
pub const RECOVERY_TICK_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);
/// How long one recovery step (deciding and resolving one transaction) may take.
pub const RECOVERY_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A decided transaction whose resolution failed (a shard's leader moving, a timeout) is
/// resolved again in the background, at most this many more times, before it is left to
/// recovery; without it its legs would hold their units until `txn_recovery_after_ms`.
pub const RESOLVE_RETRIES_MAX: u32 = 6;
/// The wait before the first background retry; it doubles after each failure, up to
/// [`RESOLVE_BACKOFF_MAX`] (six retries span about 6 s plus their own request timeouts).
pub const RESOLVE_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest wait between two background retries.
pub const RESOLVE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// Decided transactions (requests' resolution sets) being retried in the background on a
/// node, at most; beyond it a failed resolution is left to recovery at once (with a
/// warning), so a long outage cannot pile up tasks.
pub const RESOLVING_MAX: usize = 1024;

/// Recovers, every `interval`, the transactions with legs on the shards this node leads
/// whose markers are older than `age` (see [`LedgerApi::recover_shard`]), watching at most
/// `watch_max` pending transfers' expiries per shard; until `stop` changes. A transaction
/// is decided exactly once whoever decides it, so recovering one whose coordinator is
/// still at work is safe: at worst it voids a transaction that would have been posted, and
/// the coordinator reports that.
pub async fn recover(
    api: LedgerApi,
    interval: std::time::Duration,
    age: std::time::Duration,
    watch_max: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
    let mut cursors: std::collections::HashMap<ShardId, u64> = std::collections::HashMap::new();
    let mut watches: std::collections::HashMap<ShardId, super::xpending::Watch> =
        std::collections::HashMap::new();
    let mut ticks = super::ticks::Ticks::new(interval, stop);
    let mut first = 0_usize;
    while ticks.next().await {
        let started = Instant::now();
        let mut hosted: Vec<LocalShard> = api.hosted().cloned().collect();
        if hosted.is_empty() {
            continue;
        }
        first = (first + 1) % hosted.len();
        hosted.rotate_left(first);
        for here in hosted {
            if !here.replica.is_leader() {
                continue;
            }
            let cursor = cursors.entry(here.replica.shard).or_default();
            let watch = watches
                .entry(here.replica.shard)
                .or_insert_with(|| super::xpending::Watch::new(watch_max));
            loop {
                match api.recover_shard(&here, cursor, watch, age_ns).await {
                    Ok(more) if more && started.elapsed() < RECOVERY_TICK_BUDGET => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(shard = %here.replica.shard, error = %e, "cross-shard recovery pass");
                        break;
                    }
                }
            }
        }
        let watched: usize = watches.values().map(super::xpending::Watch::len).sum();
        api.counters().pending_watched.store(
            u64::try_from(watched).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

fn internal(e: &str) -> Status {
    Status::internal(format!("TALLY:Internal: cross-shard transaction: {e}"))
}

/// The status of an event not sent (yet).
const UNSENT: u32 = u32::MAX;

/// One transaction's progress through the steps.
struct Progress {
    plan: Plan,
    /// Outcomes (timestamp, status) of its aliases and legs ([`UNSENT`] until sent: the
    /// primary's are sent only as the decision).
    aliases: Vec<(u64, u32)>,
    legs: Vec<(u64, u32)>,
    /// Prepare status of each shard's marker.
    markers: BTreeMap<ShardId, u32>,
    /// The status of the decision leg's tombstone, if one was sent.
    void_decision: u32,
    /// The decision, and the status of the decision leg (`Exists`: an earlier attempt
    /// decided post).
    decision: Decision,
    post_status: u32,
}

impl Progress {
    fn new(plan: Plan) -> Self {
        Self {
            aliases: vec![(0, UNSENT); plan.aliases.len()],
            legs: vec![(0, UNSENT); plan.legs.len()],
            markers: BTreeMap::new(),
            void_decision: UNSENT,
            decision: Decision::Void,
            post_status: UNSENT,
            plan,
        }
    }

    /// Whether its primary's chain (the decision) was sent: its decision leg, on the
    /// primary, is sent with nothing else.
    fn decision_sent(&self) -> bool {
        self.legs[0].1 != UNSENT
    }

    /// Whether every event sent so far is in place.
    fn prepared(&self) -> bool {
        self.markers.values().all(|s| prepared(*s))
            && self.aliases.iter().chain(&self.legs).all(|(_, s)| *s == UNSENT || prepared(*s))
    }

    /// Whether more than [`TXN_TIMEOUT_S`] has passed at cluster time `now` since its first
    /// leg outside the primary was prepared (by this attempt or an earlier one).
    fn too_late(&self, now: u64) -> bool {
        let legs = self.plan.legs.iter().zip(&self.legs);
        let outside = legs.filter(|(leg, (_, s))| leg.shard != self.plan.primary && prepared(*s));
        outside.map(|(_, (timestamp, _))| *timestamp).min().is_some_and(|first| {
            now.saturating_sub(first) > u64::from(TXN_TIMEOUT_S) * 1_000_000_000
        })
    }

    /// Whether an event's answer is one no ledger gives.
    fn unreadable(&self) -> bool {
        self.aliases
            .iter()
            .chain(&self.legs)
            .any(|(_, s)| *s != UNSENT && TS::from_code(*s).is_none())
    }

    /// The reply: one (timestamp, status) per transfer.
    fn outcomes(&self) -> Vec<(u64, i32)> {
        let n = self.aliases.len();
        let results: Vec<(u64, u32)> = match self.decision {
            Decision::Post => {
                let retry = self.post_status == TS::Exists.code()
                    && self.aliases.iter().all(|(_, s)| *s == TS::Exists.code());
                let status = if retry { TS::Exists } else { TS::Created };
                self.aliases.iter().map(|(timestamp, _)| (*timestamp, status.code())).collect()
            }
            Decision::Void => {
                // Each transfer's own failure, if any: the first of its alias and legs
                // that failed for a reason other than `linked_event_failed`, else the first
                // that failed. A leg's id taken by another transfer can only be its
                // tombstone (recovery voided the transaction first): the transaction
                // expired.
                let expired = TS::PendingTransferExpired.code();
                let linked = TS::LinkedEventFailed.code();
                let causes: Vec<Option<u32>> = (0..n)
                    .map(|k| {
                        let own = std::iter::once(self.aliases[k].1)
                            .chain(
                                self.plan
                                    .legs
                                    .iter()
                                    .zip(&self.legs)
                                    .filter(|(l, _)| l.k as usize == k)
                                    .map(
                                        |(_, (_, s))| {
                                            if exists_differently(*s) { expired } else { *s }
                                        },
                                    ),
                            )
                            // A pending transfer's marker holds its id on the credit shard:
                            // refused there, the id is taken (`exists_with_different_*`).
                            .chain(self.markers.values().copied().filter(|_| self.plan.pending))
                            .filter(|&status| status != UNSENT);
                        own.clone()
                            .find(|&status| !prepared(status) && status != linked)
                            .or_else(|| own.clone().find(|&status| !prepared(status)))
                    })
                    .collect();
                // Nothing of the chain failed and every marker is in place: its decision
                // was void only because it expired (the decision leg's timeout, recovery, or
                // a swap's quote). The first transfer says so, the others are linked to it
                // (one transfer alone says so itself).
                let timed_out = self.markers.values().all(|s| prepared(*s))
                    && causes.iter().all(Option::is_none);
                causes
                    .iter()
                    .enumerate()
                    .map(|(k, cause)| {
                        let status = match *cause {
                            // A slice still dry after its refills (sold out): the client sees
                            // what one shard would say.
                            Some(status) if status == TS::SliceDry.code() => {
                                TS::ExceedsCredits.code()
                            }
                            Some(status) => status,
                            None if timed_out && k == 0 => expired,
                            None => linked,
                        };
                        (self.aliases[k].0, status)
                    })
                    .collect()
            }
        };
        results
            .into_iter()
            .map(|(timestamp, status)| {
                (timestamp, i32::try_from(status).expect("status codes are small"))
            })
            .collect()
    }
}

/// A prepare event's outcome (timestamp, status), tagged with its transaction and place.
type Prepared = ((usize, Place), (u64, u32));

/// Each shard's prepare chain of a transaction is created whole or not at all, so a chain
/// whose first event reads `exists` (same fields: an earlier attempt of the same plan) was
/// created whole by that attempt: its other events, which read `linked_event_failed`
/// behind that `exists`, are `exists` too, with the timestamps they were created with —
/// the first event's plus their place in the chain (a chain's events are created one
/// after another in one batch, one timestamp each). `outcomes` are one shard's chains'
/// outcomes in order, each tagged with its transaction.
fn settle_chains(outcomes: &mut [Prepared]) {
    let (exists, linked) = (TS::Exists.code(), TS::LinkedEventFailed.code());
    let mut start = 0;
    while start < outcomes.len() {
        let txn = outcomes[start].0.0;
        let end = outcomes[start..]
            .iter()
            .position(|((i, _), _)| *i != txn)
            .map_or(outcomes.len(), |len| start + len);
        let chain = &mut outcomes[start..end];
        if chain[0].1.1 == exists && chain[1..].iter().all(|(_, (_, s))| *s == linked) {
            let first = chain[0].1.0;
            for (j, (_, outcome)) in (1..).zip(&mut chain[1..]) {
                *outcome = (first + j, exists);
            }
        }
        start = end;
    }
}

/// Records the outcomes of prepare chains (one or more shards' requests, each shard's
/// outcomes contiguous and in order, as [`LedgerApi::create_wave`] returns them) in
/// `txns`, a chain found created by an earlier attempt counting as `exists` throughout.
fn record(txns: &mut [Progress], mut outcomes: Vec<Prepared>) {
    // A chain is one transaction's aliases or marker followed by its legs, so a chain
    // ends where the transaction changes or a leg is followed by a non-leg.
    let mut start = 0;
    for j in 1..=outcomes.len() {
        let boundary = j == outcomes.len()
            || outcomes[j].0.0 != outcomes[j - 1].0.0
            || (matches!(outcomes[j - 1].0.1, Place::Leg(_))
                && !matches!(outcomes[j].0.1, Place::Leg(_)));
        if boundary {
            settle_chains(&mut outcomes[start..j]);
            start = j;
        }
    }
    for ((i, place), outcome) in outcomes {
        let txn = &mut txns[i];
        match place {
            Place::Alias(k) => txn.aliases[k] = outcome,
            Place::Leg(l) => txn.legs[l] = outcome,
            Place::Marker(shard) => {
                txn.markers.insert(shard, outcome.1);
            }
            Place::VoidDecision => txn.void_decision = outcome.1,
        }
    }
}

/// `events` cut into requests of at most `BATCH_EVENTS_MAX` events, never between two
/// events of the same `group` (a group is contiguous and smaller than a request: a
/// transaction's events on one shard are at most 3 × [`TXN_TRANSFERS_MAX`] + 1).
fn requests_of<T>(
    events: &[(T, Transfer)],
    group: impl Fn(&T) -> Option<usize>,
) -> Vec<&[(T, Transfer)]> {
    let max = BATCH_EVENTS_MAX as usize;
    let mut out = Vec::new();
    let (mut start, mut group_start) = (0, 0);
    for i in 0..events.len() {
        let same = i > 0
            && group(&events[i].0).is_some()
            && group(&events[i].0) == group(&events[i - 1].0);
        if !same {
            group_start = i;
        }
        if i - start == max {
            // Cut before the group this event belongs to (or here, if it starts one).
            let cut = if group_start > start { group_start } else { i };
            out.push(&events[start..cut]);
            start = cut;
        }
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

const _: () = assert!(3 * TXN_TRANSFERS_MAX < BATCH_EVENTS_MAX as usize);

/// A deliberately broken coordinator, for the chaos suite to show that its checker
/// catches a broken build: with the failpoint `coordinator::skip_decision=return` (crash-
/// test builds only) a transaction about to be posted never records its decision — its
/// legs outside the primary are posted, its primary's chain is never created. Never set
/// in production: builds without the `failpoints` feature cannot take it.
fn skip_decision() -> bool {
    fail::fail_point!("coordinator::skip_decision", |_| true);
    false
}

/// Events to create, per shard, each with a tag saying what it is.
type Wave<T> = BTreeMap<ShardId, Vec<(T, Transfer)>>;

impl LedgerApi {
    /// Makes sure every internal account `plans` need exists on its shard.
    async fn ensure_internal(&self, plans: &[Plan], deadline: Instant) -> Result<(), Status> {
        let mut needed: BTreeMap<ShardId, Vec<Account>> = BTreeMap::new();
        for plan in plans {
            for (shard, accounts) in plan.internal_accounts() {
                let list = needed.entry(shard).or_default();
                for account in accounts {
                    if !self.internal_ready(shard, account.id.0, false)
                        && !list.iter().any(|a| a.id == account.id)
                    {
                        list.push(account);
                    }
                }
            }
        }
        let creates = needed.into_iter().filter(|(_, accounts)| !accounts.is_empty());
        let created = creates.map(|(shard, accounts)| async move {
            let outcomes = self.accounts_on(shard, accounts.clone(), deadline).await?;
            for (account, (_, status)) in accounts.iter().zip(outcomes) {
                let ok = status == crate::ledger::CreateAccountStatus::Created.code()
                    || status == crate::ledger::CreateAccountStatus::Exists.code();
                if !ok {
                    return Err(internal(&format!(
                        "internal account {:#x} on {shard} cannot be created (status {status}); \
                         ids with high half {INTERNAL_ID_HI:#x} are reserved",
                        account.id.0
                    )));
                }
                self.internal_ready(shard, account.id.0, true);
            }
            Ok(())
        });
        try_join_all(created).await.map(|_| ())
    }

    /// Creates every shard's events of `wave`, all shards at once, at most
    /// `BATCH_EVENTS_MAX` events per request; each event's outcome with its tag. Events
    /// with the same `group` (contiguous in `wave`) always go in the same request, i.e. the
    /// same Raft entry: a transaction's marker and its legs on a shard are created together
    /// or not at all (a leg without its marker would be invisible to recovery).
    async fn create_wave<T: Copy>(
        &self,
        wave: &Wave<T>,
        deadline: Instant,
        group: impl Fn(&T) -> Option<usize> + Copy,
    ) -> Result<Vec<(T, (u64, u32))>, Status> {
        let requests = wave.iter().flat_map(|(&shard, events)| {
            requests_of(events, group).into_iter().map(move |chunk| async move {
                let sent = chunk.iter().map(|(_, t)| *t).collect();
                let outcomes = self.transfers_on(shard, sent, deadline).await?;
                if outcomes.len() != chunk.len() {
                    return Err(internal("a shard answered a different number of results"));
                }
                Ok(chunk.iter().map(|(tag, _)| *tag).zip(outcomes).collect::<Vec<_>>())
            })
        });
        Ok(try_join_all(requests).await?.into_iter().flatten().collect())
    }

    /// Runs the cross-shard transactions `chains` (each a transfer or a linked chain) of
    /// one request together: one prepare request per shard for all of them (but their
    /// primaries), one decision request per primary shard, then the resolutions, one
    /// request per shard (so a request of many transactions costs at most four Raft
    /// commits in sequence — three when each spans two shards — not as many per
    /// transaction). The outcomes (timestamp, wire status) of each chain, in order.
    ///
    /// `not_after` is empty or holds one entry per chain: a swap's quote expiry (ns of
    /// cluster time); a transaction not yet decided when this node's clock passes it is
    /// decided void, and its [`Settled::expired`] says so once its legs are resolved.
    pub(super) async fn run_transactions(
        &self,
        chains: &[Placed<'_>],
        not_after: &[Option<u64>],
        refill_dry: bool,
        deadline: Instant,
    ) -> Result<Vec<Settled>, Status> {
        debug_assert!(not_after.is_empty() || not_after.len() == chains.len());
        let plans = chains
            .iter()
            .map(|(chain, placement)| Plan::new(chain, placement))
            .collect::<Result<Vec<Plan>, String>>()
            .map_err(|e| Status::invalid_argument(format!("TALLY:InvalidRequest: {e}")))?;
        self.ensure_internal(&plans, deadline).await?;

        // 1. Prepare: every shard's chain (aliases or marker, legs) of every transaction.
        let mut wave: Wave<(usize, Place)> = BTreeMap::new();
        for (i, plan) in plans.iter().enumerate() {
            for (shard, events) in plan.prepare() {
                let events = events.into_iter().map(|(place, t)| ((i, place), t));
                wave.entry(shard).or_default().extend(events);
            }
        }
        let prepared_wave = self.create_wave(&wave, deadline, |(i, _)| Some(*i)).await?;
        let mut txns: Vec<Progress> = plans.into_iter().map(Progress::new).collect();
        record(&mut txns, prepared_wave);
        if refill_dry {
            let again = |_: usize, txn: &Progress, leg: &Leg| leg.shard != txn.plan.primary;
            self.refill_legs(&mut txns, again, deadline).await?;
        }
        if let Some(ms) = after_first_leg_pause_ms() {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }

        // 2. Decide on each primary: a transaction whose other shards all prepared (and
        // whose quote has not expired nor its `TXN_TIMEOUT_S` run out) gets its primary's
        // chain, the decision; the others a tombstone on their decision leg's id (void
        // unless posted).
        let quote_expired =
            |i: usize, now: u64| not_after.get(i).copied().flatten().filter(|&at| now > at);
        let now = super::batcher::cluster_time_now_ns();
        let mut expired: Vec<Option<(u64, u64)>> =
            (0..txns.len()).map(|i| quote_expired(i, now).map(|at| (at, now))).collect();
        let broken = skip_decision();
        let mut wave: Wave<(usize, Place)> = BTreeMap::new();
        for (i, txn) in txns.iter_mut().enumerate() {
            let events = wave.entry(txn.plan.primary).or_default();
            if !txn.prepared() || expired[i].is_some() || txn.too_late(now) {
                events.push(((i, Place::VoidDecision), txn.plan.void_decision()));
            } else if broken {
                (txn.decision, txn.post_status) = (Decision::Post, TS::Created.code());
            } else {
                events.extend(txn.plan.decision().into_iter().map(|(place, t)| ((i, place), t)));
            }
        }
        let decided_wave = self.create_wave(&wave, deadline, |(i, _)| Some(*i)).await?;
        record(&mut txns, decided_wave);
        if refill_dry {
            // A primary's chain refused on a dry slice is created again once the slice is
            // refilled, if its quote has still not expired nor its time run out.
            let again = |i: usize, txn: &Progress, leg: &Leg| {
                let now = super::batcher::cluster_time_now_ns();
                leg.shard == txn.plan.primary
                    && quote_expired(i, now).is_none()
                    && !txn.too_late(now)
            };
            self.refill_legs(&mut txns, again, deadline).await?;
        }
        // A transaction whose decision cannot be read is left to recovery (its legs are not
        // resolved here) and fails the request, but only once every other transaction's
        // legs are resolved: one bad answer must not leave the others' units reserved.
        let mut undecided = vec![false; txns.len()];
        let mut trouble: Option<Status> = None;
        let mut wave: Wave<(usize, Place)> = BTreeMap::new();
        for (i, txn) in txns.iter_mut().enumerate().filter(|(_, txn)| txn.decision_sent()) {
            txn.legs[0].1 = garbled_decision_answer(txn.legs[0].1);
            if txn.prepared() {
                (txn.decision, txn.post_status) = (Decision::Post, txn.legs[0].1);
            } else if txn.unreadable() {
                undecided[i] = true;
                trouble.get_or_insert_with(|| {
                    internal(&format!("deciding on the decision leg: status {}", txn.legs[0].1))
                });
            } else {
                // Refused (a balance, a dry slice, an id taken): the decision leg's id is
                // claimed, unless a resend or recovery got there first. A chain left on a
                // dry slice because its quote expired before the refill was done is void for
                // its quote.
                let now = super::batcher::cluster_time_now_ns();
                let dry = txn.legs.iter().any(|(_, s)| *s == TS::SliceDry.code());
                if dry {
                    expired[i] = quote_expired(i, now).map(|at| (at, now));
                }
                wave.entry(txn.plan.primary)
                    .or_default()
                    .push(((i, Place::VoidDecision), txn.plan.void_decision()));
            }
        }
        if !wave.is_empty() {
            let tombstones = self.create_wave(&wave, deadline, |(i, _)| Some(*i)).await?;
            record(&mut txns, tombstones);
        }
        let mut unsettled = Vec::new();
        for (i, txn) in txns.iter_mut().enumerate() {
            let status = txn.void_decision;
            if status == UNSENT || undecided[i] {
                continue;
            }
            if prepared(status) || status == TS::IdAlreadyFailed.code() {
                // The decision leg never existed and now never can (tombstoned, or its id
                // burnt by a refused chain).
                (txn.decision, txn.post_status) = (Decision::Void, UNSENT);
            } else if exists_differently(status) {
                // It exists after all (a resend or an earlier attempt decided first).
                unsettled.push(i);
            } else {
                undecided[i] = true;
                trouble.get_or_insert_with(|| {
                    internal(&format!("tombstoning the decision leg: status {status}"))
                });
            }
        }
        for i in unsettled {
            let txn = &mut txns[i];
            let (plan, leg) = (&txn.plan, txn.plan.legs[0].transfer);
            match self
                .decide_void(plan.t, plan.primary, leg.id, leg.ledger, plan.pending, deadline)
                .await
            {
                Ok(decision) => (txn.decision, txn.post_status) = (decision, TS::Exists.code()),
                Err(e) => {
                    undecided[i] = true;
                    trouble.get_or_insert(e);
                }
            }
        }
        fail::fail_point!("coordinator::after_decision");

        // 3. Resolve every leg outside the primary as decided. A pending transfer created
        // (decided post) keeps its legs pending: they follow its debit leg's life (§3e).
        let mut resolutions: BTreeMap<ShardId, Vec<Transfer>> = BTreeMap::new();
        let resolved = |(txn, undecided): &(&Progress, &bool)| {
            // Undecided, or a created pending transfer: nothing to resolve.
            !(**undecided || txn.plan.pending && txn.decision == Decision::Post)
        };
        for (txn, _) in txns.iter().zip(&undecided).filter(resolved) {
            let legs = txn.plan.legs.iter().zip(&txn.legs);
            for (leg, (_, status)) in legs.filter(|(leg, _)| leg.shard != txn.plan.primary) {
                let event = match txn.decision {
                    Decision::Post => post_of(leg.transfer.id),
                    Decision::Void if prepared(*status) => void_of(leg.transfer.id),
                    Decision::Void => tombstone(leg.transfer.id, leg.transfer.ledger),
                };
                resolutions.entry(leg.shard).or_default().push(event);
            }
        }
        if let Err(e) = self.resolve(&resolutions, deadline).await {
            self.resolve_later(resolutions, &e);
            return Err(e);
        }
        if let Some(e) = trouble {
            return Err(e);
        }
        self.burn_failed_ids(&txns, deadline).await?;
        Ok(txns
            .iter()
            .zip(expired)
            .map(|(txn, expired)| Settled {
                results: txn.outcomes(),
                expired: expired.filter(|_| txn.decision == Decision::Void),
            })
            .collect())
    }

    /// Legs refused `slice_dry` (their debit is a spread account's slice that holds too
    /// little) that `again` selects (by transaction index, progress and leg; asked before
    /// each round): the slices are refilled from the others (`spread`) and the legs' chains
    /// created again under the same ids (`slice_dry` burns no id, and the chain that met
    /// it created nothing), at most `spread::REFILL_ROUNDS_MAX` rounds; a leg whose account is sold out
    /// stays refused, and its transaction is decided void.
    async fn refill_legs(
        &self,
        txns: &mut [Progress],
        again: impl Fn(usize, &Progress, &Leg) -> bool,
        deadline: Instant,
    ) -> Result<(), Status> {
        let dry_code = TS::SliceDry.code();
        let mut sold_out: std::collections::HashSet<(u128, ShardId)> =
            std::collections::HashSet::new();
        for round in 0.. {
            let dry: Vec<(usize, usize)> = txns
                .iter()
                .enumerate()
                .flat_map(|(i, txn)| {
                    let legs = txn.legs.iter().enumerate();
                    legs.filter(|(_, (_, status))| *status == dry_code).map(move |(l, _)| (i, l))
                })
                .filter(|&(i, l)| {
                    let leg = &txns[i].plan.legs[l];
                    !sold_out.contains(&(leg.transfer.debit_account_id.0, leg.shard))
                        && again(i, &txns[i], leg)
                })
                .collect();
            if dry.is_empty() {
                return Ok(());
            }
            if round == super::spread::REFILL_ROUNDS_MAX || Instant::now() >= deadline {
                // Not sold out, only not refilled in time: deciding now would refuse for good
                // what the account can pay. The request fails retryably; legs created so far
                // are resolved by a resend (same ids) or by recovery.
                return Err(Status::deadline_exceeded(format!(
                    "TALLY:Timeout: {} legs of cross-shard transactions still find their spread \
                     account's slice dry after {round} refills; resend the request unchanged",
                    dry.len()
                )));
            }
            // Per slice: the smallest and the total a dry transaction needs from it: its legs
            // debiting that slice (its chain there failed at a dry leg, so none was created).
            let mut needed = super::spread::Needs::default();
            let mut counted = std::collections::HashSet::new();
            for &(i, l) in &dry {
                let leg = &txns[i].plan.legs[l];
                let key = (leg.transfer.debit_account_id.0, leg.shard);
                if !counted.insert((i, key)) {
                    continue;
                }
                let amount = txns[i]
                    .plan
                    .legs
                    .iter()
                    .zip(&txns[i].legs)
                    .filter(|(other, (_, status))| {
                        // Its chain failed at the dry leg: none of its legs there exist.
                        !prepared(*status)
                            && (other.transfer.debit_account_id.0, other.shard) == key
                    })
                    .fold(0_u128, |sum, (other, _)| sum.saturating_add(other.transfer.amount));
                needed.add(key, amount);
            }
            self.refill_all(&needed, &mut sold_out, deadline).await?;
            // The chains with a dry leg are created again whole (the leg's chain failed).
            let mut resend: BTreeMap<ShardId, std::collections::BTreeSet<usize>> = BTreeMap::new();
            for &(i, l) in &dry {
                let leg = &txns[i].plan.legs[l];
                if !sold_out.contains(&(leg.transfer.debit_account_id.0, leg.shard))
                    && again(i, &txns[i], leg)
                {
                    resend.entry(leg.shard).or_default().insert(i);
                }
            }
            if resend.is_empty() {
                return Ok(());
            }
            let mut wave: Wave<(usize, Place)> = BTreeMap::new();
            for (shard, indexes) in resend {
                let events = wave.entry(shard).or_default();
                for i in indexes {
                    let mut chains = txns[i].plan.chains();
                    let chain = chains.remove(&shard).expect("a dry leg's shard has its chain");
                    events.extend(chain.into_iter().map(|(place, t)| ((i, place), t)));
                }
            }
            let outcomes = self.create_wave(&wave, deadline, |(i, _)| Some(*i)).await?;
            record(txns, outcomes);
        }
        Ok(())
    }

    /// In voided transactions, marks failed the id of every transfer that failed for a
    /// transient reason (`exceeds_credits`, ...) and whose alias was not created (its chain
    /// failed), as the ledger marks a failed transfer on one shard: a later transfer with
    /// that id, from this request or another, reads `id_already_failed` (or `exists_*`)
    /// and can never succeed after the client was told it failed. The burn debits an
    /// account that never exists (`spread::burn_account`); it creates nothing. Transfers
    /// whose alias is in place keep their id taken by it. A resend that reads
    /// `id_already_failed` from a leg burns too (the first attempt may have ended before its
    /// burn). Moves between slices of a spread account are not burnt (fresh ids, never
    /// resent; a refill must not wait on it).
    async fn burn_failed_ids(&self, txns: &[Progress], deadline: Instant) -> Result<(), Status> {
        let mut burns: Wave<()> = BTreeMap::new();
        for txn in txns.iter().filter(|txn| txn.decision == Decision::Void) {
            // A move between a spread account's slices has a fresh id and is never resent.
            if txn.plan.legs.iter().any(|l| l.transfer.code == REBALANCE_CODE) {
                continue;
            }
            let outcomes = txn.outcomes();
            for ((shard, alias), ((_, own), (_, said))) in
                txn.plan.aliases.iter().zip(txn.aliases.iter().zip(&outcomes))
            {
                // `id_already_failed` from a leg: a resend of a transaction whose first
                // attempt failed transiently and ended before its burn (a crash, a failed
                // resolution); the burn is made now.
                let failed = u32::try_from(*said)
                    .ok()
                    .and_then(TS::from_code)
                    .is_some_and(|s| s.transient() || s == TS::IdAlreadyFailed);
                let taken = prepared(*own)
                    || exists_differently(*own)
                    || *own == TS::IdAlreadyFailed.code();
                if failed && !taken {
                    burns.entry(*shard).or_default().push(((), super::spread::burn_of(alias)));
                }
            }
        }
        if burns.is_empty() {
            return Ok(());
        }
        for ((), (_, status)) in self.create_wave(&burns, deadline, |()| None).await? {
            let burnt = status == TS::DebitAccountNotFound.code()
                || status == TS::IdAlreadyFailed.code()
                || exists_differently(status);
            if !burnt {
                return Err(internal(&format!(
                    "a voided transfer's id could not be marked failed (status {status}); \
                     resend the request"
                )));
            }
        }
        Ok(())
    }

    /// Creates one transfer on `shard`; its outcome.
    async fn one(
        &self,
        shard: ShardId,
        transfer: Transfer,
        deadline: Instant,
    ) -> Result<(u64, u32), Status> {
        let outcomes = self.transfers_on(shard, vec![transfer], deadline).await?;
        outcomes.first().copied().ok_or_else(|| internal("no outcome"))
    }

    /// Decides transaction `t` void unless it was already posted. First its decision leg's
    /// id (`decision`, of `ledger`, on `primary`) is claimed with a tombstone: created (or
    /// there from an earlier try), or the id burnt by a failed prepare, means the leg never
    /// existed and now never can. Only if the id holds the leg is the leg voided, and the
    /// ledger's answer (voided now, or already posted, voided or expired) is the decision.
    /// A void is never sent to a leg that may not exist: its `not found` would burn the
    /// void's id, and a later void of the same leg would read `id_already_failed`.
    ///
    /// An answer that reads "posted" is taken only from the transaction's own decision leg
    /// ([`LedgerApi::genuine_decision`]): leg ids are a public function of the request, so a
    /// client can create a transfer of its own under the decision leg's id before sending
    /// the request; its primary's chain then fails on that id, and the client's transfer
    /// (single-phase, or pending and posted by the client) must not pass for the decision.
    /// Such an id holds no decision leg and never can: the transaction is void.
    ///
    /// For a cross-shard pending transfer (`pending`, §3e) the decision leg is the pending
    /// transfer's debit leg: found, it is never voided here (its own life decides), and the
    /// answer is `Post`, "created".
    async fn decide_void(
        &self,
        t: u128,
        primary: ShardId,
        decision: TransferId,
        ledger: u32,
        pending: bool,
        deadline: Instant,
    ) -> Result<Decision, Status> {
        let (_, status) = self.one(primary, tombstone(decision, ledger), deadline).await?;
        if prepared(status) || status == TS::IdAlreadyFailed.code() {
            return Ok(Decision::Void);
        }
        if !exists_differently(status) {
            return Err(internal(&format!("tombstoning the decision leg: status {status}")));
        }
        if !self.genuine_decision(t, primary, decision, deadline).await? {
            tracing::warn!(%primary, transaction = %format!("{t:#x}"), "the decision leg's id holds a transfer the transaction did not create: decided void");
            return Ok(Decision::Void);
        }
        if pending {
            return Ok(Decision::Post);
        }
        let (_, status) = self.one(primary, void_of(decision), deadline).await?;
        if prepared(status) {
            return Ok(Decision::Void);
        }
        decided_by(status)
            .ok_or_else(|| internal(&format!("voiding the decision leg: status {status}")))
    }

    /// Whether the transfer under transaction `t`'s decision-leg id `decision` on `primary`
    /// is that leg, created by `t`'s own chain. A transfer with a transit account on its own
    /// ledger ([`leg_shaped`]) can only be a leg, and Tally creates a leg under that id
    /// only as `t`'s decision leg; Tally's other records (aliases, markers, resolution
    /// aliases, on the alias ledger) carry ids clients choose and are never a leg. A decision leg between two client accounts (the first transfer's
    /// accounts both on the primary) was created in one linked chain right after `t`'s
    /// aliases on the primary (their alias or marker, before 2026-12-05), so the transfer of
    /// the alias account one timestamp before it names `t`; a transfer a client created
    /// under that id has no such neighbour (an alias names `t` only in `t`'s own chain).
    async fn genuine_decision(
        &self,
        t: u128,
        primary: ShardId,
        decision: TransferId,
        deadline: Instant,
    ) -> Result<bool, Status> {
        let found = self.lookup_on(primary, vec![decision], deadline).await?;
        let Some(leg) = found.into_iter().find(|x| x.id == decision) else {
            return Err(internal("the decision leg's id is taken but nothing is found under it"));
        };
        if leg_shaped(&leg) {
            return Ok(true);
        }
        if has_internal_account(&leg) {
            // An alias, a marker or a resolution alias whose id a client chose: no leg.
            return Ok(false);
        }
        self.created_after_its_alias(t, primary, &leg, deadline).await
    }

    /// Whether `leg`, on `primary`, sits right after an alias (or a marker) naming `t` in
    /// the alias account's history: created in `t`'s own chain ([`Self::genuine_decision`]).
    async fn created_after_its_alias(
        &self,
        t: u128,
        primary: ShardId,
        leg: &Transfer,
        deadline: Instant,
    ) -> Result<bool, Status> {
        let before = leg.timestamp - 1;
        let filter = crate::ledger::AccountFilter {
            account_id: transit(INTERNAL_LEDGER),
            timestamp_min: before,
            timestamp_max: before,
            limit: 1,
            flags: crate::ledger::AccountFilterFlags::DEBITS,
            ..crate::ledger::AccountFilter::default()
        };
        let neighbour = self.account_transfers_on(primary, filter, deadline).await?;
        Ok(neighbour.first().is_some_and(|record| {
            record.timestamp == before
                && record.user_data_128 == t
                && matches!(record.code, ALIAS_CODE | MARKER_CODE | INTERNAL_CODE)
        }))
    }

    /// Retries, in the background, the resolutions of decided transactions that `failed`
    /// (see [`RESOLVE_RETRIES_MAX`]). Resolving is idempotent (every post, void and
    /// tombstone has an id derived from its leg), so a retry that races the client's resend
    /// or recovery changes nothing twice.
    fn resolve_later(&self, by_shard: BTreeMap<ShardId, Vec<Transfer>>, failed: &Status) {
        use std::sync::atomic::Ordering;
        let legs: usize = by_shard.values().map(Vec::len).sum();
        if self.resolving().fetch_add(1, Ordering::Relaxed) >= RESOLVING_MAX {
            self.resolving().fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(legs, error = %failed.message(), "resolution failed; {RESOLVING_MAX} \
                already retrying, left to recovery");
            return;
        }
        tracing::info!(legs, error = %failed.message(), "resolution failed; retrying in the background");
        let api = self.clone();
        tokio::spawn(async move {
            let mut wait = RESOLVE_BACKOFF_MIN;
            for attempt in 1..=RESOLVE_RETRIES_MAX {
                tokio::time::sleep(wait).await;
                match api.resolve(&by_shard, api.deadline()).await {
                    Ok(()) => {
                        tracing::info!(legs, attempt, "resolved in the background");
                        break;
                    }
                    Err(e) if attempt == RESOLVE_RETRIES_MAX => {
                        tracing::warn!(legs, error = %e.message(), "resolution still failing; \
                            left to recovery");
                    }
                    Err(_) => wait = (wait * 2).min(RESOLVE_BACKOFF_MAX),
                }
            }
            api.resolving().fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Creates the resolutions `by_shard` (posts, voids, tombstones): the first shard's,
    /// then the others' together (the failpoint sits between). A tombstone that finds its
    /// leg created after all voids the leg.
    async fn resolve(
        &self,
        by_shard: &BTreeMap<ShardId, Vec<Transfer>>,
        deadline: Instant,
    ) -> Result<(), Status> {
        fail::fail_point!("coordinator::resolution", |_| Err(Status::unavailable(
            "TALLY:Unavailable: failpoint coordinator::resolution"
        )));
        let tag = |shard: ShardId, events: &[Transfer]| {
            (shard, events.iter().map(|&e| ((shard, e), e)).collect::<Vec<_>>())
        };
        let mut shards = by_shard.iter();
        let Some((&shard, events)) = shards.next() else { return Ok(()) };
        let first: Wave<(ShardId, Transfer)> = BTreeMap::from([tag(shard, events)]);
        let rest: Wave<(ShardId, Transfer)> = shards.map(|(&s, e)| tag(s, e)).collect();
        let mut late: Wave<()> = BTreeMap::new();
        for (round, wave) in [first, rest].iter().enumerate() {
            if wave.is_empty() {
                continue;
            }
            if round > 0 {
                fail::fail_point!("coordinator::between_resolutions");
            }
            let outcomes = self.create_wave(wave, deadline, |_| None).await?;
            for ((shard, event), (_, status)) in outcomes {
                let tombstone = event.code == INTERNAL_CODE;
                if tombstone
                    && !prepared(status)
                    && status != TS::IdAlreadyFailed.code()
                    && !exists_differently(status)
                {
                    // The leg's id is still free: a late prepare of it would be left to
                    // recovery (its marker names it; the decision is void).
                    tracing::warn!(%shard, leg = %format!("{:#x}", event.id.0), status, "tombstone refused");
                }
                if tombstone && exists_differently(status) {
                    late.entry(shard).or_default().push(((), void_of(event.id)));
                }
            }
        }
        if !late.is_empty() {
            self.create_wave(&late, deadline, |_| None).await?;
        }
        Ok(())
    }

    /// Recovers the transactions with legs on `here`'s shard (which this node leads): for
    /// each marker older than `age_ns` (oldest first, from `cursor`) with a leg still
    /// pending and unresolved, decides the transaction ("void unless posted") and resolves
    /// those legs. Advances `cursor` past markers with nothing left to do, and past the
    /// other transfers it walked. Whether it stopped at a limit ([`RECOVERY_MARKERS_MAX`],
    /// [`RECOVERY_SCAN_MAX`]) with old enough transfers left: another pass would go on.
    ///
    /// It walks the shard's transfers in timestamp order from `cursor` (at most
    /// [`RECOVERY_SCAN_MAX`], up to [`RECOVERY_MARKERS_MAX`] aliases and markers), not the
    /// alias account's own list: that list can only be read oldest-first by walking every
    /// newer entry, and the entries younger than `age_ns` that a pass must leave (30 s of
    /// them at the default) would make each pass as long as the backlog behind it.
    ///
    /// On the debit shard of cross-shard pending transfers (§3e) it first completes the
    /// credit legs of watched ones that expired, and it follows each pending alias and
    /// resolution alias it walks ([`LedgerApi::follow_record`]).
    async fn recover_shard(
        &self,
        here: &LocalShard,
        cursor: &mut u64,
        watch: &mut super::xpending::Watch,
        age_ns: u64,
    ) -> Result<bool, Status> {
        let shard = here.replica.shard;
        let now = super::batcher::cluster_time_now_ns();
        if let Err(e) = self.follow_watched(here, watch, now).await {
            tracing::warn!(%shard, error = %e, "expired cross-shard pending transfers: completing their credit legs");
        }
        if let Err(e) = self.walk_overflow(here, watch, *cursor).await {
            tracing::warn!(%shard, error = %e, "cross-shard pending transfers: the overflow walk");
        }
        let horizon = now.saturating_sub(age_ns);
        // Aliases and markers (every event debiting this account is one or the other): each
        // names the legs of its transaction on this shard, created in the same chain.
        let names = transit(INTERNAL_LEDGER);
        let mut markers = Vec::new();
        let (mut walked, mut walked_to) = (0_usize, *cursor);
        // Stopped by a limit rather than by the horizon or the end: more to walk.
        let mut limited = false;
        here.replica.ledger.read().machine.scan_transfers(cursor.saturating_add(1), &mut |t| {
            if t.timestamp > horizon {
                return ControlFlow::Break(());
            }
            walked += 1;
            walked_to = t.timestamp;
            if t.debit_account_id == names {
                markers.push(*t);
            }
            limited = markers.len() == RECOVERY_MARKERS_MAX as usize || walked == RECOVERY_SCAN_MAX;
            if limited { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        if limited {
            tracing::debug!(%shard, walked, markers = markers.len(), "recovery pass stopped at a limit");
        }
        let mut seen = std::collections::HashSet::new();
        // Once a transaction fails to recover, the cursor stays before it.
        let mut held = false;
        for marker in markers {
            if matches!(marker.code, PENDING_ALIAS_CODE | RESOLUTION_ALIAS_CODE) {
                let deadline = Instant::now() + RECOVERY_STEP_TIMEOUT;
                match self.follow_record(here, &marker, watch, deadline).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // The watch is full: the overflow walk comes back for it.
                        if watch.overflow.is_none() {
                            tracing::info!(%shard, "pending-transfer watch full; the rest is walked again once entries leave");
                        }
                        watch.overflow.get_or_insert(marker.timestamp);
                    }
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "following a cross-shard pending transfer");
                        held = true;
                    }
                }
                if !held {
                    *cursor = marker.timestamp;
                }
                continue;
            }
            // (Aliases of the unlinked layout, before 2026-12-04, had markers beside them.)
            let (t, _, n) = alias_parts(&marker);
            // A transaction with several aliases here is looked at once per pass.
            let names_legs = matches!(marker.code, MARKER_CODE | ALIAS_CODE | PENDING_MARKER_CODE);
            // A cross-shard pending transfer's credit leg: voided if the transfer was never
            // created; once created it follows the debit leg, from the debit shard.
            let pending = marker.code == PENDING_MARKER_CODE;
            if !names_legs || !seen.insert(t) {
                if !held {
                    *cursor = marker.timestamp;
                }
                continue;
            }
            let deadline = Instant::now() + RECOVERY_STEP_TIMEOUT;
            let ledger0 = ledger0_of(&marker);
            let candidates: Vec<TransferId> =
                (0..n).flat_map(|k| [leg_id(t, k, 0), leg_id(t, k, 1)]).collect();
            // The legs still pending, by the ledger's own record of each pending transfer
            // (not by a lookup of the resolutions' ids: a transfer a client made under one
            // of those ids, before they were reserved, made a pending leg look resolved).
            let open: Vec<TransferId> = {
                let ledger = here.replica.ledger.read();
                let machine = &ledger.machine;
                candidates
                    .iter()
                    .filter_map(|&id| machine.pending_transfer(id))
                    .filter(|(_, status)| *status == PendingStatus::Pending)
                    .map(|(leg, _)| leg.id)
                    .collect()
            };
            if !open.is_empty() {
                let primary = ShardId(marker.user_data_32);
                let finish = async {
                    let decision = self
                        .decide_void(t, primary, leg_id(t, 0, 0), ledger0, pending, deadline)
                        .await?;
                    let events: Vec<Transfer> = open
                        .iter()
                        .filter(|leg| **leg != leg_id(t, 0, 0))
                        .filter(|_| !(pending && decision == Decision::Post))
                        .map(|&leg| match decision {
                            Decision::Post => post_of(leg),
                            Decision::Void => void_of(leg),
                        })
                        .collect();
                    if !events.is_empty() {
                        self.transfers_on(shard, events, deadline).await?;
                    }
                    Ok::<_, Status>(decision)
                };
                match finish.await {
                    Ok(decision) => {
                        tracing::info!(%shard, transaction = %format!("{t:#x}"), ?decision, legs = open.len(), "cross-shard transaction recovered");
                    }
                    // Retried on the next pass; the markers after it are not held up.
                    Err(e) => {
                        tracing::warn!(%shard, transaction = %format!("{t:#x}"), error = %e, "cross-shard recovery of a transaction failed");
                        held = true;
                    }
                }
            }
            if !held {
                *cursor = marker.timestamp;
            }
        }
        if !held {
            // Everything walked is old and handled (transfers are timestamped in order: none
            // can appear behind it).
            *cursor = (*cursor).max(walked_to);
        }
        Ok(limited && !held)
    }

    /// The transfers `aliases` stand for, each rebuilt from its legs if its transaction
    /// was posted (`None` while undecided or if voided), in the order of `aliases`. One
    /// lookup on every shard serves them all (in requests of at most `BATCH_EVENTS_MAX`
    /// ids): rebuilding them one by one cost a fan-out per alias, and a lookup of a few
    /// thousand ran past every deadline.
    pub(super) async fn reconstruct_chains(
        &self,
        aliases: &[Transfer],
        deadline: Instant,
    ) -> Result<Vec<Option<Transfer>>, Status> {
        // Posted: the decision leg exists single-phase (or, prepared before 2026-12-05,
        // pending with its post, under either id a post of it may have: posted before
        // 2026-12-07, under the earlier one).
        let wanted = |alias: &Transfer| {
            let (t, k, _) = alias_parts(alias);
            let decision = leg_id(t, 0, 0);
            let [post, post_before] = crate::ledger::internal::post_ids(decision);
            [leg_id(t, k, 0), leg_id(t, k, 1), decision, post, post_before]
        };
        let mut ids: Vec<TransferId> = aliases.iter().flat_map(wanted).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = by_id_preferring_legs(self.find_everywhere(&ids, deadline).await?);
        // A single-phase decision leg is T's own (not a client's transfer created under its
        // id beforehand, §3d) if it has an internal account, or T's first alias exists (it
        // is created only in T's primary chain, with the leg), or else if it sits right
        // after an alias naming T (one read on the primary per such transaction).
        let single =
            |leg: &Transfer| !leg.flags.contains(TransferFlags::PENDING) && !is_tombstone(leg);
        let first_aliases: std::collections::HashSet<u128> =
            aliases.iter().filter(|a| alias_parts(a).1 == 0).map(|a| a.user_data_128).collect();
        let mut doubtful: BTreeMap<u128, (ShardId, Transfer)> = BTreeMap::new();
        for alias in aliases {
            let (t, _, _) = alias_parts(alias);
            if let Some(leg) = found.get(&leg_id(t, 0, 0)).filter(|leg| single(leg))
                && !leg_shaped(leg)
                && !first_aliases.contains(&t)
            {
                doubtful.insert(t, (ShardId(alias.user_data_32), *leg));
            }
        }
        let checks = doubtful.iter().map(|(&t, (primary, leg))| async move {
            Ok::<_, Status>((t, self.created_after_its_alias(t, *primary, leg, deadline).await?))
        });
        let genuine: std::collections::HashMap<u128, bool> =
            try_join_all(checks).await?.into_iter().collect();
        Ok(aliases
            .iter()
            .map(|alias| {
                let (t, k, n) = alias_parts(alias);
                let [debit, credit, decision, post, post_before] = wanted(alias);
                // (A post record only Tally can have made: clients may not send a post or
                // void with a derived id.)
                let posted = [post, post_before]
                    .iter()
                    .any(|id| found.get(id).is_some_and(|p| p.pending_id == decision))
                    || found
                        .get(&decision)
                        .is_some_and(|leg| single(leg) && genuine.get(&t).copied().unwrap_or(true));
                let debit = found.get(&debit).filter(|_| posted)?;
                let credit =
                    found.get(&credit).map_or(debit.credit_account_id, |c| c.credit_account_id);
                Some(Transfer {
                    id: alias.id,
                    credit_account_id: credit,
                    flags: if k + 1 < n { TransferFlags::LINKED } else { TransferFlags::empty() },
                    timeout: 0,
                    timestamp: alias.timestamp,
                    ..*debit
                })
            })
            .collect())
    }

    /// `ids` looked up on every shard, at most `BATCH_EVENTS_MAX` ids per request.
    pub(super) async fn find_everywhere(
        &self,
        ids: &[TransferId],
        deadline: Instant,
    ) -> Result<Vec<Transfer>, Status> {
        let chunks = ids.chunks(BATCH_EVENTS_MAX as usize);
        let all = chunks.flat_map(|chunk| {
            (1..=self.shard_count()).map(|s| self.lookup_on(ShardId(s), chunk.to_vec(), deadline))
        });
        Ok(try_join_all(all).await?.into_iter().flatten().collect())
    }
}

/// The `user_data_64` of an alias of transfer `k` or (`k` = 0) a marker of a transaction of
/// `n` transfers whose first transfer is on `ledger0`: `n | k << 16 | ledger0 << 32`.
fn names(n: u32, k: u32, ledger0: u32) -> u64 {
    u64::from(n) | (u64::from(k) << 16) | (u64::from(ledger0) << 32)
}
const _: () = assert!(TXN_TRANSFERS_MAX < 1 << 16, "n and k take 16 bits each in names()");

/// (T, k, n) of an alias (of a marker: k = 0). An alias written before 2026-12-04 (code
/// [`INTERNAL_CODE`], created unlinked beside a marker) holds `k | n << 32`.
#[must_use]
pub fn alias_parts(alias: &Transfer) -> (u128, u32, u32) {
    let low = |bits: u64| u32::try_from(bits & 0xFFFF_FFFF).expect("32 bits");
    let (k, n) = if alias.code == INTERNAL_CODE {
        (low(alias.user_data_64), low(alias.user_data_64 >> 32))
    } else {
        (low((alias.user_data_64 >> 16) & 0xFFFF), low(alias.user_data_64 & 0xFFFF))
    };
    (alias.user_data_128, k, n)
}

/// The ledger of the first transfer of the transaction an alias or a marker names (the
/// decision leg's ledger, which its tombstone needs).
fn ledger0_of(record: &Transfer) -> u32 {
    u32::try_from(record.user_data_64 >> 32).expect("32 bits")
}

/// Whether `t` is a cross-shard transaction's alias.
#[must_use]
pub fn is_alias(t: &Transfer) -> bool {
    t.ledger == INTERNAL_LEDGER && t.debit_account_id == transit(INTERNAL_LEDGER)
}

/// The ledger's answer to a decision request, or, in crash-test builds, an answer no
/// ledger gives (failpoint `coordinator::decision_answer`, e.g. `=1*return`): the test of
/// a decision that cannot be read.
fn garbled_decision_answer(status: u32) -> u32 {
    fail::fail_point!("coordinator::decision_answer", |_| u32::MAX - 1);
    status
}

/// Failpoint `coordinator::after_first_leg` (crash-test builds): `panic` crashes the
/// coordinator there; `return(MS)` pauses it for MS milliseconds without blocking the
/// runtime. (The fail crate's own `sleep(MS)` blocks a worker thread; on a 2-thread node that
/// starved the Raft heartbeats into elections, and the paused batch then failed NotLeader.)
fn after_first_leg_pause_ms() -> Option<u64> {
    fail::fail_point!("coordinator::after_first_leg", |arg: Option<String>| arg
        .and_then(|ms| ms.parse().ok()));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::routing::shard_of;

    fn plan4(chain: &[Transfer]) -> Result<Plan, String> {
        Plan::new(chain, &crate::service::route::placement(chain, 4))
    }

    fn transfer(id: u128, debit: u128, credit: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id: TransferId(id),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount: 5,
            ledger: 3,
            code: 9,
            user_data_64: 77,
            flags,
            ..Transfer::default()
        }
    }

    #[test]
    fn a_plan_has_a_decision_leg_transit_legs_and_an_alias_per_transfer() {
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let c = (b + 1..).find(|&i| shard_of(i, 4) == shard_of(b, 4)).unwrap();
        let chain = [
            transfer(100, a, b, TransferFlags::LINKED),
            transfer(101, b, c, TransferFlags::empty()),
        ];
        let plan = plan4(&chain).unwrap();
        let (sa, sb) = (ShardId(shard_of(a, 4)), ShardId(shard_of(b, 4)));
        assert_eq!((plan.t, plan.primary), (digest(&chain), sa));
        // Transfer 0 crosses: two legs through transit; transfer 1 stays on b's shard.
        assert_eq!(plan.legs.len(), 3);
        let decision = plan.legs[0];
        assert_eq!((decision.shard, decision.k, decision.side), (sa, 0, 0));
        assert_eq!(decision.transfer.id, leg_id(plan.t, 0, 0));
        assert_eq!(decision.transfer.credit_account_id, transit(3));
        assert_eq!(plan.legs[1].transfer.debit_account_id, transit(3));
        assert_eq!(plan.legs[1].transfer.credit_account_id, AccountId(b));
        assert!(plan.legs[..2].iter().all(|l| l.transfer.timeout == 0));
        // On the primary single-phase (created only as the decision), elsewhere pending.
        assert_eq!(decision.transfer.flags, TransferFlags::empty());
        assert!(plan.legs[1..].iter().all(|l| l.transfer.flags == TransferFlags::PENDING));
        assert!(plan.legs.iter().all(|l| l.transfer.user_data_64 == 77 && l.transfer.code == 9));
        assert_eq!(plan.legs[2].transfer.debit_account_id, AccountId(b));
        assert_eq!(plan.legs[2].transfer.credit_account_id, AccountId(c));
        assert_eq!(plan.legs[2].transfer.timeout, crate::ledger::internal::LEG_TIMEOUT);
        // Only Tally can resolve a pending leg: each is marked as one (an internal account,
        // or the leg timeout).
        let pending = plan.legs.iter().filter(|l| l.transfer.flags == TransferFlags::PENDING);
        assert_eq!(pending.clone().count(), 2);
        assert!(pending.map(|l| l.transfer).all(|leg| crate::ledger::internal::is_leg(&leg)));
        // Aliases claim the transfers' own ids on their debit shards and name T.
        assert_eq!(plan.aliases[0].0, sa);
        assert_eq!(plan.aliases[1].0, sb);
        assert_eq!(plan.aliases[1].1.id, TransferId(101));
        assert_eq!(plan.aliases[1].1.user_data_128, plan.t);
        assert_eq!(plan.aliases[1].1.user_data_64, 2 | (1 << 16) | (3 << 32));
        assert_eq!(alias_parts(&plan.aliases[1].1), (plan.t, 1, 2));
        assert_eq!(plan.aliases[1].1.code, ALIAS_CODE);
        // An alias of the earlier layout (unlinked, beside a marker) still reads right.
        let old =
            Transfer { code: INTERNAL_CODE, user_data_64: 1 | (2 << 32), ..plan.aliases[1].1 };
        assert_eq!(alias_parts(&old), (plan.t, 1, 2));
        assert_eq!(ledger0_of(&plan.aliases[1].1), 3);
        assert_eq!(plan.aliases[1].1.user_data_32, sa.0);
        // Internal accounts where needed; every shard's prepare is one chain, its aliases
        // first (which name its legs: no marker where there is an alias), ending with a leg.
        let internal = plan.internal_accounts();
        assert!(internal[&sa].iter().any(|x| x.id == transit(3)));
        assert!(internal[&sb].iter().any(|x| x.id == transit(INTERNAL_LEDGER)));
        assert!(plan.markers.is_empty());
        let prepare = plan.prepare();
        assert_eq!(prepare.keys().copied().collect::<Vec<_>>(), vec![sb], "all but the primary");
        // The primary's chain is the decision: its alias, then its single-phase leg.
        let decision = plan.decision();
        assert_eq!(
            decision.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![Place::Alias(0), Place::Leg(0)]
        );
        assert_eq!(decision[0].1.flags, TransferFlags::LINKED);
        assert_eq!(decision[1].1, plan.legs[0].transfer);
        assert_eq!(plan.void_decision(), tombstone(plan.legs[0].transfer.id, 3));
        assert!(is_tombstone(&plan.void_decision()) && !is_tombstone(&decision[1].1));
        assert_eq!(
            prepare[&sb].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![Place::Alias(1), Place::Leg(1), Place::Leg(2)]
        );
        let linked: Vec<bool> =
            prepare[&sb].iter().map(|(_, t)| t.flags.contains(TransferFlags::LINKED)).collect();
        assert_eq!(linked, vec![true, true, false]);
        assert_eq!(
            prepare[&sb][1].1,
            Transfer {
                flags: TransferFlags::PENDING | TransferFlags::LINKED,
                ..plan.legs[1].transfer
            }
        );
        // A shard with only a credit leg gets a marker naming T, n and ledger 0.
        let c2 = (b + 1..).find(|&i| ![sa.0, sb.0].contains(&shard_of(i, 4))).unwrap();
        let split = [transfer(102, a, c2, TransferFlags::empty())];
        let plan = plan4(&split).unwrap();
        let sc = ShardId(shard_of(c2, 4));
        assert_eq!(plan.markers.keys().copied().collect::<Vec<_>>(), vec![sc]);
        assert_eq!(alias_parts(&plan.markers[&sc]), (plan.t, 0, 1));
        assert_eq!(ledger0_of(&plan.markers[&sc]), 3);
        assert_eq!(
            plan.prepare()[&sc].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![Place::Marker(sc), Place::Leg(1)]
        );
        // A pending transfer crosses shards alone, not in a chain.
        let pending = [
            transfer(100, a, b, TransferFlags::PENDING | TransferFlags::LINKED),
            transfer(101, b, c, TransferFlags::empty()),
        ];
        assert!(plan4(&pending).unwrap_err().contains("a pending transfer alone"));
        let balancing = [transfer(100, a, b, TransferFlags::BALANCING_DEBIT)];
        assert!(plan4(&balancing).unwrap_err().contains("single-phase"));
        // Fields the legs would not carry are refused, as the ledger refuses them on one
        // shard.
        let timed = [Transfer { timeout: 5, ..chain[1] }];
        assert!(plan4(&timed).unwrap_err().contains("timeout must be zero"));
        let stamped = [Transfer { timestamp: 5, ..chain[1] }];
        assert!(plan4(&stamped).unwrap_err().contains("timestamp must be zero"));
        let open = [chain[0]];
        assert!(plan4(&open).unwrap_err().contains("chain is open"));
    }

    #[test]
    fn a_cross_shard_pending_transfer_keeps_its_timeout_on_its_debit_leg() {
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let x = Transfer { timeout: 60, ..transfer(100, a, b, TransferFlags::PENDING) };
        let plan = plan4(&[x]).unwrap();
        let (sa, sb) = (ShardId(shard_of(a, 4)), ShardId(shard_of(b, 4)));
        assert!(plan.pending);
        assert_eq!(plan.primary, sa);
        // Its debit leg, on the primary, is pending with its timeout: created as the
        // decision, it is the reservation on A and X's clock.
        let (debit, credit) = (plan.legs[0], plan.legs[1]);
        assert_eq!((debit.shard, credit.shard), (sa, sb));
        assert_eq!(debit.transfer.flags, TransferFlags::PENDING);
        assert_eq!((debit.transfer.timeout, credit.transfer.timeout), (60, 0));
        assert_eq!(credit.transfer.flags, TransferFlags::PENDING);
        assert!(plan.legs.iter().all(|l| crate::ledger::internal::is_leg(&l.transfer)));
        // Its alias names the credit shard; its marker on the credit shard has X's id.
        let alias = plan.aliases[0].1;
        assert_eq!((alias.id, alias.code, alias.user_data_32), (x.id, PENDING_ALIAS_CODE, sb.0));
        let marker = plan.markers[&sb];
        assert_eq!(
            (marker.id, marker.code, marker.user_data_32),
            (x.id, PENDING_MARKER_CODE, sa.0)
        );
        assert_eq!(
            plan.decision().iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![Place::Alias(0), Place::Leg(0)]
        );
        assert_eq!(
            plan.prepare()[&sb].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![Place::Marker(sb), Place::Leg(1)]
        );
        // Its id taken on the credit shard by another transfer: its marker is refused, the
        // decision never sent, and X says why.
        let mut progress = Progress::new(plan.clone());
        progress.markers.insert(sb, TS::ExistsWithDifferentAmount.code());
        progress.legs[1] = (3, TS::LinkedEventFailed.code());
        let code = |s: TS| i32::try_from(s.code()).unwrap();
        assert_eq!(progress.outcomes()[0].1, code(TS::ExistsWithDifferentAmount));
        // A single-phase transfer between the same accounts plans as before.
        let plain = plan4(&[transfer(100, a, b, TransferFlags::empty())]).unwrap();
        assert!(!plain.pending);
        assert_eq!(plain.aliases[0].1.code, ALIAS_CODE);
        assert_eq!(plain.legs[0].transfer.flags, TransferFlags::empty());
    }

    #[test]
    fn a_voided_chain_names_its_cause_once() {
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let chain = [
            transfer(100, a, b, TransferFlags::LINKED),
            transfer(101, b, a, TransferFlags::empty()),
        ];
        let created = TS::Created.code();
        let progress = |legs: Vec<u32>| {
            let mut progress = Progress::new(plan4(&chain).unwrap());
            progress.aliases.fill((7, created));
            progress.legs = legs.into_iter().map(|s| (8, s)).collect();
            progress
        };
        let statuses = |p: &Progress| p.outcomes().iter().map(|&(_, s)| s).collect::<Vec<_>>();
        let code = |s: TS| i32::try_from(s.code()).unwrap();
        let legs = progress(Vec::new()).plan.legs.len();
        // Everything prepared, decided void: expired (recovery, a timeout or a quote),
        // said by the first transfer, the second linked to it.
        let expired = progress(vec![created; legs]);
        assert_eq!(
            statuses(&expired),
            vec![code(TS::PendingTransferExpired), code(TS::LinkedEventFailed)]
        );
        // A leg of the second transfer refused: it says why, the first is linked.
        let mut refused = vec![created; legs];
        let second = expired.plan.legs.iter().rposition(|l| l.k == 1).unwrap();
        refused[second] = TS::ExceedsCredits.code();
        assert_eq!(
            statuses(&progress(refused.clone())),
            vec![code(TS::LinkedEventFailed), code(TS::ExceedsCredits)]
        );
        // The primary's chain never sent (its quote expired, or another shard refused):
        // its events name no cause.
        let mut unsent = vec![created; legs];
        unsent[0] = UNSENT;
        assert_eq!(
            statuses(&progress(unsent.clone())),
            vec![code(TS::PendingTransferExpired), code(TS::LinkedEventFailed)]
        );
        unsent[second] = TS::ExceedsCredits.code();
        assert_eq!(
            statuses(&progress(unsent)),
            vec![code(TS::LinkedEventFailed), code(TS::ExceedsCredits)]
        );
        // The primary's chain refused because its decision leg's id was tombstoned first
        // (recovery): expired.
        let mut late = vec![created; legs];
        late[0] = TS::ExistsWithDifferentFlags.code();
        assert_eq!(
            statuses(&progress(late)),
            vec![code(TS::PendingTransferExpired), code(TS::LinkedEventFailed)]
        );
    }

    #[test]
    fn a_transaction_is_too_late_to_post_ten_seconds_after_its_first_leg_outside_the_primary() {
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let mut txn = Progress::new(plan4(&[transfer(100, a, b, TransferFlags::empty())]).unwrap());
        let second = 1_000_000_000;
        let limit = u64::from(TXN_TIMEOUT_S) * second;
        assert!(!txn.too_late(u64::MAX), "nothing prepared yet");
        // The decision leg (on the primary) is not a prepared leg: its time does not count.
        txn.legs[0] = (5 * second, TS::Created.code());
        assert!(!txn.too_late(u64::MAX));
        txn.legs[1] = (7 * second, TS::Exists.code());
        assert!(!txn.too_late(7 * second + limit));
        assert!(txn.too_late(7 * second + limit + 1));
        // A refused leg was never prepared.
        txn.legs[1].1 = TS::ExceedsDebits.code();
        assert!(!txn.too_late(u64::MAX));
    }

    #[test]
    fn a_different_request_reusing_an_id_gets_its_own_legs() {
        let x = transfer(100, 1, 2, TransferFlags::empty());
        let other = Transfer { amount: 6, ..x };
        assert_eq!(digest(&[x]), digest(&[x]), "a resend derives the same ids");
        assert_ne!(digest(&[x]), digest(&[other]));
        let longer = [
            Transfer { flags: TransferFlags::LINKED, ..x },
            transfer(101, 2, 3, TransferFlags::empty()),
        ];
        assert_ne!(digest(&longer[..1]), digest(&longer));
        let (a, b) = (plan4(&[x]).unwrap(), plan4(&[other]).unwrap());
        assert_ne!(a.legs[0].transfer.id, b.legs[0].transfer.id);
        assert_eq!(a.aliases[0].1.id, b.aliases[0].1.id, "both claim the user's id");
    }

    #[test]
    fn a_chain_found_whole_counts_as_created_by_the_earlier_attempt() {
        let (exists, linked, created) =
            (TS::Exists.code(), TS::LinkedEventFailed.code(), TS::Created.code());
        let dry = TS::SliceDry.code();
        let a = 1;
        let b = (2..).find(|&i| shard_of(i, 4) != shard_of(a, 4)).unwrap();
        let chain = [
            transfer(100, a, b, TransferFlags::LINKED),
            transfer(101, b, a, TransferFlags::empty()),
        ];
        let plan = plan4(&chain).unwrap();
        let mut txns = vec![Progress::new(plan.clone())];
        // Shard by shard as the waves answer: the first chain was created by an earlier
        // attempt (exists, then linked_event_failed behind it), the second fails on a dry leg.
        let prepare = plan.chains();
        let mut outcomes = Vec::new();
        for (n, events) in prepare.values().enumerate() {
            for (j, (place, _)) in events.iter().enumerate() {
                let status = match (n, j) {
                    (0, 0) => exists,
                    (0, _) => linked,
                    (_, 1) => dry,
                    _ => linked,
                };
                outcomes.push(((0, *place), (5, status)));
            }
        }
        record(&mut txns, outcomes);
        let first: Vec<Place> = prepare.values().next().unwrap().iter().map(|(p, _)| *p).collect();
        for (j, place) in (0..).zip(&first) {
            let (timestamp, status) = match place {
                Place::Alias(k) => txns[0].aliases[*k],
                Place::Leg(l) => txns[0].legs[*l],
                Place::Marker(s) => (5 + j, txns[0].markers[s]),
                Place::VoidDecision => unreachable!("no tombstone in a chain"),
            };
            // Each with the timestamp it was created with: the chain's first one's + j.
            assert_eq!((timestamp, status), (5 + j, exists), "{place:?}");
        }
        assert!(!txns[0].prepared());
        assert!(txns[0].legs.iter().any(|(_, s)| *s == dry));
        // A chain whose own event failed after a created one is not taken for created.
        let mut fresh = vec![((0, Place::Alias(0)), (1, linked)), ((0, Place::Leg(0)), (1, dry))];
        settle_chains(&mut fresh);
        assert_eq!(fresh[0].1.1, linked);
        let mut mixed =
            vec![((0, Place::Alias(0)), (1, exists)), ((0, Place::Leg(0)), (1, created))];
        settle_chains(&mut mixed);
        assert_eq!((mixed[0].1.1, mixed[1].1.1), (exists, created));
    }

    #[test]
    fn requests_never_split_a_group() {
        let max = BATCH_EVENTS_MAX as usize;
        // Groups of 3,000 events: two fit in a request, the third must not be cut.
        let events: Vec<(Option<usize>, Transfer)> =
            (0..4 * 3_000).map(|i| (Some(i / 3_000), Transfer::default())).collect();
        let requests = requests_of(&events, |g| *g);
        assert_eq!(requests.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![6_000, 6_000]);
        // Ungrouped events fill requests up to the limit.
        let loose: Vec<(Option<usize>, Transfer)> =
            (0..2 * max + 5).map(|_| (None, Transfer::default())).collect();
        let requests = requests_of(&loose, |g| *g);
        assert_eq!(requests.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![max, max, 5]);
        assert!(requests_of::<Option<usize>>(&[], |g| *g).is_empty());
    }

    #[test]
    fn derived_ids_are_distinct_and_stable() {
        let ids = [leg_id(1, 0, 0), leg_id(1, 0, 1), leg_id(1, 1, 0), leg_id(2, 0, 0)];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
            assert_ne!(post_id(*a), void_id(*a));
        }
        assert_eq!(leg_id(1, 0, 0), leg_id(1, 0, 0));
        assert!(is_internal(transit(5).0) && is_internal(sink(5).0) && !is_internal(5));
    }

    #[test]
    fn the_decision_leg_answers_say_the_decision() {
        assert_eq!(decided_by(TS::PendingTransferAlreadyPosted.code()), Some(Decision::Post));
        assert_eq!(decided_by(TS::PendingTransferAlreadyVoided.code()), Some(Decision::Void));
        assert_eq!(decided_by(TS::PendingTransferExpired.code()), Some(Decision::Void));
        // A single-phase decision leg: created by its primary's chain, the post decision.
        assert_eq!(decided_by(TS::PendingTransferNotPending.code()), Some(Decision::Post));
        assert_eq!(decided_by(TS::Created.code()), None);
        // Never taken as a decision: a void is only sent to a leg known to exist.
        assert_eq!(decided_by(TS::PendingTransferNotFound.code()), None);
        assert_eq!(decided_by(TS::IdAlreadyFailed.code()), None);
        assert!(exists_differently(TS::ExistsWithDifferentFlags.code()));
        assert!(!exists_differently(TS::Exists.code()));
    }
}
