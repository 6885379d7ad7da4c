//! A cluster of several data shards: leaders spread and restored, requests split by shard
//! and forwarded by whichever node receives them, routed requests, leadership transfer
//! (on request and on graceful shutdown), and a fixed shard count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tally_client::Client;
use tally_proto::auth::ClusterKey;
use tally_proto::routing::{SHARD_METADATA_KEY, shard_of};
use tally_proto::v1::ledger_service_client::LedgerServiceClient;
use tally_proto::v1::{self, CreateTransferStatus as TS};
use tally_proto::{u128_of, uint128};
use tonic::metadata::MetadataValue;

use super::harness::*;

const SHARDS: u32 = 4;
const LEDGER: u32 = 9;

/// Four shards, fast elections, and leader balancing every 200 ms.
const SHARDED: &str = "
shards = 4
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
leader_balance_interval_ms = 200
";

fn account(id: u128) -> v1::Account {
    v1::Account { id: uint128(id), ledger: LEDGER, code: 1, ..Default::default() }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, flags: u32) -> v1::Transfer {
    v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(debit),
        credit_account_id: uint128(credit),
        amount: uint128(amount),
        ledger: LEDGER,
        code: 1,
        flags,
        ..Default::default()
    }
}

/// Waits until every shard is led by its preferred node, as node `via` sees it.
pub async fn wait_balanced(cluster: &Cluster, via: u64) -> v1::ListShardsReply {
    eventually("every shard is led by its preferred node", Duration::from_secs(30), || async {
        let map = cluster.list_shards(via).await?;
        let balanced = map.shard_infos.len() == SHARDS as usize
            && map
                .shard_infos
                .iter()
                .all(|s| s.leader_id != 0 && s.leader_id == s.preferred_leader_id);
        balanced.then_some(map)
    })
    .await
}

/// `per_shard` account ids on each shard (the smallest such ids), by shard.
fn accounts_on_each_shard(per_shard: usize) -> BTreeMap<u32, Vec<u128>> {
    let mut by_shard: BTreeMap<u32, Vec<u128>> = BTreeMap::new();
    for id in 1_u128.. {
        let ids = by_shard.entry(shard_of(id, SHARDS)).or_default();
        if ids.len() < per_shard {
            ids.push(id);
        }
        if by_shard.len() == SHARDS as usize && by_shard.values().all(|v| v.len() == per_shard) {
            return by_shard;
        }
    }
    unreachable!("ids are unbounded")
}

fn leader_of(map: &v1::ListShardsReply, shard: u32) -> u64 {
    map.shard_infos.iter().find(|s| s.shard_id == shard).expect("shard listed").leader_id
}

/// Node `node`'s status, asked without the cluster key (no digest).
async fn unkeyed_admin_of(cluster: &Cluster, node: u64) -> v1::NodeStatusReply {
    let endpoint = format!("http://{}", cluster.addr(node));
    let mut admin =
        tally_proto::v1::admin_service_client::AdminServiceClient::connect(endpoint).await.unwrap();
    let request = v1::NodeStatusRequest { include_digest: false };
    admin.node_status(request).await.unwrap().into_inner()
}

/// `message` routed to `shard` as a node routes it: with the cluster key.
fn routed<M>(message: M, shard: u32, key: &ClusterKey) -> tonic::Request<M> {
    let mut request = routed_unkeyed(message, shard);
    key.attach_to(&mut request);
    request
}

