//! Cross-shard transactions against real nodes: all or nothing, idempotent, looked up as
//! the original transfer, no leg left pending; and (with the `failpoints` feature) a crash
//! of the coordinating node at each step, recovered.

use std::collections::BTreeMap;

use tally_client::Client;
use tally_proto::routing::shard_of;
use tally_proto::v1::{self, CreateAccountStatus as AS, CreateTransferStatus as TS};
use tally_proto::{u128_of, uint128};

use super::harness::*;

const SHARDS: u32 = 4;
const LEDGER: u32 = 11;
const DMNEC: u32 = v1::AccountFlag::DebitsMustNotExceedCredits as u32;

/// Four shards, fast elections and balancing, recovery after half a second.
pub const XSHARD: &str = "
shards = 4
txn_recovery_after_ms = 500
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
leader_balance_interval_ms = 200
";

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, flags: u32) -> v1::Transfer {
    v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(debit),
        credit_account_id: uint128(credit),
        amount: uint128(amount),
        ledger: LEDGER,
        code: 3,
        user_data_64: 42,
        flags,
        ..Default::default()
    }
}

/// The first 100 transfers crediting `account` (its history: legs included).
async fn credits_of(client: &Client, account: u128) -> Vec<v1::Transfer> {
    let filter = v1::AccountFilter {
        account_id: uint128(account),
        limit: 100,
        flags: v1::AccountFilterFlag::Credits as u32,
        ..Default::default()
    };
    client.get_account_transfers(filter).await.unwrap()
}

/// On each shard: a bank account (no limits) and a member (no overdraft), by shard.
pub async fn people(client: &Client) -> BTreeMap<u32, (u128, u128)> {
    let mut by_shard: BTreeMap<u32, Vec<u128>> = BTreeMap::new();
    for id in 1_u128.. {
        let ids = by_shard.entry(shard_of(id, SHARDS)).or_default();
        if ids.len() < 2 {
            ids.push(id);
        }
        if by_shard.len() == SHARDS as usize && by_shard.values().all(|v| v.len() == 2) {
            break;
        }
    }
    let accounts = by_shard
        .values()
        .flat_map(|ids| {
            [(ids[0], 0), (ids[1], DMNEC)].map(|(id, flags)| v1::Account {
                id: uint128(id),
                ledger: LEDGER,
                code: 1,
                flags,
                ..Default::default()
            })
        })
        .collect();
    // `exists`: an earlier attempt of the client applied it (a part failed during the
    // cluster's first leadership moves, and the client resent the request).
    let results = client.create_accounts(accounts).await.unwrap();
    assert!(results.iter().all(|r| tally_client::account_succeeded(r.status)), "{results:?}");
    by_shard.into_iter().map(|(s, ids)| (s, (ids[0], ids[1]))).collect()
}

/// Account `id` on `ledger` with `flags`, code 1.
fn account(id: u128, ledger: u32, flags: u32) -> v1::Account {
    v1::Account { id: uint128(id), ledger, code: 1, flags, ..Default::default() }
}

/// (debits_pending, debits_posted, credits_pending, credits_posted) of each of `ids`.
pub async fn sums(client: &Client, ids: &[u128]) -> Vec<(u128, u128, u128, u128)> {
    let found = client.lookup_accounts(ids).await.unwrap();
    assert_eq!(found.len(), ids.len());
    found
        .iter()
        .map(|a| {
            (
                u128_of(a.debits_pending),
                u128_of(a.debits_posted),
                u128_of(a.credits_pending),
                u128_of(a.credits_posted),
            )
        })
        .collect()
}

/// Waits until every replica of every shard has applied what its leader had applied
/// (the replicas' digests then agree: conservation per ledger on every shard).
async fn converge_every_shard(cluster: &Cluster) {
    for shard in 1..=SHARDS {
        let map = cluster.list_shards(1).await.unwrap();
        let leader = map.shard_infos.iter().find(|s| s.shard_id == shard).unwrap().leader_id;
        let applied = cluster.shard_status(leader, shard, false).await.unwrap().applied_index;
        cluster.wait_shard_converged(shard, &[1, 2, 3], applied).await;
    }
}

/// Waits until every node sees every shard led by its preferred node. After a restart
/// the leaderships move back one by one, and node 1's view can be balanced while another
/// node has not yet learnt of a move: a request sent by a raw (non-resending) client then
/// may meet `NotLeader` (seen once in CI, 2026-12-04: `OutcomeUnknown` wrapping `NotLeader`
/// with no leader hint, right after node 1's restart).
#[cfg(feature = "failpoints")]
async fn settled_after_restart(cluster: &Cluster) {
    for via in 1..=3 {
        super::shards::wait_balanced(cluster, via).await;
    }
}

/// A 4-shard cluster ([`XSHARD`]) whose leaders have settled, with [`people`] on every
/// shard and shard 1's member funded with 100. Leaders settle first: a part that meets a
/// leadership move is resent by the client, and an event its first attempt applied then
/// reads `exists`, not `created`.
async fn four_shards_funded() -> (Cluster, Client, BTreeMap<u32, (u128, u128)>) {
    four_shards_funded_with(XSHARD).await
}

/// [`four_shards_funded`] with `config` (e.g. [`XSHARD`] and more).
async fn four_shards_funded_with(config: &str) -> (Cluster, Client, BTreeMap<u32, (u128, u128)>) {
    let cluster = Cluster::start(3, config);
    super::shards::wait_balanced(&cluster, 1).await;
    let client = cluster.client();
    let p = people(&client).await;
    let fund = transfer(1, p[&1].0, p[&1].1, 100, 0);
    let funded = client.create_transfers(vec![fund]).await.unwrap()[0].status;
    assert!(tally_client::transfer_succeeded(funded), "{funded}");
    (cluster, client, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_transfers_and_chains_are_all_or_nothing() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (cluster, client, p) = four_shards_funded().await;
    let (m1, m2, m3, m4) = (p[&1].1, p[&2].1, p[&3].1, p[&4].1);

    // One transfer across shards: created; resent: exists; looked up as sent.
    let x = transfer(10, m1, m2, 30, 0);
    let first = client.create_transfers(vec![x]).await.unwrap();
    assert_eq!(first[0].status, TS::Created as i32, "{first:?}");
    let again = client.create_transfers(vec![x]).await.unwrap();
    assert_eq!(again[0].status, TS::Exists as i32, "{again:?}");
    // A different transfer reusing the id: refused as such, nothing moves, nothing of the
    // first one is touched (its own legs and decision derive from its content).
    let reused = client.create_transfers(vec![transfer(10, m1, m3, 5, 0)]).await.unwrap();
    let name = TS::try_from(reused[0].status).map(|s| s.as_str_name()).unwrap_or("?");
    assert!(name.starts_with("CREATE_TRANSFER_STATUS_EXISTS_WITH_DIFFERENT"), "{reused:?}");
    let found = client.lookup_transfers(&[10]).await.unwrap();
    assert_eq!(found.len(), 1);
    let t = &found[0];
    assert_eq!((u128_of(t.debit_account_id), u128_of(t.credit_account_id)), (m1, m2));
    assert_eq!(
        (u128_of(t.amount), t.ledger, t.code, t.user_data_64, t.flags),
        (30, LEDGER, 3, 42, 0)
    );
    assert_eq!(
        sums(&client, &[m1, m2, m3]).await,
        vec![(0, 30, 0, 100), (0, 0, 0, 30), (0, 0, 0, 0)]
    );

    // A chain across three shards whose second transfer overdraws: nothing applies, no
    // reservation is left, each event says why.
    let linked = v1::TransferFlag::Linked as u32;
    let chain = vec![transfer(20, m1, m3, 50, linked), transfer(21, m2, m4, 31, 0)];
    let results = client.create_transfers(chain).await.unwrap();
    let statuses: Vec<i32> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::LinkedEventFailed as i32, TS::ExceedsCredits as i32]);
    assert_eq!(
        sums(&client, &[m1, m2, m3, m4]).await,
        vec![(0, 30, 0, 100), (0, 0, 0, 30), (0, 0, 0, 0), (0, 0, 0, 0)]
    );
    assert!(client.lookup_transfers(&[20, 21]).await.unwrap().is_empty());
    // As on one shard, the overdrawing transfer's id is burnt and the other's is not: the
    // same chain resent reads `id_already_failed` for it (not a generic cause), and so does
    // another transfer from the same account reusing the id, even one that could pay.
    let resent = vec![transfer(20, m1, m3, 50, linked), transfer(21, m2, m4, 31, 0)];
    let statuses: Vec<i32> =
        client.create_transfers(resent).await.unwrap().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::LinkedEventFailed as i32, TS::IdAlreadyFailed as i32]);
    let reused = client.create_transfers(vec![transfer(21, m2, m4, 1, 0)]).await.unwrap();
    assert_eq!(reused[0].status, TS::IdAlreadyFailed as i32, "{reused:?}");
    assert_eq!(
        sums(&client, &[m1, m2, m3, m4]).await,
        vec![(0, 30, 0, 100), (0, 0, 0, 30), (0, 0, 0, 0), (0, 0, 0, 0)]
    );

    // The same chain within the members' means: all of it applies, with a single-shard
    // transfer in the same request.
    let chain = vec![
        transfer(30, m1, m3, 50, linked),
        transfer(31, m2, m4, 30, 0),
        transfer(32, p[&3].0, m3, 7, 0),
    ];
    let results = client.create_transfers(chain).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    assert_eq!(
        sums(&client, &[m1, m2, m3, m4]).await,
        vec![(0, 80, 0, 100), (0, 30, 0, 30), (0, 0, 0, 57), (0, 0, 0, 30)]
    );
    let found = client.lookup_transfers(&[31, 30]).await.unwrap();
    let ids: Vec<u128> = found.iter().map(|t| u128_of(t.id)).collect();
    assert_eq!(ids, vec![31, 30]);
    assert_eq!(found[1].flags, linked, "the chain's first transfer reads back linked");

    // A lookup of many cross-shard transfers rebuilds them all with one lookup per shard
    // (it used to cost a fan-out per transfer: a few thousand ran past every deadline).
    let many: Vec<v1::Transfer> = (0..40).map(|i| transfer(100 + i, p[&1].0, m2, 1, 0)).collect();
    let results = client.create_transfers(many).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    let ids: Vec<u128> = (100..140).rev().collect();
    let before = cluster.forwarded_parts().await;
    let found = client.lookup_transfers(&ids).await.unwrap();
    let forwarded = cluster.forwarded_parts().await - before;
    assert_eq!(found.iter().map(|t| u128_of(t.id)).collect::<Vec<_>>(), ids);
    assert!(found.iter().all(|t| u128_of(t.credit_account_id) == m2 && u128_of(t.amount) == 1));
    // At most the lookup's own fan-out and the legs' fan-out, one part per shard each
    // (one per transfer would be 40 times that).
    assert!(forwarded <= u64::from(2 * SHARDS), "{forwarded} parts forwarded for one lookup");

    // A pending transfer crosses shards alone (cross_shard_pending_transfers_...), not
    // in a chain: such a chain is refused whole.
    let pending = transfer(40, m1, m2, 1, v1::TransferFlag::Pending as u32 | linked);
    let chained = vec![pending, transfer(41, m2, m3, 1, 0)];
    let refused = client.create_transfers(chained).await.unwrap_err();
    assert!(refused.to_string().contains("a pending transfer alone"), "{refused}");

    // A client that first creates a transfer of its own under the decision leg's id of the
    // transfer it is about to send (leg ids are a public function of the request) gets no
    // "posted" out of it: the id holds no decision leg, the transaction is void, and the
    // credit on the other shard is voided, not posted.
    // Its second transfer, whose alias on m2's shard was prepared, is not looked up as
    // made either.
    let linked = v1::TransferFlag::Linked as u32;
    let xs = [transfer(60, m1, m2, 5, linked), transfer(62, m2, m3, 1, 0)];
    let wire: Vec<_> =
        xs.iter().map(|x| tally_node::convert::transfer_from_proto(0, x).unwrap()).collect();
    let decision =
        tally_node::service::xshard::leg_id(tally_node::service::xshard::digest(&wire), 0, 0);
    let before = sums(&client, &[m1, m2, m3]).await;
    let squat = transfer(decision.0, p[&1].0, m1, 0, 0);
    let squatted = client.create_transfers(vec![squat]).await.unwrap();
    assert_eq!(squatted[0].status, TS::Created as i32, "{squatted:?}");
    let results = client.create_transfers(xs.to_vec()).await.unwrap();
    assert!(results.iter().all(|r| r.status != TS::Created as i32), "{results:?}");
    assert_eq!(sums(&client, &[m1, m2, m3]).await, before, "nothing moved, nothing reserved");
    assert!(client.lookup_transfers(&[60]).await.unwrap().is_empty());
    assert!(client.lookup_transfers(&[62]).await.unwrap().is_empty());
    // The same through every node: one of them does not lead the primary and reads the
    // decision leg's neighbour there (a routed read of the alias account, which exists on
    // every shard; it was refused `WrongShard`, and recovery of such transactions with it).
    for endpoint in cluster.endpoints() {
        use tally_proto::v1::ledger_service_client::LedgerServiceClient;
        let mut node = LedgerServiceClient::connect(format!("http://{endpoint}")).await.unwrap();
        let ids = vec![uint128(62).unwrap()];
        let found = node.lookup_transfers(v1::LookupTransfersRequest { ids }).await.unwrap();
        assert!(found.into_inner().transfers.is_empty(), "through {endpoint}");
    }

    // Tally's own codes and ledgers are refused in a client's events (a client transfer
    // with a move's code was never burnt; one on the alias accounts' ledger could pass for
    // an alias and hold recovery up).
    let moved = transfer(61, m1, m2, 1, 0);
    let refused = client
        .create_transfers(vec![v1::Transfer { code: u32::from(u16::MAX - 2), ..moved }])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("reserved for Tally"), "{refused}");
    let refused = client
        .create_transfers(vec![v1::Transfer { ledger: u32::MAX, ..moved }])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("ledgers 4294967294..=4294967295"), "{refused}");
    let account =
        v1::Account { id: uint128(0xACC), ledger: u32::MAX, code: 1, ..Default::default() };
    let refused = client.create_accounts(vec![account]).await.unwrap_err();
    assert!(refused.to_string().contains("reserved for Tally"), "{refused}");

    // A client cannot resolve a leg (legs are listed in their accounts' histories): a post
    // or void of one reads `pending_transfer_reserved` — even of a leg already posted, so
    // nothing about it is told — burns nothing and moves nothing; one with the id Tally
    // derives for its own resolution is refused whole at the edge.
    let history = credits_of(&client, m2).await;
    let leg = history
        .iter()
        .find(|t| t.flags & v1::TransferFlag::Pending as u32 != 0)
        .map(|t| u128_of(t.id))
        .expect("m2's history lists the credit leg of transfer 10");
    let before = sums(&client, &[m1, m2]).await;
    let resolve = |id: u128, flag: v1::TransferFlag| v1::Transfer {
        id: uint128(id),
        pending_id: uint128(leg),
        amount: uint128(if flag == v1::TransferFlag::PostPendingTransfer { u128::MAX } else { 0 }),
        flags: flag as u32,
        ..Default::default()
    };
    for _ in 0..2 {
        let results = client
            .create_transfers(vec![
                resolve(50, v1::TransferFlag::VoidPendingTransfer),
                resolve(51, v1::TransferFlag::PostPendingTransfer),
            ])
            .await
            .unwrap();
        let statuses: Vec<i32> = results.iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![TS::PendingTransferReserved as i32; 2], "{results:?}");
    }
    assert_eq!(sums(&client, &[m1, m2]).await, before);
    // The same for a leg between two client accounts (a transfer of the chain whose
    // accounts share a shard other than the primary): it carries the leg timeout, which
    // marks it, and a client's pending transfer may not.
    let linked = v1::TransferFlag::Linked as u32;
    let chain = vec![transfer(70, m1, m2, 1, linked), transfer(71, p[&2].0, m2, 1, 0)];
    let results = client.create_transfers(chain).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    let history = credits_of(&client, m2).await;
    let same_shard_leg = history
        .iter()
        .find(|t| u128_of(t.debit_account_id) == p[&2].0 && t.timeout == u32::MAX)
        .map(|t| u128_of(t.id))
        .expect("m2's history lists transfer 71's leg");
    let void = v1::Transfer {
        id: uint128(72),
        pending_id: uint128(same_shard_leg),
        flags: v1::TransferFlag::VoidPendingTransfer as u32,
        ..Default::default()
    };
    let results = client.create_transfers(vec![void]).await.unwrap();
    assert_eq!(results[0].status, TS::PendingTransferReserved as i32, "{results:?}");
    let marked = v1::Transfer {
        timeout: u32::MAX,
        ..transfer(73, p[&2].0, m2, 1, v1::TransferFlag::Pending as u32)
    };
    let refused = client.create_transfers(vec![marked]).await.unwrap_err();
    assert!(refused.to_string().contains("marks Tally's own legs"), "{refused}");
    let before = sums(&client, &[m1, m2]).await;
    use tally_node::ledger::{TransferId, internal};
    let own_void = internal::void_id(TransferId(leg)).0;
    let refused = client
        .create_transfers(vec![resolve(own_void, v1::TransferFlag::VoidPendingTransfer)])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("derives for its own resolutions"), "{refused}");
    assert_eq!(sums(&client, &[m1, m2]).await, before);

    // Every shard's replicas agree.
    converge_every_shard(&cluster).await;
}

