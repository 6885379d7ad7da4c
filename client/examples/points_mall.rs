//! A day in a points mall, applied to the ledger core in-process and audited.
//!
//! Run: `cargo run --release -p tally-client --example points_mall`
//!
//! Builds the transfers with the client's loyalty helpers, sends them through the same
//! wire conversion the node uses, applies them to the deterministic state machine, and
//! prints each outcome, the balances, the independent audit and the state digest. No
//! network yet: the replicated `tallyd` cluster comes next.

use tally_client::loyalty::{Earn, Expire, Redemption, StockLeg, earn, expire, redeem};
use tally_client::v1;
use tally_node::convert::{account_from_proto, transfer_from_proto};
use tally_node::ledger::{AccountId, MemoryStore, StateMachine};
use tally_proto::uint128;

const POINTS: u32 = 1;
const UNITS: u32 = 2;
const ISSUANCE: u128 = 1;
const MERCHANT: u128 = 2;
const EXPIRY: u128 = 3;
const STOCK: u128 = 10;
const WAREHOUSE: u128 = 11;
const MEMBERS: [u128; 3] = [100, 101, 102];

fn account(id: u128, ledger: u32, flags: u32) -> v1::Account {
    v1::Account { id: uint128(id), ledger, code: 1, flags, ..Default::default() }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let no_overdraft = v1::AccountFlag::DebitsMustNotExceedCredits as u32;
    let mut accounts = vec![
        account(ISSUANCE, POINTS, 0),
        account(MERCHANT, POINTS, 0),
        account(EXPIRY, POINTS, 0),
        account(STOCK, UNITS, no_overdraft),
        account(WAREHOUSE, UNITS, 0),
    ];
    for member in MEMBERS {
        accounts.push(account(member, POINTS, no_overdraft | v1::AccountFlag::History as u32));
        accounts.push(account(member + 1_000, UNITS, 0));
    }
    let mut ledger = StateMachine::new(MemoryStore::new());
    let mut now_ns = 1_700_000_000_000_000_000_u64;
    let decoded: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| account_from_proto(i, a))
        .collect::<Result<_, _>>()?;
    let created = ledger.create_accounts(now_ns, &decoded)?;
    println!("accounts: {} created", created.iter().filter(|r| r.status.code() == 0).count());

    let mut day: Vec<(&str, Vec<v1::Transfer>)> = Vec::new();
    let stock_in = v1::Transfer {
        id: uint128(1),
        debit_account_id: uint128(WAREHOUSE),
        credit_account_id: uint128(STOCK),
        amount: uint128(2),
        ledger: UNITS,
        code: 1,
        ..Default::default()
    };
    day.push(("2 fuel cards into stock", vec![stock_in]));
    for (i, member) in MEMBERS.into_iter().enumerate() {
        let e = Earn {
            transfer_id: 10 + member,
            issuance_account: ISSUANCE,
            member_account: member,
            points: 500,
            ledger: POINTS,
            code: 1,
            pending_timeout_s: 0,
            reference: 0,
        };
        day.push(("earn 500 from card spend", vec![earn(&e)]));
        let leg = StockLeg {
            transfer_id: 30 + member,
            stock_account: STOCK,
            member_item_account: member + 1_000,
            ledger: UNITS,
            code: 2,
        };
        let r = Redemption {
            transfer_id: 20 + member,
            member_account: member,
            merchant_account: MERCHANT,
            points: 300,
            ledger: POINTS,
            code: 2,
            order_id: 9_000 + i as u128,
            stock: Some(leg),
        };
        day.push(("redeem a fuel card for 300", redeem(&r)));
    }
    let x = Expire {
        transfer_id: 40,
        member_account: MEMBERS[0],
        expiry_account: EXPIRY,
        points_max: 1_000,
        ledger: POINTS,
        code: 3,
    };
    day.push(("year-end expiry (up to 1000)", vec![expire(&x)]));

    for (what, transfers) in day {
        now_ns += 1_000_000;
        let decoded: Vec<_> = transfers
            .iter()
            .enumerate()
            .map(|(i, t)| transfer_from_proto(i, t))
            .collect::<Result<_, _>>()?;
        let results = ledger.create_transfers(now_ns, &decoded)?;
        let statuses: Vec<_> = results.iter().map(|r| r.status.name()).collect();
        println!("{what:<32} {statuses:?}");
    }
    for member in MEMBERS {
        let a = ledger.lookup_accounts(&[AccountId(member)])[0];
        let units = ledger.lookup_accounts(&[AccountId(member + 1_000)])[0];
        println!(
            "member {member}: balance {} points, {} fuel card(s)",
            a.credits_posted - a.debits_posted,
            units.credits_posted
        );
    }
    let totals = ledger.audit()?;
    println!("audit: ok; points ledger debits = credits = {}", totals[&POINTS].debits_posted);
    println!("digest: {}", ledger.digest().iter().map(|b| format!("{b:02x}")).collect::<String>());
    Ok(())
}
