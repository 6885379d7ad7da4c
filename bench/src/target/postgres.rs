//! PostgreSQL as the peer a bank would otherwise pick, driven by the same harness and the
//! same operations as Tally.
//!
//! Schema: `members(balance >= 0)`, `merchants`, `items(stock >= 0, sold)`, `institution`,
//! and `transfers` (one row per operation, primary key = the operation's id). Each
//! operation is ONE transaction (autocommit, `synchronous_commit = on`) running a PL/pgSQL
//! function: the idempotent insert (`ON CONFLICT DO NOTHING`; an existing id returns
//! `exists` and changes nothing), the member debit with a non-negative check, the stock
//! decrement with a non-negative check, and the merchant credit. A failed check raises,
//! which rolls the whole transaction back. One connection per client task; a request's
//! operations are pipelined on it.
//!
//! `bench/postgres.sh` starts a suitable server on loopback.

use std::collections::HashMap;

use futures_util::future::join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::BenchError;
use crate::model::{AccountChecks, Check, Found, Model, Outcome, ReadBack, Role};
use crate::population::PopulationSpec;
use crate::scenario::Op;
use tally_proto::v1::CreateTransferStatus;

/// Longest a PostgreSQL statement may run, milliseconds; beyond it the operation's outcome
/// is unknown (read-back settles it).
pub const STATEMENT_TIMEOUT_MS: u32 = 30_000;
/// Operation ids per read-back query.
const VERIFY_CHUNK: usize = 10_000;
/// SQLSTATE raised when a member's points or an item's stock would go below zero.
const EXCEEDS_CREDITS_STATE: &str = "TL001";

const SCHEMA: &str = r"
DROP TABLE IF EXISTS transfers, members, merchants, items, institution;
CREATE TABLE members (id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
CREATE TABLE merchants (id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE items (id bigint PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0),
                    sold bigint NOT NULL);
CREATE TABLE institution (id int PRIMARY KEY, issued bigint NOT NULL);
CREATE TABLE transfers (id bigint PRIMARY KEY, kind smallint NOT NULL, member bigint NOT NULL,
                        merchant bigint, item bigint, points bigint NOT NULL);

CREATE OR REPLACE FUNCTION redeem(p_id bigint, p_member bigint, p_merchant bigint,
                                  p_item bigint, p_points bigint) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO transfers VALUES (p_id, 1, p_member, p_merchant, p_item, p_points)
    ON CONFLICT (id) DO NOTHING;
  IF NOT FOUND THEN RETURN 1; END IF;
  UPDATE members SET balance = balance - p_points WHERE id = p_member AND balance >= p_points;
  IF NOT FOUND THEN RAISE EXCEPTION 'exceeds credits' USING ERRCODE = 'TL001'; END IF;
  UPDATE items SET stock = stock - 1, sold = sold + 1 WHERE id = p_item AND stock >= 1;
  IF NOT FOUND THEN RAISE EXCEPTION 'sold out' USING ERRCODE = 'TL001'; END IF;
  UPDATE merchants SET balance = balance + p_points WHERE id = p_merchant;
  RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION earn(p_id bigint, p_member bigint, p_points bigint) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO transfers VALUES (p_id, 2, p_member, NULL, NULL, p_points)
    ON CONFLICT (id) DO NOTHING;
  IF NOT FOUND THEN RETURN 1; END IF;
  UPDATE members SET balance = balance + p_points WHERE id = p_member;
  UPDATE institution SET issued = issued + p_points WHERE id = 0;
  RETURN 0;
END $$;
";

/// A PostgreSQL server under load.
#[derive(Clone, Debug)]
pub struct PgTarget {
    url: String,
    errors: super::ErrorLog,
}

/// One connection with the operations prepared.
#[derive(Debug)]
pub struct PgSession {
    client: Client,
    redeem: Statement,
    earn: Statement,
    lookup: Statement,
    errors: super::ErrorLog,
}

async fn connect(url: &str) -> Result<Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).expect("bench values fit in bigint")
}

impl PgTarget {
    /// A target at `url` (e.g. `host=127.0.0.1 port=5433 user=tally dbname=tally`).
    #[must_use]
    pub fn new(url: String) -> Self {
        Self { url, errors: super::ErrorLog::default() }
    }

