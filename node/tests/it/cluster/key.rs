//! The cluster key (`tally_proto::auth`) on a running cluster: changed by rolling
//! restarts without a pause, and a node given another key shut out of its cluster; and
//! (with the `failpoints` feature) a node of another protocol version shut out likewise.

use std::process::{Command, Stdio};
use std::time::Duration;

use tally_proto::uint128;
use tally_proto::v1::{self, CreateTransferStatus as TS};

use super::harness::*;

const LEDGER: u32 = 1;

async fn write_one(client: &tally_client::Client, id: u128) {
    let transfer = v1::Transfer {
        id: uint128(id),
        debit_account_id: uint128(1),
        credit_account_id: uint128(2),
        amount: uint128(1),
        ledger: LEDGER,
        code: 1,
        ..Default::default()
    };
    let results = client.create_transfers(vec![transfer]).await.unwrap();
    assert!(results[0].status == TS::Created as i32 || results[0].status == TS::Exists as i32);
}

/// Writes one transfer and waits until all three nodes applied it (so each replicates with
/// the others).
async fn write_and_converge(cluster: &Cluster, client: &tally_client::Client, id: u128) {
    write_one(client, id).await;
    let leader = cluster.wait_leader().await;
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2, 3], applied).await;
}

/// Three nodes with accounts 1 and 2 and one transfer between them, applied by all three.
async fn three_nodes_with_accounts() -> (Cluster, tally_client::Client) {
    let cluster = Cluster::start(3, FAST_RAFT);
    cluster.wait_leader().await;
    let client = cluster.client();
    let accounts = (1..=2)
        .map(|id| v1::Account { id: uint128(id), ledger: LEDGER, code: 1, ..Default::default() })
        .collect();
    client.create_accounts(accounts).await.unwrap();
    write_and_converge(&cluster, &client, 1).await;
    (cluster, client)
}

async fn refused_by_all(cluster: &Cluster, ids: &[u64]) -> u64 {
    let mut total = 0;
    for &id in ids {
        total += cluster.refused(id).await.expect("node answers");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_changes_by_rolling_restarts_and_a_node_with_another_key_is_shut_out() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (mut cluster, client) = three_nodes_with_accounts().await;
    let mut next = 1_u128;

    // The documented rotation: old + new on each node in turn, then new + old, then new
    // alone. After every restart the three replicate together, and no node ever refused
    // another's call.
    let dir = cluster.start_args(1).0.join("..");
    let old = std::fs::read_to_string(dir.join("cluster.key")).unwrap().trim().to_owned();
    tally_node::keygen::write_new(&dir.join("new.key")).unwrap();
    let new = std::fs::read_to_string(dir.join("new.key")).unwrap().trim().to_owned();
    assert_ne!(old, new);
    for file in [format!("{old}\n{new}"), format!("{new}\n{old}"), new.clone()] {
        cluster.set_key_file(&file);
        for id in 1..=3 {
            cluster.stop(id);
            cluster.spawn(id);
            next += 1;
            write_and_converge(&cluster, &client, next).await;
            assert_eq!(refused_by_all(&cluster, &[1, 2, 3]).await, 0, "step {file:?}, node {id}");
        }
    }

    // Node 3 started with another key: the other two go on without it, refuse its calls
    // (its votes), and it refuses theirs (their appends); it applies nothing new.
    cluster.stop(3);
    let (data_dir, mut args) = cluster.start_args(3);
    let other = dir.join("other.key");
    tally_node::keygen::write_new(&other).unwrap();
    let flag = args.iter().position(|a| a == "--cluster-key-file").unwrap();
    args[flag + 1] = other.display().to_string();
    let log = std::fs::OpenOptions::new().append(true).open(data_dir.join("tallyd.log")).unwrap();
    let mut outsider = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(&args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    eventually("node 3 answers", Duration::from_secs(20), || cluster.refused(3)).await;
    next += 1;
    write_one(&client, next).await;
    let leader = cluster.wait_leader().await;
    assert_ne!(leader, 3);
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2], applied).await;
    eventually("each side refuses the other's calls", Duration::from_secs(20), || async {
        let ours = refused_by_all(&cluster, &[1, 2]).await;
        let theirs = cluster.refused(3).await?;
        (ours > 0 && theirs > 0).then_some(())
    })
    .await;
    // The refusals are logged (with the caller's address), at doubling counts only.
    logged_at_doubling_counts(&cluster, &[1, 2], "for want of the cluster key");
    let outsider_applied = cluster.status(3, false).await.unwrap().applied_index;
    assert!(outsider_applied < applied, "node 3 applied {outsider_applied} of {applied}");
    outsider.kill().unwrap();
    outsider.wait().unwrap();

    // Restarted with the cluster's key, it catches up.
    cluster.spawn(3);
    next += 1;
    write_and_converge(&cluster, &client, next).await;
}

/// The lines of nodes `ids`' logs that contain `what`, each with a doubling count
/// (`refused=1`, 2, 4, ...) and at least one naming its caller on loopback.
fn logged_at_doubling_counts(cluster: &Cluster, ids: &[u64], what: &str) {
    let logs: String = ids
        .iter()
        .map(|&id| std::fs::read_to_string(cluster.start_args(id).0.join("tallyd.log")).unwrap())
        .collect();
    let warned: Vec<&str> = logs.lines().filter(|l| l.contains(what)).collect();
    assert!(warned.iter().any(|l| l.contains("refused=1 ") && l.contains("peer=Some(127.")));
    assert!(warned.iter().all(|l| {
        let count = l.split("refused=").nth(1).and_then(|r| r.split(' ').next());
        count.and_then(|c| c.parse::<u64>().ok()).is_some_and(u64::is_power_of_two)
    }));
}

/// A node running another node protocol version (here version 0, failpoint
/// `node::protocol_version`, a build that checks; builds from before the check send no
/// version, which the unit tests of `tally_proto::auth` cover), with the cluster's key:
/// the other two go on without it and refuse its calls, it refuses theirs, and it applies
/// nothing new, so two builds that could apply one log differently never replicate to
/// each other. Restarted on the cluster's version, it catches up.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_protocol_version_is_shut_out() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let (mut cluster, client) = three_nodes_with_accounts().await;

    cluster.stop(3);
    cluster.spawn_with(3, &[("FAILPOINTS", "node::protocol_version=return(0)")]);
    eventually("node 3 answers", Duration::from_secs(20), || cluster.protocol_refused(3)).await;
    write_one(&client, 2).await;
    let leader = cluster.wait_leader().await;
    assert_ne!(leader, 3);
    let applied = cluster.status(leader, false).await.unwrap().applied_index;
    cluster.wait_converged(&[1, 2], applied).await;
    eventually("each side refuses the other's calls", Duration::from_secs(20), || async {
        let ours = cluster.protocol_refused(1).await? + cluster.protocol_refused(2).await?;
        let theirs = cluster.protocol_refused(3).await?;
        (ours > 0 && theirs > 0).then_some(())
    })
    .await;
    // Refused for the version, not the key (the key is the cluster's).
    assert_eq!(refused_by_all(&cluster, &[1, 2, 3]).await, 0);
    logged_at_doubling_counts(&cluster, &[1, 2], "of another protocol version");
    let outsider_applied = cluster.status(3, false).await.unwrap().applied_index;
    assert!(outsider_applied < applied, "node 3 applied {outsider_applied} of {applied}");

    // Restarted on the cluster's version, it catches up.
    cluster.stop(3);
    cluster.spawn(3);
    write_and_converge(&cluster, &client, 3).await;
}
