//! Invariant checks over accounts and transfers read back from a cluster.
//!
//! Input is plain `tally.v1` data: the accounts (lookups), the transfers the client saw
//! acknowledged as created, and the transfers found when reading them back. Output is one
//! verdict per invariant; a violation carries the smallest piece of evidence that proves it.

use std::collections::BTreeMap;
use std::fmt;

use tally_proto::{u128_of, v1};

/// One broken invariant and its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// I1: a ledger's debits and credits differ (posted or pending).
    Conservation {
        /// The ledger.
        ledger: u32,
        /// "posted" or "pending".
        phase: &'static str,
        /// Σ debits.
        debits: u128,
        /// Σ credits.
        credits: u128,
    },
    /// I2: an account breaks its own balance flag.
    Overdraft {
        /// The account id.
        account: u128,
        /// debits_pending + debits_posted (or credits, for the mirror flag).
        used: u128,
        /// credits_posted (or debits_posted).
        limit: u128,
    },
    /// I3: a transfer acknowledged as created is missing.
    Lost {
        /// The transfer id.
        transfer: u128,
    },
    /// I4: a transfer id is read back more than once. The public lookup merges the shards'
    /// answers into one record per id, so through it this cannot show; an id applied twice
    /// shows in the model check instead (balances the history does not explain).
    Duplicated {
        /// The transfer id.
        transfer: u128,
        /// How many times it was read back.
        copies: usize,
    },
    /// I4: the stored transfer differs from the one acknowledged.
    Altered {
        /// The transfer id.
        transfer: u128,
        /// The first field that differs.
        field: &'static str,
    },
    /// I4: a transfer every attempt of which was refused is stored.
    Phantom {
        /// The transfer id.
        transfer: u128,
    },
    /// I5: a chain is stored in part.
    Torn {
        /// The chain's transfer ids.
        chain: Vec<u128>,
        /// Those stored.
        stored: Vec<u128>,
    },
    /// I6: an account still holds pending amounts after the cluster settled.
    Unresolved {
        /// The account id.
        account: u128,
        /// Its debits_pending.
        debits_pending: u128,
        /// Its credits_pending.
        credits_pending: u128,
    },
    /// I6: a stored post or void does not resolve its pending transfer as the ledger must:
    /// the pending transfer is not stored, the two differ in accounts, ledger or code, a
    /// post moves more than was reserved, a void less, a second resolution is stored, or
    /// (on one shard) the resolution is not after the pending transfer or after its expiry.
    Misresolved {
        /// The post or void.
        resolution: u128,
        /// The pending transfer it names.
        pending: u128,
        /// What is wrong.
        why: String,
    },
    /// I7: a transfer committed (acknowledged) before another was sent has a later
    /// timestamp on the same shard.
    OutOfOrder {
        /// The shard.
        shard: u32,
        /// The transfer acknowledged first.
        earlier: u128,
        /// Its timestamp.
        earlier_timestamp: u64,
        /// The transfer sent after that acknowledgement.
        later: u128,
        /// Its timestamp.
        later_timestamp: u64,
    },
    /// I7: two stored transfers whose accounts all live on one shard share a timestamp
    /// (each event of a shard gets its own, strictly increasing).
    SharedTimestamp {
        /// The shard.
        shard: u32,
        /// One transfer.
        first: u128,
        /// The other.
        second: u128,
        /// Their timestamp.
        timestamp: u64,
    },
    /// Model: an account's posted sums differ from the sums of the transfers stored.
    Diverged {
        /// The account id.
        account: u128,
        /// `debits_posted` or `credits_posted`.
        field: &'static str,
        /// The sum of the stored transfers.
        model: u128,
        /// The account's value.
        stored: u128,
    },
}

