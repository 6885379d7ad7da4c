//! Cross-shard pending transfers and their posts and voids (`docs/SHARDING.md` §3e).
//!
//! A pending transfer X whose debit account A lives on shard SA and credit account B on
//! shard SB is a cross-shard transaction (`xshard`) of one transfer with primary SA, with
//! three differences: its debit leg `X_d` (A → transit, on SA) is created *pending, with
//! X's timeout*, in SA's decision chain, so its existence is still the post decision and
//! from then on it is X's reservation and clock on A; its credit leg `X_c` (transit → B,
//! pending, on SB) is not posted after the decision but follows `X_d`; and its records have
//! codes of their own — a *pending alias* on SA (X's id, naming SB) and a *pending marker*
//! on SB (X's id too, naming SA).
//!
//! A post or void Y of X lands where X's id is one of those records (by the account it
//! names, or where a lookup found X) and reads `pending_transfer_not_pending` there, which
//! changes nothing and burns nothing. The node that took the request then carries it to
//! SA ([`LedgerApi::resolve_pending_across`]): one linked chain of a *resolution alias*
//! claiming Y's id and `Y'`, Y aimed at `X_d` under the id derived for a client's decision
//! (`client_post_id`, `client_void_id`), so SA's ledger applies every rule of a post or
//! void natively (amounts, a post in part, expiry by SA's cluster time, already posted or
//! voided, ledger, code, closed accounts). Then `X_c` is *completed* as `X_d` ended: posted
//! with the amount `Y'` posted, or voided ([`completion`]; ids derived from `X_c`, so
//! every party sends the same event and the first one counts).
//!
//! `X_d` can also end by expiring on SA. SA's leader keeps the pending aliases whose `X_d`
//! has a timeout in a [`Watch`] (built by the recovery walk, `xshard::recover`), and once
//! such an `X_d` has expired it voids `X_c`. The recovery walk also follows every pending
//! and resolution alias it passes (a node that crashed between `Y'` and the completion),
//! and the walk on SB decides an undecided X as for any transaction (void → `X_c` voided)
//! and leaves a created one to SA.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tonic::Status;

use super::ledger::{LedgerApi, LocalShard};
use super::xshard::{
    INTERNAL_LEDGER, PENDING_ALIAS_CODE, PENDING_MARKER_CODE, RESOLUTION_ALIAS_CODE, leg_id,
    prepared, sink, transit, void_of,
};
use crate::ledger::internal::{
    client_decision_ids, client_post_id, client_post_ids, client_void_id, derived, post_id,
};
use crate::ledger::{
    CreateTransferStatus as TS, PendingStatus, Transfer, TransferFlags, TransferId,
};
use crate::storage::keys::ShardId;

/// Pending transfers with a timeout whose expiry a node watches per shard it leads, at
/// most, by default (`pending_watch_max` sets it). Past it the recovery walk goes on, and
/// remembers where the first pending alias it could not watch was ([`Watch::overflow`]);
/// once entries have left (expired, or resolved: [`WATCH_PRUNE_PER_TICK`]), a second walk
/// from there takes up the rest. So the watch never grows without bound, and never holds
/// up the rest of recovery.
pub const WATCH_MAX: usize = 65_536;

/// Watched entries a recovery tick re-reads, at most, besides the due ones (round the
/// watch in turn): an entry whose pending transfer was posted or voided before its expiry
/// leaves the watch then (its credit leg completed, again), not only at its expiry, which
/// may be days away.
pub const WATCH_PRUNE_PER_TICK: usize = 4_096;
const _: () = assert!(WATCH_PRUNE_PER_TICK < WATCH_MAX, "a prune reads a slice of the watch");

/// The completion of a credit leg `x_c` as its debit leg ended: posted with `amount`
/// (`Some`), or voided.
#[must_use]
pub fn completion(x_c: TransferId, posted: Option<u128>) -> Transfer {
    match posted {
        Some(amount) => Transfer {
            id: post_id(x_c),
            pending_id: x_c,
            amount,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::default()
        },
        None => void_of(x_c),
    }
}

/// A fingerprint of a client's post or void `y`, every field as sent: its resolution
/// alias carries it, so another transfer reusing `y`'s id reads `exists_with_different_*`.
#[must_use]
pub fn fingerprint(y: &Transfer) -> u64 {
    let encoded = crate::storage::records::transfer_encode(y);
    let bits = derived(b"tally-resolution", &[&encoded]);
    u64::try_from(bits & u128::from(u64::MAX)).expect("64 bits")
}