/// `message` routed to `shard` by someone who does not hold the cluster key.
fn routed_unkeyed<M>(message: M, shard: u32) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(SHARD_METADATA_KEY, MetadataValue::from(shard));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_cluster_routes_forwards_and_balances_leaders() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, SHARDED);

    // Leaders spread: shard s is led by the ((s - 1) mod 3)-th node, every node a voter.
    let map = wait_balanced(&cluster, 1).await;
    assert_eq!(map.shards, SHARDS);
    let preferred: Vec<u64> = map.shard_infos.iter().map(|s| s.preferred_leader_id).collect();
    assert_eq!(preferred, vec![1, 2, 3, 1]);
    for info in &map.shard_infos {
        let replicas: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
        assert_eq!(replicas, vec![1, 2, 3], "shard {}", info.shard_id);
    }

    // Three accounts on every shard, created in ONE request sent to node 2 only: node 2
    // splits it, serves its own shard and forwards the others.
    let by_shard = accounts_on_each_shard(3);
    let ids: Vec<u128> = by_shard.values().flatten().copied().collect();
    let mut shuffled = ids.clone();
    shuffled.sort_unstable_by_key(|id| id.wrapping_mul(0x9e37_79b9) % 101);
    let via_two =
        Client::builder([cluster.addr(2)]).deadline(Duration::from_secs(30)).build().unwrap();
    let results =
        via_two.create_accounts(shuffled.iter().map(|&id| account(id)).collect()).await.unwrap();
    assert_eq!(results.len(), ids.len());
    assert!(results.iter().all(|r| tally_client::account_succeeded(r.status)), "{results:?}");

    // One request with transfers on every shard (a linked chain on one of them), through
    // node 3: results come back in request order, each shard numbering its own time.
    let mut batch = Vec::new();
    let mut next_id = 100_u128;
    for accounts in by_shard.values() {
        batch.push(transfer(next_id, accounts[0], accounts[1], 10, 0));
        next_id += 1;
    }
    let chain_accounts = &by_shard[&1];
    batch.push(transfer(
        next_id,
        chain_accounts[1],
        chain_accounts[2],
        3,
        v1::TransferFlag::Linked as u32,
    ));
    batch.push(transfer(next_id + 1, chain_accounts[2], chain_accounts[0], 2, 0));
    let via_three =
        Client::builder([cluster.addr(3)]).deadline(Duration::from_secs(30)).build().unwrap();
    let results = via_three.create_transfers(batch.clone()).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    assert!(results.iter().all(|r| r.timestamp > 0));

    // Resending the same request applies nothing twice: every event reads `exists`, except
    // the chain's second event, failed by its chain (TigerBeetle's rule: the chain fails
    // at its first event's `exists`).
    let again = via_two.create_transfers(batch.clone()).await.unwrap();
    let statuses: Vec<i32> = again.iter().map(|r| r.status).collect();
    let mut expected = vec![TS::Exists as i32; batch.len()];
    expected[batch.len() - 1] = TS::LinkedEventFailed as i32;
    assert_eq!(statuses, expected);

    // Node 2 forwarded the parts of the shards it does not lead.
    assert!(cluster.forwarded_parts().await >= 3);

    // Lookups across shards come back in the order asked, missing ids skipped.
    let found = via_two.lookup_accounts(&shuffled).await.unwrap();
    let found_ids: Vec<u128> = found.iter().map(|a| u128_of(a.id)).collect();
    assert_eq!(found_ids, shuffled);
    let balance = |id: u128| {
        let a = found.iter().find(|a| u128_of(a.id) == id).unwrap();
        (u128_of(a.debits_posted), u128_of(a.credits_posted))
    };
    for accounts in by_shard.values().filter(|a| a != &chain_accounts) {
        assert_eq!(balance(accounts[0]), (10, 0));
        assert_eq!(balance(accounts[1]), (0, 10));
    }
    assert_eq!(balance(chain_accounts[0]), (10, 2));
    assert_eq!(balance(chain_accounts[2]), (2, 3));
    let transfer_ids: Vec<u128> = vec![next_id + 1, 999, 100, 102, next_id, 101, 103];
    let found = via_three.lookup_transfers(&transfer_ids).await.unwrap();
    let found_ids: Vec<u128> = found.iter().map(|t| u128_of(t.id)).collect();
    assert_eq!(found_ids, vec![next_id + 1, 100, 102, next_id, 101, 103]);

    // A client of every node sends a single-shard request straight to its shard's leader
    // once it has the shard map (fetched in the background): a round of one request per
    // shard with nothing forwarded.
    let routing = cluster.client();
    let mut round = 0_u128;
    eventually("single-shard requests reach their leaders", Duration::from_secs(10), || {
        round += 1;
        let (routing, by_shard, cluster) = (&routing, &by_shard, &cluster);
        async move {
            let before = cluster.forwarded_parts().await;
            for (k, accounts) in by_shard.values().enumerate() {
                let id = 10_000 + round * 100 + k as u128;
                let one = vec![transfer(id, accounts[0], accounts[1], 1, 0)];
                assert_eq!(
                    routing.create_transfers(one).await.unwrap()[0].status,
                    TS::Created as i32
                );
            }
            (cluster.forwarded_parts().await == before).then_some(())
        }
    })
    .await;

    // A post that names only its pending transfer reaches the pending transfer's shard,
    // whichever node receives it.
    let (pa, pb) = (by_shard[&3][0], by_shard[&3][2]);
    let pending = transfer(200, pa, pb, 40, v1::TransferFlag::Pending as u32);
    assert_eq!(
        via_two.create_transfers(vec![pending]).await.unwrap()[0].status,
        TS::Created as i32
    );
    let mut post = transfer(201, 0, 0, 40, v1::TransferFlag::PostPendingTransfer as u32);
    (post.ledger, post.code, post.pending_id) = (0, 0, uint128(200));
    for via in [&via_two, &via_three] {
        let status = via.create_transfers(vec![post]).await.unwrap()[0].status;
        assert!(status == TS::Created as i32 || status == TS::Exists as i32, "{status}");
    }
    let posted = via_three.lookup_accounts(&[pb]).await.unwrap();
    assert_eq!(u128_of(posted[0].credits_posted), 40);

    // A transfer between shards is a cross-shard transaction: applied whole with the
    // single-shard transfer of its request.
    let across = vec![
        transfer(300, by_shard[&2][0], by_shard[&2][1], 1, 0),
        transfer(301, by_shard[&1][0], by_shard[&2][0], 1, 0),
    ];
    let results = via_two.create_transfers(across).await.unwrap();
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    assert_eq!(via_two.lookup_transfers(&[300, 301]).await.unwrap().len(), 2);

    // Routed requests: served only by the shard's leader; another node points to it at
    // once; an event of another shard, or an unknown shard, is refused.
    let map = cluster.list_shards(1).await.unwrap();
    let (shard, leader) = (2, leader_of(&map, 2));
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let mut raw =
        LedgerServiceClient::connect(format!("http://{}", cluster.addr(follower))).await.unwrap();
    let lookup = v1::LookupAccountsRequest { ids: vec![by_shard[&shard][0].into()] };
    let refused =
        raw.lookup_accounts(routed(lookup.clone(), shard, cluster.key())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().starts_with("TALLY:NotLeader"), "{refused:?}");
    let hint = refused.metadata().get("tally-leader-addr").unwrap().to_str().unwrap();
    assert_eq!(hint, cluster.addr(leader));
    let mut raw_leader = LedgerServiceClient::connect(format!("http://{hint}")).await.unwrap();
    let served = raw_leader
        .lookup_accounts(routed(lookup, shard, cluster.key()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served.accounts.len(), 1);
    let elsewhere = v1::LookupAccountsRequest { ids: vec![by_shard[&1][0].into()] };
    let wrong = raw_leader
        .lookup_accounts(routed(elsewhere.clone(), shard, cluster.key()))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    assert!(wrong.message().starts_with("TALLY:WrongShard"), "{wrong:?}");
    let unknown =
        raw_leader.lookup_accounts(routed(elsewhere, 9, cluster.key())).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // Node-only calls need the cluster key. A node's routed request skips the edge checks
    // that keep clients away from Tally's internal accounts: this one, unkeyed or with
    // another key, would move points out of shard 2's transit account (which transfer 301
    // created). Refused before it is served, and nothing moves.
    let member = by_shard[&shard][1];
    let transit = tally_node::service::xshard::transit(LEDGER).0;
    let forged = || {
        let message = v1::CreateTransfersRequest {
            transfers: vec![transfer(500, transit, member, 1_000_000, 0)],
        };
        let mut request = routed_unkeyed(message, shard);
        request.metadata_mut().insert("tally-raw", MetadataValue::from(1_u32));
        request
    };
    let before = via_two.lookup_accounts(&[member]).await.unwrap()[0];
    let missing = raw_leader.create_transfers(forged()).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("cluster key (tally-node-key) is missing"), "{missing:?}");
    let mut wrong_key = forged();
    ClusterKey::parse(&"0".repeat(64)).unwrap().attach_to(&mut wrong_key);
    let wrong = raw_leader.create_transfers(wrong_key).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    assert!(wrong.message().contains("is not this cluster's key"), "{wrong:?}");
    // Also through a node that does not lead the shard, and for a routed read.
    let unkeyed_read = raw.lookup_accounts(routed_unkeyed(
        v1::LookupAccountsRequest { ids: vec![member.into()] },
        shard,
    ));
    assert_eq!(unkeyed_read.await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(via_two.lookup_transfers(&[500]).await.unwrap().is_empty(), "nothing created");
    assert_eq!(via_two.lookup_accounts(&[member]).await.unwrap()[0], before);
    // Sent unrouted, as a client sends it, the edge refuses it for naming a transit account.
    let edge = raw_leader
        .create_transfers(v1::CreateTransfersRequest {
            transfers: vec![transfer(500, transit, member, 1_000_000, 0)],
        })
        .await
        .unwrap_err();
    assert_eq!(edge.code(), tonic::Code::InvalidArgument, "{edge:?}");
    // A Raft call without the key is refused before its payload is even read.
    let mut raft = tally_proto::raft_v1::raft_service_client::RaftServiceClient::connect(format!(
        "http://{}",
        cluster.addr(leader)
    ))
    .await
    .unwrap();
    let vote = tally_proto::raft_v1::RaftMessage { shard_id: shard, payload: vec![0xFF; 8] };
    let refused = raft.vote(vote.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut keyed_vote = tonic::Request::new(vote);
    cluster.key().attach_to(&mut keyed_vote);
    let garbage = raft.vote(keyed_vote).await.unwrap_err();
    assert_ne!(garbage.code(), tonic::Code::Unauthenticated, "with the key, the payload is read");
    // An admin call that changes the cluster, without the key.
    let mut unkeyed_admin = tally_proto::v1::admin_service_client::AdminServiceClient::connect(
        format!("http://{}", cluster.addr(3)),
    )
    .await
    .unwrap();
    let request = v1::TransferLeaderRequest { shard_id: 2, to_node_id: 1 };
    let refused = unkeyed_admin.transfer_leader(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let request =
        v1::SetShardReplicasRequest { shard_id: 2, node_ids: vec![1], expected_map_version: 0 };
    let refused = unkeyed_admin.set_shard_replicas(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // A state digest holds each shard's writes while it reads the whole state: keyed too.
    let digest = v1::NodeStatusRequest { include_digest: true };
    let refused = unkeyed_admin.node_status(digest).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // Every ledger call routed without the key, whatever it asks.
    let accounts = v1::CreateAccountsRequest { accounts: vec![account(member + 1_000)] };
    let refused = raw_leader.create_accounts(routed_unkeyed(accounts, shard)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let swap = raw_leader.swap(routed_unkeyed(v1::SwapRequest::default(), shard));
    assert_eq!(swap.await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // Reads of the map and a node's status stay open to clients, and the nodes counted the
    // nine calls refused above, and nothing else (their own calls all carry the key).
    unkeyed_admin.list_shards(v1::ListShardsRequest {}).await.unwrap();
    let mut refused = 0;
    for node in 1..=3 {
        let status = unkeyed_admin_of(&cluster, node).await;
        refused += status.unauthenticated_refused;
    }
    assert_eq!(refused, 9);

    // Leadership transfer on request, through a node that does not lead the shard; then
    // balancing hands it back to the preferred node.
    let mut admin = cluster.admin(3).await.unwrap();
    let reply = admin
        .transfer_leader(v1::TransferLeaderRequest { shard_id: 2, to_node_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.leader_id, 1);
    let not_a_voter = admin
        .transfer_leader(v1::TransferLeaderRequest { shard_id: 2, to_node_id: 7 })
        .await
        .unwrap_err();
    assert_eq!(not_a_voter.code(), tonic::Code::InvalidArgument);
    wait_balanced(&cluster, 3).await;

    // A graceful stop hands node 2's shards over; writes to them go on; after the restart
    // balancing gives them back.
    cluster.stop(2);
    let log = std::fs::read_to_string(cluster.start_args(2).0.join("tallyd.log")).unwrap();
    assert!(log.contains("leadership handed over"), "node 2 handed nothing over:\n{log}");
    let map = eventually("shard 2 has a new leader", Duration::from_secs(10), || async {
        let map = cluster.list_shards(1).await?;
        let leader = leader_of(&map, 2);
        (leader == 1 || leader == 3).then_some(map)
    })
    .await;
    assert_ne!(leader_of(&map, 2), 2);
    let via_one = Client::builder([cluster.addr(1), cluster.addr(3)]).build().unwrap();
    let (a, b) = (by_shard[&2][0], by_shard[&2][1]);
    let results = via_one.create_transfers(vec![transfer(400, a, b, 5, 0)]).await.unwrap();
    assert_eq!(results[0].status, TS::Created as i32);
    cluster.spawn(2);
    wait_balanced(&cluster, 2).await;
    // Node 1's view too: it may learn of node 2's leaderships after node 2 does (CI,
    // 2026-12-07: node 1 still named no leader for a shard, and the next read took node 0).
    wait_balanced(&cluster, 1).await;

    // Every shard's replicas converge to one state.
    for shard in 1..=SHARDS {
        let leader = leader_of(&cluster.list_shards(1).await.unwrap(), shard);
        let applied = cluster.shard_status(leader, shard, false).await.unwrap().applied_index;
        cluster.wait_shard_converged(shard, &[1, 2, 3], applied).await;
    }

    // The shard count is fixed at creation: node 3 restarted with another count refuses
    // to start, saying why.
    cluster.stop(3);
    let (_, mut args) = cluster.start_args(3);
    args.extend(["--shards".to_owned(), "5".to_owned()]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(&args)
        .output()
        .expect("run tallyd");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cluster of 4 data shards") && stderr.contains("shards = 4"),
        "{stderr}"
    );
    assert!(cluster.running(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_shard_leader_loses_nothing_acknowledged_from_requests_that_span_shards() {
    // Requests each holding one transfer per shard enter through node 1, which forwards
    // three parts of each; node 2, leader of shard 2, is SIGKILLed mid-stream. Every request
    // acknowledged is afterwards present, every transfer at most once, on every shard.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, SHARDED);
    let map = wait_balanced(&cluster, 1).await;
    let victim = leader_of(&map, 2);
    assert_ne!(victim, 1, "the entry node must not be the victim");
    let by_shard = accounts_on_each_shard(2);
    let client =
        Client::builder([cluster.addr(1)]).deadline(Duration::from_secs(30)).build().unwrap();
    let accounts: Vec<_> = by_shard.values().flatten().map(|&id| account(id)).collect();
    let created = client.create_accounts(accounts).await.unwrap();
    assert!(created.iter().all(|r| tally_client::account_succeeded(r.status)), "{created:?}");

    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for task in 0..8_u128 {
        let (client, stop, acked, by_shard) =
            (client.clone(), stop.clone(), acked.clone(), by_shard.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<u128, bool> = HashMap::new();
            for seq in 0..2_000_u128 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let base = 1_000_000 * (task + 1) + 10 * seq;
                let batch: Vec<_> = by_shard
                    .values()
                    .zip(0..)
                    .map(|(pair, k)| transfer(base + k, pair[0], pair[1], 1, 0))
                    .collect();
                let ok = match client.create_transfers(batch).await {
                    Ok(results) => {
                        for r in &results {
                            assert!(
                                r.status == TS::Created as i32 || r.status == TS::Exists as i32,
                                "request {base}: {results:?}"
                            );
                        }
                        acked.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                };
                seen.insert(base, ok);
            }
            seen
        }));
    }
    let wait_acked = |at_least: u64, what: &'static str| {
        let acked = acked.clone();
        async move {
            eventually(what, Duration::from_secs(60), || async {
                (acked.load(Ordering::Relaxed) >= at_least).then_some(())
            })
            .await;
        }
    };
    wait_acked(100, "100 requests acknowledged before the kill").await;
    cluster.kill(victim);
    let at_kill = acked.load(Ordering::Relaxed);
    wait_acked(at_kill + 100, "100 more acknowledged after the kill").await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = HashMap::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    cluster.spawn(victim);
    wait_balanced(&cluster, 1).await;
    for shard in 1..=SHARDS {
        let leader = leader_of(&cluster.list_shards(1).await.unwrap(), shard);
        let applied = cluster.shard_status(leader, shard, false).await.unwrap().applied_index;
        cluster.wait_shard_converged(shard, &[1, 2, 3], applied).await;
    }

    // Every transfer of an acknowledged request is present; per shard, the balance counts
    // each stored transfer exactly once.
    let ids: Vec<u128> = seen.keys().flat_map(|&base| base..base + u128::from(SHARDS)).collect();
    let mut present = HashMap::new();
    for chunk in ids.chunks(8000) {
        for t in client.lookup_transfers(chunk).await.unwrap() {
            assert!(present.insert(u128_of(t.id), t).is_none(), "a transfer id appears twice");
        }
    }
    let acknowledged: Vec<u128> = seen.iter().filter(|(_, ok)| **ok).map(|(b, _)| *b).collect();
    assert!(acknowledged.len() >= 200, "only {} acknowledged", acknowledged.len());
    for base in &acknowledged {
        for (pair, k) in by_shard.values().zip(0..) {
            let t = present
                .get(&(base + k))
                .unwrap_or_else(|| panic!("acknowledged {} lost", base + k));
            assert_eq!(
                (u128_of(t.debit_account_id), u128_of(t.credit_account_id)),
                (pair[0], pair[1])
            );
        }
    }
    for (pair, k) in by_shard.values().zip(0..) {
        let stored = present.keys().filter(|id| *id % 10 == k).count() as u128;
        let found = client.lookup_accounts(pair).await.unwrap();
        assert_eq!(u128_of(found[0].debits_posted), stored, "shard of account {}", pair[0]);
        assert_eq!(u128_of(found[1].credits_posted), stored);
    }
}
