//! The workload: requests among a fixed population, within and across shards, each
//! recorded with its invocation, completion and outcome for the checker.
//!
//! Population (ledger [`LEDGER_POINTS`]): members (`debits_must_not_exceed_credits`),
//! an equal number on every shard, funded from an issuer; item stock (ledger
//! [`LEDGER_UNITS`], `debits_must_not_exceed_credits`, a few units each) redeemed to a
//! buyer account.
//!
//! Request kinds, mixed by the seeded generator, 1 to [`OPS_PER_REQUEST_MAX`] operations
//! per request (chains kept whole):
//! - `single`: one transfer between two members (any shards);
//! - `chain`: 2–3 linked transfers among members (any shards: all or nothing);
//! - `pending`: a pending transfer between two members, of one shard or (half of them)
//!   any two shards (`docs/SHARDING.md` §3e), timeout 1–3 s;
//! - `post` / `void`: resolves an earlier pending transfer (which may have expired);
//! - `redeem`: points from a member to the issuer linked with one unit of an item's
//!   stock to the buyer (refused once the item is sold out);
//! - `swap` (a request of its own, `SwapBatch` of 1 to [`OPS_PER_REQUEST_MAX`] swaps): a
//!   member gives points on ledger A to institution A's pool and receives
//!   [`SWAP_RATE`] as many (rounded down) on ledger B from institution B's pool (which
//!   can run dry) — two linked transfers, usually on different shards;
//! - `resend`: an earlier request sent again unchanged (same ids).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tally_client::{Client, loyalty};
use tally_proto::routing::shard_of;
use tally_proto::{u128_of, uint128, v1};
use tokio::time::Instant;

/// The points ledger.
pub const LEDGER_POINTS: u32 = 1;
/// The item-stock ledger.
pub const LEDGER_UNITS: u32 = 2;
/// Institution B's points ledger (what a swap receives).
pub const LEDGER_POINTS_B: u32 = 3;
/// Points received per point given in a swap: numerator, denominator (rounded down).
pub const SWAP_RATE: (u64, u32) = (3, 2);
/// Points institution B's pool starts with.
pub const POOL_B_FUNDING: u128 = 20_000;
/// One request in this many is a swap batch.
pub const SWAP_REQUEST_ONE_IN: u32 = 10;
/// How long after the run starts the swaps' quote expires (far beyond any run and any
/// clock skew the suite makes: swaps are refused only for want of points).
pub const QUOTE_VALID_FOR: Duration = Duration::from_secs(24 * 3600);
/// The status recorded for both transfers of a swap refused as a whole (invalid or its
/// quote expired: nothing of it was created).
pub const SWAP_REFUSED: i32 = -1;
/// Transfer codes of a swap's two transfers.
const CODE_SWAP_GIVE: u16 = 40;
const CODE_SWAP_RECEIVE: u16 = 41;
/// A member's account on ledger B is the member's id plus this.
const MEMBER_B_OFFSET: u128 = 1 << 39;
/// Points each member starts with.
pub const MEMBER_FUNDING: u128 = 500;
/// Units each item starts with.
pub const STOCK_UNITS: u128 = 25;
/// Operations per request, at most.
pub const OPS_PER_REQUEST_MAX: usize = 4;
/// Earlier requests kept for resending (the oldest are forgotten first).
pub const RESENDABLE_MAX: usize = 4096;
/// First transfer id of the workload (setup uses ids below it).
pub const WORKLOAD_IDS_FROM: u128 = 1 << 32;

const DMNEC: u32 = v1::AccountFlag::DebitsMustNotExceedCredits as u32;
const LINKED: u32 = v1::TransferFlag::Linked as u32;
const PENDING: u32 = v1::TransferFlag::Pending as u32;
const POST: u32 = v1::TransferFlag::PostPendingTransfer as u32;
const VOID: u32 = v1::TransferFlag::VoidPendingTransfer as u32;

/// A single-phase transfer of code 1.
fn transfer(id: u128, debit: u128, credit: u128, amount: u128, ledger: u32) -> v1::Transfer {
    v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(debit),
        credit_account_id: uint128(credit),
        amount: uint128(amount),
        ledger,
        code: 1,
        ..Default::default()
    }
}

