//! `tally-client` against fake ledger servers on loopback: redirects, retries with the same
//! ids, backoff, a stale shard map refreshed, non-retried rejections, deadlines and local
//! validation.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_client::{Client, ClientError};
use tally_proto::routing::MAP_VERSION_METADATA_KEY;
use tally_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use tally_proto::v1::ledger_service_server::{LedgerService, LedgerServiceServer};
use tally_proto::v1::{self, CreateTransferStatus};
use tally_proto::{u128_of, uint128};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// A ledger server that answers `CreateTransfers` from a script (then OK for ever) and
/// records every request it receives. With `map_version` set it also serves
/// `ListShards` (one shard, that version) and, like a node, refuses a `CreateTransfers`
/// routed with an older map version with `TALLY:StaleShardMap` (one sent without a version
/// is not checked), recording the versions sent.
#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<Status>>>,
    seen: Arc<Mutex<Vec<Vec<u128>>>>,
    map_version: Option<Arc<AtomicU64>>,
    versions: Arc<Mutex<Vec<Option<u64>>>>,
    /// Answer one result fewer than the request's events (a faulty node).
    short: bool,
}

impl Fake {
    fn answering(script: Vec<Status>) -> Self {
        Self { script: Arc::new(Mutex::new(script.into())), ..Self::default() }
    }
    fn requests(&self) -> Vec<Vec<u128>> {
        self.seen.lock().clone()
    }
}