/// A pending transfer whose accounts live on two shards keeps TigerBeetle's semantics:
/// both sides reserved, resolved once by a post (in part too) or a void sent through any
/// node and naming either account or none, each refusal the ledger's own status, an
/// expiry that releases both sides, and lookups that show it and its post as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_pending_transfers_are_posted_voided_and_expire_as_on_one_shard() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (cluster, client, p) = four_shards_funded().await;
    let (m1, m2, m3, m4) = (p[&1].1, p[&2].1, p[&3].1, p[&4].1);
    let pending = |id, debit, credit, amount, timeout| v1::Transfer {
        timeout,
        ..transfer(id, debit, credit, amount, v1::TransferFlag::Pending as u32)
    };
    let resolve = |id: u128, of: u128, amount: u128, flag: v1::TransferFlag| v1::Transfer {
        id: uint128(id),
        pending_id: uint128(of),
        amount: uint128(amount),
        flags: flag as u32,
        ..Default::default()
    };
    let post = v1::TransferFlag::PostPendingTransfer;
    let void = v1::TransferFlag::VoidPendingTransfer;
    let status = |results: Vec<v1::CreateTransferResult>| results[0].status;

    // Created: both sides reserved; resent: exists; looked up as sent.
    let x = pending(200, m1, m2, 30, 0);
    assert_eq!(status(client.create_transfers(vec![x]).await.unwrap()), TS::Created as i32);
    assert_eq!(status(client.create_transfers(vec![x]).await.unwrap()), TS::Exists as i32);
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(30, 0, 0, 100), (0, 0, 30, 0)]);
    let found = client.lookup_transfers(&[200]).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let t = &found[0];
    assert_eq!((u128_of(t.debit_account_id), u128_of(t.credit_account_id)), (m1, m2));
    assert_eq!(
        (u128_of(t.amount), t.flags, t.timeout, t.ledger, t.code, t.user_data_64),
        (30, v1::TransferFlag::Pending as u32, 0, LEDGER, 3, 42)
    );
    // A client cannot resolve its legs (listed in the members' histories) directly.
    let history = credits_of(&client, m2).await;
    let credit_leg = history.iter().find(|t| u128_of(t.amount) == 30).expect("the credit leg");
    let direct = resolve(199, u128_of(credit_leg.id), u128::MAX, post);
    let results = client.create_transfers(vec![direct]).await.unwrap();
    assert_eq!(status(results), TS::PendingTransferReserved as i32);

    // An imported post is not carried across shards (imported transfers do not cross
    // them): `pending_transfer_not_pending` where it landed, nothing moves.
    let imported_post = v1::Transfer {
        flags: post as u32 | v1::TransferFlag::Imported as u32,
        timestamp: now_ns(),
        ..resolve(198, 200, 30, post)
    };
    let results = client.create_transfers(vec![imported_post]).await.unwrap();
    assert_eq!(status(results), TS::PendingTransferNotPending as i32);
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(30, 0, 0, 100), (0, 0, 30, 0)]);

    // Refusals are the ledger's own and change nothing: more than reserved, an account
    // that is not X's (the credit side is checked where it lives), a different ledger.
    let too_much = resolve(201, 200, 31, post);
    assert_eq!(
        status(client.create_transfers(vec![too_much]).await.unwrap()),
        TS::ExceedsPendingTransferAmount as i32
    );
    let elsewhere = v1::Transfer {
        debit_account_id: uint128(m1),
        credit_account_id: uint128(m3),
        ..resolve(202, 200, 1, post)
    };
    assert_eq!(
        status(client.create_transfers(vec![elsewhere]).await.unwrap()),
        TS::PendingTransferHasDifferentCreditAccountId as i32
    );
    let ledger = v1::Transfer { ledger: LEDGER + 1, ..resolve(203, 200, 1, post) };
    assert_eq!(
        status(client.create_transfers(vec![ledger]).await.unwrap()),
        TS::PendingTransferHasDifferentLedger as i32
    );
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(30, 0, 0, 100), (0, 0, 30, 0)]);

    // Posted in part (naming its debit account, so it lands on the debit shard): 10 move,
    // the rest of both reservations is released. Resent: exists. A second post and a void
    // read what one shard says.
    let y = v1::Transfer { debit_account_id: uint128(m1), ..resolve(204, 200, 10, post) };
    assert_eq!(status(client.create_transfers(vec![y]).await.unwrap()), TS::Created as i32);
    assert_eq!(status(client.create_transfers(vec![y]).await.unwrap()), TS::Exists as i32);
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(0, 10, 0, 100), (0, 0, 0, 10)]);
    let again = resolve(205, 200, u128::MAX, post);
    assert_eq!(
        status(client.create_transfers(vec![again]).await.unwrap()),
        TS::PendingTransferAlreadyPosted as i32
    );
    // A second post with another id reads what one shard says, whether its fields match
    // the first one's or ask for more than was reserved; nothing of it is stored.
    let same = resolve(207, 200, 10, post);
    assert_eq!(
        status(client.create_transfers(vec![same]).await.unwrap()),
        TS::PendingTransferAlreadyPosted as i32
    );
    let more = resolve(208, 200, 31, post);
    assert_eq!(
        status(client.create_transfers(vec![more]).await.unwrap()),
        TS::ExceedsPendingTransferAmount as i32
    );
    assert!(client.lookup_transfers(&[207, 208]).await.unwrap().is_empty());
    let late_void = resolve(206, 200, 0, void);
    assert_eq!(
        status(client.create_transfers(vec![late_void]).await.unwrap()),
        TS::PendingTransferAlreadyPosted as i32
    );
    // Another transfer reusing the post's id is told so.
    let reused = resolve(204, 200, 9, post);
    let name = TS::try_from(status(client.create_transfers(vec![reused]).await.unwrap()))
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    assert!(name.starts_with("CREATE_TRANSFER_STATUS_EXISTS_WITH_DIFFERENT"), "{name}");
    let found = client.lookup_transfers(&[204, 200]).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let y = &found[0];
    assert_eq!(
        (u128_of(y.pending_id), u128_of(y.debit_account_id), u128_of(y.credit_account_id)),
        (200, m1, m2)
    );
    assert_eq!((u128_of(y.amount), y.flags), (10, post as u32));
    assert_eq!(found[1].flags, v1::TransferFlag::Pending as u32, "X still reads pending");
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(0, 10, 0, 100), (0, 0, 0, 10)]);

    // Voided, naming only its credit account (it lands on the credit shard, by the marker
    // there): both reservations released, nothing moves.
    let x = pending(210, m1, m3, 20, 0);
    assert_eq!(status(client.create_transfers(vec![x]).await.unwrap()), TS::Created as i32);
    assert_eq!(sums(&client, &[m1, m3]).await, vec![(20, 10, 0, 100), (0, 0, 20, 0)]);
    let y = v1::Transfer { credit_account_id: uint128(m3), ..resolve(211, 210, 0, void) };
    assert_eq!(status(client.create_transfers(vec![y]).await.unwrap()), TS::Created as i32);
    assert_eq!(sums(&client, &[m1, m3]).await, vec![(0, 10, 0, 100), (0, 0, 0, 0)]);
    let after = resolve(212, 210, u128::MAX, post);
    assert_eq!(
        status(client.create_transfers(vec![after]).await.unwrap()),
        TS::PendingTransferAlreadyVoided as i32
    );

    // One that overdraws is refused as on one shard, and reserves nothing; a post of it
    // finds nothing.
    let overdraw = pending(220, m2, m4, 1_000, 0);
    assert_eq!(
        status(client.create_transfers(vec![overdraw]).await.unwrap()),
        TS::ExceedsCredits as i32
    );
    let ghost = resolve(221, 220, u128::MAX, post);
    let results = client.create_transfers(vec![ghost]).await.unwrap();
    assert_eq!(status(results), TS::PendingTransferNotFound as i32);
    assert_eq!(sums(&client, &[m2, m4]).await, vec![(0, 0, 0, 10), (0, 0, 0, 0)]);

    // Its id already taken on the credit shard (by a transfer there): refused as such,
    // nothing reserved.
    let there = transfer(240, p[&2].0, m2, 1, 0);
    assert_eq!(status(client.create_transfers(vec![there]).await.unwrap()), TS::Created as i32);
    let taken = pending(240, m1, m2, 1, 0);
    let name = TS::try_from(status(client.create_transfers(vec![taken]).await.unwrap()))
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    assert!(name.starts_with("CREATE_TRANSFER_STATUS_EXISTS_WITH_DIFFERENT"), "{name}");
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(0, 10, 0, 100), (0, 0, 0, 11)]);

    // With a timeout: it expires on its debit shard, and the credit side's reservation is
    // released by the debit shard's leader (its recovery watch, within a pass of the
    // expiry), with no request to drive it; a post after that reads expired.
    let x = pending(230, m1, m4, 5, 1);
    assert_eq!(status(client.create_transfers(vec![x]).await.unwrap()), TS::Created as i32);
    assert_eq!(sums(&client, &[m1, m4]).await, vec![(5, 10, 0, 100), (0, 0, 5, 0)]);
    eventually("both sides are released", std::time::Duration::from_secs(20), || {
        let client = &client;
        async move {
            let now = sums(client, &[m1, m4]).await;
            (now == vec![(0, 10, 0, 100), (0, 0, 0, 0)]).then_some(())
        }
    })
    .await;
    // It left the watch (a node reports the count as of its last recovery tick).
    eventually("the watch is empty", std::time::Duration::from_secs(10), || {
        let cluster = &cluster;
        async move { (cluster.pending_watched().await == 0).then_some(()) }
    })
    .await;
    let late = resolve(231, 230, u128::MAX, post);
    assert_eq!(
        status(client.create_transfers(vec![late]).await.unwrap()),
        TS::PendingTransferExpired as i32
    );
    assert_eq!(sums(&client, &[m1, m4]).await, vec![(0, 10, 0, 100), (0, 0, 0, 0)]);

    // Tally's records whose ids a client chooses — the alias of its own cross-shard
    // transfer, a post's or void's resolution alias — never pass for a decision leg: a
    // transaction whose decision-leg id one of them took first is void, its credit never
    // posted (both read `created`, the credit made from nothing, before the check).
    use tally_node::service::xshard::{digest, leg_id};
    let decision_of = |t: &v1::Transfer| {
        leg_id(digest(&[tally_node::convert::transfer_from_proto(0, t).unwrap()]), 0, 0).0
    };
    let x = pending(250, m1, m3, 1, 0);
    assert_eq!(status(client.create_transfers(vec![x]).await.unwrap()), TS::Created as i32);
    for (i, squat) in [transfer(0, m1, m3, 1, 0), resolve(0, 250, 0, void)].into_iter().enumerate()
    {
        let target = transfer(260 + i as u128, m1, m2, 5, 0);
        let squat = v1::Transfer { id: uint128(decision_of(&target)), ..squat };
        let squatted = client.create_transfers(vec![squat]).await.unwrap();
        assert_eq!(status(squatted), TS::Created as i32, "squat {i}");
        let before = sums(&client, &[m1, m2]).await;
        let results = client.create_transfers(vec![target]).await.unwrap();
        assert_ne!(results[0].status, TS::Created as i32, "squat {i}: {results:?}");
        assert_eq!(sums(&client, &[m1, m2]).await, before, "squat {i}: nothing moved");
        assert!(client.lookup_transfers(&[260 + i as u128]).await.unwrap().is_empty());
    }

    // Every shard's replicas agree.
    converge_every_shard(&cluster).await;
}

