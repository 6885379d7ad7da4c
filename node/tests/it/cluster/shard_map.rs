//! The shard map's metadata group (shard 0): a data shard's replicas assigned with
//! `SetShardReplicas` (versioned, compare-and-set, validated, a resend answered alike), the
//! shard's membership moved there by its leader (a follower and a leader removed, both
//! added back and caught up), a removed node still serving the shard's requests through
//! the nodes the map names, and requests routed with an older map version refused with
//! its new version (the client library refetching the map and resending).

use std::collections::BTreeMap;
use std::time::Duration;

use tally_client::Client;
use tally_proto::routing::{MAP_VERSION_METADATA_KEY, shard_of};
use tally_proto::v1;
use tally_proto::v1::ledger_service_client::LedgerServiceClient;
use tally_proto::{u128_of, uint128};
use tonic::metadata::MetadataValue;

use super::harness::*;

const SHARDS: u32 = 2;
const LEDGER: u32 = 9;

/// Two shards, fast elections and leader balancing.
const CONFIG: &str = "
shards = 2
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
leader_balance_interval_ms = 200
";

fn sorted_replicas(info: &v1::ShardInfo) -> Vec<u64> {
    let mut ids: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    ids.sort_unstable();
    ids
}

fn shard_info(map: &v1::ListShardsReply, shard: u32) -> &v1::ShardInfo {
    map.shard_infos.iter().find(|s| s.shard_id == shard).expect("shard listed")
}

/// Waits until every node has applied map version `version`, assigns `shard` to `nodes`
/// and lists them as its replicas; the nodes of `nodes` with a leader among them, a node
/// the shard left with no leader (its leftover replica knows nothing current).
async fn wait_moved(cluster: &Cluster, version: u64, shard: u32, nodes: &[u64]) {
    eventually("the shard's replicas are where the map says", Duration::from_secs(30), || async {
        for id in 1..=3 {
            let map = cluster.list_shards(id).await?;
            let info = shard_info(&map, shard);
            let leader_ok = if nodes.contains(&id) {
                nodes.contains(&info.leader_id)
            } else {
                info.leader_id == 0 && info.leader_addr.is_empty()
            };
            let done = map.map_version == version
                && info.assigned_node_ids == nodes
                && sorted_replicas(info) == nodes
                && leader_ok;
            if !done {
                return None;
            }
        }
        Some(())
    })
    .await;
}

async fn set_replicas(
    cluster: &Cluster,
    via: u64,
    shard: u32,
    nodes: &[u64],
    expected: u64,
) -> Result<u64, tonic::Status> {
    let mut admin = cluster.admin(via).await.expect("node answers");
    let request = v1::SetShardReplicasRequest {
        shard_id: shard,
        node_ids: nodes.to_vec(),
        expected_map_version: expected,
    };
    admin.set_shard_replicas(request).await.map(|r| r.into_inner().map_version)
}

/// Two accounts on each shard, by shard.
fn accounts() -> BTreeMap<u32, [u128; 2]> {
    let mut by_shard: BTreeMap<u32, Vec<u128>> = BTreeMap::new();
    for id in 1_u128..1_000 {
        by_shard.entry(shard_of(id, SHARDS)).or_default().push(id);
    }
    by_shard.into_iter().map(|(s, ids)| (s, [ids[0], ids[1]])).collect()
}

