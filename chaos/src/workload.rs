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
//! - `pending`: a pending transfer between two members of one shard (cross-shard
//!   pending transfers are refused by design), timeout 1–3 s;
//! - `post` / `void`: resolves an earlier pending transfer (which may have expired);
//! - `redeem`: points from a member to the issuer linked with one unit of an item's
//!   stock to the buyer (refused once the item is sold out);
//! - `resend`: an earlier request sent again unchanged (same ids).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tally_client::Client;
use tally_proto::routing::shard_of;
use tally_proto::{uint128, v1};
use tokio::time::Instant;

/// The points ledger.
pub const LEDGER_POINTS: u32 = 1;
/// The item-stock ledger.
pub const LEDGER_UNITS: u32 = 2;
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
        }
    }

    /// Every account id.
    #[must_use]
    pub fn all(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.members.iter().flatten().copied().collect();
        ids.extend([self.issuer, self.units_issuer, self.buyer]);
        ids.extend(&self.stock);
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
        out
    }

    /// The funding transfers (ids `1..`).
    #[must_use]
    pub fn funding(&self) -> Vec<v1::Transfer> {
        let members = self.members.iter().flatten().map(|&m| (self.issuer, m, MEMBER_FUNDING, 1));
        let stock = self.stock.iter().map(|&s| (self.units_issuer, s, STOCK_UNITS, LEDGER_UNITS));
        members
            .chain(stock)
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

/// One request sent during the run.
#[derive(Clone, Debug, Serialize)]
pub struct Request {
    /// What it is (`single`, `chain`, … joined by `+`; `resend`).
    pub kind: String,
    /// Its transfers, as sent.
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
    sent: Vec<Vec<v1::Transfer>>,
}

impl Generator {
    /// A generator over `population` seeded with `seed`.
    #[must_use]
    pub fn new(population: Population, seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            population,
            next_id: WORKLOAD_IDS_FROM,
            pending: Vec::new(),
            sent: Vec::new(),
        }
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
                let shard = self.rng.random_range(0..self.population.members.len());
                let a = self.member_on(shard);
                let b = loop {
                    let b = self.member_on(shard);
                    if b != a || self.population.members[shard].len() == 1 {
                        break b;
                    }
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

    /// The next request: an earlier one again (about one in eight), or 1 to
    /// [`OPS_PER_REQUEST_MAX`] new operations.
    pub fn next_request(&mut self) -> (String, Vec<v1::Transfer>) {
        if !self.sent.is_empty() && self.rng.random_range(0..8) == 0 {
            let again = self.sent[self.rng.random_range(0..self.sent.len())].clone();
            return ("resend".to_owned(), again);
        }
        let ops = self.rng.random_range(1..=OPS_PER_REQUEST_MAX);
        let mut kinds = Vec::new();
        let mut transfers = Vec::new();
        for _ in 0..ops {
            let (kind, op) = self.op();
            kinds.push(kind);
            transfers.extend(op);
        }
        if self.sent.len() == RESENDABLE_MAX {
            let oldest = self.rng.random_range(0..RESENDABLE_MAX);
            self.sent.swap_remove(oldest);
        }
        self.sent.push(transfers.clone());
        (kinds.join("+"), transfers)
    }
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
                    let (kind, transfers) = generator.lock().next_request();
                    let invoked = start.elapsed();
                    let outcome = match client.create_transfers(transfers.clone()).await {
                        Ok(results) => Outcome::Replied(results.iter().map(|r| r.status).collect()),
                        Err(e) => Outcome::Unknown(e.to_string()),
                    };
                    let completed = start.elapsed();
                    let request = Request { kind, transfers, invoked, completed, outcome };
                    history.lock().requests.push(request);
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    std::mem::take(&mut *history.lock())
}