impl Violation {
    /// The invariant it breaks: `I1` … `I7`, or `model`.
    #[must_use]
    pub fn invariant(&self) -> &'static str {
        match self {
            Self::Conservation { .. } => "I1",
            Self::Overdraft { .. } => "I2",
            Self::Lost { .. } => "I3",
            Self::Duplicated { .. } | Self::Altered { .. } | Self::Phantom { .. } => "I4",
            Self::Torn { .. } => "I5",
            Self::Unresolved { .. } | Self::Misresolved { .. } => "I6",
            Self::OutOfOrder { .. } | Self::SharedTimestamp { .. } => "I7",
            Self::Diverged { .. } => "model",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conservation { ledger, phase, debits, credits } => {
                write!(f, "I1 ledger {ledger}: {phase} debits {debits} != credits {credits}")
            }
            Self::Overdraft { account, used, limit } => {
                write!(f, "I2 account {account:#x}: {used} used against a limit of {limit}")
            }
            Self::Lost { transfer } => {
                write!(f, "I3 transfer {transfer:#x} acknowledged but missing")
            }
            Self::Duplicated { transfer, copies } => {
                write!(f, "I4 transfer {transfer:#x} stored {copies} times")
            }
            Self::Altered { transfer, field } => {
                write!(f, "I4 transfer {transfer:#x} stored with a different {field}")
            }
            Self::Phantom { transfer } => {
                write!(f, "I4 transfer {transfer:#x} refused at every attempt but stored")
            }
            Self::Torn { chain, stored } => {
                write!(f, "I5 chain {chain:#x?} stored in part: only {stored:#x?}")
            }
            Self::Unresolved { account, debits_pending, credits_pending } => write!(
                f,
                "I6 account {account:#x} still holds pending amounts after settling: debits \
                 {debits_pending}, credits {credits_pending}"
            ),
            Self::Misresolved { resolution, pending, why } => {
                write!(f, "I6 resolution {resolution:#x} of pending {pending:#x}: {why}")
            }
            Self::SharedTimestamp { shard, first, second, timestamp } => write!(
                f,
                "I7 shard {shard}: transfers {first:#x} and {second:#x} share timestamp {timestamp}"
            ),
            Self::OutOfOrder { shard, earlier, earlier_timestamp, later, later_timestamp } => {
                write!(
                    f,
                    "I7 shard {shard}: transfer {later:#x} (timestamp {later_timestamp}) was sent \
                     after {earlier:#x} was acknowledged but is not later (timestamp \
                     {earlier_timestamp})"
                )
            }
            Self::Diverged { account, field, model, stored } => write!(
                f,
                "model: account {account:#x} {field} is {stored}, its stored transfers sum to \
                 {model}"
            ),
        }
    }
}

const DEBITS_MUST_NOT_EXCEED_CREDITS: u32 = v1::AccountFlag::DebitsMustNotExceedCredits as u32;
const CREDITS_MUST_NOT_EXCEED_DEBITS: u32 = v1::AccountFlag::CreditsMustNotExceedDebits as u32;

/// I1 and I2 over every account. Sums use checked arithmetic: an overflow is itself
/// reported as a conservation violation with saturated totals.
#[must_use]
pub fn check_accounts(accounts: &[v1::Account]) -> Vec<Violation> {
    let mut totals: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    let mut violations = Vec::new();
    for a in accounts {
        let sums =
            [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted].map(u128_of);
        let total = totals.entry(a.ledger).or_default();
        for (sum, value) in total.iter_mut().zip(sums) {
            *sum = sum.saturating_add(value);
        }
        let [debits_pending, debits_posted, credits_pending, credits_posted] = sums;
        let debits = debits_pending.saturating_add(debits_posted);
        let credits = credits_pending.saturating_add(credits_posted);
        if a.flags & DEBITS_MUST_NOT_EXCEED_CREDITS != 0 && debits > credits_posted {
            violations.push(Violation::Overdraft {
                account: u128_of(a.id),
                used: debits,
                limit: credits_posted,
            });
        }
        if a.flags & CREDITS_MUST_NOT_EXCEED_DEBITS != 0 && credits > debits_posted {
            violations.push(Violation::Overdraft {
                account: u128_of(a.id),
                used: credits,
                limit: debits_posted,
            });
        }
    }
    for (ledger, [debits_pending, debits_posted, credits_pending, credits_posted]) in totals {
        if debits_posted != credits_posted {
            violations.push(Violation::Conservation {
                ledger,
                phase: "posted",
                debits: debits_posted,
                credits: credits_posted,
            });
        }
        if debits_pending != credits_pending {
            violations.push(Violation::Conservation {
                ledger,
                phase: "pending",
                debits: debits_pending,
                credits: credits_pending,
            });
        }
    }
    violations
}

/// I3 and I4: every acknowledged transfer is read back exactly once with the fields the
/// client sent (the cluster fills in `timestamp`; for balancing transfers `amount` may be
/// lower; for posts and voids the zero fields are filled from the pending transfer).
#[must_use]
pub fn check_acknowledged(
    acknowledged: &[v1::Transfer],
    stored: &[v1::Transfer],
) -> Vec<Violation> {
    let mut by_id: BTreeMap<u128, Vec<&v1::Transfer>> = BTreeMap::new();
    for t in stored {
        by_id.entry(u128_of(t.id)).or_default().push(t);
    }
    let mut violations = Vec::new();
    for sent in acknowledged {
        let id = u128_of(sent.id);
        match by_id.get(&id).map(Vec::as_slice) {
            None | Some([]) => violations.push(Violation::Lost { transfer: id }),
            Some([found]) => {
                if let Some(field) = first_difference(sent, found) {
                    violations.push(Violation::Altered { transfer: id, field });
                }
            }
            Some(copies) => {
                violations.push(Violation::Duplicated { transfer: id, copies: copies.len() })
            }
        }
    }
    violations
}

