//! `tally-load`: a small closed-loop load driver for a running cluster (the full
//! `tally-bench` suite builds on it).
//!
//! Creates a pool of accounts, then for `--duration-s` seconds runs `--tasks` tasks, each
//! sending `--batch` simple transfers of 1 point between random pool accounts per request,
//! one request at a time. Counts only durable, acknowledged events (status `created`),
//! records each request's latency, and afterwards verifies the pool's balances account for
//! every acknowledged transfer exactly once (non-zero exit otherwise).
//!
//! ```text
//! tally-load --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --tasks 4 --batch 8190
//! tally-load --tasks 500 --batch 1
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tally_bench::workload::Rng;
use tally_client::Client;
use tally_proto::v1::{self, CreateTransferStatus};
use tally_proto::{u128_of, uint128};

const LEDGER: u32 = 1;

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop transfer load against a Tally cluster, with verification")]
struct Args {
    /// Comma-separated node addresses.
    #[arg(long, default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")]
    endpoints: String,
    /// Concurrent tasks, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    tasks: u32,
    /// Transfers per request (1..=8190).
    #[arg(long, default_value_t = 8190)]
    batch: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Accounts in the pool.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.batch == 0 || args.batch > tally_proto::limits::BATCH_EVENTS_MAX {
        return Err(format!("--batch must be 1..={}", tally_proto::limits::BATCH_EVENTS_MAX).into());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

fn nonce() -> u128 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u128::from(u64::try_from(now.as_nanos() >> 10).unwrap_or(u64::MAX)) << 64
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_owned).collect();
    let client = Client::builder(endpoints).deadline(Duration::from_secs(60)).build()?;
    let base = nonce();
    let pool: Vec<u128> = (0..u128::from(args.accounts)).map(|i| base | (i + 1)).collect();
    for chunk in pool.chunks(8190) {
        let accounts = chunk
            .iter()
            .map(|&id| v1::Account {
                id: uint128(id),
                ledger: LEDGER,
                code: 1,
                ..Default::default()
            })
            .collect();
        client.create_accounts(accounts).await?;
    }
    let next_id = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.duration_s);
    let mut handles = Vec::new();
    for task in 0..args.tasks {
        let (client, pool, next_id) = (client.clone(), pool.clone(), next_id.clone());
        let batch = args.batch;
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(u64::from(task) + 1);
            let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
            let (mut created, mut failed) = (0_u64, 0_u64);
            while Instant::now() < stop_at {
                let transfers: Vec<v1::Transfer> = (0..batch)
                    .map(|_| {
                        let id =
                            base | (1 << 40) | u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                        let debit =
                            pool[usize::try_from(rng.below(pool.len() as u64)).unwrap_or(0)];
                        let mut credit =
                            pool[usize::try_from(rng.below(pool.len() as u64)).unwrap_or(0)];
                        if credit == debit {
                            credit = if debit == pool[0] { pool[1] } else { pool[0] };
                        }
                        v1::Transfer {
                            id: uint128(id),
                            debit_account_id: uint128(debit),
                            credit_account_id: uint128(credit),
                            amount: uint128(1),
                            ledger: LEDGER,
                            code: 1,
                            ..Default::default()
                        }
                    })
                    .collect();
                let sent = Instant::now();
                match client.create_transfers(transfers).await {
                    Ok(results) => {
                        let elapsed = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latency_us.record(elapsed.max(1)).expect("in range");
                        let ok = results
                            .iter()
                            .filter(|r| r.status == CreateTransferStatus::Created as i32)
                            .count();
                        created += ok as u64;
                        failed += (results.len() - ok) as u64;
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed += u64::from(batch);
                    }
                }
            }
            (created, failed, latency_us)
        }));
    }
    let mut latency_us = Histogram::<u64>::new(3)?;
    let (mut created, mut failed) = (0_u64, 0_u64);
    for handle in handles {
        let (c, f, h) = handle.await?;
        created += c;
        failed += f;
        latency_us.add(h)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "tasks={} batch={} duration={:.1}s created={} not_created={} rate={:.0}/s requests={} \
         p50={:.2}ms p99={:.2}ms max={:.2}ms",
        args.tasks,
        args.batch,
        elapsed,
        created,
        failed,
        created as f64 / elapsed,
        latency_us.len(),
        latency_us.value_at_quantile(0.50) as f64 / 1000.0,
        latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        latency_us.max() as f64 / 1000.0,
    );
    verify(&client, &pool, created, failed).await
}

/// Every created transfer moved 1 point out of and into the pool: the pool's debits must
/// equal its credits and equal the count created (exactly once), unless some outcome is
/// unknown (a failed request), in which case the count may be higher by at most that.
async fn verify(
    client: &Client,
    pool: &[u128],
    created: u64,
    failed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut debits, mut credits) = (0_u128, 0_u128);
    for chunk in pool.chunks(8190) {
        for a in client.lookup_accounts(chunk).await? {
            debits += u128_of(a.debits_posted);
            credits += u128_of(a.credits_posted);
        }
    }
    let created = u128::from(created);
    let ok = debits == credits && debits >= created && debits <= created + u128::from(failed);
    println!(
        "verify: pool debits={debits} credits={credits} acknowledged={created} -> {}",
        if ok { "OK" } else { "FAILED" }
    );
    if ok { Ok(()) } else { Err("verification failed".into()) }
}