/// The watch of pending transfers' expiries is bounded (`pending_watch_max`, here 2): with
/// 6 cross-shard pending transfers waiting to expire, the debit shard's leader watches 2
/// and remembers where the walk passed the rest; as the watched ones expire and leave, the
/// overflow walk takes up the others. Every credit side is released, and the watch never
/// holds more than its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_watch_is_bounded_and_takes_up_what_it_passed() {
    const WATCH_MAX: u64 = 2;
    const PENDING: u128 = 6;
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let config = format!("pending_watch_max = {WATCH_MAX}\n{XSHARD}");
    let (cluster, client, p) = four_shards_funded_with(&config).await;
    let (m1, m4) = (p[&1].1, p[&4].1);
    // A timeout the recovery walk (aliases older than 500 ms, a pass a second) meets
    // before it runs out: each must be watched, or passed while the watch is full.
    let pending: Vec<v1::Transfer> = (0..PENDING)
        .map(|i| v1::Transfer {
            timeout: 4,
            ..transfer(400 + i, m1, m4, 1, v1::TransferFlag::Pending as u32)
        })
        .collect();
    let results = client.create_transfers(pending).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    let reserved = vec![(PENDING, 0, 0, 100), (0, 0, PENDING, 0)];
    assert_eq!(sums(&client, &[m1, m4]).await, reserved);

    let limit = std::time::Duration::from_secs(30);
    let watched = || async {
        let n = cluster.pending_watched().await;
        assert!(n <= WATCH_MAX, "{n} pending transfers watched, above the bound {WATCH_MAX}");
        n
    };
    eventually("the watch is full", limit, || async {
        (watched().await == WATCH_MAX).then_some(())
    })
    .await;
    // Both sides of all six are released: the 2 watched as they expire, the 4 passed by
    // the overflow walk once the watch has room.
    eventually("every pending transfer's both sides are released", limit, || async {
        watched().await;
        let now = sums(&client, &[m1, m4]).await;
        (now == vec![(0, 0, 0, 100), (0, 0, 0, 0)]).then_some(())
    })
    .await;
    eventually("the watch is empty", limit, || async { (watched().await == 0).then_some(()) })
        .await;
    let posts: Vec<v1::Transfer> = (0..PENDING)
        .map(|i| v1::Transfer {
            id: uint128(500 + i),
            pending_id: uint128(400 + i),
            amount: uint128(u128::MAX),
            flags: v1::TransferFlag::PostPendingTransfer as u32,
            ..Default::default()
        })
        .collect();
    let results = client.create_transfers(posts).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::PendingTransferExpired as i32), "{results:?}");
    converge_every_shard(&cluster).await;
}

/// A client cannot take, ahead of Tally, the id with which Tally resolves a leg: the ids
/// Tally derives for its posts and voids of legs lie in a range no client transfer may
/// use (§3d). A plain transfer under the id of the post that completes a pending
/// transfer's credit leg, made before the client's post, would leave the credit leg
/// pending for good (the member debited, the credit never arriving); it is refused, and
/// the post then completes both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_take_the_ids_tally_resolves_legs_with() {
    use tally_node::ledger::{TransferId, internal};
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (cluster, client, p) = four_shards_funded().await;
    let (m1, m2) = (p[&1].1, p[&2].1);
    let pending = v1::TransferFlag::Pending as u32;
    let created = client.create_transfers(vec![transfer(300, m1, m2, 10, pending)]).await;
    assert_eq!(created.unwrap()[0].status, TS::Created as i32);

    // The legs are listed in the members' histories.
    let debits = v1::AccountFilter {
        account_id: uint128(m1),
        limit: 100,
        flags: v1::AccountFilterFlag::Debits as u32,
        ..Default::default()
    };
    let debits = client.get_account_transfers(debits).await.unwrap();
    let leg = |history: &[v1::Transfer]| {
        let leg = history.iter().find(|t| u128_of(t.amount) == 10 && t.flags == pending);
        TransferId(u128_of(leg.expect("a pending leg of 10").id))
    };
    let (x_d, x_c) = (leg(&debits), leg(&credits_of(&client, m2).await));
    assert_ne!(x_d, x_c);

    // Plain transfers under the ids of Tally's completion of the credit leg (on its shard,
    // between shard 2's accounts) and of a client's post of the debit leg (shard 1): each
    // refused whole, before anything is done.
    let squats = [(internal::post_id(x_c), p[&2]), (internal::client_post_id(x_d), p[&1])];
    for (id, (bank, member)) in squats {
        let before = sums(&client, &[bank, member]).await;
        let refused = client
            .create_transfers(vec![transfer(id.0, bank, member, 1, 0)])
            .await
            .expect_err("a transfer id in Tally's resolution range");
        let message = refused.to_string();
        let rejected = matches!(
            refused,
            tally_client::ClientError::Rejected { code: tonic::Code::InvalidArgument, .. }
        );
        assert!(rejected, "{message}");
        assert!(message.contains("reserved for Tally's resolutions"), "{message}");
        assert!(message.contains(&format!("{:#x}", id.0)), "{message}");
        assert_eq!(sums(&client, &[bank, member]).await, before);
        assert!(client.lookup_transfers(&[id.0]).await.unwrap().is_empty());
    }

    // The post ends both legs: m1 pays 10, m2 receives 10, nothing stays pending.
    let post = v1::Transfer {
        id: uint128(301),
        pending_id: uint128(300),
        amount: uint128(u128::MAX),
        flags: v1::TransferFlag::PostPendingTransfer as u32,
        ..Default::default()
    };
    let posted = client.create_transfers(vec![post]).await.unwrap();
    assert_eq!(posted[0].status, TS::Created as i32, "{posted:?}");
    assert_eq!(sums(&client, &[m1, m2]).await, vec![(0, 10, 0, 100), (0, 0, 0, 10)]);
    converge_every_shard(&cluster).await;
}