    /// The errors behind this target's unknown outcomes.
    #[must_use]
    pub fn errors(&self) -> &super::ErrorLog {
        &self.errors
    }

    /// Replaces the schema and loads the population.
    ///
    /// # Errors
    /// A connection or SQL error.
    pub async fn setup(&self, spec: &PopulationSpec) -> Result<(), BenchError> {
        let client = connect(&self.url).await?;
        client.batch_execute(SCHEMA).await?;
        let members = u64::from(spec.members);
        let load = format!(
            "INSERT INTO members SELECT g, {points} FROM generate_series(0, {last_member}) g;
             INSERT INTO merchants SELECT g, 0 FROM generate_series(0, {last_merchant}) g;
             INSERT INTO items SELECT g, {stock}, 0 FROM generate_series(0, {last_item}) g;
             INSERT INTO institution VALUES (0, {issued});",
            points = int(spec.member_points),
            last_member = members - 1,
            last_merchant = spec.merchants - 1,
            stock = int(spec.stock),
            last_item = spec.items - 1,
            issued = int(members * spec.member_points),
        );
        client.batch_execute(&load).await?;
        // On its own: VACUUM cannot run in the implicit transaction of a multi-statement.
        client.batch_execute("VACUUM ANALYZE").await?;
        Ok(())
    }

    /// A new connection for one client task.
    ///
    /// # Errors
    /// A connection or SQL error.
    pub async fn session(&self) -> Result<PgSession, BenchError> {
        let client = connect(&self.url).await?;
        // Every load loop stops by itself: a statement never waits longer than this.
        client.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}")).await?;
        let redeem = client.prepare("SELECT redeem($1, $2, $3, $4, $5)").await?;
        let earn = client.prepare("SELECT earn($1, $2, $3)").await?;
        let lookup = client.prepare("SELECT balance FROM members WHERE id = $1").await?;
        Ok(PgSession { client, redeem, earn, lookup, errors: self.errors.clone() })
    }

    /// Reads back every write operation and every row, feeds the applied operations into
    /// `model`, and runs the same checks as for Tally.
    ///
    /// # Errors
    /// A connection or SQL error.
    pub async fn verify(
        &self,
        model: &mut Model,
        records: &[(Op, Outcome)],
    ) -> Result<Vec<Check>, BenchError> {
        let client = connect(&self.url).await?;
        let mut read_back = ReadBack::default();
        let writes: Vec<&(Op, Outcome)> = records.iter().filter(|(op, _)| op.is_write()).collect();
        for chunk in writes.chunks(VERIFY_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|(op, _)| int(seq_of(op))).collect();
            let rows = client
                .query(
                    "SELECT id, member, merchant, item, points FROM transfers WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?;
            let stored: HashMap<i64, [Option<i64>; 4]> = rows
                .iter()
                .map(|r| (r.get(0), [Some(r.get(1)), r.get(2), r.get(3), Some(r.get(4))]))
                .collect();
            for (op, outcome) in chunk {
                let row = stored.get(&int(seq_of(op)));
                let found = match row {
                    None => Found::Absent,
                    Some(row) if *row == row_of(op) => Found::Identical,
                    Some(_) => Found::Damaged,
                };
                read_back.record(model, op, *outcome, found, || format!("stored {row:?}"));
            }
        }
        let mut checks = read_back.finish();
        checks.extend(verify_rows(&client, model).await?);
        Ok(checks)
    }
}

