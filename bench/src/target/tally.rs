//! Tally as a load target: operations become `tally.v1` transfers sent through
//! `tally-client` (a redemption is the client's linked `redeem` pair), and verification
//! reads everything back with linearizable lookups.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use tally_client::loyalty::{self, Earn, Redemption, StockLeg};
use tally_client::{Client, account_succeeded, transfer_succeeded, v1};
use tally_proto::limits::BATCH_EVENTS_MAX;
use tally_proto::{u128_of, uint128};

use crate::BenchError;
use crate::model::{
    AccountChecks, Balance, Check, Found, Model, Outcome, ReadBack, Role, swap_received,
};
use crate::population::{
    CODE_DELIVER, CODE_EARN, CODE_REDEEM, CODE_RESTOCK, CODE_SWAP_GIVE, CODE_SWAP_RECEIVE, Ids,
    POINTS_B_LEDGER, POINTS_LEDGER, PopulationSpec, SWAP_RATE, UNITS_LEDGER,
};
use crate::scenario::Op;

/// Requests in flight while setting up and verifying.
const BULK_CONCURRENCY: usize = 4;
/// How long verification waits for cross-shard transactions still in flight when the load
/// stops (recovery's default `txn_recovery_after_ms` of 30 s, its 1-s interval and margin).
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// How often verification looks again while transactions are in flight.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// Events per setup or verification request.
const BULK_EVENTS: usize = BATCH_EVENTS_MAX as usize;

const CREATED: i32 = v1::CreateTransferStatus::Created as i32;
const LINKED_EVENT_FAILED: i32 = v1::CreateTransferStatus::LinkedEventFailed as i32;
const EXISTS: i32 = v1::CreateTransferStatus::Exists as i32;
/// The code a swap refused whole counts under (`failed`): this plus its `SwapRefusal`,
/// above every transfer status.
const SWAP_REFUSED: u32 = 1 << 20;

/// Sends `events` in requests of [`BULK_EVENTS`], [`BULK_CONCURRENCY`] at once; fails on
/// a request error or on the first result `refused` names.
async fn bulk<E, R, Fut>(
    events: &[E],
    send: impl Fn(Vec<E>) -> Fut,
    refused: impl Fn(&R) -> Option<String> + Copy,
) -> Result<(), BenchError>
where
    E: Clone,
    Fut: Future<Output = Result<Vec<R>, tally_client::ClientError>>,
{
    stream::iter(events.chunks(BULK_EVENTS))
        .map(|chunk| send(chunk.to_vec()))
        .buffer_unordered(BULK_CONCURRENCY)
        .map_err(BenchError::from)
        .try_for_each(|results| async move {
            match results.iter().find_map(refused) {
                Some(reason) => Err(BenchError::Setup(reason)),
                None => Ok(()),
            }
        })
        .await
}

/// A Tally cluster under load.
#[derive(Clone, Debug)]
pub struct TallyTarget {
    client: Client,
    ids: Ids,
    errors: super::ErrorLog,
}

impl TallyTarget {
    /// A target reached through `client`, with the run's ids.
    #[must_use]
    pub fn new(client: Client, ids: Ids) -> Self {
        Self { client, ids, errors: super::ErrorLog::default() }
    }