/// The accounts of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Population {
    /// Data shards of the cluster.
    pub shards: u32,
    /// Members, by shard (index `shard - 1`).
    pub members: Vec<Vec<u128>>,
    /// Funds the members.
    pub issuer: u128,
    /// Funds the stock.
    pub units_issuer: u128,
    /// The item stock accounts.
    pub stock: Vec<u128>,
    /// Receives redeemed units.
    pub buyer: u128,
    /// Institution A's pool (ledger A): credited by swaps.
    pub pool_a: u128,
    /// Institution B's pool (ledger B, no overdraft): debited by swaps.
    pub pool_b: u128,
    /// Funds institution B's pool.
    pub issuer_b: u128,
}

impl Population {
    /// `per_shard` members on each of `shards` shards and `items` stock accounts.
    #[must_use]
    pub fn new(shards: u32, per_shard: usize, items: u128) -> Self {
        let mut members = vec![Vec::new(); shards as usize];
        let mut id = 1_u128;
        while members.iter().any(|m| m.len() < per_shard) {
            let list = &mut members[shard_of(id, shards) as usize - 1];
            if list.len() < per_shard {
                list.push(id);
            }
            id += 1;
        }
        let base = 1_u128 << 40;
        Self {
            shards,
            members,
            issuer: base + 1,
            units_issuer: base + 2,
            buyer: base + 3,
            stock: (0..items).map(|i| base + 100 + i).collect(),
            pool_a: base + 4,
            pool_b: base + 5,
            issuer_b: base + 6,
        }
    }

    /// A member's account on ledger B.
    #[must_use]
    pub fn member_b(member: u128) -> u128 {
        MEMBER_B_OFFSET + member
    }

    /// Every member's account on ledger B.
    pub fn members_b(&self) -> impl Iterator<Item = u128> + '_ {
        self.members.iter().flatten().map(|&m| Self::member_b(m))
    }

    /// Every account id.
    #[must_use]
    pub fn all(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.members.iter().flatten().copied().collect();
        ids.extend([self.issuer, self.units_issuer, self.buyer]);
        ids.extend(&self.stock);
        ids.extend(self.members_b());
        ids.extend([self.pool_a, self.pool_b, self.issuer_b]);
        ids
    }

    /// The accounts to create.
    #[must_use]
    pub fn accounts(&self) -> Vec<v1::Account> {
        let account = |id: u128, ledger: u32, flags: u32| v1::Account {
            id: uint128(id),
            ledger,
            code: 1,
            flags,
            ..Default::default()
        };
        let mut out: Vec<v1::Account> =
            self.members.iter().flatten().map(|&id| account(id, LEDGER_POINTS, DMNEC)).collect();
        out.push(account(self.issuer, LEDGER_POINTS, 0));
        out.push(account(self.units_issuer, LEDGER_UNITS, 0));
        out.push(account(self.buyer, LEDGER_UNITS, 0));
        out.extend(self.stock.iter().map(|&id| account(id, LEDGER_UNITS, DMNEC)));
        out.extend(self.members_b().map(|id| account(id, LEDGER_POINTS_B, 0)));
        out.push(account(self.pool_a, LEDGER_POINTS, 0));
        out.push(account(self.pool_b, LEDGER_POINTS_B, DMNEC));
        out.push(account(self.issuer_b, LEDGER_POINTS_B, 0));
        out
    }

    /// The funding transfers (ids `1..`).
    #[must_use]
    pub fn funding(&self) -> Vec<v1::Transfer> {
        let members = self.members.iter().flatten().map(|&m| (self.issuer, m, MEMBER_FUNDING, 1));
        let stock = self.stock.iter().map(|&s| (self.units_issuer, s, STOCK_UNITS, LEDGER_UNITS));
        let pool = (self.issuer_b, self.pool_b, POOL_B_FUNDING, LEDGER_POINTS_B);
        members
            .chain(stock)
            .chain([pool])
            .zip(1_u128..)
            .map(|((debit, credit, amount, ledger), id)| {
                transfer(id, debit, credit, amount, ledger)
            })
            .collect()
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The cluster answered: one status per transfer.
    Replied(Vec<i32>),
    /// The request failed (timeout, transport, unavailable): applied or not, unknown.
    Unknown(String),
}

/// What a request sends.
#[derive(Clone, Debug)]
pub enum Payload {
    /// `CreateTransfers`.
    Transfers(Vec<v1::Transfer>),
    /// `SwapBatch`.
    Swaps(Vec<v1::SwapRequest>),
}

impl Payload {
    /// The transfers it creates, as the ledger stores them (each swap's give and receive
    /// transfers, linked).
    #[must_use]
    pub fn transfers(&self) -> Vec<v1::Transfer> {
        match self {
            Self::Transfers(transfers) => transfers.clone(),
            Self::Swaps(swaps) => swaps.iter().flat_map(swap_transfers).collect(),
        }
    }
}