/// The resolution alias of a client's post or void `y` of a cross-shard pending transfer
/// whose credit leg is on `credit_shard`, linked to the resolution it claims `y`'s id for.
fn resolution_alias(y: &Transfer, credit_shard: ShardId) -> Transfer {
    Transfer {
        id: y.id,
        debit_account_id: transit(INTERNAL_LEDGER),
        credit_account_id: sink(INTERNAL_LEDGER),
        amount: 0,
        pending_id: TransferId(0),
        user_data_128: y.pending_id.0,
        user_data_64: fingerprint(y),
        user_data_32: credit_shard.0,
        timeout: 0,
        ledger: INTERNAL_LEDGER,
        code: RESOLUTION_ALIAS_CODE,
        flags: TransferFlags::LINKED,
        timestamp: 0,
    }
}

/// Whether `record` is one of the records of a cross-shard pending transfer or of its
/// resolution (read by lookups apart from the other aliases).
#[must_use]
pub fn is_pending_record(record: &Transfer) -> bool {
    record.ledger == INTERNAL_LEDGER
        && matches!(record.code, PENDING_ALIAS_CODE | PENDING_MARKER_CODE | RESOLUTION_ALIAS_CODE)
}

/// Whether `leg` has the shape of a cross-shard pending transfer's debit leg: pending, a
/// client's account into its ledger's transit account ([`super::xshard::leg_shaped`]).
#[must_use]
pub fn pending_debit_leg(leg: &Transfer) -> bool {
    leg.flags.contains(TransferFlags::PENDING)
        && super::xshard::leg_shaped(leg)
        && leg.credit_account_id == transit(leg.ledger)
}

/// How a post or void `y` of a pending transfer disagrees with its debit leg `x_d`, if it
/// does, in the ledger's order past the accounts (checked by the caller): ledger, code,
/// amount (`post_void::resolved_amount`'s rules). Used when `y`'s resolution id is taken
/// by an earlier resolution, where the ledger answers `exists*` before these checks.
fn differs_from(y: &Transfer, x_d: &Transfer) -> Option<TS> {
    if y.ledger > 0 && y.ledger != x_d.ledger {
        return Some(TS::PendingTransferHasDifferentLedger);
    }
    if y.code > 0 && y.code != x_d.code {
        return Some(TS::PendingTransferHasDifferentCode);
    }
    let void = y.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let amount = match (void, y.amount) {
        (true, 0) | (false, u128::MAX) => x_d.amount,
        (_, amount) => amount,
    };
    if amount > x_d.amount {
        Some(TS::ExceedsPendingTransferAmount)
    } else if void && amount < x_d.amount {
        Some(TS::PendingTransferHasDifferentAmount)
    } else {
        None
    }
}

/// Where a cross-shard pending transfer's debit leg stands, read on its debit shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Still pending; it expires at this cluster time (ns), if it has a timeout.
    Open(Option<u64>),
    /// Ended: its credit leg gets this completion.
    Done(Transfer),
    /// No debit leg under that id (never created: the transaction was void).
    Gone,
}

/// How the debit leg of transaction `t` (a cross-shard pending transfer) stands in
/// `machine` (its debit shard's ledger), and so what its credit leg must do.
#[must_use]
pub fn follow<S: crate::ledger::LedgerStore>(
    machine: &crate::ledger::StateMachine<S>,
    t: u128,
) -> Follow {
    let (x_d, x_c) = (leg_id(t, 0, 0), leg_id(t, 0, 1));
    let Some((leg, status)) = machine.pending_transfer(x_d) else { return Follow::Gone };
    if !pending_debit_leg(&leg) {
        // Not the leg (a client's transfer, or one of Tally's records whose id a client
        // chose, under the leg's id, §3d): the transaction was void.
        return Follow::Gone;
    }
    match status {
        PendingStatus::Pending => Follow::Open(leg.expires_at()),
        PendingStatus::Expired | PendingStatus::Voided => Follow::Done(completion(x_c, None)),
        PendingStatus::Posted => {
            let posts = machine.lookup_transfers(&client_post_ids(x_d));
            let post = posts.iter().find(|p| p.pending_id == x_d);
            post.map_or(Follow::Gone, |p| Follow::Done(completion(x_c, Some(p.amount))))
        }
    }
}