/// Two institutions' accounts for swaps, on four shards: member A (ledger `LEDGER`, 100
/// points), pool A, pool B (ledger `LEDGER + 1`, 1000 points) and member B, on shards 1 to
/// 4.
struct Institutions {
    member_a: u128,
    pool_a: u128,
    pool_b: u128,
    member_b: u128,
}

impl Institutions {
    /// A swap of `points` (ids `give`, `give + 1`) at `rate`, quote 0xABC expiring at
    /// `expires_at`.
    fn swap(
        &self,
        give: u128,
        points: u128,
        rate: (u64, u32),
        rounding: v1::Rounding,
        expires_at: u64,
    ) -> tally_client::loyalty::Swap {
        tally_client::loyalty::Swap {
            give_id: give,
            receive_id: give + 1,
            member_a_account: self.member_a,
            pool_a_account: self.pool_a,
            ledger_a: LEDGER,
            code_a: 7,
            pool_b_account: self.pool_b,
            member_b_account: self.member_b,
            ledger_b: LEDGER + 1,
            code_b: 8,
            points,
            rate,
            rounding,
            quote_id: 0xABC,
            quote_expires_at: expires_at,
        }
    }
}

/// Creates and funds [`Institutions`] (a bank beside member A and one beside pool B).
async fn institutions(client: &Client) -> Institutions {
    let (ledger_a, ledger_b) = (LEDGER, LEDGER + 1);
    let on = |shard: u32, skip: u128| (skip..).find(|&id| shard_of(id, SHARDS) == shard).unwrap();
    let (member_a, pool_a, pool_b, member_b) = (on(1, 1), on(2, 1), on(3, 1), on(4, 1));
    let (bank_a, bank_b) = (on(1, member_a + 1), on(3, pool_b + 1));
    let accounts = vec![
        account(member_a, ledger_a, DMNEC),
        account(pool_a, ledger_a, 0),
        account(bank_a, ledger_a, 0),
        account(pool_b, ledger_b, DMNEC),
        account(member_b, ledger_b, 0),
        account(bank_b, ledger_b, 0),
    ];
    let created = client.create_accounts(accounts).await.unwrap();
    assert!(created.iter().all(|r| tally_client::account_succeeded(r.status)), "{created:?}");
    let fund = vec![
        transfer(1, bank_a, member_a, 100, 0),
        v1::Transfer { ledger: ledger_b, ..transfer(2, bank_b, pool_b, 1000, 0) },
    ];
    let funded = client.create_transfers(fund).await.unwrap();
    assert!(funded.iter().all(|r| r.status == TS::Created as i32), "{funded:?}");
    Institutions { member_a, pool_a, pool_b, member_b }
}

/// Nanoseconds since the Unix epoch by this machine's clock (the nodes' cluster time).
fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