/// A swap's two transfers as the ledger stores them (`service::swap` in tally-node: the
/// quote id in `user_data_128`; the give transfer holds the quote's expiry and the
/// rounding, the receive transfer the rate).
fn swap_transfers(s: &v1::SwapRequest) -> [v1::Transfer; 2] {
    let amount = u128_of(s.amount);
    let received = amount * u128::from(s.rate_numerator) / u128::from(s.rate_denominator);
    let give = v1::Transfer {
        id: s.give_id,
        debit_account_id: s.member_a_account_id,
        credit_account_id: s.pool_a_account_id,
        amount: s.amount,
        user_data_128: s.quote_id,
        user_data_64: s.quote_expires_at,
        user_data_32: u32::try_from(s.rounding).unwrap_or_default(),
        ledger: s.ledger_a,
        code: s.code_a,
        flags: LINKED,
        ..Default::default()
    };
    let receive = v1::Transfer {
        id: s.receive_id,
        debit_account_id: s.pool_b_account_id,
        credit_account_id: s.member_b_account_id,
        amount: uint128(received),
        user_data_128: s.quote_id,
        user_data_64: s.rate_numerator,
        user_data_32: s.rate_denominator,
        ledger: s.ledger_b,
        code: s.code_b,
        ..Default::default()
    };
    [give, receive]
}

/// One request sent during the run.
#[derive(Clone, Debug, Serialize)]
pub struct Request {
    /// What it is (`single`, `chain`, … joined by `+`; `resend`).
    pub kind: String,
    /// Its transfers, as sent (a swap's: as the ledger stores them).
    #[serde(skip)]
    pub transfers: Vec<v1::Transfer>,
    /// Sent at, since the start of the run.
    pub invoked: Duration,
    /// Answered (or given up) at, since the start of the run.
    pub completed: Duration,
    /// The outcome.
    pub outcome: Outcome,
}

/// Generates requests from a seed.
#[derive(Debug)]
pub struct Generator {
    rng: SmallRng,
    population: Population,
    next_id: u128,
    /// Pending transfers not yet resolved by the workload: (id, amount).
    pending: Vec<u128>,
    /// Earlier requests, for resending.
    sent: Vec<Payload>,
    /// The swaps' quote expiry, nanoseconds since the Unix epoch.
    quote_expires_at: u64,
}