fn first_difference(sent: &v1::Transfer, found: &v1::Transfer) -> Option<&'static str> {
    let balancing =
        (v1::TransferFlag::BalancingDebit as u32) | (v1::TransferFlag::BalancingCredit as u32);
    let resolving = (v1::TransferFlag::PostPendingTransfer as u32)
        | (v1::TransferFlag::VoidPendingTransfer as u32);
    // A zero field in a post or void means "as the pending transfer"; only a given value binds.
    let given = |value: u128| sent.flags & resolving == 0 || value != 0;
    // A balancing amount is an upper limit; a post or void resolves its own amount.
    let amount_ok = if sent.flags & balancing != 0 {
        u128_of(found.amount) <= u128_of(sent.amount)
    } else {
        sent.flags & resolving != 0 || sent.amount == found.amount
    };
    let checks: [(&'static str, bool); 11] = [
        ("flags", sent.flags == found.flags),
        (
            "debit_account_id",
            !given(u128_of(sent.debit_account_id))
                || sent.debit_account_id == found.debit_account_id,
        ),
        (
            "credit_account_id",
            !given(u128_of(sent.credit_account_id))
                || sent.credit_account_id == found.credit_account_id,
        ),
        ("amount", amount_ok),
        ("pending_id", sent.pending_id == found.pending_id),
        (
            "user_data_128",
            !given(u128_of(sent.user_data_128)) || sent.user_data_128 == found.user_data_128,
        ),
        (
            "user_data_64",
            !given(u128::from(sent.user_data_64)) || sent.user_data_64 == found.user_data_64,
        ),
        (
            "user_data_32",
            !given(u128::from(sent.user_data_32)) || sent.user_data_32 == found.user_data_32,
        ),
        ("ledger", !given(u128::from(sent.ledger)) || sent.ledger == found.ledger),
        ("code", !given(u128::from(sent.code)) || sent.code == found.code),
        ("timeout", sent.timeout == found.timeout),
    ];
    checks.into_iter().find(|(_, ok)| !ok).map(|(field, _)| field)
}

/// One attempt of a request, as the checker sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// The transfers sent.
    pub transfers: &'a [v1::Transfer],
    /// One status per transfer if the cluster answered; `None` if the outcome is unknown.
    pub statuses: Option<&'a [i32]>,
    /// When it was sent, nanoseconds since the start of the run.
    pub invoked_ns: u64,
    /// When it was answered or given up.
    pub completed_ns: u64,
}

const CREATED: i32 = v1::CreateTransferStatus::Created as i32;
const EXISTS: i32 = v1::CreateTransferStatus::Exists as i32;
const PENDING: u32 = v1::TransferFlag::Pending as u32;
const VOID: u32 = v1::TransferFlag::VoidPendingTransfer as u32;
const POST: u32 = v1::TransferFlag::PostPendingTransfer as u32;
const LINKED: u32 = v1::TransferFlag::Linked as u32;