/// A swap whose four accounts live on four shards: both transfers or neither, the rate's
/// rounding and the quote stored, a resend reads `exists`, an expired quote is refused;
/// then a batch of swaps, each refused or made on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_between_institutions_are_all_or_nothing_across_shards() {
    use tally_client::loyalty::{self, Swap};

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, XSHARD);
    super::shards::wait_balanced(&cluster, 1).await;
    let client = cluster.client();
    let inst = institutions(&client).await;
    let (member_a, pool_a, pool_b, member_b) =
        (inst.member_a, inst.pool_a, inst.pool_b, inst.member_b);
    let swap = |give: u128, points: u128, rate: (u64, u32), rounding: v1::Rounding| {
        inst.swap(give, points, rate, rounding, now_ns() + 60_000_000_000)
    };
    let (ledger_a, ledger_b) = (LEDGER, LEDGER + 1);
    let balances = || async { sums(&client, &[member_a, pool_a, pool_b, member_b]).await };

    // 31 points at 3/2 = 46.5, half-even: 46 received. Both transfers, all four shards.
    let first = swap(10, 31, (3, 2), v1::Rounding::HalfEven);
    let reply = client.swap(loyalty::swap(&first)).await.unwrap();
    let statuses: Vec<i32> = reply.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::Created as i32; 2], "{reply:?}");
    assert_eq!(u128_of(reply.amount_received), 46);
    let after_first = vec![(0, 31, 0, 100), (0, 0, 0, 31), (0, 46, 0, 1000), (0, 0, 0, 46)];
    assert_eq!(balances().await, after_first);
    // Stored as agreed: quote, expiry and rounding on the give transfer, the rate on the
    // receive transfer.
    let found = client.lookup_transfers(&[10, 11]).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let (give, receive) = (&found[0], &found[1]);
    assert_eq!(
        (u128_of(give.debit_account_id), u128_of(give.credit_account_id)),
        (member_a, pool_a)
    );
    assert_eq!((u128_of(give.amount), give.ledger, give.code), (31, ledger_a, 7));
    assert_eq!(u128_of(give.user_data_128), 0xABC);
    assert_eq!(give.user_data_64, first.quote_expires_at);
    assert_eq!(give.user_data_32, v1::Rounding::HalfEven as u32);
    assert_eq!((u128_of(receive.amount), receive.ledger, receive.code), (46, ledger_b, 8));
    assert_eq!((receive.user_data_64, receive.user_data_32), (3, 2));

    // Resent: exists, nothing moves again.
    let again = client.swap(loyalty::swap(&first)).await.unwrap();
    assert!(again.results.iter().all(|r| r.status == TS::Exists as i32), "{again:?}");
    assert_eq!(balances().await, after_first);

    // The member cannot give more than they have; the pool cannot pay more than it
    // holds: neither transfer applies, each result says why.
    let too_much = client.swap(loyalty::swap(&swap(20, 70, (1, 1), v1::Rounding::Down))).await;
    let statuses: Vec<i32> = too_much.unwrap().results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::ExceedsCredits as i32, TS::LinkedEventFailed as i32]);
    let pool_short = client.swap(loyalty::swap(&swap(30, 10, (100, 1), v1::Rounding::Up))).await;
    let statuses: Vec<i32> = pool_short.unwrap().results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::LinkedEventFailed as i32, TS::ExceedsCredits as i32]);
    assert_eq!(balances().await, after_first);

    // An expired quote is refused before anything is created.
    let stale = Swap {
        quote_expires_at: now_ns() - 1_000_000_000,
        ..swap(40, 1, (1, 1), v1::Rounding::Down)
    };
    let refused = client.swap(loyalty::swap(&stale)).await.unwrap_err();
    assert!(refused.to_string().contains("TALLY:QuoteExpired"), "{refused}");
    assert!(client.lookup_transfers(&[40, 41]).await.unwrap().is_empty());
    assert_eq!(balances().await, after_first);

    // A swap with a bad rate is refused at the edge, naming the field.
    let zero = client.swap(loyalty::swap(&swap(50, 1, (1, 0), v1::Rounding::Down))).await;
    assert!(zero.unwrap_err().to_string().contains("rate_denominator"));

    // A batch of swaps (SwapBatch): each all-or-nothing on its own, one result each. 60
    // is made; 62 is refused by the ledger (more than the member has); 64 (a bad rate),
    // 66 (reuses 61, an id of swap 0 of the batch) and 68 (quote expired) are refused
    // alone; the resent first swap reads exists.
    let down = v1::Rounding::Down;
    let batch: Vec<v1::SwapRequest> = [
        swap(60, 2, (1, 1), down),
        swap(62, 500, (1, 1), down),
        swap(64, 1, (1, 0), down),
        Swap { receive_id: 61, ..swap(66, 1, (1, 1), down) },
        Swap { quote_expires_at: now_ns() - 1_000_000_000, ..swap(68, 1, (1, 1), down) },
        first,
    ]
    .iter()
    .map(loyalty::swap)
    .collect();
    let results = client.swap_batch(batch.clone()).await.unwrap();
    assert_eq!(results.len(), 6, "{results:?}");
    let statuses = |r: &v1::SwapResult| r.results.iter().map(|t| t.status).collect::<Vec<_>>();
    let (none, invalid, expired) = (
        v1::SwapRefusal::None as i32,
        v1::SwapRefusal::Invalid as i32,
        v1::SwapRefusal::QuoteExpired as i32,
    );
    assert_eq!((results[0].refusal, statuses(&results[0])), (none, vec![TS::Created as i32; 2]));
    assert_eq!(u128_of(results[0].amount_received), 2);
    assert_eq!(
        (results[1].refusal, statuses(&results[1])),
        (none, vec![TS::ExceedsCredits as i32, TS::LinkedEventFailed as i32])
    );
    assert_eq!(results[2].refusal, invalid);
    assert!(results[2].message.contains("rate_denominator"), "{:?}", results[2]);
    assert_eq!(results[3].refusal, invalid);
    assert!(results[3].message.contains("used by swap 0"), "{:?}", results[3]);
    assert_eq!(results[4].refusal, expired);
    assert!(results[4].message.contains("TALLY:QuoteExpired"), "{:?}", results[4]);
    assert!(results[4].results.is_empty(), "{:?}", results[4]);
    assert_eq!((results[5].refusal, statuses(&results[5])), (none, vec![TS::Exists as i32; 2]));
    // Only swap 60 moved points (2 at 1/1).
    let after_batch = vec![(0, 33, 0, 100), (0, 0, 0, 33), (0, 48, 0, 1000), (0, 0, 0, 48)];
    assert_eq!(balances().await, after_batch);
    let refused_ids: Vec<u128> = (62..70).collect();
    assert!(client.lookup_transfers(&refused_ids).await.unwrap().is_empty());
    // Resent whole: the made swap reads exists and nothing moves again.
    let again = client.swap_batch(batch).await.unwrap();
    assert_eq!(statuses(&again[0]), vec![TS::Exists as i32; 2], "{again:?}");
    assert!(!statuses(&again[1]).contains(&(TS::Created as i32)), "{again:?}");
    assert_eq!(balances().await, after_batch);
    // An empty batch is refused by the client before sending.
    assert!(client.swap_batch(Vec::new()).await.is_err());

    // Both pools and transit accounts balance: conservation per ledger on every shard.
    converge_every_shard(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_accounts_keep_redemptions_on_one_shard_and_never_oversell() {
    use tally_proto::routing::spread_account_id;

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, XSHARD);
    super::shards::wait_balanced(&cluster, 1).await;
    let client = cluster.client();
    let p = people(&client).await;
    let units = LEDGER + 1;
    let (merchant, stock, delivered, supply) =
        (spread_account_id(1), spread_account_id(2), spread_account_id(3), spread_account_id(4));
    let spread = account;
    let accounts = vec![
        spread(merchant, LEDGER, 0),
        spread(stock, units, DMNEC),
        spread(delivered, units, 0),
        spread(supply, units, 0),
    ];
    // Created on every shard; a resend reads `exists`; a spread account cannot be linked.
    let created = client.create_accounts(accounts.clone()).await.unwrap();
    assert!(created.iter().all(|r| r.status == AS::Created as i32), "{created:?}");
    let again = client.create_accounts(accounts).await.unwrap();
    assert!(again.iter().all(|r| r.status == AS::Exists as i32), "{again:?}");
    let linked = v1::Account { flags: v1::AccountFlag::Linked as u32, ..spread(9 << 100, 1, 0) };
    let chained = vec![linked, spread(spread_account_id(5), 1, 0)];
    let refused = client.create_accounts(chained).await.unwrap_err().to_string();
    assert!(refused.contains("spread") && refused.contains("linked"), "{refused}");

    // 5 units into one slice (two spread accounts: the transfer id's shard); 100 points
    // to each member on its own shard.
    let stocked = v1::Transfer { ledger: units, ..transfer(1, supply, stock, 5, 0) };
    let mut setup = vec![stocked];
    for (i, (bank, member)) in p.values().enumerate() {
        setup.push(transfer(10 + i as u128, *bank, *member, 100, 0));
    }
    let done = client.create_transfers(setup).await.unwrap();
    assert!(done.iter().all(|r| r.status == TS::Created as i32), "{done:?}");
    assert_eq!(sums(&client, &[stock]).await, vec![(0, 0, 0, 5)]);

    // 8 redemptions of 10 points and one unit, two per member on four shards, at once:
    // 3 slices start dry, so redemptions there wait for units moved from the stocked
    // slice; exactly 5 succeed, and the other 3 are refused as sold out.
    let linked = v1::TransferFlag::Linked as u32;
    let redemption = |n: u128, member: u128| {
        vec![
            transfer(100 + 2 * n, member, merchant, 10, linked),
            v1::Transfer { ledger: units, ..transfer(101 + 2 * n, stock, delivered, 1, 0) },
        ]
    };
    let members: Vec<u128> = p.values().map(|(_, member)| *member).collect();
    let orders: Vec<Vec<v1::Transfer>> =
        (0..8).map(|n| redemption(n, members[n as usize % 4])).collect();
    let replies = futures_util::future::join_all(
        orders.iter().map(|order| client.create_transfers(order.clone())),
    )
    .await;
    let mut sold = 0;
    let mut refused = Vec::new();
    for (order, reply) in orders.iter().zip(replies) {
        let statuses: Vec<i32> = reply.unwrap().iter().map(|r| r.status).collect();
        if statuses == [TS::Created as i32; 2] {
            sold += 1;
        } else {
            let sold_out = [TS::LinkedEventFailed as i32, TS::ExceedsCredits as i32];
            assert_eq!(statuses, sold_out, "a redemption is sold or sold out");
            refused.push(order.clone());
        }
    }
    assert_eq!((sold, refused.len()), (5, 3));
    // Sums: 50 points to the merchant, 5 units delivered, none left; the stock's debits
    // and credits both count the units moved between its slices.
    let totals = sums(&client, &[merchant, delivered, stock]).await;
    assert_eq!(&totals[..2], &[(0, 0, 0, 50), (0, 0, 0, 5)]);
    let (pending_out, out, pending_in, into) = totals[2];
    assert_eq!((pending_out, pending_in, into - out), (0, 0, 0), "{totals:?}");
    assert!(out >= 5, "{totals:?}");
    // A refused redemption's unit leg burnt its id, as on one shard: a resend cannot sell
    // later, even after a restock.
    let restock = v1::Transfer { ledger: units, ..transfer(2, supply, stock, 5, 0) };
    assert_eq!(client.create_transfers(vec![restock]).await.unwrap()[0].status, 0);
    let resent: Vec<i32> = client
        .create_transfers(refused[0].clone())
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(resent, [TS::LinkedEventFailed as i32, TS::IdAlreadyFailed as i32]);

    // Orders whose chain takes two units, unit legs first (linked): a dry slice is refilled
    // with both; with 5 units, two orders are sold and the third, finding 1 unit, is sold
    // out: the dry leg (whichever of the two) is refused and its id burnt although it is
    // linked to the rest of its chain.
    let member = members[1];
    let double = |n: u128| {
        vec![
            v1::Transfer { ledger: units, ..transfer(200 + 3 * n, stock, delivered, 1, linked) },
            v1::Transfer { ledger: units, ..transfer(201 + 3 * n, stock, delivered, 1, linked) },
            transfer(202 + 3 * n, member, merchant, 10, 0),
        ]
    };
    for n in 0..2 {
        let done = client.create_transfers(double(n)).await.unwrap();
        assert!(done.iter().all(|r| r.status == TS::Created as i32), "{done:?}");
    }
    let statuses = |results: Vec<v1::CreateTransferResult>| -> Vec<i32> {
        results.iter().map(|r| r.status).collect()
    };
    let third = statuses(client.create_transfers(double(2)).await.unwrap());
    let dry = third.iter().position(|&s| s == TS::ExceedsCredits as i32).expect("sold out");
    assert!(dry < 2, "{third:?}");
    let others = (0..3).filter(|&i| i != dry).map(|i| third[i]);
    assert!(others.clone().all(|s| s == TS::LinkedEventFailed as i32), "{third:?}");
    let again = statuses(client.create_transfers(double(2)).await.unwrap());
    assert_eq!(again[dry], TS::IdAlreadyFailed as i32, "{again:?}");
    let (_, out, _, into) = sums(&client, &[stock]).await[0];
    assert_eq!(into - out, 1, "one unit left");

    // A swap through spread pools, B's pool limited to what it holds: the receive leg
    // draws on B's pool's slice beside the member's B account (another shard than the
    // member's A account: a cross-shard transaction), refilled from the slice that holds
    // the pool's points; a swap the whole pool cannot pay is refused.
    let ledger_b = LEDGER + 2;
    let (pool_a, pool_b, bank_b) =
        (spread_account_id(6), spread_account_id(7), spread_account_id(8));
    let giver = members[2];
    // Not the giver's shard, nor the shard the pool's funding lands on (two spread
    // accounts: the transfer id's shard), so the slice it draws on starts dry.
    let member_b = (1000..)
        .find(|&id| ![shard_of(giver, SHARDS), shard_of(3, SHARDS)].contains(&shard_of(id, SHARDS)))
        .unwrap();
    let institutions = vec![
        spread(pool_a, LEDGER, 0),
        spread(pool_b, ledger_b, DMNEC),
        spread(bank_b, ledger_b, 0),
        v1::Account { id: uint128(member_b), ledger: ledger_b, code: 1, ..Default::default() },
    ];
    let created = client.create_accounts(institutions).await.unwrap();
    assert!(created.iter().all(|r| r.status == AS::Created as i32), "{created:?}");
    let fund = v1::Transfer { ledger: ledger_b, ..transfer(3, bank_b, pool_b, 30, 0) };
    assert_eq!(client.create_transfers(vec![fund]).await.unwrap()[0].status, 0);
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let swap = |give: u128, points: u128| tally_client::loyalty::Swap {
        give_id: give,
        receive_id: give + 1,
        member_a_account: giver,
        pool_a_account: pool_a,
        ledger_a: LEDGER,
        code_a: 7,
        pool_b_account: pool_b,
        member_b_account: member_b,
        ledger_b,
        code_b: 8,
        points,
        rate: (1, 1),
        rounding: v1::Rounding::Down,
        quote_id: give,
        quote_expires_at: u64::try_from(expires.as_nanos()).unwrap() + 60_000_000_000,
    };
    let paid = client.swap(tally_client::loyalty::swap(&swap(300, 10))).await.unwrap();
    assert_eq!(statuses(paid.results), [TS::Created as i32; 2]);
    let unpaid = client.swap(tally_client::loyalty::swap(&swap(302, 25))).await.unwrap();
    assert_eq!(statuses(unpaid.results), [TS::LinkedEventFailed as i32, TS::ExceedsCredits as i32]);
    let pools = sums(&client, &[pool_b, member_b]).await;
    let (pending_out, out, pending_in, into) = pools[0];
    assert_eq!((pending_out, pending_in, into - out, pools[1]), (0, 0, 20, (0, 0, 0, 10)));

    // Each redemption ran on its member's shard: the member's history holds the points
    // leg itself (a cross-shard transaction would show its legs, with other ids).
    let history = client
        .get_account_transfers(v1::AccountFilter {
            account_id: uint128(members[0]),
            limit: 10,
            flags: v1::AccountFilterFlag::Debits as u32,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<u128> = history.iter().map(|t| u128_of(t.id)).collect();
    let first_orders: Vec<u128> = orders
        .iter()
        .step_by(4)
        .map(|o| u128_of(o[0].id))
        .filter(|id| !refused.iter().any(|r| u128_of(r[0].id) == *id))
        .collect();
    assert!(first_orders.iter().all(|id| ids.contains(id)), "{ids:x?} {first_orders:x?}");
    // The spread merchant's history merges its slices: every sold points leg.
    let credits = client
        .get_account_transfers(v1::AccountFilter {
            account_id: uint128(merchant),
            limit: 100,
            flags: v1::AccountFilterFlag::Credits as u32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(credits.len(), 7, "5 redemptions and 2 double orders: {credits:?}");
    assert!(credits.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    // Every shard converges (conservation per ledger is checked by the replicas' digest).
    converge_every_shard(&cluster).await;
}

/// A 3-node cluster (`config`) whose node 1 runs with `failpoints`; its four people
/// (`people`), with the second person of shard 2 funded with 100; a raw connection to
/// node 1 (no retries: the test sees exactly what node 1 answered).
#[cfg(feature = "failpoints")]
struct Coordinated {
    cluster: Cluster,
    client: Client,
    raw: tally_proto::v1::ledger_service_client::LedgerServiceClient<tonic::transport::Channel>,
    /// People on shards 2, 3 and 4; the first holds 100.
    m: (u128, u128, u128),
}

#[cfg(feature = "failpoints")]
async fn coordinated(config: &str, failpoints: &str) -> Coordinated {
    use tally_proto::v1::ledger_service_client::LedgerServiceClient;

    let mut cluster = Cluster::start(3, config);
    let client = cluster.client();
    let p = people(&client).await;
    let (m2, m3, m4) = (p[&2].1, p[&3].1, p[&4].1);
    let fund = transfer(1, p[&2].0, m2, 100, 0);
    let funded = client.create_transfers(vec![fund]).await.unwrap()[0].status;
    assert!(tally_client::transfer_succeeded(funded), "{funded}");
    cluster.stop(1);
    cluster.spawn_with(1, &[("FAILPOINTS", failpoints)]);
    settled_after_restart(&cluster).await;
    let raw = eventually("node 1 serves again", std::time::Duration::from_secs(20), || {
        let addr = format!("http://{}", cluster.addr(1));
        async move { LedgerServiceClient::connect(addr).await.ok() }
    })
    .await;
    Coordinated { cluster, client, raw, m: (m2, m3, m4) }
}

/// The chain node 1 coordinates: 40 from shard 2 to shard 3, linked to 10 from shard 2
/// to shard 4.
#[cfg(feature = "failpoints")]
fn the_chain((m2, m3, m4): (u128, u128, u128)) -> Vec<v1::Transfer> {
    vec![transfer(50, m2, m3, 40, v1::TransferFlag::Linked as u32), transfer(51, m2, m4, 10, 0)]
}

/// Sends `transfers` to node 1 until it fails with an error naming `cause` (true), at most
/// 5 times: a request must fail, and is resent (same ids) if it failed elsewhere first,
/// e.g. during a leadership move.
#[cfg(feature = "failpoints")]
async fn fails_with(
    raw: &mut tally_proto::v1::ledger_service_client::LedgerServiceClient<
        tonic::transport::Channel,
    >,
    transfers: &[v1::Transfer],
    cause: &str,
) -> bool {
    for _ in 0..5 {
        let request = v1::CreateTransfersRequest { transfers: transfers.to_vec() };
        let error = raw.create_transfers(request).await.expect_err("the request fails");
        if error.message().contains(cause) {
            return true;
        }
        eprintln!("resending after {error:?}");
    }
    false
}

/// Crashes the coordinating node at `failpoint` in the middle of a cross-shard transfer,
/// restarts it, and checks the transfer ends all or nothing (`applied` says which) with
/// no reservation left on any shard.
#[cfg(feature = "failpoints")]
async fn crash_at(failpoint: &str, applied: bool) {
    crash_behind(failpoint, applied, 0, XSHARD).await;
}

/// [`crash_at`], with `filler` zero-amount transfers on shard 2 (the primary) created just
/// before the transaction, under `config`.
#[cfg(feature = "failpoints")]
async fn crash_behind(failpoint: &str, applied: bool, filler: usize, config: &str) {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Node 1 coordinates a chain of two transfers with legs on shards 2, 3 and 4.
    let Coordinated { mut cluster, client, mut raw, m } =
        coordinated(config, &format!("{failpoint}=panic")).await;
    let (m2, m3, m4) = m;
    let issuer = (1_u128..).find(|&id| shard_of(id, SHARDS) == 2).expect("an id on shard 2");
    let ids: Vec<u128> = (1_000_000..).take(filler).collect();
    for part in ids.chunks(tally_proto::limits::BATCH_EVENTS_MAX as usize) {
        let zero = part.iter().map(|&id| transfer(id, issuer, m2, 0, 0)).collect();
        let made = client.create_transfers(zero).await.unwrap();
        assert!(made.iter().all(|r| tally_client::transfer_succeeded(r.status)));
    }
    let chain = the_chain(m);
    // Resent (same ids) if it failed before reaching the failpoint, e.g. during a
    // leadership move; node 1 must crash at the failpoint within a few tries.
    let mut exit = None;
    for _ in 0..5 {
        let request = v1::CreateTransfersRequest { transfers: chain.clone() };
        let outcome = raw.create_transfers(request).await;
        assert!(
            outcome.is_err(),
            "node 1 answered instead of crashing at {failpoint}: {outcome:?}"
        );
        exit = cluster.wait_exit(1, std::time::Duration::from_secs(3));
        if exit.is_some() {
            break;
        }
        eprintln!("resending after {outcome:?}");
    }
    let exit = exit.unwrap_or_else(|| panic!("node 1 never reached {failpoint}"));
    assert!(!exit.success(), "node 1 exited with {exit}");
    cluster.spawn(1);

    // Recovery (after txn_recovery_after_ms) finishes the transaction: no reservation is
    // left, and it applied entirely or not at all.
    let expected = if applied {
        vec![(0, 50, 0, 100), (0, 0, 0, 40), (0, 0, 0, 10)]
    } else {
        vec![(0, 0, 0, 100), (0, 0, 0, 0), (0, 0, 0, 0)]
    };
    eventually(
        "the transaction is resolved on every shard",
        std::time::Duration::from_secs(30),
        || {
            let (client, expected) = (&client, &expected);
            async move { (sums(client, &[m2, m3, m4]).await == *expected).then_some(()) }
        },
    )
    .await;
    let found = client.lookup_transfers(&[50, 51]).await.unwrap();
    assert_eq!(found.len(), if applied { 2 } else { 0 }, "{found:?}");
    // Resending it reads the decided outcome and changes nothing.
    let again = client.create_transfers(chain).await.unwrap();
    for r in &again {
        if applied {
            assert_eq!(r.status, TS::Exists as i32, "{again:?}");
        } else {
            assert_ne!(r.status, TS::Created as i32, "{again:?}");
        }
    }
    assert_eq!(sums(&client, &[m2, m3, m4]).await, expected);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_crash_after_the_first_leg_voids_the_transaction() {
    crash_at("coordinator::after_first_leg", false).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_crash_after_the_decision_posts_the_transaction() {
    crash_at("coordinator::after_decision", true).await;
}

/// Recovery walks a shard's transfers in passes of at most `RECOVERY_SCAN_MAX`: a decided
/// transaction created right behind more other transfers than one pass walks is still
/// found and finished (the pass that stops at the limit leaves its cursor there and the
/// next one goes on; seen in the nodes' logs: a pass of 65,536 transfers with no alias,
/// then the recovery 3 ms later in the same tick). It checks correctness, not speed.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_finds_a_transaction_behind_more_transfers_than_one_pass_walks() {
    let filler = tally_node::service::xshard::RECOVERY_SCAN_MAX + 10_000;
    // Old enough to recover after 3 s: the filler is created within that window, so the
    // passes that reach it meet many of its transfers at once.
    let config = XSHARD.replace("txn_recovery_after_ms = 500", "txn_recovery_after_ms = 3000");
    crash_behind("coordinator::after_decision", true, filler, &config).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_crash_between_resolutions_posts_the_transaction() {
    crash_at("coordinator::between_resolutions", true).await;
}

/// A decided transaction whose resolution fails (failpoint: the first resolution node 1
/// attempts returns `unavailable`) is resolved by node 1 in the background within
/// seconds, not left pending until recovery (set to 10 minutes here, so only the
/// background retry can resolve it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resolution_is_retried_in_the_background() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let config = XSHARD.replace("txn_recovery_after_ms = 500", "txn_recovery_after_ms = 600000");
    let Coordinated { cluster, client, mut raw, m } =
        coordinated(&config, "coordinator::resolution=1*return").await;
    let (m2, m3, m4) = m;
    let chain = the_chain(m);
    let failed_at_resolution =
        fails_with(&mut raw, &chain, "failpoint coordinator::resolution").await;
    assert!(failed_at_resolution, "node 1 never reached its resolution");
    let expected = vec![(0, 50, 0, 100), (0, 0, 0, 40), (0, 0, 0, 10)];
    eventually(
        "the background retry resolves every leg",
        std::time::Duration::from_secs(15),
        || {
            let (client, expected) = (&client, &expected);
            async move { (sums(client, &[m2, m3, m4]).await == *expected).then_some(()) }
        },
    )
    .await;
    let again = client.create_transfers(chain).await.unwrap();
    assert!(again.iter().all(|r| r.status == TS::Exists as i32), "{again:?}");
    assert_eq!(sums(&client, &[m2, m3, m4]).await, expected);
    converge_every_shard(&cluster).await;
}

/// A cross-shard transfer refused for a transient reason has its id burnt, as on one
/// shard, also when its first attempt ends before the burn (failpoint: its first
/// resolution fails, so the request fails): the resend reads `id_already_failed` and
/// burns it, so another transfer reusing the id is refused even though it could pay.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_burns_the_id_its_first_attempt_could_not() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let Coordinated { cluster, client, mut raw, m } =
        coordinated(XSHARD, "coordinator::resolution=1*return").await;
    let (m2, _, m4) = m;
    // m2 holds 100: 150 overdraws. The leg on shard 2 is refused, the one on shard 4 voided.
    let overdraw = [transfer(60, m2, m4, 150, 0)];
    let failed_at_resolution =
        fails_with(&mut raw, &overdraw, "failpoint coordinator::resolution").await;
    assert!(failed_at_resolution, "node 1 never reached its resolution");
    let again = client.create_transfers(overdraw.to_vec()).await.unwrap();
    assert_eq!(again[0].status, TS::IdAlreadyFailed as i32, "{again:?}");
    let reused = client.create_transfers(vec![transfer(60, m2, m4, 1, 0)]).await.unwrap();
    assert_eq!(reused[0].status, TS::IdAlreadyFailed as i32, "{reused:?}");
    let expected = vec![(0, 0, 0, 100), (0, 0, 0, 0)];
    eventually("every leg is resolved", std::time::Duration::from_secs(15), || {
        let (client, expected) = (&client, &expected);
        async move { (sums(client, &[m2, m4]).await == *expected).then_some(()) }
    })
    .await;
    converge_every_shard(&cluster).await;
}

/// One transaction of a request whose decision answer cannot be read (failpoint
/// `coordinator::decision_answer=1*return`: node 1 sees an answer no ledger gives for one
/// of the two) fails the request, but only after the other transaction's legs are
/// resolved: its units are not left reserved until recovery (10 minutes here). The one
/// left undecided is finished by a resend of the same request.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_decision_leaves_the_other_transactions_resolved() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let config = XSHARD.replace("txn_recovery_after_ms = 500", "txn_recovery_after_ms = 600000");
    let Coordinated { cluster, client, mut raw, m } =
        coordinated(&config, "coordinator::decision_answer=1*return").await;
    let (m2, m3, m4) = m;
    // Two transactions: the chain (50 linked to 51) and 52, 5 from shard 2 to shard 3.
    let mut transfers = the_chain(m);
    transfers.push(transfer(52, m2, m3, 5, 0));
    let unreadable = fails_with(&mut raw, &transfers, "deciding on the decision leg").await;
    assert!(unreadable, "node 1 never reached the decisions");
    // Per account (debits pending, debits posted, credits pending, credits posted). Both
    // decisions are made: each transaction's chain on its primary, shard 2 (m2's debits
    // of 40 and 10, and of 5, single-phase), is created; of the legs on the other shards,
    // those of the transaction whose answer was read are posted, the other's still pending.
    let chain_undecided = vec![(0, 55, 0, 100), (0, 0, 40, 5), (0, 0, 10, 0)];
    let single_undecided = vec![(0, 55, 0, 100), (0, 0, 5, 40), (0, 0, 0, 10)];
    let now = sums(&client, &[m2, m3, m4]).await;
    assert!(now == chain_undecided || now == single_undecided, "{now:?}");
    let again = client.create_transfers(transfers).await.unwrap();
    assert!(again.iter().all(|r| r.status == TS::Exists as i32), "{again:?}");
    let done = vec![(0, 55, 0, 100), (0, 0, 0, 45), (0, 0, 0, 10)];
    assert_eq!(sums(&client, &[m2, m3, m4]).await, done);
    converge_every_shard(&cluster).await;
}

/// A cross-shard swap whose quote expires while its legs are being prepared is decided
/// void (nothing applied) and reported `QUOTE_EXPIRED`, while the other swap of the same
/// batch is made: node 1, which takes the batch, pauses 4.5 s after preparing (failpoint
/// `return(4500)`: an async pause), past the first quote's expiry (3 s after it was sent)
/// but not the second's. The margins are wide so that a loaded machine cannot change the
/// story: the first swap arrives with more than `QUOTE_TIME_LEFT_MIN_NS` of its quote left
/// unless sending it takes 2 s, and expires 1.5 s before the pause ends.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_that_expires_before_the_decision_voids_only_its_swap() {
    use tally_client::loyalty;
    use tally_proto::v1::ledger_service_client::LedgerServiceClient;

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Recovery must not void the paused transactions first (XSHARD's is after 0.5 s).
    let config = XSHARD.replace("txn_recovery_after_ms = 500", "txn_recovery_after_ms = 10000");
    let mut cluster = Cluster::start(3, &config);
    let client = cluster.client();
    let inst = institutions(&client).await;
    cluster.stop(1);
    cluster.spawn_with(1, &[("FAILPOINTS", "coordinator::after_first_leg=return(4500)")]);
    settled_after_restart(&cluster).await;
    let mut raw = eventually("node 1 serves again", std::time::Duration::from_secs(20), || {
        let addr = format!("http://{}", cluster.addr(1));
        async move { LedgerServiceClient::connect(addr).await.ok() }
    })
    .await;
    let down = v1::Rounding::Down;
    let swaps = vec![
        loyalty::swap(&inst.swap(70, 5, (1, 1), down, now_ns() + 3_000_000_000)),
        loyalty::swap(&inst.swap(72, 7, (1, 1), down, now_ns() + 60_000_000_000)),
    ];
    let reply = raw.swap_batch(v1::SwapBatchRequest { swaps }).await.unwrap().into_inner();
    let results = reply.results;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].refusal, v1::SwapRefusal::QuoteExpired as i32, "{results:?}");
    assert!(results[0].message.contains("TALLY:QuoteExpired"), "{results:?}");
    let voided: Vec<i32> = results[0].results.iter().map(|r| r.status).collect();
    let cause = vec![TS::PendingTransferExpired as i32, TS::LinkedEventFailed as i32];
    assert_eq!(voided, cause, "{results:?}");
    assert_eq!(results[1].refusal, v1::SwapRefusal::None as i32, "{results:?}");
    let made: Vec<i32> = results[1].results.iter().map(|r| r.status).collect();
    assert_eq!(made, vec![TS::Created as i32; 2], "{results:?}");
    // Only the second swap moved points; nothing of the first is stored or reserved.
    let ids = [inst.member_a, inst.pool_a, inst.pool_b, inst.member_b];
    let expected = vec![(0, 7, 0, 100), (0, 0, 0, 7), (0, 7, 0, 1000), (0, 0, 0, 7)];
    assert_eq!(sums(&client, &ids).await, expected);
    assert!(client.lookup_transfers(&[70, 71]).await.unwrap().is_empty());
    converge_every_shard(&cluster).await;
}

/// A swap on one shard whose pool B slice there is dry, and whose quote expires by the time
/// the slice could be refilled or the swap resent, is not proposed again: it reads
/// `QUOTE_EXPIRED` with no transfer results, nothing of it applies, and its give id is
/// burnt, so a resend never applies either. The shard's leader settles dry slices, also
/// for a swap taken by another node (which forwards the swaps' quotes with
/// `tally-swap-quotes`). Failpoint `spread::retry_clock=1*off->return`: on each node the
/// first quote check reads the clock, every later one finds every quote expired. So the
/// first swap, in a `SwapBatch` taken by another node beside a malformed swap and a swap
/// made on another shard, lapses on the leader after its refill (units moved, yet never
/// used by it); the second, in a `Swap` taken by the leader, lapses before any refill.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_swap_whose_quote_lapses_is_never_proposed_again() {
    use tally_client::loyalty;
    use tally_proto::routing::spread_account_id;
    use tally_proto::v1::ledger_service_client::LedgerServiceClient;

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let lapse_after_refill = [("FAILPOINTS", "spread::retry_clock=1*off->return")];
    let cluster = Cluster::start_with(3, XSHARD, &lapse_after_refill);
    let map = super::shards::wait_balanced(&cluster, 1).await;
    let client = cluster.client();
    let (ledger_a, ledger_b) = (LEDGER, LEDGER + 1);
    // Members (and bank A) on shards 2 and 3, B's pools' supply on shard 3: each pool holds
    // 1000 points, all in its shard-3 slice; its shard-2 slice is dry.
    let ids_on = |shard: u32| (1_u128..).filter(move |&id| shard_of(id, SHARDS) == shard);
    let mut on_2 = ids_on(2);
    let (member_a, member_b, bank_a) =
        (on_2.next().unwrap(), on_2.next().unwrap(), on_2.next().unwrap());
    let mut on_3 = ids_on(3);
    let (member_a3, member_b3, supply_b) =
        (on_3.next().unwrap(), on_3.next().unwrap(), on_3.next().unwrap());
    let (pool_a, pool_b, pool_b2) =
        (spread_account_id(21), spread_account_id(22), spread_account_id(23));
    let mut accounts = vec![
        account(bank_a, ledger_a, 0),
        account(pool_a, ledger_a, 0),
        account(pool_b, ledger_b, DMNEC),
        account(pool_b2, ledger_b, DMNEC),
        account(supply_b, ledger_b, 0),
    ];
    for (a, b) in [(member_a, member_b), (member_a3, member_b3)] {
        accounts.extend([account(a, ledger_a, DMNEC), account(b, ledger_b, 0)]);
    }
    let created = client.create_accounts(accounts).await.unwrap();
    assert!(created.iter().all(|r| tally_client::account_succeeded(r.status)), "{created:?}");
    let fund = vec![
        transfer(1, bank_a, member_a, 100, 0),
        transfer(2, bank_a, member_a3, 100, 0),
        v1::Transfer { ledger: ledger_b, ..transfer(3, supply_b, pool_b, 1000, 0) },
        v1::Transfer { ledger: ledger_b, ..transfer(4, supply_b, pool_b2, 1000, 0) },
    ];
    let funded = client.create_transfers(fund).await.unwrap();
    assert!(funded.iter().all(|r| r.status == TS::Created as i32), "{funded:?}");

    let leader = map.shard_infos.iter().find(|s| s.shard_id == 2).unwrap().leader_id;
    let other = (1..=3).find(|&n| n != leader).unwrap();
    let raw = |node: u64| {
        let addr = format!("http://{}", cluster.addr(node));
        async move { LedgerServiceClient::connect(addr).await.unwrap() }
    };
    let swap = |give: u128, members: (u128, u128), pool_b: u128| loyalty::Swap {
        give_id: give,
        receive_id: give + 1,
        member_a_account: members.0,
        pool_a_account: pool_a,
        ledger_a,
        code_a: 7,
        pool_b_account: pool_b,
        member_b_account: members.1,
        ledger_b,
        code_b: 8,
        points: 10,
        rate: (1, 1),
        rounding: v1::Rounding::Down,
        quote_id: 0xABC,
        quote_expires_at: now_ns() + 600_000_000_000,
    };
    let lapsing = swap(100, (member_a, member_b), pool_b);
    let made_on_3 = swap(300, (member_a3, member_b3), pool_b);
    let malformed = v1::SwapRequest {
        rate_numerator: 0,
        ..loyalty::swap(&swap(500, (member_a, member_b), pool_b))
    };
    let swaps = vec![malformed, loyalty::swap(&lapsing), loyalty::swap(&made_on_3)];
    let reply = raw(other).await.swap_batch(v1::SwapBatchRequest { swaps }).await.unwrap();
    let results = reply.into_inner().results;
    let refusals: Vec<i32> = results.iter().map(|r| r.refusal).collect();
    let expected = [v1::SwapRefusal::Invalid, v1::SwapRefusal::QuoteExpired, v1::SwapRefusal::None];
    assert_eq!(refusals, expected.map(|r| r as i32), "{results:?}");
    assert!(results[1].message.contains("TALLY:QuoteExpired"), "{results:?}");
    assert!(results[1].results.is_empty(), "nothing created: {results:?}");
    let made: Vec<i32> = results[2].results.iter().map(|r| r.status).collect();
    assert_eq!(made, vec![TS::Created as i32; 2], "{results:?}");

    let lapsing_2 = swap(200, (member_a, member_b), pool_b2);
    let refused = raw(leader).await.swap(loyalty::swap(&lapsing_2)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("TALLY:QuoteExpired"), "{refused}");

    // Only the swap on shard 3 moved points; B's pools' balances are whole. The shard's
    // leader settled both lapsing swaps (the batch's part came to it from the other node):
    // the first lapsed after its refill (units moved to shard 2), the second, on its next
    // clock reading, before any refill (nothing moved).
    let members = [member_a, member_b, member_a3, member_b3, pool_a];
    let expected =
        vec![(0, 0, 0, 100), (0, 0, 0, 0), (0, 10, 0, 100), (0, 0, 0, 10), (0, 0, 0, 10)];
    assert_eq!(sums(&client, &members).await, expected);
    let pools = sums(&client, &[pool_b, pool_b2]).await;
    let (pending_out, out, pending_in, into) = pools[0];
    // More than the 10 points the swap on shard 3 took: units moved to shard 2.
    assert!(pending_out == 0 && pending_in == 0 && out > 10 && into - out == 990, "{pools:?}");
    assert_eq!(pools[1], (0, 0, 0, 1000), "{pools:?}");
    // The same swaps again, through the other node each: their give ids are burnt.
    for (made, via) in [(lapsing, leader), (lapsing_2, other)] {
        let again = raw(via).await.swap(loyalty::swap(&made)).await.unwrap().into_inner();
        let statuses: Vec<i32> = again.results.iter().map(|r| r.status).collect();
        let burnt = vec![TS::IdAlreadyFailed as i32, TS::LinkedEventFailed as i32];
        assert_eq!(statuses, burnt, "via node {via}: {again:?}");
    }
    assert_eq!(sums(&client, &members[..2]).await, vec![(0, 0, 0, 100), (0, 0, 0, 0)]);
    assert!(client.lookup_transfers(&[100, 101, 200, 201]).await.unwrap().is_empty());
    converge_every_shard(&cluster).await;
}

/// A swap on one shard refused for its quote has its give id burnt after a lookup that
/// found nothing; an earlier attempt of it (here played by its two transfers, sent as a
/// chain) may apply between that lookup and the burn. Failpoint `swap::before_burn`
/// holds the burns of the node that took the swaps until the test, having applied in that
/// gap the first swap's chain exactly as the swap makes it and, for the second swap, an
/// unrelated transfer with its give id, releases them. The burns then find both ids taken: the first
/// swap is answered as applied (`exists`, with the timestamps stored), the second is
/// refused for its quote, and nothing is applied twice.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_swap_finds_an_attempt_applied_between_its_lookup_and_its_burn() {
    use tally_client::loyalty;
    use tally_proto::v1::ledger_service_client::LedgerServiceClient;

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // The burns are held until this file exists (at most the request's deadline).
    let release_dir = tempfile::tempdir().unwrap();
    let release = release_dir.path().join("release-burns");
    let hold_burns = format!("swap::before_burn=return({})", release.display());
    let cluster = Cluster::start_with(3, XSHARD, &[("FAILPOINTS", hold_burns.as_str())]);
    let map = super::shards::wait_balanced(&cluster, 1).await;
    let client = cluster.client();
    let (ledger_a, ledger_b) = (LEDGER, LEDGER + 1);
    // Every account on shard 2, so each swap is burnt there rather than run across shards.
    let mut on_2 = (1_u128..).filter(|&id| shard_of(id, SHARDS) == 2);
    let mut next = || on_2.next().unwrap();
    let (member_a, pool_a, bank_a) = (next(), next(), next());
    let (member_b, pool_b, bank_b) = (next(), next(), next());
    let accounts = vec![
        account(member_a, ledger_a, DMNEC),
        account(pool_a, ledger_a, 0),
        account(bank_a, ledger_a, 0),
        account(member_b, ledger_b, 0),
        account(pool_b, ledger_b, DMNEC),
        account(bank_b, ledger_b, 0),
    ];
    let created = client.create_accounts(accounts).await.unwrap();
    assert!(created.iter().all(|r| r.status == AS::Created as i32), "{created:?}");
    let fund = vec![
        transfer(1, bank_a, member_a, 100, 0),
        v1::Transfer { ledger: ledger_b, ..transfer(2, bank_b, pool_b, 1000, 0) },
    ];
    let funded = client.create_transfers(fund).await.unwrap();
    assert!(funded.iter().all(|r| r.status == TS::Created as i32), "{funded:?}");

    // Half a second of quote left: under the 1 s a swap needs, so both are late.
    let expires_at = now_ns() + 500_000_000;
    let swap = |give: u128| loyalty::Swap {
        give_id: give,
        receive_id: give + 1,
        member_a_account: member_a,
        pool_a_account: pool_a,
        ledger_a,
        code_a: 7,
        pool_b_account: pool_b,
        member_b_account: member_b,
        ledger_b,
        code_b: 8,
        points: 10,
        rate: (3, 2),
        rounding: v1::Rounding::Down,
        quote_id: 0xABC,
        quote_expires_at: expires_at,
    };
    let (applied, taken) = (loyalty::swap(&swap(100)), loyalty::swap(&swap(200)));
    // Taken by a node that does not lead shard 2: lookups and burns are forwarded.
    let leader = map.shard_infos.iter().find(|s| s.shard_id == 2).unwrap().leader_id;
    let via = (1..=3).find(|&n| n != leader).unwrap();
    let mut raw =
        LedgerServiceClient::connect(format!("http://{}", cluster.addr(via))).await.unwrap();
    let batch = v1::SwapBatchRequest { swaps: vec![applied, taken] };
    let swapping = tokio::spawn(async move { raw.swap_batch(batch).await });

    let log = cluster.start_args(via).0.join("tallyd.log");
    eventually("the burns are held", std::time::Duration::from_secs(20), || {
        let log = log.clone();
        async move {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            log.contains("failpoint swap::before_burn").then_some(())
        }
    })
    .await;
    // In the gap: the first swap's chain exactly as a swap makes it (an earlier attempt
    // applied late), and another transfer under the second swap's give id.
    let made = tally_node::service::swap::Swap::from_request(&applied).unwrap();
    let chain: Vec<v1::Transfer> =
        made.transfers.iter().map(tally_node::convert::transfer_to_proto).collect();
    let other = transfer(200, bank_a, member_a, 5, 0);
    let in_gap = client.create_transfers([chain, vec![other]].concat()).await.unwrap();
    let statuses: Vec<i32> = in_gap.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![TS::Created as i32; 3], "{in_gap:?}");
    assert!(!swapping.is_finished(), "the burns were released before the attempts applied");
    std::fs::write(&release, b"").unwrap();

    let results = swapping.await.unwrap().unwrap().into_inner().results;
    // The first: found as asked after its burn met the id, answered `exists` with the
    // stored transfers' timestamps and the amount received (10 × 3/2).
    assert_eq!(results[0].refusal, v1::SwapRefusal::None as i32, "{results:?}");
    let stored: Vec<v1::Transfer> = client.lookup_transfers(&[100, 101]).await.unwrap();
    let answered: Vec<(i32, u64)> =
        results[0].results.iter().map(|r| (r.status, r.timestamp)).collect();
    let expected: Vec<(i32, u64)> =
        stored.iter().map(|t| (TS::Exists as i32, t.timestamp)).collect();
    assert_eq!(answered, expected, "{results:?}");
    assert_eq!(u128_of(results[0].amount_received), 15, "{results:?}");
    // The second: its give id belongs to another transfer, so it can never apply.
    assert_eq!(results[1].refusal, v1::SwapRefusal::QuoteExpired as i32, "{results:?}");
    assert!(results[1].message.contains("TALLY:QuoteExpired"), "{results:?}");
    assert!(client.lookup_transfers(&[201]).await.unwrap().is_empty());
    // Points moved once for the first swap, and once for the other transfer.
    let ids = [member_a, pool_a, pool_b, member_b];
    let expected = vec![(0, 10, 0, 105), (0, 0, 0, 10), (0, 15, 0, 1000), (0, 0, 0, 15)];
    assert_eq!(sums(&client, &ids).await, expected);
    converge_every_shard(&cluster).await;
}

