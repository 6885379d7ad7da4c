//! `tallyd shards`: the shard map and leadership transfer from the command line, through
//! any node's `tally.v1.AdminService`.

use std::time::Duration;

use tally_proto::v1;
use tally_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to the node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take (a transfer waits up to 5 s for the new leader).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(endpoint: &str) -> Result<AdminServiceClient<Channel>, String> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| format!("{endpoint}: not host:port ({e})"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {e}"))?;
    Ok(AdminServiceClient::new(channel))
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
        "{} data shards (as node {} knows them)\nshard  leader  preferred  term  replicas\n",
        reply.shards, reply.node_id
    );
    for s in &reply.shard_infos {
        let leader = if s.leader_id == 0 { "-".to_owned() } else { s.leader_id.to_string() };
        let replicas: Vec<String> =
            s.replicas.iter().map(|r| format!("{}={}", r.node_id, r.addr)).collect();
        out.push_str(&format!(
            "{:>5}  {:>6}  {:>9}  {:>4}  {}\n",
            s.shard_id,
            leader,
            s.preferred_leader_id,
            s.term,
            replicas.join(",")
        ));
    }
    out
}

/// Moves `shard`'s leadership to node `to` through `endpoint`; returns the line to print.
///
/// # Errors
/// The node cannot be reached, or refuses or times out (the message says which and why).
pub async fn transfer_leader(endpoint: &str, shard: u32, to: u64) -> Result<String, String> {
    let reply = connect(endpoint)
        .await?
        .transfer_leader(v1::TransferLeaderRequest { shard_id: shard, to_node_id: to })
        .await
        .map_err(|s| rejected(endpoint, &s))?
        .into_inner();
    Ok(format!("shard {shard}: node {} leads", reply.leader_id))
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
                    ..Default::default()
                },
                v1::ShardInfo { shard_id: 2, preferred_leader_id: 2, ..Default::default() },
            ],
        };
        let table = render(&reply);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("2 data shards"), "{table}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["1", "1", "1", "3", "1=a:1"]);
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["2", "-", "2", "0"]);
    }
}