    /// Creates the population's accounts, earns every member's points and stocks every
    /// item; fails unless every event is created.
    ///
    /// # Errors
    /// A request error, or an event that was not created.
    pub async fn setup(&self, spec: &PopulationSpec, seqs: &AtomicU64) -> Result<(), BenchError> {
        let ids = &self.ids;
        let account = |id: u128, ledger: u32, flags: v1::AccountFlag| v1::Account {
            id: uint128(id),
            ledger,
            code: 1,
            flags: flags as u32,
            ..Default::default()
        };
        let limited = v1::AccountFlag::DebitsMustNotExceedCredits;
        let free = v1::AccountFlag::None;
        let mut accounts = vec![
            account(ids.issuance(), POINTS_LEDGER, free),
            account(ids.supply(), UNITS_LEDGER, free),
        ];
        accounts.extend((0..spec.members).map(|i| account(ids.member(i), POINTS_LEDGER, limited)));
        accounts.extend((0..spec.merchants).map(|i| account(ids.merchant(i), POINTS_LEDGER, free)));
        accounts.extend((0..spec.items).map(|i| account(ids.stock(i), UNITS_LEDGER, limited)));
        accounts.extend((0..spec.items).map(|i| account(ids.delivered(i), UNITS_LEDGER, free)));
        if spec.swaps {
            accounts.push(account(ids.pool_a(), POINTS_LEDGER, free));
            accounts.push(account(ids.pool_b(), POINTS_B_LEDGER, free));
            let members_b =
                (0..spec.members).map(|i| account(ids.member_b(i), POINTS_B_LEDGER, free));
            accounts.extend(members_b);
        }
        bulk(
            &accounts,
            |chunk| self.client.create_accounts(chunk),
            |r| {
                (!account_succeeded(r.status)).then(|| {
                    format!("an account was not created: {}", account_status_name(r.status))
                })
            },
        )
        .await?;

        let mut transfers: Vec<v1::Transfer> = (0..spec.items)
            .map(|i| v1::Transfer {
                id: uint128(ids.transfer(seqs.fetch_add(1, Ordering::Relaxed))),
                debit_account_id: uint128(ids.supply()),
                credit_account_id: uint128(ids.stock(i)),
                amount: uint128(u128::from(spec.stock)),
                ledger: UNITS_LEDGER,
                code: u32::from(CODE_RESTOCK),
                ..Default::default()
            })
            .collect();
        transfers.extend((0..spec.members).map(|i| {
            loyalty::earn(&Earn {
                transfer_id: ids.transfer(seqs.fetch_add(1, Ordering::Relaxed)),
                issuance_account: ids.issuance(),
                member_account: ids.member(i),
                points: u128::from(spec.member_points),
                ledger: POINTS_LEDGER,
                code: CODE_EARN,
                pending_timeout_s: 0,
                reference: 0,
            })
        }));
        bulk(
            &transfers,
            |chunk| self.client.create_transfers(chunk),
            |r| {
                (!transfer_succeeded(r.status)).then(|| {
                    format!("a setup transfer was not created: {}", transfer_status_name(r.status))
                })
            },
        )
        .await
    }

    /// The transfers of a write operation, exactly as sent.
    fn transfers_of(&self, op: &Op) -> Vec<v1::Transfer> {
        let ids = &self.ids;
        match *op {
            Op::Redeem { seq, member, merchant, item, points } => loyalty::redeem(&Redemption {
                transfer_id: ids.transfer(seq),
                member_account: ids.member(member),
                merchant_account: ids.merchant(merchant),
                points: u128::from(points),
                ledger: POINTS_LEDGER,
                code: CODE_REDEEM,
                order_id: u128::from(seq),
                stock: Some(StockLeg {
                    transfer_id: ids.transfer_second(seq),
                    stock_account: ids.stock(item),
                    member_item_account: ids.delivered(item),
                    ledger: UNITS_LEDGER,
                    code: CODE_DELIVER,
                }),
            }),
            Op::Earn { seq, member, points } => vec![loyalty::earn(&Earn {
                transfer_id: ids.transfer(seq),
                issuance_account: ids.issuance(),
                member_account: ids.member(member),
                points: u128::from(points),
                ledger: POINTS_LEDGER,
                code: CODE_EARN,
                pending_timeout_s: 0,
                reference: u128::from(seq),
            })],
            Op::Swap { .. } => {
                let request = self.swap_of(op);
                let give = v1::Transfer {
                    id: request.give_id,
                    debit_account_id: request.member_a_account_id,
                    credit_account_id: request.pool_a_account_id,
                    amount: request.amount,
                    user_data_128: request.quote_id,
                    user_data_64: request.quote_expires_at,
                    user_data_32: u32::try_from(request.rounding).unwrap_or(0),
                    ledger: request.ledger_a,
                    code: request.code_a,
                    flags: v1::TransferFlag::Linked as u32,
                    ..Default::default()
                };
                let received = swap_received(u128_of(request.amount));
                let receive = v1::Transfer {
                    id: request.receive_id,
                    debit_account_id: request.pool_b_account_id,
                    credit_account_id: request.member_b_account_id,
                    amount: uint128(received),
                    user_data_128: request.quote_id,
                    user_data_64: request.rate_numerator,
                    user_data_32: request.rate_denominator,
                    ledger: request.ledger_b,
                    code: request.code_b,
                    ..Default::default()
                };
                vec![give, receive]
            }
            Op::Lookup { .. } => Vec::new(),
        }
    }