impl Generator {
    /// A generator over `population` seeded with `seed`; its swaps' quote expires
    /// `quote_expires_at` (ns since the Unix epoch).
    #[must_use]
    pub fn new(population: Population, seed: u64, quote_expires_at: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            population,
            next_id: WORKLOAD_IDS_FROM,
            pending: Vec::new(),
            sent: Vec::new(),
            quote_expires_at,
        }
    }

    fn swap(&mut self) -> v1::SwapRequest {
        let member = self.member();
        loyalty::swap(&loyalty::Swap {
            quote_id: self.id(),
            give_id: self.id(),
            receive_id: self.id(),
            member_a_account: member,
            pool_a_account: self.population.pool_a,
            ledger_a: LEDGER_POINTS,
            code_a: CODE_SWAP_GIVE,
            pool_b_account: self.population.pool_b,
            member_b_account: Population::member_b(member),
            ledger_b: LEDGER_POINTS_B,
            code_b: CODE_SWAP_RECEIVE,
            points: self.rng.random_range(1..=20),
            rate: SWAP_RATE,
            rounding: v1::Rounding::Down,
            quote_expires_at: self.quote_expires_at,
        })
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn member(&mut self) -> u128 {
        let shard = self.rng.random_range(0..self.population.members.len());
        self.member_on(shard)
    }

    fn member_on(&mut self, shard: usize) -> u128 {
        let list = &self.population.members[shard];
        list[self.rng.random_range(0..list.len())]
    }

    fn transfer(&mut self, debit: u128, credit: u128, amount: u128, ledger: u32) -> v1::Transfer {
        transfer(self.id(), debit, credit, amount, ledger)
    }

    /// Two distinct members.
    fn pair(&mut self) -> (u128, u128) {
        let a = self.member();
        loop {
            let b = self.member();
            if b != a {
                return (a, b);
            }
        }
    }

    fn op(&mut self) -> (&'static str, Vec<v1::Transfer>) {
        match self.rng.random_range(0..100) {
            0..35 => {
                let (a, b) = self.pair();
                let amount = self.rng.random_range(1..=40);
                ("single", vec![self.transfer(a, b, amount, LEDGER_POINTS)])
            }
            35..50 => {
                let len = self.rng.random_range(2..=3);
                let mut chain: Vec<v1::Transfer> = (0..len)
                    .map(|_| {
                        let (a, b) = self.pair();
                        let amount = self.rng.random_range(1..=40);
                        let mut t = self.transfer(a, b, amount, LEDGER_POINTS);
                        t.flags = LINKED;
                        t
                    })
                    .collect();
                if let Some(last) = chain.last_mut() {
                    last.flags = 0;
                }
                ("chain", chain)
            }
            50..62 => {
                let (a, b) = if self.rng.random_bool(0.5) {
                    self.pair()
                } else {
                    let shard = self.rng.random_range(0..self.population.members.len());
                    let a = self.member_on(shard);
                    let b = loop {
                        let b = self.member_on(shard);
                        if b != a || self.population.members[shard].len() == 1 {
                            break b;
                        }
                    };
                    (a, b)
                };
                let amount = self.rng.random_range(1..=40);
                let mut t = self.transfer(a, b, amount, LEDGER_POINTS);
                t.flags = PENDING;
                t.timeout = self.rng.random_range(1..=3);
                self.pending.push(u128::from(t.id.unwrap_or_default()));
                ("pending", vec![t])
            }
            62..72 if !self.pending.is_empty() => {
                let pending =
                    self.pending.swap_remove(self.rng.random_range(0..self.pending.len()));
                let post = self.rng.random_bool(0.5);
                let t = v1::Transfer {
                    id: uint128(self.id()),
                    pending_id: uint128(pending),
                    amount: uint128(if post { u128::MAX } else { 0 }),
                    flags: if post { POST } else { VOID },
                    ..Default::default()
                };
                (if post { "post" } else { "void" }, vec![t])
            }
            72..87 => {
                let member = self.member();
                let item =
                    self.population.stock[self.rng.random_range(0..self.population.stock.len())];
                let (issuer, buyer) = (self.population.issuer, self.population.buyer);
                let points = self.rng.random_range(1..=20);
                let mut pay = self.transfer(member, issuer, points, LEDGER_POINTS);
                pay.flags = LINKED;
                let unit = self.transfer(item, buyer, 1, LEDGER_UNITS);
                ("redeem", vec![pay, unit])
            }
            _ => {
                let (a, b) = self.pair();
                let amount = self.rng.random_range(1..=40);
                ("single", vec![self.transfer(a, b, amount, LEDGER_POINTS)])
            }
        }
    }

    /// The next request: an earlier one again (about one in eight), a batch of 1 to
    /// [`OPS_PER_REQUEST_MAX`] swaps (one in [`SWAP_REQUEST_ONE_IN`]), or 1 to
    /// [`OPS_PER_REQUEST_MAX`] other operations.
    pub fn next_request(&mut self) -> (String, Payload) {
        if !self.sent.is_empty() && self.rng.random_range(0..8) == 0 {
            let again = self.sent[self.rng.random_range(0..self.sent.len())].clone();
            return ("resend".to_owned(), again);
        }
        let ops = self.rng.random_range(1..=OPS_PER_REQUEST_MAX);
        let (kind, payload) = if self.rng.random_range(0..SWAP_REQUEST_ONE_IN) == 0 {
            let swaps = (0..ops).map(|_| self.swap()).collect();
            (vec!["swap"; ops].join("+"), Payload::Swaps(swaps))
        } else {
            let mut kinds = Vec::new();
            let mut transfers = Vec::new();
            for _ in 0..ops {
                let (kind, op) = self.op();
                kinds.push(kind);
                transfers.extend(op);
            }
            (kinds.join("+"), Payload::Transfers(transfers))
        };
        if self.sent.len() == RESENDABLE_MAX {
            let oldest = self.rng.random_range(0..RESENDABLE_MAX);
            self.sent.swap_remove(oldest);
        }
        self.sent.push(payload.clone());
        (kind, payload)
    }
}

/// Two statuses per swap, give then receive; [`SWAP_REFUSED`] for both of a swap refused
/// as a whole (its `results` are then empty).
fn swap_statuses(results: &[v1::SwapResult]) -> Vec<i32> {
    results
        .iter()
        .flat_map(|r| match r.results.as_slice() {
            [give, receive] => [give.status, receive.status],
            _ => [SWAP_REFUSED; 2],
        })
        .collect()
}

