//! Against real nodes on loopback: replication, failover under load, catch-up (log and
//! snapshot), full restart, and malformed requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_proto::v1::ledger_service_client::LedgerServiceClient;
use tally_proto::v1::{self, CreateTransferStatus as TS};
use tally_proto::{u128_of, uint128};

use super::harness::*;

const LEDGER: u32 = 7;

fn account(id: u128, flags: u32) -> v1::Account {
    v1::Account { id: uint128(id), ledger: LEDGER, code: 1, flags, ..Default::default() }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> v1::Transfer {
    v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(debit),
        credit_account_id: uint128(credit),
        amount: uint128(amount),
        ledger: LEDGER,
        code: 1,
        ..Default::default()
    }
}

/// Accounts 1 (source, unconstrained) and 2 (destination), created through `client`.
async fn two_accounts(client: &Client) {
    let results = client.create_accounts(vec![account(1, 0), account(2, 0)]).await.unwrap();
    assert!(results.iter().all(|r| r.status == v1::CreateAccountStatus::Created as i32));
}

async fn balances(client: &Client, ids: &[u128]) -> Vec<(u128, u128)> {
    let accounts = client.lookup_accounts(ids).await.unwrap();
    accounts.iter().map(|a| (u128_of(a.debits_posted), u128_of(a.credits_posted))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_to_all_three() {
    // Every acknowledged write is applied by all three replicas, to identical states.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, FAST_RAFT);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let batch: Vec<_> = (1..=100).map(|i| transfer(1000 + i, 1, 2, i)).collect();
    let results = client.create_transfers(batch).await.unwrap();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    assert_eq!(balances(&client, &[2]).await, vec![(0, 5050)]);
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    let digest = cluster.wait_converged(&[1, 2, 3], applied).await;
    assert_eq!(digest.len(), 32);
    for id in 1..=3 {
        let status = cluster.status(id, false).await.unwrap();
        assert_eq!(status.voters, vec![1, 2, 3], "node {id} voters");
        assert_eq!(status.leader_id, leader, "node {id} knows the leader");
    }
}

/// Outcome of one streamed transfer as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Acknowledged,
    Unknown,
}

/// Sends single-transfer requests from `tasks` tasks until `stop`, each at most `max_each`;
/// returns every attempted id with what the client saw.
async fn stream_transfers(
    client: Client,
    tasks: u128,
    max_each: u128,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> HashMap<u128, Seen> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        handles.push(tokio::spawn(async move {
            let mut seen = HashMap::new();
            for seq in 0..max_each {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = 1_000_000 * (task + 1) + seq;
                let outcome = match client.create_transfers(vec![transfer(id, 1, 2, 1)]).await {
                    Ok(results) => {
                        let status = results[0].status;
                        assert!(
                            status == TS::Created as i32 || status == TS::Exists as i32,
                            "transfer {id}: status {status}"
                        );
                        acked.fetch_add(1, Ordering::Relaxed);
                        Seen::Acknowledged
                    }
                    Err(_) => Seen::Unknown,
                };
                seen.insert(id, outcome);
            }
            seen
        }));
    }
    let mut all = HashMap::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    all
}