    /// The `Swap` request of a swap operation.
    fn swap_of(&self, op: &Op) -> v1::SwapRequest {
        let Op::Swap { seq, member, points, quote_expires_at } = *op else {
            unreachable!("only for swaps")
        };
        let ids = &self.ids;
        loyalty::swap(&loyalty::Swap {
            give_id: ids.transfer(seq),
            receive_id: ids.transfer_second(seq),
            member_a_account: ids.member(member),
            pool_a_account: ids.pool_a(),
            ledger_a: POINTS_LEDGER,
            code_a: CODE_SWAP_GIVE,
            pool_b_account: ids.pool_b(),
            member_b_account: ids.member_b(member),
            ledger_b: POINTS_B_LEDGER,
            code_b: CODE_SWAP_RECEIVE,
            points: u128::from(points),
            rate: SWAP_RATE,
            rounding: v1::Rounding::Down,
            quote_id: u128::from(seq),
            quote_expires_at,
        })
    }

    /// The errors behind this target's unknown outcomes.
    #[must_use]
    pub fn errors(&self) -> &super::ErrorLog {
        &self.errors
    }

    /// The attempts the client library resent since the last call, by cause (see
    /// `tally_client::RetryCause`), as text.
    #[must_use]
    pub fn take_retries(&self) -> BTreeMap<String, u64> {
        self.client.take_retries().into_iter().map(|(cause, n)| (cause.to_string(), n)).collect()
    }

    /// Sends `ops` as at most one create request and one lookup request, concurrently,
    /// and returns one outcome per operation.
    pub async fn execute(&self, ops: &[Op]) -> Vec<Outcome> {
        let mut transfers = Vec::new();
        let mut spans = Vec::with_capacity(ops.len());
        let mut lookups = Vec::new();
        // The swaps go as one `SwapBatch` request, beside the create request.
        let mut swaps = Vec::new();
        for op in ops {
            match op {
                Op::Lookup { member } => {
                    spans.push(None);
                    lookups.push(self.ids.member(*member));
                }
                Op::Swap { .. } => {
                    spans.push(None);
                    swaps.push(self.swap_of(op));
                }
                _ => {
                    let legs = self.transfers_of(op);
                    spans.push(Some((transfers.len(), legs.len())));
                    transfers.extend(legs);
                }
            }
        }
        let writes = async {
            if transfers.is_empty() {
                return Ok(Vec::new());
            }
            self.client.create_transfers(transfers).await
        };
        let reads = async {
            if lookups.is_empty() {
                return Ok(Vec::new());
            }
            self.client.lookup_accounts(&lookups).await
        };
        let swap_count = swaps.len();
        let swapped = async {
            if swaps.is_empty() {
                return Ok(Vec::new());
            }
            self.client.swap_batch(swaps).await
        };
        let (writes, reads, swapped) = tokio::join!(writes, reads, swapped);
        let swapped: Vec<Outcome> = match swapped {
            Ok(results) if results.len() == swap_count => {
                results.iter().map(swap_outcome).collect()
            }
            Ok(results) => {
                let short = format!("SwapBatch answered {} of {swap_count} swaps", results.len());
                self.errors.record(&short, swap_count as u64);
                vec![Outcome::Unknown; swap_count]
            }
            Err(e) => {
                self.errors.record(&e, swap_count as u64);
                vec![Outcome::Unknown; swap_count]
            }
        };
        let mut swapped = swapped.into_iter();
        let read_outcome = match reads {
            Ok(found) if found.len() == lookups.len() => Outcome::Ok,
            // An account of the population missing: refused with "not found".
            Ok(_) => Outcome::Failed(v1::CreateTransferStatus::DebitAccountNotFound as u32),
            Err(e) => {
                self.errors.record(&e, lookups.len() as u64);
                Outcome::Unknown
            }
        };
        if let Err(e) = &writes {
            self.errors.record(e, spans.iter().flatten().count() as u64);
        }
        ops.iter()
            .zip(spans)
            .map(|(op, span)| match (span, &writes) {
                (None, _) if matches!(op, Op::Swap { .. }) => {
                    swapped.next().expect("one reply per swap")
                }
                (None, _) => read_outcome,
                (Some(_), Err(_)) => Outcome::Unknown,
                (Some((start, len)), Ok(results)) => outcome_of(&results[start..start + len]),
            })
            .collect()
    }