/// The history of a run: every request in completion order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The requests.
    pub requests: Vec<Request>,
}

impl History {
    /// Counts of requests answered and unknown.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for r in &self.requests {
            let key = match r.outcome {
                Outcome::Replied(_) => "replied",
                Outcome::Unknown(_) => "unknown",
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    }
}

/// Runs `workers` closed-loop workers sending requests from `generator` through `client`
/// until `duration` has passed (each call bounded by the client's deadline), recording
/// every request relative to `start`.
pub async fn run(
    client: &Client,
    generator: Arc<Mutex<Generator>>,
    workers: usize,
    start: Instant,
    duration: Duration,
) -> History {
    let history = Arc::new(Mutex::new(History::default()));
    let end = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, generator, history) = (client.clone(), generator.clone(), history.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let (kind, payload) = generator.lock().next_request();
                    let transfers = payload.transfers();
                    let invoked = start.elapsed();
                    let outcome = match payload {
                        Payload::Transfers(t) => match client.create_transfers(t).await {
                            Ok(results) => {
                                Outcome::Replied(results.iter().map(|r| r.status).collect())
                            }
                            Err(e) => Outcome::Unknown(e.to_string()),
                        },
                        Payload::Swaps(s) => match client.swap_batch(s).await {
                            Ok(results) => Outcome::Replied(swap_statuses(&results)),
                            Err(e) => Outcome::Unknown(e.to_string()),
                        },
                    };
                    let completed = start.elapsed();
                    let request = Request { kind, transfers, invoked, completed, outcome };
                    history.lock().requests.push(request);
                }
            })
        })
        .collect();
    for task in tasks {
        // A worker that panicked lost its request in flight from the history, which the
        // checks would then never read back: the run must not pass on a partial history.
        if let Err(e) = task.await {
            panic!("a workload worker failed, its request lost from the history: {e}");
        }
    }
    std::mem::take(&mut *history.lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_is_recorded_as_the_two_linked_transfers_the_ledger_stores() {
        let population = Population::new(4, 2, 1);
        let mut generator = Generator::new(population.clone(), 7, 99);
        let swap = generator.swap();
        let [give, receive] = swap_transfers(&swap);
        let given = u128_of(swap.amount);
        assert!((1..=20).contains(&given));
        assert_eq!(u128_of(give.amount), given);
        // 3/2 rounded down.
        assert_eq!(u128_of(receive.amount), given * 3 / 2);
        assert_eq!(give.flags, LINKED, "give is linked to receive");
        assert_eq!(receive.flags, 0, "receive closes the chain");
        assert_eq!((give.ledger, receive.ledger), (LEDGER_POINTS, LEDGER_POINTS_B));
        assert_eq!(u128_of(give.credit_account_id), population.pool_a);
        assert_eq!(u128_of(receive.debit_account_id), population.pool_b);
        let member = u128_of(give.debit_account_id);
        assert!(population.members.iter().flatten().any(|&m| m == member));
        assert_eq!(u128_of(receive.credit_account_id), Population::member_b(member));
        assert_eq!(give.user_data_128, swap.quote_id);
        assert_eq!(receive.user_data_128, swap.quote_id);
        assert_eq!((give.user_data_64, give.user_data_32), (99, v1::Rounding::Down as u32));
        assert_eq!((receive.user_data_64, receive.user_data_32), (3, 2));
        assert_ne!(give.id, receive.id);
    }

    #[test]
    fn a_refused_swap_counts_as_two_refused_transfers() {
        let made = v1::SwapResult {
            results: vec![
                v1::CreateTransferResult { status: 1, ..Default::default() },
                v1::CreateTransferResult { status: 2, ..Default::default() },
            ],
            ..Default::default()
        };
        let refused = v1::SwapResult { refusal: 2, ..Default::default() };
        assert_eq!(swap_statuses(&[made, refused]), vec![1, 2, SWAP_REFUSED, SWAP_REFUSED]);
    }

    #[test]
    fn the_population_accounts_are_distinct_and_funded_in_range() {
        let population = Population::new(4, 16, 4);
        let mut ids = population.all();
        let accounts = population.accounts();
        assert_eq!(ids.len(), accounts.len());
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), accounts.len(), "account ids are distinct");
        let funding = population.funding();
        assert!(funding.iter().all(|t| u128_of(t.id) < WORKLOAD_IDS_FROM));
        assert!(funding.iter().any(|t| u128_of(t.credit_account_id) == population.pool_b));
    }
}