/// A node that crashes after a client's post of a cross-shard pending transfer reached the
/// debit leg and before it completed the credit leg (failpoint
/// `pending::before_completion`): after the restart, recovery on the debit shard completes
/// the credit leg with the amount posted, and a resend of the post reads `exists`.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_pending_transfers_post_and_its_completion_is_recovered() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let Coordinated { mut cluster, client, mut raw, m } =
        coordinated(XSHARD, "pending::before_completion=panic").await;
    let (m2, m3, _) = m;
    let x = v1::Transfer {
        timeout: 3600,
        ..transfer(300, m2, m3, 40, v1::TransferFlag::Pending as u32)
    };
    let made = client.create_transfers(vec![x]).await.unwrap();
    assert_eq!(made[0].status, TS::Created as i32, "{made:?}");
    // Once the debit shard's leader watches X (its recovery walk has passed X's alias),
    // only the post's own record can lead recovery to the credit leg.
    eventually("X is watched", std::time::Duration::from_secs(20), || {
        let cluster = &cluster;
        async move { (cluster.pending_watched().await >= 1).then_some(()) }
    })
    .await;
    let y = v1::Transfer {
        id: uint128(301),
        pending_id: uint128(300),
        amount: uint128(15),
        flags: v1::TransferFlag::PostPendingTransfer as u32,
        ..Default::default()
    };
    let mut exit = None;
    for _ in 0..5 {
        let request = v1::CreateTransfersRequest { transfers: vec![y] };
        let outcome = raw.create_transfers(request).await;
        assert!(outcome.is_err(), "node 1 answered instead of crashing: {outcome:?}");
        exit = cluster.wait_exit(1, std::time::Duration::from_secs(3));
        if exit.is_some() {
            break;
        }
        eprintln!("resending after {outcome:?}");
    }
    let exit = exit.expect("node 1 never reached pending::before_completion");
    assert!(!exit.success(), "node 1 exited with {exit}");
    // The debit side was posted before the crash; the credit side is still reserved.
    assert_eq!(sums(&client, &[m2]).await, vec![(0, 15, 0, 100)]);
    cluster.spawn(1);
    let expected = vec![(0, 15, 0, 100), (0, 0, 0, 15)];
    eventually("the credit leg is completed", std::time::Duration::from_secs(30), || {
        let (client, expected) = (&client, &expected);
        async move { (sums(client, &[m2, m3]).await == *expected).then_some(()) }
    })
    .await;
    let again = client.create_transfers(vec![y]).await.unwrap();
    assert_eq!(again[0].status, TS::Exists as i32, "{again:?}");
    let found = client.lookup_transfers(&[301]).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((u128_of(found[0].amount), u128_of(found[0].credit_account_id)), (15, m3));
    assert_eq!(sums(&client, &[m2, m3]).await, expected);
    // Posted an hour before its expiry, X leaves the watch now (a tick re-reads a slice of
    // the watch besides the due entries), not in an hour.
    eventually("X leaves the watch", std::time::Duration::from_secs(20), || {
        let cluster = &cluster;
        async move { (cluster.pending_watched().await == 0).then_some(()) }
    })
    .await;
}