async fn wait_acked(acked: &AtomicU64, at_least: u64, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        (acked.load(Ordering::Relaxed) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_loses_no_acknowledged_transfer() {
    // SIGKILL the leader mid-stream: a new leader takes over, the client carries on, and
    // every acknowledged transfer is afterwards present exactly once with its fields.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, FAST_RAFT);
    let old_leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;

    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let stream =
        tokio::spawn(stream_transfers(client.clone(), 16, 3000, stop.clone(), acked.clone()));
    wait_acked(&acked, 300, "300 transfers are acknowledged before the kill").await;
    cluster.kill(old_leader);
    let at_kill = acked.load(Ordering::Relaxed);
    wait_acked(&acked, at_kill + 300, "300 more are acknowledged after the kill").await;
    stop.store(true, Ordering::Relaxed);
    let seen = stream.await.unwrap();
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, old_leader, "a new leader took over");

    cluster.spawn(old_leader);
    let applied = cluster.status(new_leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2, 3], applied).await;

    let ids: Vec<u128> = seen.keys().copied().collect();
    let mut present = HashMap::new();
    for chunk in ids.chunks(8000) {
        for t in client.lookup_transfers(chunk).await.unwrap() {
            assert!(present.insert(u128_of(t.id), t).is_none(), "a transfer id appears twice");
        }
    }
    let acknowledged: Vec<u128> =
        seen.iter().filter(|(_, s)| **s == Seen::Acknowledged).map(|(id, _)| *id).collect();
    assert!(acknowledged.len() >= 600, "only {} acknowledged", acknowledged.len());
    for id in &acknowledged {
        let t = present.get(id).unwrap_or_else(|| panic!("acknowledged transfer {id} lost"));
        assert_eq!((u128_of(t.debit_account_id), u128_of(t.credit_account_id)), (1, 2));
        assert_eq!((u128_of(t.amount), t.ledger, t.code), (1, LEDGER, 1));
    }
    // Exactly once: every stored transfer moved 1 point, and the balance counts each once.
    let stored = u128::try_from(present.len()).unwrap();
    assert_eq!(balances(&client, &[1, 2]).await, vec![(stored, 0), (0, stored)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_catches_up_through_a_snapshot_after_its_log_was_purged() {
    // A node that missed more than the leader keeps in its log installs a snapshot and
    // ends up with the identical state.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, SNAPSHOTTING_RAFT);
    let leader = cluster.wait_leader().await;
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    let client = cluster.client();
    two_accounts(&client).await;
    cluster.stop(lagging);
    let missed_from = cluster.status(leader, false).await.unwrap().last_log_index;
    for i in 0..80 {
        let results = client.create_transfers(vec![transfer(5000 + i, 1, 2, 3)]).await.unwrap();
        assert_eq!(results[0].status, TS::Created as i32);
    }
    // Purging waits until no replication stream still reads those entries; the stream to
    // the stopped node gives them up after its failed attempts.
    let leader_status = eventually(
        "the leader purges what the stopped node lacks",
        Duration::from_secs(30),
        || async {
            let status = cluster.status(leader, false).await?;
            (status.purged_index > missed_from).then_some(status)
        },
    )
    .await;
    cluster.spawn(lagging);
    cluster.wait_converged(&[1, 2, 3], leader_status.applied_index).await;
    let caught_up = cluster.status(lagging, false).await.unwrap();
    assert!(caught_up.snapshot_index > missed_from, "caught up through a snapshot: {caught_up:?}");
    assert_eq!(balances(&client, &[2]).await, vec![(0, 240)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_every_balance() {
    // Stopping all three nodes and starting them again loses nothing.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, FAST_RAFT);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let member = u128::from(v1::AccountFlag::DebitsMustNotExceedCredits as u32);
    let flags = u32::try_from(member).unwrap() | v1::AccountFlag::History as u32;
    client.create_accounts(vec![account(3, flags)]).await.unwrap();
    let batch: Vec<_> = (0..500).map(|i| transfer(9000 + i, 1, 3, 2)).collect();
    client.create_transfers(batch).await.unwrap();
    let spend: Vec<_> = (0..100).map(|i| transfer(9600 + i, 3, 2, 3)).collect();
    client.create_transfers(spend).await.unwrap();
    let before = balances(&client, &[1, 2, 3]).await;
    assert_eq!(before, vec![(1000, 0), (0, 300), (300, 1000)]);
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    let digest = cluster.wait_converged(&[1, 2, 3], applied).await;

    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_leader().await;
    let client = cluster.client();
    assert_eq!(balances(&client, &[1, 2, 3]).await, before);
    let again = cluster.wait_converged(&[1, 2, 3], applied).await;
    assert_eq!(again, digest, "state after restart is the state before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_node_recovers_from_the_last_checkpoint_and_the_log() {
    // Apply keeps changes in memory and checkpoints them every few writes; the log is what
    // makes an acknowledged transfer durable. Kill all three nodes at once (no clean
    // shutdown, so each has applied entries after its last checkpoint), restart: every
    // acknowledged transfer is back, on every node, with the same digest.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, OFTEN_CHECKPOINTED);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let mut expected = 0_u128;
    for round in 0..20_u128 {
        let size = 1 + (round * 7) % 23;
        let batch: Vec<_> =
            (0..size).map(|i| transfer(20_000 + round * 100 + i, 1, 2, round + 1)).collect();
        let results = client.create_transfers(batch).await.unwrap();
        assert!(results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
        expected += size * (round + 1);
    }
    assert_eq!(balances(&client, &[1, 2]).await, vec![(expected, 0), (0, expected)]);
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    let digest = cluster.wait_converged(&[1, 2, 3], applied).await;

    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_leader().await;
    let client = cluster.client();
    assert_eq!(balances(&client, &[1, 2]).await, vec![(expected, 0), (0, expected)]);
    let again = cluster.wait_converged(&[1, 2, 3], applied).await;
    assert_eq!(again, digest, "every node recovered the state it had before the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_precise_errors_and_spare_their_batch() {
    // Bad events get their own status and the good events of the same batch apply;
    // requests the edge cannot accept are refused whole with a status naming the problem;
    // a follower redirects writes to the leader.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, FAST_RAFT);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    client
        .create_accounts(vec![v1::Account { ledger: LEDGER + 1, ..account(3, 0) }])
        .await
        .unwrap();

    let mut wrong_ledger = transfer(13, 1, 3, 5);
    wrong_ledger.ledger = LEDGER + 1;
    // Flag bits no flag defines travel through the Raft log as they came: every replica's
    // apply must answer `reserved_flag`, not stop on them (it aborted, on every replica
    // and again at every restart, when it decoded them as a corrupt record).
    let undefined_flag = v1::Transfer { flags: 1 << 9, ..transfer(14, 1, 2, 5) };
    let batch = vec![
        transfer(10, 1, 2, 5),
        transfer(0, 1, 2, 5),
        transfer(11, 99, 2, 5),
        wrong_ledger,
        undefined_flag,
        transfer(12, 1, 2, 7),
    ];
    let statuses: Vec<i32> =
        client.create_transfers(batch).await.unwrap().iter().map(|r| r.status).collect();
    let expected = [
        TS::Created,
        TS::IdMustNotBeZero,
        TS::DebitAccountNotFound,
        TS::AccountsMustHaveTheSameLedger,
        TS::ReservedFlag,
        TS::Created,
    ];
    assert_eq!(statuses, expected.map(|s| s as i32));
    assert_eq!(balances(&client, &[2]).await, vec![(0, 12)]);
    let accounts = vec![account(4, 1 << 6), account(5, 0)];
    let statuses: Vec<i32> =
        client.create_accounts(accounts).await.unwrap().iter().map(|r| r.status).collect();
    let expected = [v1::CreateAccountStatus::ReservedFlag, v1::CreateAccountStatus::Created];
    assert_eq!(statuses, expected.map(|s| s as i32));
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2, 3], applied).await;

    let leader_addr = cluster.nodes[usize::try_from(leader - 1).unwrap()].addr.clone();
    let mut raw = LedgerServiceClient::connect(format!("http://{leader_addr}")).await.unwrap();
    let oversized = (0..8191).map(|i| transfer(20_000 + i, 1, 2, 1)).collect();
    let refused = raw.create_transfers(v1::CreateTransfersRequest { transfers: oversized }).await;
    let status = refused.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("8191") && status.message().contains("8190"), "{status:?}");
    let mut bad_code = transfer(30_000, 1, 2, 1);
    bad_code.code = 70_000;
    let request =
        v1::CreateTransfersRequest { transfers: vec![transfer(30_001, 1, 2, 1), bad_code] };
    let status = raw.create_transfers(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("code") && status.message().contains("70000"), "{status:?}");
    assert!(client.lookup_transfers(&[30_001]).await.unwrap().is_empty(), "refused whole");

    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let follower_addr = cluster.nodes[usize::try_from(follower - 1).unwrap()].addr.clone();
    let mut raw = LedgerServiceClient::connect(format!("http://{follower_addr}")).await.unwrap();
    // A follower forwards a request to the leader and answers with its results...
    let request = v1::CreateTransfersRequest { transfers: vec![transfer(40_000, 1, 2, 1)] };
    let reply = raw.create_transfers(request).await.unwrap().into_inner();
    assert_eq!(reply.results.len(), 1);
    assert_eq!(reply.results[0].status, TS::Created as i32);
    // ...but refuses one routed to the shard (`tally-shard`), pointing to the leader.
    let mut request = tonic::Request::new(v1::CreateTransfersRequest {
        transfers: vec![transfer(40_001, 1, 2, 1)],
    });
    request.metadata_mut().insert(
        tally_proto::routing::SHARD_METADATA_KEY,
        tonic::metadata::MetadataValue::from(1_u32),
    );
    cluster.key().attach_to(&mut request);
    let status = raw.create_transfers(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().starts_with("TALLY:NotLeader"), "{status:?}");
    let hint = status.metadata().get("tally-leader-addr").unwrap().to_str().unwrap();
    assert_eq!(hint, leader_addr);
}

/// Elections only after 4-5 s of silence: a follower keeps naming a killed leader for that
/// long.
const SLOW_ELECTIONS: &str = "
[raft]
heartbeat_interval_ms = 100
election_timeout_min_ms = 4000
election_timeout_max_ms = 5000
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_reach_the_leader_answers_unreachable() {
    // A follower forwards a request to the leader it knows of; with that leader killed (and
    // no election yet) the forward fails in transport. The follower answers `UNAVAILABLE`
    // `TALLY:Unreachable` naming the leader, never the bare transport status, which a client
    // would take for a failure of the follower itself and set it aside.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = Cluster::start(3, SLOW_ELECTIONS);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2, 3], applied).await;
    let leader_addr = cluster.addr(leader);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut raw =
        LedgerServiceClient::connect(format!("http://{}", cluster.addr(follower))).await.unwrap();
    cluster.kill(leader);
    let write = v1::CreateTransfersRequest { transfers: vec![transfer(50_000, 1, 2, 1)] };
    let read = v1::LookupTransfersRequest { ids: uint128(50_000).into_iter().collect() };
    let statuses = [
        raw.create_transfers(write).await.unwrap_err(),
        raw.lookup_transfers(read).await.unwrap_err(),
    ];
    let role = cluster.status(follower, false).await.unwrap().role;
    assert_eq!(role, v1::ReplicaRole::Follower as i32, "no election yet: the test's premise");
    for status in statuses {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().starts_with("TALLY:Unreachable: "), "{status:?}");
        assert!(status.message().contains(&leader_addr), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transfers_expire_without_other_traffic() {
    // The leader's pulse expires a pending transfer after its timeout even when no other
    // request arrives, releasing the reserved points.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, FAST_RAFT);
    cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let mut reserve = transfer(50, 1, 2, 9);
    reserve.flags = v1::TransferFlag::Pending as u32;
    reserve.timeout = 1;
    let results = client.create_transfers(vec![reserve]).await.unwrap();
    assert_eq!(results[0].status, TS::Created as i32);
    let started = Instant::now();
    eventually("the reservation expires", Duration::from_secs(10), || async {
        let a = client.lookup_accounts(&[2]).await.ok()?;
        (u128_of(a[0].credits_pending) == 0).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(500), "expired no earlier than its timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_get_their_own_results() {
    // Group commit puts concurrent requests in one Raft entry, yet every caller gets the
    // outcomes of exactly its own events, and a chain left open at the end of one request
    // fails alone without linking into the next caller's events.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, FAST_RAFT);
    let leader = cluster.wait_leader().await;
    let client = cluster.client();
    two_accounts(&client).await;
    let log_before = cluster.status(leader, false).await.unwrap().last_log_index;
    let mut callers = Vec::new();
    for caller in 0..64_u128 {
        let client = client.clone();
        callers.push(tokio::spawn(async move {
            let base = 100_000 + caller * 10;
            let (batch, expected) = match caller % 3 {
                0 => (
                    vec![transfer(base, 1, 2, 1), transfer(base + 1, 1, 2, 1)],
                    vec![TS::Created, TS::Created],
                ),
                1 => (
                    vec![transfer(base, 98, 2, 1), transfer(base + 1, 1, 2, 1)],
                    vec![TS::DebitAccountNotFound, TS::Created],
                ),
                _ => {
                    let mut open = transfer(base, 1, 2, 1);
                    open.flags = v1::TransferFlag::Linked as u32;
                    (vec![open], vec![TS::LinkedEventChainOpen])
                }
            };
            let statuses: Vec<i32> =
                client.create_transfers(batch).await.unwrap().iter().map(|r| r.status).collect();
            assert_eq!(
                statuses,
                expected.iter().map(|s| *s as i32).collect::<Vec<_>>(),
                "caller {caller}"
            );
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let entries = cluster.status(leader, false).await.unwrap().last_log_index - log_before;
    assert!(entries < 64, "64 concurrent requests took {entries} entries: no group commit");
    // 22 callers x 2 + 21 callers x 1 created, 1 point each.
    assert_eq!(balances(&client, &[2]).await, vec![(0, 22 * 2 + 21)]);
}

/// Nanoseconds since the Unix epoch by this machine's clock (the nodes' cluster time).
fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_refused_for_its_quote_can_never_apply_afterwards() {
    // A swap whose quote has under 1 s left is refused; the refusal must stay true while
    // an earlier attempt of the same swap (abandoned by its client, resent) is still in
    // flight. Here such an attempt is played by the same transfer arriving after the
    // refusal: it meets its id burnt. A swap applied in time reads `exists` after expiry.
    use tally_client::loyalty::{self, Swap};

    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = Cluster::start(3, FAST_RAFT);
    cluster.wait_leader().await;
    let client = cluster.client();
    let on_b = |id: u128| v1::Account { ledger: LEDGER + 1, ..account(id, 0) };
    let accounts = vec![account(1, 0), account(2, 0), account(5, 0), on_b(3), on_b(4), on_b(6)];
    let created = client.create_accounts(accounts).await.unwrap();
    assert!(created.iter().all(|r| r.status == v1::CreateAccountStatus::Created as i32));
    let fund =
        vec![transfer(1, 5, 1, 100), v1::Transfer { ledger: LEDGER + 1, ..transfer(2, 6, 3, 100) }];
    let funded = client.create_transfers(fund).await.unwrap();
    assert!(funded.iter().all(|r| r.status == TS::Created as i32), "{funded:?}");
    let swap = |give: u128, expires_at: u64| Swap {
        give_id: give,
        receive_id: give + 1,
        member_a_account: 1,
        pool_a_account: 2,
        ledger_a: LEDGER,
        code_a: 7,
        pool_b_account: 3,
        member_b_account: 4,
        ledger_b: LEDGER + 1,
        code_b: 8,
        points: 10,
        rate: (1, 1),
        rounding: v1::Rounding::Down,
        quote_id: 0xABC,
        quote_expires_at: expires_at,
    };

    let late = swap(100, now_ns() + 500_000_000);
    let refused = client.swap(loyalty::swap(&late)).await.unwrap_err();
    assert!(
        matches!(&refused, tally_client::ClientError::Rejected { code: tonic::Code::FailedPrecondition, message } if message.contains("TALLY:QuoteExpired")),
        "{refused:?}"
    );
    // The earlier attempt arrives: its give transfer's id is burnt, nothing applies.
    let give = v1::Transfer { code: 7, flags: 1, ..transfer(100, 1, 2, 10) };
    let receive = v1::Transfer { ledger: LEDGER + 1, code: 8, ..transfer(101, 3, 4, 10) };
    let statuses: Vec<i32> = client
        .create_transfers(vec![give, receive])
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![TS::IdAlreadyFailed as i32, TS::LinkedEventFailed as i32]);
    // Resent, still refused; nothing moved.
    let again = client.swap(loyalty::swap(&late)).await.unwrap_err();
    assert!(again.to_string().contains("TALLY:QuoteExpired"), "{again}");
    assert!(client.lookup_transfers(&[100, 101]).await.unwrap().is_empty());
    assert_eq!(balances(&client, &[1, 4]).await, vec![(0, 100), (0, 0)]);

    // A late swap the ledger would refuse for its fields alone (code 0) is refused for its
    // quote, alone: the other swap of the batch is made.
    let bad_late = Swap { code_a: 0, ..swap(300, now_ns() + 500_000_000) };
    let good = swap(400, now_ns() + 60_000_000_000);
    let batch = vec![loyalty::swap(&bad_late), loyalty::swap(&good)];
    let results = client.swap_batch(batch).await.unwrap();
    assert_eq!(results[0].refusal, v1::SwapRefusal::QuoteExpired as i32, "{results:?}");
    assert_eq!(results[1].refusal, v1::SwapRefusal::None as i32, "{results:?}");
    assert!(results[1].results.iter().all(|r| r.status == TS::Created as i32), "{results:?}");
    assert_eq!(balances(&client, &[1, 4]).await, vec![(10, 100), (0, 10)]);

    // Made in time, resent once under 1 s of its quote is left: found, `exists`.
    let in_time = swap(200, now_ns() + 1_600_000_000);
    let made = client.swap(loyalty::swap(&in_time)).await.unwrap();
    assert!(made.results.iter().all(|r| r.status == TS::Created as i32), "{made:?}");
    eventually("the quote has under 1 s left", Duration::from_secs(5), || async {
        (now_ns() + 1_000_000_000 > in_time.quote_expires_at).then_some(())
    })
    .await;
    let resent = client.swap(loyalty::swap(&in_time)).await.unwrap();
    assert!(resent.results.iter().all(|r| r.status == TS::Exists as i32), "{resent:?}");
    assert_eq!(balances(&client, &[1, 4]).await, vec![(20, 100), (0, 20)]);
}