/// The checks over a run's history and what it stored (`stored`: every transfer found
/// when looking up every id ever sent, once each):
/// - I3/I4: every acknowledged transfer stored once with identical fields;
/// - I4: a transfer refused at every attempt (none unknown) is not stored;
/// - I5: every chain sent is stored whole or not at all (unknown outcomes included);
/// - I7: on each shard, a transfer created by an attempt sent after another was
///   acknowledged has the later timestamp (transfers with both accounts on one shard).
#[must_use]
pub fn check_history(
    attempts: &[Attempt<'_>],
    stored: &[v1::Transfer],
    shards: u32,
) -> Vec<Violation> {
    let mut acknowledged: BTreeMap<u128, v1::Transfer> = BTreeMap::new();
    // Per id: whether some attempt may have applied it (acknowledged or unknown).
    let mut maybe_applied: BTreeMap<u128, bool> = BTreeMap::new();
    let mut chains: BTreeMap<u128, Vec<u128>> = BTreeMap::new();
    for attempt in attempts {
        let mut chain: Vec<(u128, Option<i32>)> = Vec::new();
        for (i, t) in attempt.transfers.iter().enumerate() {
            let id = u128_of(t.id);
            let status = attempt.statuses.and_then(|s| s.get(i).copied());
            if status.is_some_and(|s| s == CREATED || s == EXISTS) {
                acknowledged.entry(id).or_insert(*t);
            }
            chain.push((id, status));
            if t.flags & LINKED != 0 {
                continue;
            }
            // A chain resent after it was applied (the client retries a request whose
            // reply was lost) is answered as one failed chain: `exists` for the first
            // transfer, `linked_event_failed` for the others (TigerBeetle's rule). Any
            // `exists` in a chain therefore means all of it may be stored.
            let unknown = attempt.statuses.is_none();
            let exists = chain.iter().any(|(_, s)| *s == Some(EXISTS));
            for &(id, status) in &chain {
                let created = status == Some(CREATED);
                *maybe_applied.entry(id).or_default() |= unknown || exists || created;
            }
            let ids: Vec<u128> = std::mem::take(&mut chain).into_iter().map(|(id, _)| id).collect();
            chains.entry(ids[0]).or_insert(ids);
        }
    }
    let acknowledged: Vec<v1::Transfer> = acknowledged.into_values().collect();
    let mut violations = check_acknowledged(&acknowledged, stored);
    let by_id: BTreeMap<u128, &v1::Transfer> = stored.iter().map(|t| (u128_of(t.id), t)).collect();
    for (id, maybe) in &maybe_applied {
        if !maybe && by_id.contains_key(id) {
            violations.push(Violation::Phantom { transfer: *id });
        }
    }
    for chain in chains.into_values() {
        let found: Vec<u128> = chain.iter().copied().filter(|id| by_id.contains_key(id)).collect();
        if !found.is_empty() && found.len() != chain.len() {
            violations.push(Violation::Torn { chain, stored: found });
        }
    }
    violations.extend(check_order(attempts, &by_id, shards));
    violations.extend(check_unique_timestamps(stored, shards));
    violations
}

/// I7: on each shard, no two stored transfers share a timestamp. Only transfers whose two
/// accounts live on one shard are compared: a cross-shard transfer reads back with its
/// alias's timestamp, which is unique on the alias's shard only.
fn check_unique_timestamps(stored: &[v1::Transfer], shards: u32) -> Vec<Violation> {
    let shard = |id: Option<v1::Uint128>| tally_proto::routing::shard_of(u128_of(id), shards);
    let mut seen: BTreeMap<(u32, u64), u128> = BTreeMap::new();
    let mut violations = Vec::new();
    for t in stored {
        let (debit, credit) = (shard(t.debit_account_id), shard(t.credit_account_id));
        if debit != credit {
            continue;
        }
        let id = u128_of(t.id);
        if let Some(&first) = seen.get(&(debit, t.timestamp))
            && first != id
        {
            violations.push(Violation::SharedTimestamp {
                shard: debit,
                first,
                second: id,
                timestamp: t.timestamp,
            });
        } else {
            seen.insert((debit, t.timestamp), id);
        }
    }
    violations
}

/// I7 (see [`check_history`]).
fn check_order(
    attempts: &[Attempt<'_>],
    by_id: &BTreeMap<u128, &v1::Transfer>,
    shards: u32,
) -> Vec<Violation> {
    // Per shard: (invoked, completed, timestamp, id) of each transfer an attempt created
    // as part of a chain that lives on that shard alone. A cross-shard chain is excluded:
    // its transfers carry the timestamps of their aliases, written when the transaction
    // was prepared, which may precede its decision (docs/SHARDING.md).
    let mut per_shard: BTreeMap<u32, Vec<(u64, u64, u64, u128)>> = BTreeMap::new();
    let shard = |id: u128| tally_proto::routing::shard_of(id, shards);
    for attempt in attempts {
        let Some(statuses) = attempt.statuses else { continue };
        let mut start = 0;
        for (end, t) in attempt.transfers.iter().enumerate() {
            if t.flags & LINKED != 0 {
                continue;
            }
            let chain = start..=end;
            start = end + 1;
            let found: Option<Vec<&v1::Transfer>> = chain
                .clone()
                .map(|i| by_id.get(&u128_of(attempt.transfers[i].id)).copied())
                .collect();
            let Some(found) = found else { continue };
            let mut sides = found.iter().flat_map(|t| {
                [shard(u128_of(t.debit_account_id)), shard(u128_of(t.credit_account_id))]
            });
            let Some(first) = sides.next() else { continue };
            if !sides.all(|s| s == first) {
                continue;
            }
            for (i, t) in chain.zip(found) {
                if statuses.get(i) == Some(&CREATED) {
                    let entry =
                        (attempt.invoked_ns, attempt.completed_ns, t.timestamp, u128_of(t.id));
                    per_shard.entry(first).or_default().push(entry);
                }
            }
        }
    }
    let mut violations = Vec::new();
    for (shard, mut created) in per_shard {
        let mut by_completion = created.clone();
        by_completion.sort_unstable_by_key(|&(_, completed, _, _)| completed);
        created.sort_unstable_by_key(|&(invoked, _, _, _)| invoked);
        // Sweep: the latest timestamp among transfers acknowledged before each send.
        let mut done = by_completion.iter().peekable();
        let mut latest: Option<(u64, u128)> = None;
        for &(invoked, _, timestamp, id) in &created {
            while let Some(&&(_, completed, ts, earlier)) = done.peek() {
                if completed >= invoked {
                    break;
                }
                if latest.is_none_or(|(max, _)| ts > max) {
                    latest = Some((ts, earlier));
                }
                done.next();
            }
            if let Some((max, earlier)) = latest
                && max >= timestamp
            {
                violations.push(Violation::OutOfOrder {
                    shard,
                    earlier,
                    earlier_timestamp: max,
                    later: id,
                    later_timestamp: timestamp,
                });
            }
        }
    }
    violations
}

/// I6: no account holds pending amounts (run once the cluster has settled and every
/// pending transfer's timeout has passed).
#[must_use]
pub fn check_resolved(accounts: &[v1::Account]) -> Vec<Violation> {
    accounts
        .iter()
        .filter(|a| u128_of(a.debits_pending) != 0 || u128_of(a.credits_pending) != 0)
        .map(|a| Violation::Unresolved {
            account: u128_of(a.id),
            debits_pending: u128_of(a.debits_pending),
            credits_pending: u128_of(a.credits_pending),
        })
        .collect()
}

/// I6: every stored post or void resolves its stored pending transfer as the ledger
/// must: the same accounts, ledger and code; a post moves at most the amount reserved, a
/// void exactly it; one resolution per pending transfer; and, for a pending transfer
/// whose two accounts share a shard (so its resolution's timestamp is that shard's too),
/// a resolution timestamped after it and, if it has a timeout, before its expiry.
/// `stored` must hold every pending transfer a stored resolution names.
#[must_use]
pub fn check_resolutions(stored: &[v1::Transfer], shards: u32) -> Vec<Violation> {
    let resolving = POST | VOID;
    let by_id: BTreeMap<u128, &v1::Transfer> = stored.iter().map(|t| (u128_of(t.id), t)).collect();
    let shard = |id: Option<v1::Uint128>| tally_proto::routing::shard_of(u128_of(id), shards);
    let mut resolved: BTreeMap<u128, u128> = BTreeMap::new();
    let mut violations = Vec::new();
    for r in stored.iter().filter(|t| t.flags & resolving != 0) {
        let (id, pending_id) = (u128_of(r.id), u128_of(r.pending_id));
        let mut wrong = |why: String| {
            violations.push(Violation::Misresolved { resolution: id, pending: pending_id, why });
        };
        let Some(p) = by_id.get(&pending_id).filter(|p| p.flags & PENDING != 0) else {
            wrong("no pending transfer of that id is stored".into());
            continue;
        };
        if let Some(first) = resolved.insert(pending_id, id) {
            wrong(format!("resolved a second time (first by {first:#x})"));
        }
        let same = [
            ("debit_account_id", r.debit_account_id == p.debit_account_id),
            ("credit_account_id", r.credit_account_id == p.credit_account_id),
            ("ledger", r.ledger == p.ledger),
            ("code", r.code == p.code),
        ];
        for (field, _) in same.iter().filter(|(_, equal)| !equal) {
            wrong(format!("its {field} differs from the pending transfer's"));
        }
        let (amount, reserved) = (u128_of(r.amount), u128_of(p.amount));
        if r.flags & POST != 0 && amount > reserved {
            wrong(format!("posts {amount}, more than the {reserved} reserved"));
        }
        if r.flags & VOID != 0 && amount != reserved {
            wrong(format!("voids {amount}, not the {reserved} reserved"));
        }
        if shard(p.debit_account_id) == shard(p.credit_account_id) {
            if r.timestamp <= p.timestamp {
                wrong(format!("timestamp {} not after the pending's {}", r.timestamp, p.timestamp));
            }
            let expires = p.timestamp.saturating_add(u64::from(p.timeout) * 1_000_000_000);
            if p.timeout > 0 && r.timestamp >= expires {
                wrong(format!("timestamp {} at or after the expiry {expires}", r.timestamp));
            }
        }
    }
    violations
}

/// The model: every account's posted sums equal the sums of the stored transfers that
/// post to it (single-phase transfers and posts of pending ones; pending transfers and
/// voids post nothing). `stored` must hold every transfer that ever touched `accounts`.
#[must_use]
pub fn check_model(accounts: &[v1::Account], stored: &[v1::Transfer]) -> Vec<Violation> {
    let mut sums: BTreeMap<u128, (u128, u128)> = BTreeMap::new();
    for t in stored {
        if t.flags & (PENDING | VOID) != 0 {
            continue;
        }
        let amount = u128_of(t.amount);
        let debit = sums.entry(u128_of(t.debit_account_id)).or_default();
        debit.0 = debit.0.saturating_add(amount);
        let credit = sums.entry(u128_of(t.credit_account_id)).or_default();
        credit.1 = credit.1.saturating_add(amount);
    }
    let mut violations = Vec::new();
    for a in accounts {
        let id = u128_of(a.id);
        let (debits, credits) = sums.get(&id).copied().unwrap_or_default();
        for (field, model, stored) in [
            ("debits_posted", debits, u128_of(a.debits_posted)),
            ("credits_posted", credits, u128_of(a.credits_posted)),
        ] {
            if model != stored {
                violations.push(Violation::Diverged { account: id, field, model, stored });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use tally_proto::uint128;

    use super::*;

    fn account(id: u128, ledger: u32, flags: u32, sums: [u128; 4]) -> v1::Account {
        v1::Account {
            id: uint128(id),
            debits_pending: uint128(sums[0]),
            debits_posted: uint128(sums[1]),
            credits_pending: uint128(sums[2]),
            credits_posted: uint128(sums[3]),
            ledger,
            code: 1,
            flags,
            ..Default::default()
        }
    }

    fn transfer(id: u128, amount: u128) -> v1::Transfer {
        v1::Transfer {
            id: uint128(id),
            debit_account_id: uint128(1),
            credit_account_id: uint128(2),
            amount: uint128(amount),
            ledger: 1,
            code: 1,
            ..Default::default()
        }
    }

    /// Two transfers of one shard with one timestamp are reported; transfers of two shards,
    /// or crossing shards, may share one.
    #[test]
    fn transfers_of_one_shard_never_share_a_timestamp() {
        let at = |id, debit: u128, credit: u128, timestamp| v1::Transfer {
            debit_account_id: uint128(debit),
            credit_account_id: uint128(credit),
            timestamp,
            ..transfer(id, 1)
        };
        let shard = |id: u128| tally_proto::routing::shard_of(id, 4);
        let a1 = 1_u128;
        let a2 = (2..).find(|&id| shard(id) == shard(a1)).unwrap();
        let c = (2..).find(|&id| shard(id) != shard(a1)).unwrap();
        let stored = [
            at(1, a1, a2, 7),
            at(2, c, c, 7),
            at(3, a1, a2, 8),
            at(4, a2, a1, 7),
            at(5, a1, c, 7),
            at(1, a1, a2, 7),
        ];
        let found = check_unique_timestamps(&stored, 4);
        let expected =
            [Violation::SharedTimestamp { shard: shard(a1), first: 1, second: 4, timestamp: 7 }];
        assert_eq!(found, expected);
        assert_eq!(found[0].invariant(), "I7");
    }

    /// Posts and voids are checked against the pending transfers they resolve.
    #[test]
    fn a_resolution_must_match_its_pending_transfer() {
        let at = |t: v1::Transfer, timestamp: u64| v1::Transfer { timestamp, ..t };
        let pending =
            |id, amount| v1::Transfer { flags: PENDING, timeout: 2, ..transfer(id, amount) };
        let resolve = |id, of: u128, flags, amount| v1::Transfer {
            pending_id: uint128(of),
            flags,
            ..transfer(id, amount)
        };
        let s = 1_000_000_000;
        let good = [
            at(pending(10, 50), 100),
            at(resolve(11, 10, POST, 30), 200),
            at(pending(20, 40), 300),
            at(resolve(21, 20, VOID, 40), 300 + s),
        ];
        // Accounts 1 and 2 share a shard with one shard; with 4 they may not, and then no
        // timestamp is compared: the check must still pass.
        assert_eq!(check_resolutions(&good, 1), []);
        assert_eq!(check_resolutions(&good, 4), []);

        let bad = [
            at(pending(10, 50), 100),
            at(resolve(11, 10, POST, 60), 200),
            at(resolve(12, 10, VOID, 50), 300),
            at(pending(20, 40), 300),
            at(v1::Transfer { code: 9, ..resolve(21, 20, VOID, 30) }, 300 + 2 * s),
            at(resolve(31, 30, POST, 1), 400),
            at(resolve(41, 11, POST, 1), 50),
        ];
        let found: Vec<String> =
            check_resolutions(&bad, 1).iter().map(ToString::to_string).collect();
        let expected = [
            "I6 resolution 0xb of pending 0xa: posts 60, more than the 50 reserved",
            "I6 resolution 0xc of pending 0xa: resolved a second time (first by 0xb)",
            "I6 resolution 0x15 of pending 0x14: its code differs from the pending transfer's",
            "I6 resolution 0x15 of pending 0x14: voids 30, not the 40 reserved",
            "I6 resolution 0x15 of pending 0x14: timestamp 2000000300 at or after the expiry 2000000300",
            "I6 resolution 0x1f of pending 0x1e: no pending transfer of that id is stored",
            "I6 resolution 0x29 of pending 0xb: no pending transfer of that id is stored",
        ];
        assert_eq!(found, expected);
        let early = [at(pending(10, 50), 100), at(resolve(11, 10, POST, 50), 100)];
        let found = check_resolutions(&early, 1);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].to_string().ends_with("timestamp 100 not after the pending's 100"));
        assert_eq!(found[0].invariant(), "I6");
    }

    /// A consistent ledger passes.
    #[test]
    fn consistent_state_passes() {
        let accounts = [
            account(1, 1, DEBITS_MUST_NOT_EXCEED_CREDITS, [5, 30, 0, 100]),
            account(2, 1, 0, [0, 100, 5, 30]),
            account(3, 2, 0, [0, 0, 0, 0]),
        ];
        assert_eq!(check_accounts(&accounts), []);
        let sent = [transfer(1, 30)];
        let stored = [v1::Transfer { timestamp: 99, ..transfer(1, 30) }];
        assert_eq!(check_acknowledged(&sent, &stored), []);
    }

    /// Points created from nothing, an overdraft, a lost, a duplicated and an altered
    /// transfer are each reported with their evidence.
    #[test]
    fn each_violation_is_reported() {
        let accounts = [
            account(1, 1, DEBITS_MUST_NOT_EXCEED_CREDITS, [0, 120, 0, 100]),
            account(2, 1, 0, [0, 100, 0, 121]),
        ];
        let violations = check_accounts(&accounts);
        assert_eq!(
            violations,
            [
                Violation::Overdraft { account: 1, used: 120, limit: 100 },
                Violation::Conservation { ledger: 1, phase: "posted", debits: 220, credits: 221 },
            ]
        );
        assert_eq!(violations[1].to_string(), "I1 ledger 1: posted debits 220 != credits 221");
        let sent = [transfer(1, 10), transfer(2, 10), transfer(3, 10)];
        let stored = [transfer(2, 10), transfer(2, 10), transfer(3, 11)];
        assert_eq!(
            check_acknowledged(&sent, &stored),
            [
                Violation::Lost { transfer: 1 },
                Violation::Duplicated { transfer: 2, copies: 2 },
                Violation::Altered { transfer: 3, field: "amount" },
            ]
        );
    }

    /// Balancing transfers may store less than the limit sent; posts fill zero fields.
    #[test]
    fn balancing_and_posts_are_compared_by_their_meaning() {
        let balancing =
            v1::Transfer { flags: v1::TransferFlag::BalancingDebit as u32, ..transfer(1, 50) };
        let stored = v1::Transfer { amount: uint128(20), ..balancing };
        assert_eq!(check_acknowledged(&[balancing], &[stored]), []);
        let over = v1::Transfer { amount: uint128(60), ..balancing };
        assert_eq!(
            check_acknowledged(&[balancing], &[over]),
            [Violation::Altered { transfer: 1, field: "amount" }]
        );
        let post = v1::Transfer {
            id: uint128(9),
            pending_id: uint128(1),
            amount: uint128(u128::MAX),
            flags: v1::TransferFlag::PostPendingTransfer as u32,
            ..Default::default()
        };
        let posted = v1::Transfer {
            amount: uint128(50),
            debit_account_id: uint128(1),
            credit_account_id: uint128(2),
            ledger: 1,
            code: 1,
            ..post
        };
        assert_eq!(check_acknowledged(&[post], &[posted]), []);
    }

    fn chain(ids: &[u128]) -> Vec<v1::Transfer> {
        let mut out: Vec<v1::Transfer> =
            ids.iter().map(|&id| v1::Transfer { flags: LINKED, ..transfer(id, 10) }).collect();
        if let Some(last) = out.last_mut() {
            last.flags = 0;
        }
        out
    }

    fn at(t: v1::Transfer, timestamp: u64) -> v1::Transfer {
        v1::Transfer { timestamp, ..t }
    }

    /// A refused transfer that is stored anyway, and a chain stored in part, are found;
    /// unknown outcomes may go either way, but a chain only whole.
    #[test]
    fn refused_transfers_and_torn_chains_are_reported() {
        let refused = [transfer(1, 10)];
        let torn = chain(&[2, 3]);
        let unknown_whole = chain(&[4, 5]);
        let unknown_absent = chain(&[6, 7]);
        let exceeds = v1::CreateTransferStatus::ExceedsCredits as i32;
        let linked = v1::CreateTransferStatus::LinkedEventFailed as i32;
        let attempts = [
            Attempt {
                transfers: &refused,
                statuses: Some(&[exceeds]),
                invoked_ns: 0,
                completed_ns: 1,
            },
            Attempt { transfers: &torn, statuses: None, invoked_ns: 0, completed_ns: 1 },
            Attempt { transfers: &unknown_whole, statuses: None, invoked_ns: 0, completed_ns: 1 },
            Attempt {
                transfers: &unknown_absent,
                statuses: Some(&[exceeds, linked]),
                invoked_ns: 2,
                completed_ns: 3,
            },
        ];
        let stored =
            [at(refused[0], 1), at(torn[1], 2), at(unknown_whole[0], 3), at(unknown_whole[1], 4)];
        assert_eq!(
            check_history(&attempts, &stored, 1),
            [
                Violation::Phantom { transfer: 1 },
                Violation::Torn { chain: vec![2, 3], stored: vec![3] }
            ]
        );
    }

    /// A chain answered `exists` + `linked_event_failed` (resent after it was applied) is
    /// stored whole: no phantom. Answered `id_already_failed` + `linked_event_failed`, it
    /// must be absent.
    #[test]
    fn a_resent_chain_answered_exists_may_be_stored_whole() {
        let applied = chain(&[1, 2]);
        let refused = chain(&[3, 4]);
        let linked = v1::CreateTransferStatus::LinkedEventFailed as i32;
        let burnt = v1::CreateTransferStatus::IdAlreadyFailed as i32;
        let attempts = [
            Attempt {
                transfers: &applied,
                statuses: Some(&[EXISTS, linked]),
                invoked_ns: 0,
                completed_ns: 1,
            },
            Attempt {
                transfers: &refused,
                statuses: Some(&[burnt, linked]),
                invoked_ns: 0,
                completed_ns: 1,
            },
        ];
        let whole = [at(applied[0], 1), at(applied[1], 2)];
        assert_eq!(check_history(&attempts, &whole, 1), []);
        let stored_refused = [at(applied[0], 1), at(applied[1], 2), at(refused[1], 3)];
        assert_eq!(
            check_history(&attempts, &stored_refused, 1),
            [
                Violation::Phantom { transfer: 4 },
                Violation::Torn { chain: vec![3, 4], stored: vec![4] }
            ]
        );
    }

    /// On one shard, a transfer created by a request sent after another's acknowledgement
    /// must carry the later timestamp; overlapping requests may commit in either order.
    #[test]
    fn a_transfer_sent_after_an_acknowledgement_must_be_later() {
        let (a, b, c) = ([transfer(1, 1)], [transfer(2, 1)], [transfer(3, 1)]);
        let created = [CREATED];
        let attempts = [
            Attempt { transfers: &a, statuses: Some(&created), invoked_ns: 0, completed_ns: 10 },
            // Overlaps a: may be earlier.
            Attempt { transfers: &b, statuses: Some(&created), invoked_ns: 5, completed_ns: 20 },
            // Sent after a and b were acknowledged.
            Attempt { transfers: &c, statuses: Some(&created), invoked_ns: 30, completed_ns: 40 },
        ];
        let good = [at(a[0], 200), at(b[0], 100), at(c[0], 300)];
        assert_eq!(check_history(&attempts, &good, 1), []);
        let bad = [at(a[0], 200), at(b[0], 100), at(c[0], 150)];
        assert_eq!(
            check_history(&attempts, &bad, 1),
            [Violation::OutOfOrder {
                shard: 1,
                earlier: 1,
                earlier_timestamp: 200,
                later: 3,
                later_timestamp: 150
            }]
        );
    }

    /// Pending amounts left after settling, and posted sums that the stored transfers do
    /// not explain, are reported.
    #[test]
    fn unresolved_pending_and_unexplained_balances_are_reported() {
        let accounts = [account(1, 1, 0, [0, 30, 0, 0]), account(2, 1, 0, [0, 0, 5, 25])];
        assert_eq!(
            check_resolved(&accounts),
            [Violation::Unresolved { account: 2, debits_pending: 0, credits_pending: 5 }]
        );
        let pending = v1::Transfer { flags: PENDING, ..transfer(2, 5) };
        let posted = v1::Transfer {
            flags: v1::TransferFlag::PostPendingTransfer as u32,
            pending_id: uint128(2),
            ..transfer(3, 5)
        };
        let stored = [transfer(1, 20), pending, posted];
        assert_eq!(
            check_model(&accounts, &stored),
            [Violation::Diverged { account: 1, field: "debits_posted", model: 25, stored: 30 }]
        );
    }

    /// A cross-shard chain carries its prepare-time timestamps: it is not held to the
    /// real-time order; a single-shard transfer is (4 shards: accounts 4 and 5 live on
    /// shard 2, account 1 on shard 1 and 2 on shard 4).
    #[test]
    fn only_single_shard_chains_are_held_to_real_time_order() {
        let on_shard_2 = |id: u128| v1::Transfer {
            debit_account_id: uint128(4),
            credit_account_id: uint128(5),
            ..transfer(id, 1)
        };
        let first = [on_shard_2(1)];
        let mut cross = [on_shard_2(2), transfer(3, 1)];
        cross[0].flags = LINKED;
        let single = [on_shard_2(4)];
        let created = [CREATED, CREATED];
        let attempts = [
            Attempt {
                transfers: &first,
                statuses: Some(&created[..1]),
                invoked_ns: 0,
                completed_ns: 10,
            },
            Attempt {
                transfers: &cross,
                statuses: Some(&created),
                invoked_ns: 30,
                completed_ns: 40,
            },
            Attempt {
                transfers: &single,
                statuses: Some(&created[..1]),
                invoked_ns: 30,
                completed_ns: 40,
            },
        ];
        let stored = [at(first[0], 200), at(cross[0], 150), at(cross[1], 151), at(single[0], 149)];
        assert_eq!(
            check_history(&attempts, &stored, 4),
            [Violation::OutOfOrder {
                shard: 2,
                earlier: 1,
                earlier_timestamp: 200,
                later: 4,
                later_timestamp: 149
            }]
        );
    }
}