/// A request split over shards is judged imported or not by its first event, on every
/// shard (TigerBeetle's rule): an event whose flag differs fails on it wherever it lands,
/// a cross-shard chain starting with one fails whole and moves nothing, and the others
/// apply. (Each shard judged its own part by that part's first event before 2026-12-07.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_request_is_judged_imported_by_its_first_event_on_every_shard() {
    use tally_proto::routing::spread_account_id;

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (mut cluster, client, p) = four_shards_funded().await;
    let ((b1, m1), (b2, m2), (b3, m3), (b4, m4)) = (p[&1], p[&2], p[&3], p[&4]);
    const IMPORTED: u32 = v1::TransferFlag::Imported as u32;
    const LINKED: u32 = v1::TransferFlag::Linked as u32;
    let at = |t: v1::Transfer, timestamp: u64| v1::Transfer { timestamp, ..t };
    let statuses = |results: &[v1::CreateTransferResult]| -> Vec<TS> {
        results.iter().map(|r| TS::try_from(r.status).unwrap()).collect()
    };
    let before = sums(&client, &[m1, m2, m3, m4]).await;

    // First event imported: the plain transfer on shard 2 fails (its part started with it),
    // the imported one after it applies; a plain transfer across shards and a plain chain
    // across shards fail without a leg.
    let t = now_ns();
    let imported_first = vec![
        at(transfer(500, b1, m1, 1, IMPORTED), t),
        transfer(501, b2, m2, 10, 0),
        at(transfer(502, b2, m2, 2, IMPORTED), t + 1),
        transfer(503, b3, m4, 20, 0),
        transfer(504, b3, m4, 40, LINKED),
        transfer(505, b4, m3, 80, 0),
    ];
    let expected = vec![
        TS::Created,
        TS::ImportedEventExpected,
        TS::Created,
        TS::ImportedEventExpected,
        TS::ImportedEventExpected,
        TS::LinkedEventFailed,
    ];
    let results = client.create_transfers(imported_first.clone()).await.unwrap();
    assert_eq!(statuses(&results), expected, "{results:?}");
    let stored = client.lookup_transfers(&[500, 502]).await.unwrap();
    assert_eq!(stored.iter().map(|t| t.timestamp).collect::<Vec<_>>(), vec![t, t + 1]);
    // Resent: the applied events exist, the others fail as before.
    let again = client.create_transfers(imported_first).await.unwrap();
    let resent = [TS::Exists, expected[1], TS::Exists, expected[3], expected[4], expected[5]];
    assert_eq!(statuses(&again), resent, "{again:?}");

    // First event not imported: the imported transfer on shard 2 fails, the plain one
    // after it applies; an imported transfer across shards fails alone (the request is
    // not refused whole).
    let t = now_ns();
    let plain_first = vec![
        transfer(510, b1, m1, 4, 0),
        at(transfer(511, b2, m2, 100, IMPORTED), t),
        transfer(512, b2, m2, 8, 0),
        at(transfer(513, b3, m4, 200, IMPORTED), t + 1),
    ];
    let results = client.create_transfers(plain_first).await.unwrap();
    let expected =
        [TS::Created, TS::ImportedEventNotExpected, TS::Created, TS::ImportedEventNotExpected];
    assert_eq!(statuses(&results), expected, "{results:?}");
    assert!(client.lookup_transfers(&[501, 503, 504, 505, 511, 513]).await.unwrap().is_empty());
    let after = sums(&client, &[m1, m2, m3, m4]).await;
    let credited: Vec<u128> = after.iter().zip(&before).map(|(a, b)| a.3 - b.3).collect();
    assert_eq!(credited, vec![1 + 4, 2 + 8, 0, 0], "only the events that applied moved");

    // Accounts: the same rule, a spread account (created on every shard) included.
    let on = |shard: u32, from: u128| (from..).find(|&id| shard_of(id, SHARDS) == shard).unwrap();
    let (a1, a2) = (on(1, 700), on(2, 700));
    let a2b = on(2, a2 + 1);
    let imported_account = |id: u128, timestamp: u64| v1::Account {
        flags: v1::AccountFlag::Imported as u32,
        timestamp,
        ..account(id, LEDGER, 0)
    };
    let t = now_ns();
    let accounts = vec![
        imported_account(a1, t),
        account(a2, LEDGER, 0),
        imported_account(a2b, t + 1),
        account(spread_account_id(70), LEDGER, 0),
    ];
    let results = client.create_accounts(accounts).await.unwrap();
    let statuses: Vec<AS> = results.iter().map(|r| AS::try_from(r.status).unwrap()).collect();
    let expected = [AS::Created, AS::ImportedEventExpected, AS::Created, AS::ImportedEventExpected];
    assert_eq!(statuses, expected, "{results:?}");
    let found = client.lookup_accounts(&[a1, a2, a2b, spread_account_id(70)]).await.unwrap();
    let ids: Vec<u128> = found.iter().map(|a| u128_of(a.id)).collect();
    assert_eq!(ids, vec![a1, a2b], "only the imported accounts were created");
    // Every replica applied the judged entries alike (their digests agree), and one killed
    // and restarted replays them from its log to the same state.
    converge_every_shard(&cluster).await;
    cluster.kill(2);
    cluster.spawn(2);
    super::shards::wait_balanced(&cluster, 1).await;
    converge_every_shard(&cluster).await;
    let found = client.lookup_transfers(&[500, 501, 502, 510, 511, 512]).await.unwrap();
    let ids: Vec<u128> = found.iter().map(|t| u128_of(t.id)).collect();
    assert_eq!(ids, vec![500, 502, 510, 512]);
}