#[tonic::async_trait]
impl LedgerService for Fake {
    async fn swap(&self, _: Request<v1::SwapRequest>) -> Result<Response<v1::SwapReply>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn swap_batch(
        &self,
        _: Request<v1::SwapBatchRequest>,
    ) -> Result<Response<v1::SwapBatchReply>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn create_transfers(
        &self,
        request: Request<v1::CreateTransfersRequest>,
    ) -> Result<Response<v1::CreateTransfersReply>, Status> {
        let ids: Vec<u128> = request.get_ref().transfers.iter().map(|t| u128_of(t.id)).collect();
        self.seen.lock().push(ids.clone());
        if let Some(current) = &self.map_version {
            let sent = request
                .metadata()
                .get(MAP_VERSION_METADATA_KEY)
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            self.versions.lock().push(sent);
            let current = current.load(Ordering::SeqCst);
            if sent.is_some_and(|v| v < current) {
                let mut stale = Status::failed_precondition("TALLY:StaleShardMap: map moved");
                stale.metadata_mut().insert(MAP_VERSION_METADATA_KEY, MetadataValue::from(current));
                return Err(stale);
            }
        }
        if let Some(status) = self.script.lock().pop_front() {
            return Err(status);
        }
        let results = ids[usize::from(self.short)..]
            .iter()
            .map(|_| v1::CreateTransferResult {
                timestamp: 1,
                status: CreateTransferStatus::Created as i32,
            })
            .collect();
        Ok(Response::new(v1::CreateTransfersReply { results }))
    }
    async fn create_accounts(
        &self,
        _: Request<v1::CreateAccountsRequest>,
    ) -> Result<Response<v1::CreateAccountsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn lookup_accounts(
        &self,
        _: Request<v1::LookupAccountsRequest>,
    ) -> Result<Response<v1::LookupAccountsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn lookup_transfers(
        &self,
        _: Request<v1::LookupTransfersRequest>,
    ) -> Result<Response<v1::LookupTransfersReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_account_transfers(
        &self,
        _: Request<v1::GetAccountTransfersRequest>,
    ) -> Result<Response<v1::GetAccountTransfersReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_account_balances(
        &self,
        _: Request<v1::GetAccountBalancesRequest>,
    ) -> Result<Response<v1::GetAccountBalancesReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl AdminService for Fake {
    async fn node_status(
        &self,
        _: Request<v1::NodeStatusRequest>,
    ) -> Result<Response<v1::NodeStatusReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_shards(
        &self,
        _: Request<v1::ListShardsRequest>,
    ) -> Result<Response<v1::ListShardsReply>, Status> {
        let Some(version) = &self.map_version else { return Err(Status::unimplemented("fake")) };
        Ok(Response::new(v1::ListShardsReply {
            shards: 1,
            map_version: version.load(Ordering::SeqCst),
            ..Default::default()
        }))
    }
    async fn transfer_leader(
        &self,
        _: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_shard_replicas(
        &self,
        _: Request<v1::SetShardReplicasRequest>,
    ) -> Result<Response<v1::SetShardReplicasReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_shard_map(
        &self,
        _: Request<v1::GetShardMapRequest>,
    ) -> Result<Response<v1::GetShardMapReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` on a fresh loopback port; returns its address.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerServiceServer::new(fake.clone()))
            .add_service(AdminServiceServer::new(fake))
            .serve_with_incoming(incoming),
    );
    addr
}

/// An address nobody listens on (bound, then released).
async fn dead_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn transfers(ids: &[u128]) -> Vec<v1::Transfer> {
    ids.iter()
        .map(|&id| v1::Transfer {
            id: uint128(id),
            amount: uint128(1),
            ledger: 1,
            code: 1,
            ..Default::default()
        })
        .collect()
}

fn client(endpoints: Vec<String>, deadline: Duration) -> Client {
    Client::builder(endpoints)
        .deadline(deadline)
        .attempt_timeout(Duration::from_millis(500).min(deadline))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap()
}

/// The client's resend counts, as text.
fn retries(c: &Client) -> Vec<(String, u64)> {
    c.take_retries().into_iter().map(|(cause, n)| (cause.to_string(), n)).collect()
}

fn not_leader(leader_addr: &str) -> Status {
    let mut status = Status::unavailable("TALLY:NotLeader: not the leader");
    status
        .metadata_mut()
        .insert("tally-leader-addr", MetadataValue::try_from(leader_addr).unwrap());
    status
}

#[tokio::test]
async fn a_follower_redirect_resends_the_same_ids_to_the_leader_and_sticks() {
    // NotLeader with a hint: the identical request goes to the leader, and so does the next.
    let leader = Fake::default();
    let leader_addr = serve(leader.clone()).await;
    let follower = Fake::answering(vec![not_leader(&leader_addr)]);
    let follower_addr = serve(follower.clone()).await;
    let c = client(vec![follower_addr], Duration::from_secs(5));
    let results = c.create_transfers(transfers(&[7, 8, 9])).await.unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(follower.requests(), vec![vec![7, 8, 9]]);
    assert_eq!(leader.requests(), vec![vec![7, 8, 9]]);
    c.create_transfers(transfers(&[10])).await.unwrap();
    assert_eq!(follower.requests().len(), 1, "the second call went straight to the leader");
    assert_eq!(leader.requests(), vec![vec![7, 8, 9], vec![10]]);
    assert_eq!(retries(&c), vec![("Unavailable NotLeader".to_owned(), 1)]);
    assert!(c.take_retries().is_empty(), "taking the counts empties them");
}

#[tokio::test]
async fn an_unreachable_or_hintless_node_is_skipped() {
    // A dead endpoint and an UNAVAILABLE without a hint both move the call to the next node.
    let good = Fake::default();
    let good_addr = serve(good.clone()).await;
    let hintless = Fake::answering(vec![Status::unavailable("TALLY:NoQuorum: no quorum")]);
    let hintless_addr = serve(hintless.clone()).await;
    let c = client(vec![dead_addr().await, hintless_addr, good_addr], Duration::from_secs(5));
    c.create_transfers(transfers(&[1])).await.unwrap();
    assert_eq!(hintless.requests(), vec![vec![1]]);
    assert_eq!(good.requests(), vec![vec![1]]);
    // The dead endpoint's transport error names no TALLY code.
    let counted = retries(&c);
    assert!(counted.contains(&("Unavailable NoQuorum".to_owned(), 1)), "{counted:?}");
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<u64>(), 2, "{counted:?}");
}

#[tokio::test]
async fn overloaded_backs_off_and_resends_to_the_same_node() {
    // RESOURCE_EXHAUSTED is retried on the same node after the suggested wait.
    let mut overloaded = Status::resource_exhausted("TALLY:Overloaded: queue full");
    overloaded.metadata_mut().insert("tally-retry-after-ms", MetadataValue::from(20_u64));
    let node = Fake::answering(vec![overloaded]);
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    let started = Instant::now();
    c.create_transfers(transfers(&[5])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20), "waited the suggested time");
    assert_eq!(node.requests(), vec![vec![5], vec![5]]);
    assert_eq!(retries(&c), vec![("ResourceExhausted Overloaded".to_owned(), 1)]);
}

#[tokio::test]
async fn a_stale_shard_map_is_fetched_again_and_the_same_ids_resent() {
    let version = Arc::new(AtomicU64::new(3));
    let node = Fake { map_version: Some(version.clone()), ..Fake::default() };
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    // The first call starts the map fetch (in the background): it goes out without a
    // version (not checked) or with 3; wait, bounded, until the client holds version 3.
    c.create_transfers(transfers(&[100])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while c.shard_map_version() != Some(3) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the client fetched map version 3");
    c.create_transfers(transfers(&[101])).await.unwrap();
    assert_eq!(node.versions.lock().last(), Some(&Some(3)));
    // The map moves on: the next call is sent with 3, refused with 4, the map fetched
    // again, and the same ids resent with 4.
    version.store(4, Ordering::SeqCst);
    let before = node.versions.lock().len();
    c.create_transfers(transfers(&[2, 3])).await.unwrap();
    assert_eq!(node.versions.lock()[before..], [Some(3), Some(4)]);
    let seen = node.requests();
    assert_eq!(seen[seen.len() - 2..], [vec![2, 3], vec![2, 3]]);
}

#[tokio::test]
async fn the_shard_count_is_fetched_from_the_first_endpoint_that_serves_the_map() {
    // No request made yet: the count is fetched on demand, past a dead endpoint and a node
    // that serves no map, and then held.
    let mapless = Fake::default();
    let node = Fake { map_version: Some(Arc::new(AtomicU64::new(2))), ..Fake::default() };
    let endpoints = vec![dead_addr().await, serve(mapless).await, serve(node).await];
    let c = client(endpoints, Duration::from_secs(5));
    assert_eq!(c.shard_count().await, Some(1));
    assert_eq!(c.shard_map_version(), Some(2));
    // Nobody serves a map: `None`, after one bounded try per endpoint.
    let c = client(vec![serve(Fake::default()).await], Duration::from_secs(5));
    assert_eq!(c.shard_count().await, None);
}

#[tokio::test]
async fn a_stale_shard_map_refusal_without_a_version_backs_off() {
    // A node that says StaleShardMap but names no version, while the map it serves does
    // not move: the client resends at once only once (the first map it fetched is newer
    // than none), then backs off until its deadline rather than spinning.
    let refusal = || Status::failed_precondition("TALLY:StaleShardMap: map moved");
    let node = Fake {
        map_version: Some(Arc::new(AtomicU64::new(5))),
        ..Fake::answering((0..10_000).map(|_| refusal()).collect())
    };
    let c = client(vec![serve(node.clone()).await], Duration::from_millis(300));
    let error = c.create_transfers(transfers(&[1])).await.unwrap_err();
    let ClientError::DeadlineExceeded { attempts, .. } = error else {
        panic!("expected DeadlineExceeded, got {error:?}");
    };
    // Backoff 5, 10, 20, 40, 50, 50… ms within 300 ms: about ten attempts; a resend
    // without waiting would make hundreds.
    assert!((2..=20).contains(&attempts), "{attempts} attempts");
    assert_eq!(node.requests().len(), attempts as usize);
}

#[tokio::test]
async fn a_rejection_is_not_retried() {
    // INVALID_ARGUMENT comes back at once as Rejected, after exactly one request.
    let node =
        Fake::answering(vec![Status::invalid_argument("TALLY:InvalidRequest: event 0: code")]);
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    let error = c.create_transfers(transfers(&[3])).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Rejected { code: tonic::Code::InvalidArgument, message } if message.contains("InvalidRequest")),
        "{error:?}"
    );
    assert_eq!(node.requests().len(), 1);
    assert!(c.take_retries().is_empty(), "a refusal is not resent");
}

#[tokio::test]
async fn the_deadline_bounds_a_call_to_dead_nodes() {
    // With every node unreachable the call ends after its deadline, reporting its attempts.
    let c = client(vec![dead_addr().await, dead_addr().await], Duration::from_millis(300));
    let started = Instant::now();
    let error = c.create_transfers(transfers(&[1])).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    match error {
        ClientError::DeadlineExceeded { attempts, .. } => assert!(attempts > 1, "{attempts}"),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_and_empty_requests_are_refused_locally() {
    // Nothing is sent for a request the server would refuse whole.
    let node = Fake::default();
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    let ids: Vec<u128> = (1..=8191).collect();
    assert!(matches!(
        c.create_transfers(transfers(&ids)).await,
        Err(ClientError::InvalidRequest(_))
    ));
    assert!(matches!(c.create_transfers(Vec::new()).await, Err(ClientError::InvalidRequest(_))));
    assert!(node.requests().is_empty());
    assert!(Client::builder(Vec::<String>::new()).build().is_err());
    assert!(Client::builder(["not a uri with spaces"]).build().is_err());
}

/// The error of a create of `ids`; fails the test if the call succeeds.
async fn write_error(c: &Client, ids: &[u128]) -> ClientError {
    c.create_transfers(transfers(ids)).await.expect_err("the call fails")
}

#[tokio::test]
async fn an_error_that_may_follow_an_apply_is_an_unknown_outcome_not_a_rejection() {
    // INTERNAL (e.g. a node that merged its parts' results wrongly after they applied), and
    // any status a node marked `tally-outcome: unknown` (a split request's part failed while
    // others may have applied), whatever its code: the caller must not read "nothing done".
    let mut marked = Status::failed_precondition("TALLY:BatchRefused: clock out of range");
    marked.metadata_mut().insert("tally-outcome", MetadataValue::from_static("unknown"));
    let mut marked_invalid = Status::invalid_argument("TALLY:WrongShard: event 3");
    marked_invalid.metadata_mut().insert("tally-outcome", MetadataValue::from_static("unknown"));
    let internal = Status::internal("TALLY:Internal: a shard answered 1 results for 2 events");
    for status in [internal, marked, marked_invalid] {
        let code = status.code();
        let node = Fake::answering(vec![status]);
        let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
        let error = write_error(&c, &[1, 2]).await;
        assert!(
            matches!(&error, ClientError::OutcomeUnknown { code: c, attempts: 1, earlier: None, .. } if *c == code),
            "{error:?}"
        );
        assert_eq!(node.requests().len(), 1, "not resent");
    }
    // The same refusal unmarked, on a first attempt: nothing applied.
    let node = Fake::answering(vec![Status::failed_precondition("TALLY:BatchRefused: clock")]);
    let c = client(vec![serve(node).await], Duration::from_secs(5));
    let error = write_error(&c, &[1]).await;
    assert!(matches!(error, ClientError::Rejected { code: tonic::Code::FailedPrecondition, .. }));
}

#[tokio::test]
async fn a_reply_out_of_step_with_the_request_is_an_unknown_outcome() {
    // Two events, one result: which one it answers is unknown, and either may have applied.
    let node = Fake { short: true, ..Fake::default() };
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    let error = write_error(&c, &[1, 2]).await;
    let ClientError::OutcomeUnknown { code: tonic::Code::Internal, message, attempts: 1, .. } =
        &error
    else {
        panic!("expected OutcomeUnknown, got {error:?}");
    };
    assert!(message.contains("2 events holds 1 results"), "{message}");
    assert_eq!(node.requests().len(), 1, "not resent");
}

#[tokio::test]
async fn a_state_refusal_of_a_resend_after_an_uncertain_attempt_is_an_unknown_outcome() {
    // The first attempt may have applied (OutcomeUnknown without a hint: resent to the next
    // node); the resend is refused for the cluster's state (the leader's clock), which says
    // nothing of the first attempt: unknown, naming the first attempt.
    let uncertain = Status::unavailable("TALLY:OutcomeUnknown: leadership changed");
    let refused = Status::failed_precondition("TALLY:BatchRefused: leader clock out of range");
    let node = Fake::answering(vec![uncertain.clone(), refused]);
    let c = client(vec![serve(node.clone()).await], Duration::from_secs(5));
    let error = write_error(&c, &[7]).await;
    let ClientError::OutcomeUnknown { code, attempts, earlier: Some(earlier), .. } = &error else {
        panic!("expected OutcomeUnknown naming the earlier attempt, got {error:?}");
    };
    assert_eq!((*code, *attempts), (tonic::Code::FailedPrecondition, 2));
    assert!(earlier.contains("OutcomeUnknown"), "{earlier}");
    assert!(error.to_string().contains("an earlier attempt may have applied"), "{error}");
    assert_eq!(node.requests(), vec![vec![7], vec![7]], "the same ids both times");
    // A refusal of the request's content would have refused the first attempt too, and a
    // node answers QuoteExpired only once no attempt of the swap can apply: both final.
    let invalid = Status::invalid_argument("TALLY:InvalidRequest: event 0: code");
    let expired = Status::failed_precondition("TALLY:QuoteExpired: the quote expired");
    for last in [invalid, expired] {
        let code = last.code();
        let node = Fake::answering(vec![uncertain.clone(), last]);
        let c = client(vec![serve(node).await], Duration::from_secs(5));
        let error = write_error(&c, &[8]).await;
        assert!(matches!(&error, ClientError::Rejected { code: c, .. } if *c == code), "{error:?}");
    }
    // A stopping replica may have appended the entry before it answered `Stopped`.
    let stopped = Status::unavailable("TALLY:Stopped: raft stopped");
    let refused = Status::failed_precondition("TALLY:BatchRefused: leader clock out of range");
    let node = Fake::answering(vec![stopped, refused]);
    let c = client(vec![serve(node).await], Duration::from_secs(5));
    let error = write_error(&c, &[10]).await;
    assert!(matches!(error, ClientError::OutcomeUnknown { earlier: Some(_), .. }), "{error:?}");
    // A redirect says nothing was done: the refusal after it is a rejection.
    let leader = Fake::answering(vec![Status::failed_precondition("TALLY:BatchRefused: clock")]);
    let leader_addr = serve(leader).await;
    let follower = Fake::answering(vec![not_leader(&leader_addr)]);
    let c = client(vec![serve(follower).await], Duration::from_secs(5));
    let error = write_error(&c, &[9]).await;
    assert!(matches!(error, ClientError::Rejected { code: tonic::Code::FailedPrecondition, .. }));
}

#[tokio::test]
async fn two_nodes_naming_each_other_leader_cannot_make_a_call_spin() {
    // During an election two nodes may each redirect to the other: the client resends at
    // once only IMMEDIATE_RESENDS_MAX times in a row, then backs off.
    let a = Fake::default();
    let b = Fake::default();
    let (a_addr, b_addr) = (serve(a.clone()).await, serve(b.clone()).await);
    a.script.lock().extend((0..100_000).map(|_| not_leader(&b_addr)));
    b.script.lock().extend((0..100_000).map(|_| not_leader(&a_addr)));
    let c = client(vec![a_addr], Duration::from_millis(300));
    let error = write_error(&c, &[1]).await;
    let ClientError::DeadlineExceeded { attempts, .. } = error else {
        panic!("expected DeadlineExceeded, got {error:?}");
    };
    // Backoff 5, 10, 20, 40, 50, 50… ms within 300 ms: about 9 waits, each after at most
    // 5 attempts; without the bound, thousands of attempts at loopback speed.
    assert!((10..=60).contains(&attempts), "{attempts} attempts");
    assert_eq!(a.requests().len() + b.requests().len(), attempts as usize);
}