fn transfer(id: u128, debit: u128, credit: u128) -> v1::Transfer {
    v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(debit),
        credit_account_id: uint128(credit),
        amount: uint128(1),
        ledger: LEDGER,
        code: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_move_where_the_versioned_map_says_and_stale_requests_are_refused() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, CONFIG);
    let client = cluster.client();
    let accounts = accounts();
    let all: Vec<u128> = accounts.values().flatten().copied().collect();
    let created = client
        .create_accounts(
            all.iter()
                .map(|&id| v1::Account {
                    id: uint128(id),
                    ledger: LEDGER,
                    code: 1,
                    ..Default::default()
                })
                .collect(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| tally_client::account_succeeded(r.status)), "{created:?}");

    // As created: version 0, every shard on every node.
    let map = cluster.list_shards(2).await.unwrap();
    assert_eq!(map.map_version, 0);
    for info in &map.shard_infos {
        assert_eq!(info.assigned_node_ids, [1, 2, 3], "shard {}", info.shard_id);
    }

    // Bad changes are refused with a precise status and change nothing.
    let refused = |r: Result<u64, tonic::Status>| r.expect_err("refused");
    let e = refused(set_replicas(&cluster, 1, 3, &[1, 2], 0).await);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = refused(set_replicas(&cluster, 1, 1, &[1, 9], 0).await);
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("node_ids[1] = 9"));
    let e = refused(set_replicas(&cluster, 1, 1, &[2, 2], 0).await);
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("twice"), "{e:?}");
    let e = refused(set_replicas(&cluster, 1, 1, &[], 0).await);
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = refused(set_replicas(&cluster, 1, 1, &[1, 2], 5).await);
    assert_eq!(e.code(), tonic::Code::Aborted, "a version ahead of the map: {e:?}");
    assert_eq!(cluster.list_shards(1).await.unwrap().map_version, 0);

    // v1: shard 1 leaves node 3 (asked through node 3: forwarded to the map's leader).
    assert_eq!(set_replicas(&cluster, 3, 1, &[1, 2], 0).await.unwrap(), 1);
    // A resend of that change (its reply lost), through another node and with the nodes in
    // another order, gets the same answer.
    assert_eq!(set_replicas(&cluster, 2, 1, &[2, 1], 0).await.unwrap(), 1);
    // The same version again: compare-and-set refuses it, naming the current version.
    let e = refused(set_replicas(&cluster, 2, 1, &[1, 3], 0).await);
    assert!(e.code() == tonic::Code::Aborted && e.message().contains("StaleShardMap"), "{e:?}");
    assert_eq!(e.metadata().get(MAP_VERSION_METADATA_KEY).unwrap(), "1");
    wait_moved(&cluster, 1, 1, &[1, 2]).await;

    // v2: shard 2 leaves the node that leads it; another voter takes over.
    let leader_2 = eventually("shard 2 has a leader", Duration::from_secs(20), || async {
        let id = shard_info(&cluster.list_shards(1).await?, 2).leader_id;
        (id != 0).then_some(id)
    })
    .await;
    let rest: Vec<u64> = (1..=3).filter(|&n| n != leader_2).collect();
    // A client holding map version 1 (it fetches the map in the background only after an
    // hour, so version 2 can only reach it through a refusal).
    let stale_client = Client::builder(cluster.endpoints())
        .deadline(Duration::from_secs(30))
        .shard_map_max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    eventually("the client fetched map version 1", Duration::from_secs(10), || async {
        stale_client.lookup_accounts(&all[..1]).await.unwrap();
        (stale_client.shard_map_version() == Some(1)).then_some(())
    })
    .await;
    assert_eq!(set_replicas(&cluster, 1, 2, &rest, 1).await.unwrap(), 2);
    wait_moved(&cluster, 2, 2, &rest).await;
    // The first change, resent after the map moved on: still its own answer.
    assert_eq!(set_replicas(&cluster, 3, 1, &[1, 2], 0).await.unwrap(), 1);
    // The stale client's next request is refused by whichever node it reaches (all have
    // version 2); it fetches the map and resends: served.
    let [a1, b1] = accounts[&1];
    let results = stale_client.create_transfers(vec![transfer(998, a1, b1)]).await.unwrap();
    assert!(tally_client::transfer_succeeded(results[0].status), "{results:?}");
    assert_eq!(stale_client.shard_map_version(), Some(2), "refetched after the refusal");

    // A request routed with an older map is refused with the map's version; with the
    // current version (or none) it is served.
    let mut ledger =
        LedgerServiceClient::connect(format!("http://{}", cluster.addr(1))).await.unwrap();
    let lookup = |version: Option<u64>| {
        let mut request = tonic::Request::new(v1::LookupAccountsRequest {
            ids: vec![tally_proto::Uint128::from(all[0])],
        });
        if let Some(v) = version {
            request.metadata_mut().insert(MAP_VERSION_METADATA_KEY, MetadataValue::from(v));
        }
        request
    };
    let e = ledger.lookup_accounts(lookup(Some(1))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().starts_with("TALLY:StaleShardMap"), "{e:?}");
    assert_eq!(e.metadata().get(MAP_VERSION_METADATA_KEY).unwrap(), "2");
    for version in [Some(2), None] {
        let found = ledger.lookup_accounts(lookup(version)).await.unwrap().into_inner();
        assert_eq!(found.accounts.len(), 1);
    }

    // The node removed from shard 2 still takes its requests: the map names other nodes
    // for the shard, so it sends the part there, not to its leftover replica.
    let [a2, b2] = accounts[&2];
    let mut removed =
        LedgerServiceClient::connect(format!("http://{}", cluster.addr(leader_2))).await.unwrap();
    let request = v1::CreateTransfersRequest { transfers: vec![transfer(999, a2, b2)] };
    let reply = removed.create_transfers(request).await.unwrap().into_inner();
    assert!(tally_client::transfer_succeeded(reply.results[0].status), "{reply:?}");
    let mut moved: BTreeMap<u128, i128> = BTreeMap::from([(a2, -1), (b2, 1), (a1, -1), (b1, 1)]);
    // And it no longer acts as shard 2's leader.
    eventually("the removed leader steps down", Duration::from_secs(10), || async {
        let role = cluster.shard_status(leader_2, 2, false).await?.role;
        (role != v1::ReplicaRole::Leader as i32).then_some(())
    })
    .await;
    // Long after stepping down it still serves the shard's requests ...
    let request = v1::CreateTransfersRequest { transfers: vec![transfer(997, b2, a2)] };
    let reply = removed.create_transfers(request).await.unwrap().into_inner();
    assert!(tally_client::transfer_succeeded(reply.results[0].status), "{reply:?}");
    *moved.get_mut(&a2).unwrap() += 1;
    *moved.get_mut(&b2).unwrap() -= 1;
    // ... and a request routed to it for that shard is sent on to a node the map names.
    let mut routed = tonic::Request::new(v1::LookupAccountsRequest {
        ids: vec![tally_proto::Uint128::from(a2)],
    });
    routed.metadata_mut().insert("tally-shard", MetadataValue::from(2_u32));
    cluster.key().attach_to(&mut routed);
    let e = removed.lookup_accounts(routed).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let hint = e.metadata().get("tally-leader-addr").unwrap().to_str().unwrap().to_owned();
    assert!(rest.iter().any(|&n| cluster.addr(n) == hint), "{hint} is a node of {rest:?}");

    // Both shards commit with two voters (the client, whose map may be older, refreshes
    // and resends on StaleShardMap); the removed replicas stop applying.
    let mut next_id = 1_000_u128;
    for round in 0..20 {
        let batch: Vec<v1::Transfer> = accounts
            .values()
            .map(|&[a, b]| {
                next_id += 1;
                let (d, c) = if round % 3 == 0 { (b, a) } else { (a, b) };
                *moved.entry(d).or_default() -= 1;
                *moved.entry(c).or_default() += 1;
                transfer(next_id, d, c)
            })
            .collect();
        // `exists` when the client resent after an attempt whose reply it lost (a part
        // forwarded to a shard's leader while it stepped down): applied once either way.
        let results = client.create_transfers(batch).await.unwrap();
        assert!(results.iter().all(|r| tally_client::transfer_succeeded(r.status)), "{results:?}");
    }
    let live_1 = cluster.shard_status(1, 1, false).await.unwrap().applied_index;
    let removed_1 = cluster.shard_status(3, 1, false).await.unwrap().applied_index;
    assert!(removed_1 < live_1, "node 3 left shard 1: {removed_1} vs {live_1}");

    // v3, v4: both shards back on all three nodes; the returning replicas catch up.
    assert_eq!(set_replicas(&cluster, 2, 1, &[1, 2, 3], 2).await.unwrap(), 3);
    assert_eq!(set_replicas(&cluster, 3, 2, &[1, 2, 3], 3).await.unwrap(), 4);
    wait_moved(&cluster, 4, 1, &[1, 2, 3]).await;
    wait_moved(&cluster, 4, 2, &[1, 2, 3]).await;
    for shard in 1..=SHARDS {
        let applied = cluster.shard_status(1, shard, false).await.unwrap().applied_index;
        cluster.wait_shard_converged(shard, &[1, 2, 3], applied).await;
    }

    // Nothing lost or doubled while the replicas moved.
    let found = client.lookup_accounts(&all).await.unwrap();
    for account in found {
        let id = u128_of(account.id);
        let net = i128::try_from(u128_of(account.credits_posted)).unwrap()
            - i128::try_from(u128_of(account.debits_posted)).unwrap();
        assert_eq!(net, moved[&id], "account {id}");
    }
}
