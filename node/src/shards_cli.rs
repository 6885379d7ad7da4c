//! `tallyd shards`: the shard map, leadership transfer and replica assignment from the
//! command line, through any node's `tally.v1.AdminService`. Moving a leader or replicas
//! is an operator's call: it carries the cluster key (`tally_proto::auth`).

use std::path::Path;
use std::time::Duration;

use tally_proto::auth::{ClusterKey, KeyedChannel};
use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to the node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take (a transfer waits up to 5 s for the new leader).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(endpoint: &str) -> Result<AdminServiceClient<Channel>, String> {
    Ok(AdminServiceClient::new(channel(endpoint).await?))
}

/// An admin client whose calls carry the key in `key_file`.
async fn connect_keyed(
    endpoint: &str,
    key_file: &Path,
) -> Result<AdminServiceClient<KeyedChannel>, String> {
    let key = ClusterKey::read_file(key_file).map_err(|e| format!("cluster key: {e}"))?;
    Ok(AdminServiceClient::with_interceptor(channel(endpoint).await?, key))
}

async fn channel(endpoint: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| format!("{endpoint}: not host:port ({e})"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {e}"))
}

fn rejected(endpoint: &str, status: &tonic::Status) -> String {
    format!("{endpoint} answered {:?}: {}", status.code(), status.message())
}

/// The shard map as `endpoint` knows it, as a table: one line per shard.
///
/// # Errors
/// The node cannot be reached or refuses the call (the message says which and why).
pub async fn list(endpoint: &str) -> Result<String, String> {
    let reply = connect(endpoint)
        .await?
        .list_shards(v1::ListShardsRequest {})
        .await
        .map_err(|s| rejected(endpoint, &s))?
        .into_inner();
    Ok(render(&reply))
}

/// `reply` as the table `tallyd shards list` prints.
#[must_use]
pub fn render(reply: &v1::ListShardsReply) -> String {
    let mut out = format!(
        "{} data shards, shard map version {} (as node {} knows them)\n\
         shard  leader  preferred  term  replicas  [assigned: nodes, while a change is under way]\n",
        reply.shards, reply.map_version, reply.node_id
    );
    for s in &reply.shard_infos {
        let leader = if s.leader_id == 0 { "-".to_owned() } else { s.leader_id.to_string() };
        let replicas: Vec<String> =
            s.replicas.iter().map(|r| format!("{}={}", r.node_id, r.addr)).collect();
        let mut ids: Vec<u64> = s.replicas.iter().map(|r| r.node_id).collect();
        ids.sort_unstable();
        let moving = if ids == s.assigned_node_ids {
            String::new()
        } else {
            let assigned: Vec<String> = s.assigned_node_ids.iter().map(u64::to_string).collect();
            format!("  [assigned: {}]", assigned.join(","))
        };
        out.push_str(&format!(
            "{:>5}  {:>6}  {:>9}  {:>4}  {}{moving}\n",
            s.shard_id,
            leader,
            s.preferred_leader_id,
            s.term,
            replicas.join(",")
        ));
    }
    out
}

/// Moves `shard`'s leadership to node `to` through `endpoint`, with the cluster key in
/// `key_file`; returns the line to print.
///
/// # Errors
/// The key file is unusable, or the node cannot be reached, or refuses or times out (the
/// message says which and why).
pub async fn transfer_leader(
    endpoint: &str,
    key_file: &Path,
    shard: u32,
    to: u64,
) -> Result<String, String> {
    let reply = connect_keyed(endpoint, key_file)
        .await?
        .transfer_leader(v1::TransferLeaderRequest { shard_id: shard, to_node_id: to })
        .await
        .map_err(|s| rejected(endpoint, &s))?
        .into_inner();
    Ok(format!("shard {shard}: node {} leads", reply.leader_id))
}

/// Assigns `shard`'s replicas to `nodes` through `endpoint`, with the cluster key in
/// `key_file`: reads the map's committed version (`GetShardMap`), then changes it if nobody
/// changed it meanwhile; returns the line to print.
///
/// # Errors
/// The key file is unusable, or the node cannot be reached, or refuses the change (the
/// message says which and why).
pub async fn set_replicas(
    endpoint: &str,
    key_file: &Path,
    shard: u32,
    nodes: &[u64],
) -> Result<String, String> {
    let mut admin = connect_keyed(endpoint, key_file).await?;
    let map = admin
        .get_shard_map(v1::GetShardMapRequest {})
        .await
        .map_err(|s| rejected(endpoint, &s))?
        .into_inner();
    let reply = admin
        .set_shard_replicas(v1::SetShardReplicasRequest {
            shard_id: shard,
            node_ids: nodes.to_vec(),
            expected_map_version: map.map_version,
        })
        .await
        .map_err(|s| rejected(endpoint, &s))?
        .into_inner();
    Ok(format!(
        "shard {shard}: assigned to nodes {nodes:?} (shard map version {}); its leader now \
         moves the replicas: `tallyd shards list` shows them once done",
        reply.map_version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_shard() {
        let reply = v1::ListShardsReply {
            shards: 2,
            node_id: 1,
            shard_infos: vec![
                v1::ShardInfo {
                    shard_id: 1,
                    leader_id: 1,
                    preferred_leader_id: 1,
                    term: 3,
                    replicas: vec![v1::ShardReplica { node_id: 1, addr: "a:1".into() }],
                    assigned_node_ids: vec![1],
                    ..Default::default()
                },
                v1::ShardInfo {
                    shard_id: 2,
                    preferred_leader_id: 2,
                    assigned_node_ids: vec![2],
                    ..Default::default()
                },
            ],
            map_version: 7,
        };
        let table = render(&reply);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("2 data shards, shard map version 7"), "{table}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["1", "1", "1", "3", "1=a:1"]);
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["2", "-", "2", "0", "[assigned:", "2]"],
            "a shard whose replicas are not yet where the map assigns them says so"
        );
    }
}