/// The pending transfers with a timeout on one shard, by expiry, whose credit legs wait
/// on their expiry: (expires at, transaction) → credit shard.
#[derive(Debug)]
pub struct Watch {
    /// Entries at most (`pending_watch_max`).
    capacity: usize,
    due: BTreeMap<(u64, u128), ShardId>,
    /// Where the next prune starts (a key of `due`).
    prune_from: (u64, u128),
    /// The timestamp of the first pending alias the recovery walk passed while the watch
    /// was full: the overflow walk starts there.
    pub overflow: Option<u64>,
}

impl Watch {
    /// An empty watch of at most `capacity` entries (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), due: BTreeMap::new(), prune_from: (0, 0), overflow: None }
    }

    /// Whether it holds its capacity of entries.
    #[must_use]
    pub fn full(&self) -> bool {
        self.due.len() >= self.capacity
    }

    /// Watches transaction `t`'s debit leg, expiring at `at`, credit leg on `credit`.
    pub fn insert(&mut self, at: u64, t: u128, credit: ShardId) {
        self.due.insert((at, t), credit);
    }

    /// How many entries it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

impl LedgerApi {
    /// Sends `completions` (credit shard, completion), each shard's in one request; which
    /// of them were answered (in the order given): `created` or `exists`, or, logged, any
    /// other answer (recovery must not retry an answer that will not change).
    async fn complete(
        &self,
        completions: &[(ShardId, Transfer)],
        deadline: Instant,
    ) -> Result<(), Status> {
        let mut by_shard: BTreeMap<ShardId, Vec<Transfer>> = BTreeMap::new();
        for (shard, event) in completions {
            by_shard.entry(*shard).or_default().push(*event);
        }
        let sends = by_shard.into_iter().map(|(shard, events)| async move {
            let outcomes = self.transfers_on(shard, events.clone(), deadline).await?;
            for (event, (_, status)) in events.iter().zip(outcomes) {
                // `created`, or `exists`: the credit leg is as its debit leg ended; or
                // already ended the same way (by a completion under the id used before
                // 2026-12-07, which a walk from the start sends again under today's).
                let same_way = if event.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
                    TS::PendingTransferAlreadyPosted
                } else {
                    TS::PendingTransferAlreadyVoided
                };
                if !prepared(status) && status != same_way.code() {
                    tracing::warn!(%shard, leg = %format!("{:#x}", event.pending_id.0), status, "completion of a cross-shard pending transfer's credit leg refused");
                }
            }
            Ok::<_, Status>(())
        });
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }

    /// On `here` (the debit shard, which this node leads): what the watch says is due —
    /// every watched debit leg whose expiry has passed by cluster time `now` and that has
    /// ended is completed and leaves the watch (one that has not, the expiry sweep not yet
    /// run, stays for the next pass).
    pub(super) async fn follow_watched(
        &self,
        here: &LocalShard,
        watch: &mut Watch,
        now: u64,
    ) -> Result<(), Status> {
        let mut due: Vec<((u64, u128), ShardId)> =
            watch.due.range(..(now.saturating_add(1), 0)).map(|(k, v)| (*k, *v)).collect();
        // And a slice of the others, in turn: those resolved early leave now.
        let start = watch.prune_from.max((now.saturating_add(1), 0));
        let slice: Vec<((u64, u128), ShardId)> = watch
            .due
            .range(start..)
            .chain(watch.due.range((now.saturating_add(1), 0)..start))
            .take(WATCH_PRUNE_PER_TICK)
            .map(|(k, v)| (*k, *v))
            .collect();
        watch.prune_from = watch
            .due
            .range(slice.last().map_or(start, |(k, _)| *k)..)
            .nth(1)
            .map_or((0, 0), |(k, _)| *k);
        due.extend(slice);
        if due.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        let mut leave = Vec::new();
        {
            let ledger = here.replica.ledger.read();
            for (key, credit) in &due {
                match follow(&ledger.machine, key.1) {
                    Follow::Open(_) => {}
                    Follow::Done(event) => {
                        done.push((*credit, event));
                        leave.push(*key);
                    }
                    Follow::Gone => leave.push(*key),
                }
            }
        }
        let deadline = Instant::now() + super::xshard::RECOVERY_STEP_TIMEOUT;
        self.complete(&done, deadline).await?;
        for key in leave {
            watch.due.remove(&key);
        }
        Ok(())
    }

    /// The overflow walk on `here`: while the watch has room, takes up the pending aliases
    /// the recovery walk passed while it was full ([`Watch::overflow`]), from there up to
    /// `walked_to` (the main walk's cursor), at most `RECOVERY_SCAN_MAX` transfers a call.
    pub(super) async fn walk_overflow(
        &self,
        here: &LocalShard,
        watch: &mut Watch,
        walked_to: u64,
    ) -> Result<(), Status> {
        let Some(from) = watch.overflow else { return Ok(()) };
        if watch.full() {
            return Ok(());
        }
        let room = watch.capacity - watch.len();
        let names = transit(INTERNAL_LEDGER);
        let (mut found, mut next, mut walked) = (Vec::new(), None, 0_usize);
        here.replica.ledger.read().machine.scan_transfers(from, &mut |t| {
            if t.timestamp > walked_to {
                return std::ops::ControlFlow::Break(());
            }
            walked += 1;
            if t.debit_account_id == names && t.code == PENDING_ALIAS_CODE {
                found.push(*t);
            }
            if found.len() == room || walked == super::xshard::RECOVERY_SCAN_MAX {
                next = Some(t.timestamp + 1);
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        });
        let deadline = Instant::now() + super::xshard::RECOVERY_STEP_TIMEOUT;
        for record in found {
            if !self.follow_record(here, &record, watch, deadline).await? {
                next = Some(record.timestamp);
                break;
            }
        }
        watch.overflow = next;
        Ok(())
    }

    /// Recovery of one record on `here` (the debit shard, led by this node): a pending
    /// alias or a resolution alias. Its debit leg ended → its credit leg is completed (again:
    /// the first completion counts); still pending with a timeout → watched. Whether the
    /// walk may go on past it (`false`: the watch is full).
    pub(super) async fn follow_record(
        &self,
        here: &LocalShard,
        record: &Transfer,
        watch: &mut Watch,
        deadline: Instant,
    ) -> Result<bool, Status> {
        let (t, credit, state) = {
            let ledger = here.replica.ledger.read();
            let machine = &ledger.machine;
            let (t, credit) = if record.code == RESOLUTION_ALIAS_CODE {
                // It names X; X's pending alias beside it names the transaction.
                let x = TransferId(record.user_data_128);
                match machine.lookup_transfers(&[x]).first() {
                    Some(alias) if alias.code == PENDING_ALIAS_CODE => {
                        (alias.user_data_128, ShardId(alias.user_data_32))
                    }
                    _ => return Ok(true),
                }
            } else {
                (record.user_data_128, ShardId(record.user_data_32))
            };
            (t, credit, follow(machine, t))
        };
        match state {
            Follow::Open(Some(at)) => {
                if watch.full() {
                    return Ok(false);
                }
                watch.insert(at, t, credit);
            }
            Follow::Open(None) | Follow::Gone => {}
            Follow::Done(event) => self.complete(&[(credit, event)], deadline).await?,
        }
        Ok(true)
    }

    /// Carries the client's posts and voids of cross-shard pending transfers among
    /// `transfers` to their debit legs: each event that is not in a chain, resolves a
    /// pending transfer and read `pending_transfer_not_pending` on its shard (`shards`),
    /// where its pending id turns out to be a cross-shard pending transfer's alias or
    /// marker, gets the outcome of its resolution instead (in `outcomes`). Every such event
    /// is resolved at once.
    pub(super) async fn resolve_pending_across(
        &self,
        transfers: &[Transfer],
        shards: &[Option<ShardId>],
        outcomes: &mut [(u64, i32)],
        deadline: Instant,
    ) -> Result<(), Status> {
        let not_pending = TS::PendingTransferNotPending.code();
        // `exists_with_different_*`: a resend that landed where its resolution alias holds
        // its id (the debit shard).
        let maybe = |status: i32| {
            u32::try_from(status)
                .is_ok_and(|s| s == not_pending || super::xshard::exists_differently(s))
        };
        let candidates: Vec<usize> = (0..transfers.len())
            .filter(|&i| {
                let y = &transfers[i];
                let alone = !y.flags.contains(TransferFlags::LINKED)
                    && (i == 0 || !transfers[i - 1].flags.contains(TransferFlags::LINKED));
                // An imported post or void is not carried across either (imported transfers
                // do not cross shards): the ledger's `pending_transfer_not_pending` stands.
                // Carried, it would meet Tally's own alias before it in one batch and read
                // `imported_event_not_expected`, which its request never earned.
                let imported = y.flags.contains(TransferFlags::IMPORTED);
                alone
                    && !imported
                    && y.flags.resolves_pending()
                    && maybe(outcomes[i].1)
                    && shards[i].is_some()
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let resolved = candidates.iter().map(|&i| {
            let shard = shards[i].expect("filtered");
            self.resolve_one_across(transfers[i], shard, deadline)
        });
        let answers = futures_util::future::try_join_all(resolved).await?;
        for (i, answer) in candidates.into_iter().zip(answers) {
            if let Some((timestamp, status)) = answer {
                outcomes[i] = (timestamp, i32::try_from(status).expect("status codes are small"));
            }
        }
        Ok(())
    }

    /// One client post or void `y` that read `pending_transfer_not_pending` (or, its id
    /// taken, `exists_with_different_*`) on `landed`: its outcome, if its pending transfer
    /// is a cross-shard one and, for a taken id, the id is held by `y`'s own resolution
    /// alias (a resend; `None` otherwise: the ledger's answer stands).
    async fn resolve_one_across(
        &self,
        y: Transfer,
        landed: ShardId,
        deadline: Instant,
    ) -> Result<Option<(u64, u32)>, Status> {
        let found = self.lookup_on(landed, vec![y.pending_id, y.id], deadline).await?;
        if let Some(holder) = found.iter().find(|r| r.id == y.id) {
            let own = holder.ledger == INTERNAL_LEDGER
                && holder.code == RESOLUTION_ALIAS_CODE
                && holder.user_data_128 == y.pending_id.0
                && holder.user_data_64 == fingerprint(&y);
            if !own {
                return Ok(None);
            }
        }
        let Some(record) = found.iter().find(|r| {
            r.id == y.pending_id
                && r.ledger == INTERNAL_LEDGER
                && matches!(r.code, PENDING_ALIAS_CODE | PENDING_MARKER_CODE)
        }) else {
            return Ok(None);
        };
        let t = record.user_data_128;
        let other = ShardId(record.user_data_32);
        let (debit_shard, credit_shard) =
            if record.code == PENDING_ALIAS_CODE { (landed, other) } else { (other, landed) };
        let (x_d, x_c) = (leg_id(t, 0, 0), leg_id(t, 0, 1));
        let (debit_legs, credit_legs) = tokio::try_join!(
            self.lookup_on(debit_shard, vec![x_d], deadline),
            self.lookup_on(credit_shard, vec![x_c], deadline),
        )?;
        let leg = debit_legs.first().filter(|l| pending_debit_leg(l));
        let credit_leg = credit_legs.first().filter(|l| {
            l.flags.contains(TransferFlags::PENDING) && l.debit_account_id == transit(l.ledger)
        });
        let (Some(leg), Some(credit_leg)) = (leg, credit_leg) else {
            // The transaction was decided void, or is not decided yet: X does not exist. As
            // on one shard, that failure marks Y's id failed (where its alias would be).
            let burn = super::spread::burn_of(&resolution_alias(&y, credit_shard));
            self.transfers_on(debit_shard, vec![burn], deadline).await?;
            return Ok(Some((0, TS::PendingTransferNotFound.code())));
        };
        // Y's accounts, if named, are X's (the ledger's order: debit first). The debit leg
        // credits the transit account, so Y goes to it with its credit account cleared.
        if y.debit_account_id.0 != 0 && y.debit_account_id != leg.debit_account_id {
            return Ok(Some((0, TS::PendingTransferHasDifferentDebitAccountId.code())));
        }
        if y.credit_account_id.0 != 0 && y.credit_account_id != credit_leg.credit_account_id {
            return Ok(Some((0, TS::PendingTransferHasDifferentCreditAccountId.code())));
        }
        let post = y.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        let decision_id = if post { client_post_id(x_d) } else { client_void_id(x_d) };
        let alias = resolution_alias(&y, credit_shard);
        let aimed = Transfer {
            id: decision_id,
            pending_id: x_d,
            credit_account_id: crate::ledger::AccountId(0),
            ..y
        };
        let answers = self.transfers_on(debit_shard, vec![alias, aimed], deadline).await?;
        let [(alias_at, alias_status), (_, aimed_status)] = answers[..] else {
            return Err(Status::internal(
                "TALLY:Internal: a shard answered a different number of results",
            ));
        };
        // What resolved X's debit leg, if anything did (one read, for the answer and the
        // completion both).
        let records =
            self.lookup_on(debit_shard, client_decision_ids(x_d).to_vec(), deadline).await?;
        let resolution = records.iter().find(|r| r.pending_id == x_d);
        let (exists, created) = (TS::Exists.code(), TS::Created.code());
        let answer = if alias_status == exists {
            // Made by an earlier attempt of this very request.
            (alias_at, exists)
        } else if aimed_status == created {
            (alias_at, created)
        } else if alias_status != TS::LinkedEventFailed.code() {
            // Y's id is taken by another transfer, or failed before.
            (0, alias_status)
        } else if aimed_status == exists || super::xshard::exists_differently(aimed_status) {
            if let Some(mismatch) = differs_from(&y, leg) {
                // Its id taken by an earlier resolution, Y is still checked against X
                // first, as the ledger checks a post or void before finding X resolved.
                (0, mismatch.code())
            } else if resolution.is_some_and(|r| r.id == decision_id) {
                // Another post (or void) of X came first: X is resolved that way.
                let already = if post {
                    TS::PendingTransferAlreadyPosted
                } else {
                    TS::PendingTransferAlreadyVoided
                };
                (0, already.code())
            } else {
                // Something else holds the derived id (a client's transfer could take it
                // before 2026-12-07, when those ids were not yet reserved, §3d): X stays
                // open to the other kind.
                (0, aimed_status)
            }
        } else {
            (0, aimed_status)
        };
        // A transient refusal (a closed account) marks Y's id failed, as on one shard.
        if TS::from_code(aimed_status).is_some_and(TS::transient) {
            let burn = super::spread::burn_of(&alias);
            self.transfers_on(debit_shard, vec![burn], deadline).await?;
        }
        fail::fail_point!("pending::before_completion");
        // Whatever ended X's debit leg, its credit leg follows now (the first completion
        // counts; recovery does the same after a crash here).
        let event = match resolution {
            Some(r) if r.flags.contains(TransferFlags::POST_PENDING_TRANSFER) => {
                Some(completion(x_c, Some(r.amount)))
            }
            Some(_) => Some(completion(x_c, None)),
            None if answer.1 == TS::PendingTransferExpired.code() => Some(completion(x_c, None)),
            None => None,
        };
        if let Some(event) = event {
            self.complete(&[(credit_shard, event)], deadline).await?;
        }
        Ok(Some(answer))
    }
}

impl LedgerApi {
    /// The transfers `aliases` stand for (`xshard`'s aliases, and the records of
    /// cross-shard pending transfers and their resolutions), in order; `None` for one not
    /// made (undecided, voided, or a pending transfer's marker).
    pub(super) async fn reconstruct(
        &self,
        aliases: &[Transfer],
        deadline: Instant,
    ) -> Result<Vec<Option<Transfer>>, Status> {
        type Indexed = Vec<(usize, Transfer)>;
        let (pending, chains): (Indexed, Indexed) =
            aliases.iter().copied().enumerate().partition(|(_, a)| is_pending_record(a));
        let chains_only: Vec<Transfer> = chains.iter().map(|(_, a)| *a).collect();
        let pending_only: Vec<Transfer> = pending.iter().map(|(_, a)| *a).collect();
        let (from_chains, from_pending) = tokio::try_join!(
            async {
                if chains_only.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.reconstruct_chains(&chains_only, deadline).await
                }
            },
            self.reconstruct_pending(&pending_only, deadline),
        )?;
        let mut out = vec![None; aliases.len()];
        for ((i, _), rebuilt) in
            chains.iter().zip(from_chains).chain(pending.iter().zip(from_pending))
        {
            out[*i] = rebuilt;
        }
        Ok(out)
    }

    /// Cross-shard pending transfers (from their pending aliases: flags `pending`, their
    /// timeout, their debit leg's amount and user data, the credit leg's account) and
    /// their posts and voids (from their resolution aliases: the post or void applied to
    /// the debit leg, with the pending transfer's id and accounts), in the order of
    /// `records`. A resolution alias names X; X's pending alias, found first, names the
    /// transaction.
    async fn reconstruct_pending(
        &self,
        records: &[Transfer],
        deadline: Instant,
    ) -> Result<Vec<Option<Transfer>>, Status> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut xs: Vec<TransferId> = records
            .iter()
            .filter(|r| r.code == RESOLUTION_ALIAS_CODE)
            .map(|r| TransferId(r.user_data_128))
            .collect();
        xs.sort_unstable();
        xs.dedup();
        let named: std::collections::HashMap<u128, u128> = if xs.is_empty() {
            std::collections::HashMap::new()
        } else {
            let found = self.find_everywhere(&xs, deadline).await?;
            found
                .into_iter()
                .filter(|a| a.ledger == INTERNAL_LEDGER && a.code == PENDING_ALIAS_CODE)
                .map(|a| (a.id.0, a.user_data_128))
                .collect()
        };
        let transaction = |r: &Transfer| match r.code {
            PENDING_ALIAS_CODE => Some(r.user_data_128),
            RESOLUTION_ALIAS_CODE => named.get(&r.user_data_128).copied(),
            _ => None,
        };
        let mut ids: Vec<TransferId> = records
            .iter()
            .filter_map(transaction)
            .flat_map(|t| {
                let x_d = leg_id(t, 0, 0);
                let [a, b, c, d] = client_decision_ids(x_d);
                [x_d, leg_id(t, 0, 1), a, b, c, d]
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let found =
            super::xshard::by_id_preferring_legs(self.find_everywhere(&ids, deadline).await?);
        Ok(records
            .iter()
            .map(|r| {
                let t = transaction(r)?;
                let x_d = found.get(&leg_id(t, 0, 0)).filter(|l| pending_debit_leg(l))?;
                let credit = found
                    .get(&leg_id(t, 0, 1))
                    .filter(|l| l.debit_account_id == transit(l.ledger))?
                    .credit_account_id;
                if r.code == PENDING_ALIAS_CODE {
                    return Some(Transfer {
                        id: r.id,
                        credit_account_id: credit,
                        timestamp: r.timestamp,
                        ..*x_d
                    });
                }
                let y = client_decision_ids(x_d.id)
                    .iter()
                    .find_map(|id| found.get(id).filter(|y| y.pending_id == x_d.id))?;
                Some(Transfer {
                    id: r.id,
                    debit_account_id: x_d.debit_account_id,
                    credit_account_id: credit,
                    pending_id: TransferId(r.user_data_128),
                    timestamp: r.timestamp,
                    ..*y
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_posts_what_the_debit_leg_posted_or_voids() {
        let x_c = TransferId(9);
        let post = completion(x_c, Some(4));
        assert_eq!((post.id, post.pending_id, post.amount), (post_id(x_c), x_c, 4));
        assert_eq!(post.flags, TransferFlags::POST_PENDING_TRANSFER);
        assert_eq!(completion(x_c, None), void_of(x_c));
    }

    #[test]
    fn a_fingerprint_tells_two_resolutions_with_one_id_apart() {
        let y = Transfer {
            id: TransferId(5),
            pending_id: TransferId(4),
            amount: 3,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::default()
        };
        assert_eq!(fingerprint(&y), fingerprint(&y));
        assert_ne!(fingerprint(&y), fingerprint(&Transfer { amount: 2, ..y }));
        assert_ne!(
            fingerprint(&y),
            fingerprint(&Transfer { flags: TransferFlags::VOID_PENDING_TRANSFER, ..y })
        );
    }

    #[test]
    fn the_watch_holds_at_most_its_bound() {
        let mut watch = Watch::new(WATCH_MAX);
        for t in 0..WATCH_MAX as u128 {
            assert!(!watch.full());
            watch.insert(7, t, ShardId(1));
        }
        assert!(watch.full());
        assert_eq!(watch.len(), WATCH_MAX);
        let mut small = Watch::new(0);
        assert!(!small.full(), "a watch holds at least one entry");
        small.insert(7, 1, ShardId(1));
        assert!(small.full());
    }
}