    /// Reads back every write operation of `records` and every account of the population,
    /// feeds the applied operations into `model`, and checks:
    /// acknowledged operations are stored exactly as sent; refused ones left nothing;
    /// unknown outcomes applied all or nothing; every account equals the model (so each
    /// applied operation counted exactly once); conservation per ledger (I1); no member
    /// overdrawn and no item oversold (I2).
    ///
    /// # Errors
    /// A request error while reading back.
    pub async fn verify(
        &self,
        model: &mut Model,
        records: &[(Op, Outcome)],
    ) -> Result<Vec<Check>, BenchError> {
        self.settle(model).await?;
        let mut read_back = ReadBack::default();
        let writes: Vec<&(Op, Outcome)> = records.iter().filter(|(op, _)| op.is_write()).collect();
        // A redemption has two legs: half a request's worth of operations per lookup.
        let chunks: Vec<Vec<&(Op, Outcome)>> =
            writes.chunks(BULK_EVENTS / 2).map(<[&(Op, Outcome)]>::to_vec).collect();
        let mut lookups = stream::iter(chunks)
            .map(|chunk| async move {
                let sent: Vec<Vec<v1::Transfer>> =
                    chunk.iter().map(|(op, _)| self.transfers_of(op)).collect();
                let ids: Vec<u128> = sent.iter().flatten().map(|t| u128_of(t.id)).collect();
                let found = self.client.lookup_transfers(&ids).await?;
                Ok::<_, BenchError>((chunk, sent, found))
            })
            .buffered(BULK_CONCURRENCY);
        while let Some(lookup) = lookups.next().await {
            let (chunk, sent, found) = lookup?;
            let found: HashMap<u128, v1::Transfer> =
                found.into_iter().map(|t| (u128_of(t.id), t)).collect();
            for ((op, outcome), legs) in chunk.iter().zip(sent) {
                let stored: Vec<Option<&v1::Transfer>> =
                    legs.iter().map(|t| found.get(&u128_of(t.id))).collect();
                let present = stored.iter().filter(|s| s.is_some()).count();
                let identical =
                    legs.iter().zip(&stored).all(|(t, s)| s.is_some_and(|s| same(t, s)));
                let found = match (present, identical) {
                    (0, _) => Found::Absent,
                    (_, true) => Found::Identical,
                    _ => Found::Damaged,
                };
                read_back.record(model, op, *outcome, found, || format!("stored {stored:?}"));
            }
        }
        let mut checks = read_back.finish();
        checks.extend(self.verify_accounts(model).await?);
        Ok(checks)
    }