async fn verify_rows(client: &Client, model: &Model) -> Result<Vec<Check>, BenchError> {
    let spec = model.spec();
    let read = |sql: &'static str| async move {
        let rows = client.query(sql, &[]).await?;
        Ok::<_, BenchError>(
            rows.iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .collect::<HashMap<i64, i64>>(),
        )
    };
    let members = read("SELECT id, balance FROM members").await?;
    let merchants = read("SELECT id, balance FROM merchants").await?;
    let stock = read("SELECT id, stock FROM items").await?;
    let sold = read("SELECT id, sold FROM items").await?;
    let issued = read("SELECT id::bigint, issued FROM institution").await?;
    let mut checks = AccountChecks::default();
    let (mut points, mut units) = (0_i128, 0_i128);
    // Rows are keyed by role and index.
    for (role, index, balance) in model.entries() {
        let index = i64::from(index);
        let net = i128::try_from(balance.credits).unwrap_or(i128::MAX)
            - i128::try_from(balance.debits).unwrap_or(i128::MAX);
        let (table, stored) = match role {
            Role::Member => ("members", members.get(&index)),
            Role::Merchant => ("merchants", merchants.get(&index)),
            Role::Stock => ("items.stock", stock.get(&index)),
            Role::Delivered => ("items.sold", sold.get(&index)),
            Role::Issuance => ("institution.issued", issued.get(&0)),
            // Swaps run against Tally only (validated): no rows.
            Role::Supply | Role::MemberB | Role::PoolA | Role::PoolB => continue,
        };
        // The issuance account's debits are what the institution issued.
        let expected = if role == Role::Issuance { -net } else { net };
        let stored = stored.copied().map(i128::from);
        checks.equal.expect(stored == Some(expected), || {
            format!("{table} {index}: stored {stored:?}, model {expected}")
        });
        let value = stored.unwrap_or(0);
        match role {
            Role::Member => {
                points += value;
                checks.overdrawn.expect(value >= 0, || format!("member {index}: balance {value}"));
            }
            Role::Merchant => points += value,
            Role::Issuance => points -= value,
            Role::Stock => {
                units += value;
                checks.oversold.expect(value >= 0, || format!("item {index}: stock {value}"));
            }
            Role::Delivered => {
                units += value;
                checks.oversold.expect(value <= i128::from(spec.stock), || {
                    format!("item {index}: {value} sold of {} stocked", spec.stock)
                });
            }
            Role::Supply | Role::MemberB | Role::PoolA | Role::PoolB => {}
        }
    }
    checks.conservation.expect(points == 0, || format!("points: balances minus issued = {points}"));
    let stocked = i128::from(spec.items) * i128::from(spec.stock);
    checks.conservation.expect(units == stocked, || format!("units: {units} of {stocked} stocked"));
    Ok(checks.finish(model))
}

fn seq_of(op: &Op) -> u64 {
    match *op {
        Op::Redeem { seq, .. } | Op::Earn { seq, .. } => seq,
        Op::Lookup { .. } => unreachable!("lookups write nothing"),
        Op::Swap { .. } => unreachable!("swaps run against tally only (validated)"),
    }
}

fn row_of(op: &Op) -> [Option<i64>; 4] {
    match *op {
        Op::Redeem { member, merchant, item, points, .. } => [
            Some(i64::from(member)),
            Some(i64::from(merchant)),
            Some(i64::from(item)),
            Some(i64::from(points)),
        ],
        Op::Earn { member, points, .. } => {
            [Some(i64::from(member)), None, None, Some(i64::from(points))]
        }
        Op::Lookup { .. } => unreachable!("lookups write nothing"),
        Op::Swap { .. } => unreachable!("swaps run against tally only (validated)"),
    }
}

impl PgSession {
    /// Runs `ops`, pipelined on this connection, one transaction each.
    pub async fn execute(&self, ops: &[Op]) -> Vec<Outcome> {
        let calls = ops.iter().map(|op| async move {
            let result = match *op {
                Op::Redeem { seq, member, merchant, item, points } => {
                    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                        &int(seq),
                        &i64::from(member),
                        &i64::from(merchant),
                        &i64::from(item),
                        &i64::from(points),
                    ];
                    self.client.query_one(&self.redeem, &args).await.map(|r| r.get::<_, i32>(0))
                }
                Op::Earn { seq, member, points } => self
                    .client
                    .query_one(&self.earn, &[&int(seq), &i64::from(member), &i64::from(points)])
                    .await
                    .map(|r| r.get::<_, i32>(0)),
                Op::Lookup { member } => {
                    self.client.query_one(&self.lookup, &[&i64::from(member)]).await.map(|_| 0)
                }
                Op::Swap { .. } => unreachable!("swaps run against tally only (validated)"),
            };
            match result {
                Ok(0) => Outcome::Ok,
                Ok(_) => Outcome::Failed(CreateTransferStatus::Exists as u32),
                Err(e) if e.code() == Some(&SqlState::from_code(EXCEEDS_CREDITS_STATE)) => {
                    Outcome::Failed(CreateTransferStatus::ExceedsCredits as u32)
                }
                Err(e) => {
                    self.errors.record(&e, 1);
                    Outcome::Unknown
                }
            }
        });
        join_all(calls).await
    }
}
