//! A day in a points mall, through the client library against a running cluster.
//!
//! Run `tallyd dev` first (the README's first command), then:
//! `cargo run --release -p tally-client --example points_mall [endpoints]`
//! (endpoints default to `TALLY_ENDPOINTS` or the dev cluster's `127.0.0.1:7001-7003`).
//!
//! Creates an institution's issuance and expiry accounts, a merchant, an item's stock (two
//! fuel cards) and three members; each member earns 500 points and redeems a fuel card for
//! 300 (points linked with one unit of stock). The third redemption finds the stock empty,
//! so both of its legs fail together. Year-end expiry takes what member 1 has left. Every
//! id carries a per-run nonce, so the example can run again on the same cluster. Exits
//! non-zero if any outcome or balance differs from the script.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tally_client::loyalty::{Earn, Expire, Redemption, StockLeg, earn, expire, redeem};
use tally_client::{Client, account_succeeded, v1};
use tally_proto::{u128_of, uint128};

const POINTS: u32 = 1;
const UNITS: u32 = 2;

fn account(id: u128, ledger: u32, flags: u32) -> v1::Account {
    v1::Account { id: uint128(id), ledger, code: 1, flags, ..Default::default() }
}

fn status_names(results: &[v1::CreateTransferResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            v1::CreateTransferStatus::try_from(r.status)
                .map_or_else(|_| r.status.to_string(), |s| s.as_str_name().to_owned())
        })
        .collect()
}

/// No transfer applied (each refused, with its own status).
fn refused(results: &[v1::CreateTransferResult]) -> bool {
    !results.is_empty() && !results.iter().any(|r| tally_client::transfer_succeeded(r.status))
}

/// Every transfer exists as asked: `created`, or `exists` when the client resent the
/// request after an attempt whose reply was lost had applied it.
fn created(results: &[v1::CreateTransferResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| tally_client::transfer_succeeded(r.status))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TALLY_ENDPOINTS").ok())
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let client = Client::builder(endpoints.split(',').map(str::to_owned))
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(3))
        .build()?;
    // High 64 bits of every id: this run's nonce.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let run = u128::from(u64::try_from(nanos >> 8)?) << 64;
    let (issuance, merchant, expiry, stock, warehouse) =
        (run | 1, run | 2, run | 3, run | 10, run | 11);
    let members = [run | 100, run | 101, run | 102];
    let item = |member: u128| member + 1_000;

    let no_overdraft = v1::AccountFlag::DebitsMustNotExceedCredits as u32;
    let mut accounts = vec![
        account(issuance, POINTS, 0),
        account(merchant, POINTS, 0),
        account(expiry, POINTS, 0),
        account(stock, UNITS, no_overdraft),
        account(warehouse, UNITS, 0),
    ];
    for member in members {
        accounts.push(account(member, POINTS, no_overdraft | v1::AccountFlag::History as u32));
        accounts.push(account(item(member), UNITS, 0));
    }
    let results = client.create_accounts(accounts).await?;
    let ok = results.iter().filter(|r| account_succeeded(r.status)).count();
    println!("accounts: {ok} of {} created (endpoints {endpoints})", results.len());
    let mut script_ok = ok == results.len();

    let stock_in = v1::Transfer {
        id: uint128(run | 1),
        debit_account_id: uint128(warehouse),
        credit_account_id: uint128(stock),
        amount: uint128(2),
        ledger: UNITS,
        code: 1,
        ..Default::default()
    };
    let mut day: Vec<(String, Vec<v1::Transfer>, bool)> =
        vec![("2 fuel cards into stock".into(), vec![stock_in], true)];
    for (i, member) in members.into_iter().enumerate() {
        let e = Earn {
            transfer_id: member + 10_000,
            issuance_account: issuance,
            member_account: member,
            points: 500,
            ledger: POINTS,
            code: 1,
            pending_timeout_s: 0,
            reference: 0,
        };
        day.push((format!("member {}: earn 500", i + 1), vec![earn(&e)], true));
        let leg = StockLeg {
            transfer_id: member + 30_000,
            stock_account: stock,
            member_item_account: item(member),
            ledger: UNITS,
            code: 2,
        };
        let r = Redemption {
            transfer_id: member + 20_000,
            member_account: member,
            merchant_account: merchant,
            points: 300,
            ledger: POINTS,
            code: 2,
            order_id: 9_000 + i as u128,
            stock: Some(leg),
        };
        // The third redemption finds the stock empty: both linked legs must fail.
        day.push((format!("member {}: redeem a fuel card", i + 1), redeem(&r), i < 2));
    }
    let x = Expire {
        transfer_id: run | 40,
        member_account: members[0],
        expiry_account: expiry,
        points_max: 1_000,
        ledger: POINTS,
        code: 3,
    };
    day.push(("member 1: year-end expiry (up to 1000)".into(), vec![expire(&x)], true));

    for (what, transfers, should_apply) in day {
        let results = client.create_transfers(transfers).await?;
        let as_expected = if should_apply { created(&results) } else { refused(&results) };
        script_ok &= as_expected;
        let mark = if as_expected { "ok" } else { "UNEXPECTED" };
        println!("{what:<40} {:?} {mark}", status_names(&results));
    }

    let expected = [(0, 1), (200, 1), (500, 0)];
    for (i, member) in members.into_iter().enumerate() {
        let found = client.lookup_accounts(&[member, item(member)]).await?;
        let [account, cards_account] = found.as_slice() else {
            return Err(format!("member {}: {} of its 2 accounts found", i + 1, found.len()).into());
        };
        let points = u128_of(account.credits_posted) - u128_of(account.debits_posted);
        let cards = u128_of(cards_account.credits_posted);
        script_ok &= (points, cards) == expected[i];
        println!("member {}: {points} points, {cards} fuel card(s)", i + 1);
    }
    if !script_ok {
        return Err("the cluster's outcomes differ from the script (see UNEXPECTED above)".into());
    }
    println!("every outcome as scripted");
    Ok(())
}