    /// Waits, at most [`SETTLE_MAX`], until no account of the population holds pending
    /// amounts. The workloads make no pending transfers of their own: what is pending
    /// after the load stops is a cross-shard transaction still in flight — a slice refill
    /// whose coordinator hit an error between its steps is finished by recovery, after
    /// the cluster's `txn_recovery_after_ms` (`docs/SHARDING.md` §3b). Not settled in
    /// time, the account checks then fail on the pending amounts.
    async fn settle(&self, model: &Model) -> Result<(), BenchError> {
        let ids: Vec<u128> = model.accounts(&self.ids).map(|e| e.id).collect();
        let started = Instant::now();
        loop {
            let mut pending = 0_usize;
            for chunk in ids.chunks(BULK_EVENTS) {
                let found = self.client.lookup_accounts(chunk).await?;
                pending += found
                    .iter()
                    .filter(|a| u128_of(a.debits_pending) != 0 || u128_of(a.credits_pending) != 0)
                    .count();
            }
            if pending == 0 {
                if started.elapsed() > SETTLE_POLL {
                    eprintln!(
                        "tally: in-flight transactions settled after {:.1?}",
                        started.elapsed()
                    );
                }
                return Ok(());
            }
            if started.elapsed() >= SETTLE_MAX {
                eprintln!(
                    "tally: {pending} accounts still hold pending amounts after {SETTLE_MAX:?}"
                );
                return Ok(());
            }
            if started.elapsed() < SETTLE_POLL {
                eprintln!("tally: {pending} accounts hold pending amounts: waiting for recovery");
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    async fn verify_accounts(&self, model: &Model) -> Result<Vec<Check>, BenchError> {
        let spec = model.spec();
        let mut checks = AccountChecks::default();
        let mut sums: HashMap<u32, [u128; 4]> = HashMap::new();
        let expected: Vec<_> = model.accounts(&self.ids).collect();
        let mut lookups = stream::iter(expected.chunks(BULK_EVENTS))
            .map(|chunk| async move {
                let ids: Vec<u128> = chunk.iter().map(|e| e.id).collect();
                Ok::<_, BenchError>((chunk, self.client.lookup_accounts(&ids).await?))
            })
            .buffered(BULK_CONCURRENCY);
        while let Some(lookup) = lookups.next().await {
            let (chunk, found) = lookup?;
            let found: HashMap<u128, v1::Account> =
                found.into_iter().map(|a| (u128_of(a.id), a)).collect();
            for e in chunk {
                let Some(account) = found.get(&e.id) else {
                    checks.equal.expect(false, || format!("{:?} {} is missing", e.role, e.index));
                    continue;
                };
                let posted = Balance {
                    debits: u128_of(account.debits_posted),
                    credits: u128_of(account.credits_posted),
                };
                let debits_pending = u128_of(account.debits_pending);
                let credits_pending = u128_of(account.credits_pending);
                // A spread stock account's units move between its slices (a move debits
                // one slice and credits another): its debits and credits both exceed the
                // model's by the units moved, and only their difference is the model's.
                let matches = if e.role == Role::Stock {
                    let moved = posted.debits.checked_sub(e.balance.debits);
                    moved.is_some() && posted.credits.checked_sub(e.balance.credits) == moved
                } else {
                    posted == e.balance
                };
                checks.equal.expect(matches && debits_pending == 0 && credits_pending == 0, || {
                    format!("{:?} {}: stored {posted:?}, model {:?}", e.role, e.index, e.balance)
                });
                let sum = sums.entry(account.ledger).or_default();
                sum[0] += posted.debits;
                sum[1] += posted.credits;
                sum[2] += debits_pending;
                sum[3] += credits_pending;
                match e.role {
                    Role::Member => checks
                        .overdrawn
                        .expect(posted.debits + debits_pending <= posted.credits, || {
                            format!("member {}: {posted:?}", e.index)
                        }),
                    Role::Stock => checks
                        .oversold
                        .expect(posted.debits + debits_pending <= posted.credits, || {
                            format!("item {} stock: {posted:?}", e.index)
                        }),
                    Role::Delivered => {
                        checks.oversold.expect(posted.credits <= u128::from(spec.stock), || {
                            format!(
                                "item {}: {} delivered of {} stocked",
                                e.index, posted.credits, spec.stock
                            )
                        })
                    }
                    _ => {}
                }
            }
        }
        for (ledger, [debits, credits, debits_pending, credits_pending]) in &sums {
            checks.conservation.expect(
                debits == credits && debits_pending == credits_pending,
                || {
                    format!(
                        "ledger {ledger}: debits {debits} credits {credits}, pending {debits_pending}/{credits_pending}"
                    )
                },
            );
        }
        Ok(checks.finish(model))
    }
}

/// The fields a client chooses are stored unchanged (the cluster adds the timestamp).
fn same(sent: &v1::Transfer, stored: &v1::Transfer) -> bool {
    v1::Transfer { timestamp: 0, ..*stored } == v1::Transfer { timestamp: 0, ..*sent }
}

/// A swap's outcome: refused whole (the node says nothing of it applied, which the
/// verification then checks: it must read back absent) under [`SWAP_REFUSED`] plus the
/// refusal, else its two transfers' outcome ([`outcome_of`]).
fn swap_outcome(r: &v1::SwapResult) -> Outcome {
    match u32::try_from(r.refusal) {
        Ok(0) => outcome_of(&r.results),
        Ok(refusal) => Outcome::Failed(SWAP_REFUSED + refusal),
        Err(_) => Outcome::Unknown,
    }
}

/// One operation's outcome from the results of its legs: created only if every leg was;
/// unknown if a leg already existed (the client resent a request whose first attempt
/// applied; read-back settles it); otherwise the code of the leg that failed (not the
/// `linked_event_failed` of the others).
fn outcome_of(results: &[v1::CreateTransferResult]) -> Outcome {
    if results.iter().all(|r| r.status == CREATED) {
        return Outcome::Ok;
    }
    if results.iter().any(|r| r.status == EXISTS) {
        return Outcome::Unknown;
    }
    let cause = results
        .iter()
        .find(|r| r.status != CREATED && r.status != LINKED_EVENT_FAILED)
        .or_else(|| results.iter().find(|r| r.status != CREATED))
        .map_or(0, |r| r.status);
    Outcome::Failed(u32::try_from(cause).unwrap_or(u32::MAX))
}

/// The name of a transfer result code, e.g. `CREATE_TRANSFER_STATUS_EXCEEDS_CREDITS`.
#[must_use]
pub fn transfer_status_name(code: impl TryInto<i32>) -> String {
    let code: i32 = code.try_into().unwrap_or(-1);
    if let Some(refusal) = code.checked_sub(SWAP_REFUSED as i32).filter(|&r| r >= 0) {
        return v1::SwapRefusal::try_from(refusal)
            .map_or_else(|_| format!("swap refused ({refusal})"), |r| r.as_str_name().to_owned());
    }
    v1::CreateTransferStatus::try_from(code)
        .map_or_else(|_| format!("code {code}"), |s| s.as_str_name().to_owned())
}

fn account_status_name(code: i32) -> String {
    v1::CreateAccountStatus::try_from(code)
        .map_or_else(|_| format!("code {code}"), |s| s.as_str_name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_refused_whole_counts_as_refused_and_is_named() {
        let refused = v1::SwapResult {
            refusal: v1::SwapRefusal::QuoteExpired as i32,
            message: "TALLY:QuoteExpired: ...".into(),
            ..Default::default()
        };
        let outcome = swap_outcome(&refused);
        let Outcome::Failed(code) = outcome else { panic!("{outcome:?}") };
        assert_eq!(transfer_status_name(code), "SWAP_REFUSAL_QUOTE_EXPIRED");
        let made = v1::SwapResult {
            results: vec![v1::CreateTransferResult { status: CREATED, timestamp: 1 }; 2],
            ..Default::default()
        };
        assert_eq!(swap_outcome(&made), Outcome::Ok);
        assert_eq!(transfer_status_name(54), "CREATE_TRANSFER_STATUS_EXCEEDS_CREDITS");
    }
}
