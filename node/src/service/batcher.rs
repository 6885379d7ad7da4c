//! Group commit: concurrent create requests for a shard become one Raft entry.
//!
//! Requests queue in a bounded channel (`batch.queue_requests_max`; beyond it a caller is
//! told `Overloaded` at once). One task takes the oldest request, waits for a free
//! in-flight slot (`batch.in_flight_entries_max` entries proposed and not yet applied),
//! then gathers every request already queued of the same kind, and (if `batch.linger_us` is
//! not 0) keeps gathering for up to that long while the entry is below `batch.events_max`
//! events. With the default linger of 0 the batching is natural: a request proposes at once
//! when a slot is free, and under load requests queue while the in-flight entries commit. The entry keeps
//! each request's events together and in order, and the state machine applies each
//! request as its own batch (so a linked chain never spans two callers); every caller gets
//! exactly the outcomes of its own events. While entries are in flight, requests keep
//! queueing, so batches grow with load: one fsync and one consensus round serve thousands
//! of events.
//!
//! The batcher proposes through the [`Propose`] trait: the shard's [`Replica`] in
//! production, a fake in the tests below and in `bench/benches/batcher.rs` (a Raft group
//! is too heavy to build for a micro-benchmark).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::BatchConfig;
use crate::raft::node::{Replica, ReplicaError};
use crate::raft::{Command, CommandReply, Op, RequestOutcome};

/// Where the batcher proposes its entries: the shard's [`Replica`] in production.
pub trait Propose: Clone + Send + Sync + 'static {
    /// Proposes `command` and waits until it is committed and applied, as
    /// [`Replica::write`] does; the reply has one outcome per request of the command.
    fn write(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<CommandReply, ReplicaError>> + Send;
}

impl Propose for Replica {
    fn write(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<CommandReply, ReplicaError>> + Send {
        Replica::write(self, command)
    }
}

/// What a request creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Accounts.
    Accounts,
    /// Transfers.
    Transfers,
}

/// Why a submitted request got no outcome.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full; retry after a short wait.
    #[error("request queue full ({queue_requests_max} requests)")]
    Overloaded {
        /// The configured queue length.
        queue_requests_max: u32,
    },
    /// Raft could not commit the entry.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The node is shutting down.
    #[error("node shutting down")]
    Closed,
}

struct Submission {
    kind: Kind,
    events: u32,
    /// How the request is judged imported or not, if not by its own first event.
    imported: Option<bool>,
    records: Vec<u8>,
    reply: oneshot::Sender<Result<RequestOutcome, SubmitError>>,
}

/// The group-commit front of one shard's replica.
#[derive(Clone, Debug)]
pub struct Batcher {
    tx: mpsc::Sender<Submission>,
    queue_requests_max: u32,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Submission({:?}, {} events)", self.kind, self.events)
    }
}

impl Batcher {
    /// Starts the batching task for `proposer` (the shard's [`Replica`] in production). It
    /// ends when every `Batcher` is dropped.
    #[must_use]
    pub fn start<P: Propose>(proposer: P, config: &BatchConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_requests_max as usize);
        let task = tokio::spawn(run(proposer, config.clone(), rx));
        (Self { tx, queue_requests_max: config.queue_requests_max }, task)
    }

    /// Submits one request's events (`records`: back-to-back ledger records) and waits
    /// for their outcomes.
    ///
    /// # Errors
    /// See [`SubmitError`].
    pub async fn submit(
        &self,
        kind: Kind,
        events: u32,
        records: Vec<u8>,
    ) -> Result<RequestOutcome, SubmitError> {
        self.submit_judged(kind, events, None, records).await
    }

    /// As [`submit`](Self::submit), the request judged imported or not by `imported` if
    /// given, else by its own first event (a part of a request split over shards, see
    /// [`Op::CreateTransfersJudged`]). An entry holding such a request is proposed as
    /// `CreateAccountsJudged` or `CreateTransfersJudged`, any other as before.
    ///
    /// # Errors
    /// See [`SubmitError`].
    pub async fn submit_judged(
        &self,
        kind: Kind,
        events: u32,
        imported: Option<bool>,
        records: Vec<u8>,
    ) -> Result<RequestOutcome, SubmitError> {
        let (reply, outcome) = oneshot::channel();
        let submission = Submission { kind, events, imported, records, reply };
        self.tx.try_send(submission).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                SubmitError::Overloaded { queue_requests_max: self.queue_requests_max }
            }
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        outcome.await.map_err(|_| SubmitError::Closed)?
    }
}

async fn run<P: Propose>(proposer: P, config: BatchConfig, mut rx: mpsc::Receiver<Submission>) {
    let in_flight = Arc::new(Semaphore::new(config.in_flight_entries_max as usize));
    let linger = Duration::from_micros(config.linger_us);
    let mut carry: Option<Submission> = None;
    loop {
        let first = match carry.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        if first.reply.is_closed() {
            // Its caller gave up while it queued: never proposed (see `gather`).
            continue;
        }
        let (group, rest) = gather(first, &mut rx, config.events_max, linger).await;
        carry = rest;
        tokio::spawn(propose(proposer.clone(), group, permit));
    }
}

/// Takes `first` and whatever follows of the same kind, within `events_max` and `linger`.
/// Returns the group and the request that did not fit, if any. A queued request whose
/// caller has given up (its future dropped: the node's request timeout, a cancelled call)
/// is dropped unproposed, as if it had never been sent, which its caller's answer
/// (`TALLY:Timeout`: "may still apply") allows: under overload, work nobody waits for no
/// longer fills the entries while callers resend it.
async fn gather(
    first: Submission,
    rx: &mut mpsc::Receiver<Submission>,
    events_max: u32,
    linger: Duration,
) -> (Vec<Submission>, Option<Submission>) {
    let deadline = tokio::time::Instant::now() + linger;
    let kind = first.kind;
    let mut events = first.events;
    let mut group = vec![first];
    while events < events_max {
        let next = match rx.try_recv() {
            Ok(s) => s,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            // Nothing queued: with no linger, propose now rather than wait for a timer
            // (tokio's timer rounds every wait up to a whole millisecond).
            Err(mpsc::error::TryRecvError::Empty) if linger.is_zero() => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(s)) => s,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        if next.reply.is_closed() {
            continue;
        }
        if next.kind != kind || events + next.events > events_max {
            return (group, Some(next));
        }
        events += next.events;
        group.push(next);
    }
    (group, None)
}

/// The leader's wall clock, in nanoseconds since the epoch (0 if before it).
#[must_use]
pub fn cluster_time_now_ns() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

async fn propose<P: Propose>(proposer: P, group: Vec<Submission>, permit: OwnedSemaphorePermit) {
    let kind = group[0].kind;
    let requests: Vec<u32> = group.iter().map(|s| s.events).collect();
    let mut events = Vec::with_capacity(group.iter().map(|s| s.records.len()).sum());
    for s in &group {
        events.extend_from_slice(&s.records);
    }
    let judged = group.iter().any(|s| s.imported.is_some());
    let imported = || group.iter().map(|s| s.imported).collect();
    let op = match (kind, judged) {
        (Kind::Accounts, false) => Op::CreateAccounts { requests, events },
        (Kind::Transfers, false) => Op::CreateTransfers { requests, events },
        (Kind::Accounts, true) => {
            Op::CreateAccountsJudged { requests, imported: imported(), events }
        }
        (Kind::Transfers, true) => {
            Op::CreateTransfersJudged { requests, imported: imported(), events }
        }
    };
    let command = Command { cluster_time_ns: cluster_time_now_ns(), op };
    let result = proposer.write(command).await;
    drop(permit);
    match result {
        Ok(reply) => {
            assert_eq!(reply.requests.len(), group.len(), "one outcome per request of the entry");
            for (submission, outcome) in group.into_iter().zip(reply.requests) {
                let _ = submission.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for submission in group {
                let _ = submission.reply.send(Err(SubmitError::Replica(e.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use futures_util::future::join_all;

    use super::*;

    /// A fake replica: reports each entry's request sizes, waits until the test opens the
    /// gate, then answers every event with `(the first 8 bytes of its record, status 0)`.
    #[derive(Clone)]
    struct Gated {
        entries: mpsc::Sender<Vec<u32>>,
        gate: Arc<Semaphore>,
    }

    impl Propose for Gated {
        async fn write(&self, command: Command) -> Result<CommandReply, ReplicaError> {
            let Op::CreateTransfers { requests, events } = command.op else {
                panic!("the test proposes transfers only");
            };
            self.entries.send(requests.clone()).await.expect("the test listens");
            drop(self.gate.acquire().await.expect("the gate is never closed"));
            let mut records = events.chunks_exact(8);
            let requests = requests
                .iter()
                .map(|&count| {
                    let outcome = records.by_ref().take(count as usize).map(|r| (id_of(r), 0));
                    Ok(outcome.collect())
                })
                .collect();
            assert!(records.next().is_none(), "every record answered");
            Ok(CommandReply { requests })
        }
    }

    fn id_of(record: &[u8]) -> u64 {
        u64::from_le_bytes(record.try_into().expect("8-byte records"))
    }

    fn records(ids: &[u64]) -> Vec<u8> {
        ids.iter().flat_map(|id| id.to_le_bytes()).collect()
    }

    /// A batcher with one in-flight slot, held by a first request of one event (id 7)
    /// whose entry waits at the gate.
    struct Held {
        batcher: Batcher,
        task: JoinHandle<()>,
        /// Each proposed entry's request sizes, in order.
        entries: mpsc::Receiver<Vec<u32>>,
        gate: Arc<Semaphore>,
        first: JoinHandle<Result<RequestOutcome, SubmitError>>,
    }

    async fn one_entry_in_flight() -> Held {
        let (entries_tx, mut entries) = mpsc::channel(4);
        let gate = Arc::new(Semaphore::new(0));
        let config =
            BatchConfig { linger_us: 0, in_flight_entries_max: 1, ..BatchConfig::default() };
        let fake = Gated { entries: entries_tx, gate: gate.clone() };
        let (batcher, task) = Batcher::start(fake, &config);
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(Kind::Transfers, 1, records(&[7])).await }
        });
        assert_eq!(entries.recv().await, Some(vec![1]), "the first request goes out alone");
        Held { batcher, task, entries, gate, first }
    }

    /// Polls `future` once, asserting it waits: `submit` queues its request before its
    /// first await, so this queues it.
    async fn queue<F: Future>(mut future: std::pin::Pin<&mut F>) {
        std::future::poll_fn(|cx| {
            assert!(future.as_mut().poll(cx).is_pending(), "queued behind the first entry");
            Poll::Ready(())
        })
        .await;
    }

    /// Requests queued while an entry is in flight are proposed together in the next
    /// entry, in order, and each caller gets exactly the outcomes of its own events.
    #[tokio::test]
    async fn queued_requests_share_an_entry_and_get_their_own_outcomes() {
        let Held { batcher, task, mut entries, gate, first } = one_entry_in_flight().await;

        // Ten callers of 1 to 3 events each, queued while the first entry holds the only
        // in-flight slot: `submit` queues before its first await, so one poll queues all.
        let ids: Vec<Vec<u64>> = (1..=10)
            .map(|caller| (0..1 + caller % 3).map(|i| caller * 100 + i).collect())
            .collect();
        let sizes: Vec<u32> =
            ids.iter().map(|ids| u32::try_from(ids.len()).expect("small")).collect();
        let outcomes = {
            let submits = ids
                .iter()
                .zip(&sizes)
                .map(|(ids, &count)| batcher.submit(Kind::Transfers, count, records(ids)));
            let mut callers = pin!(join_all(submits));
            queue(callers.as_mut()).await;
            gate.add_permits(1);
            callers.await
        };
        assert_eq!(entries.recv().await, Some(sizes), "one entry for all ten");
        for (ids, outcome) in ids.iter().zip(outcomes) {
            let own: Vec<(u64, u32)> = ids.iter().map(|&id| (id, 0)).collect();
            assert_eq!(outcome.expect("submitted").expect("applied"), own);
        }
        let first = first.await.expect("caller task").expect("submitted").expect("applied");
        assert_eq!(first, vec![(7, 0)]);
        drop(batcher);
        task.await.expect("the batching task ends when every Batcher is dropped");
    }

    /// A request whose caller gave up before it was proposed is never proposed; one whose
    /// caller still waits is, in its turn.
    #[tokio::test]
    async fn a_request_given_up_before_it_is_proposed_is_not_proposed() {
        let Held { batcher, task, mut entries, gate, first } = one_entry_in_flight().await;
        // Two callers queue behind it and give up (their futures dropped after one poll,
        // which queues them); a third queues after them and waits.
        for ids in [&[20, 21][..], &[30, 31, 32][..]] {
            let count = u32::try_from(ids.len()).expect("small");
            queue(pin!(batcher.submit(Kind::Transfers, count, records(ids)))).await;
        }
        {
            let mut waiting = pin!(batcher.submit(Kind::Transfers, 1, records(&[40])));
            queue(waiting.as_mut()).await;
            gate.add_permits(2);
            assert_eq!(waiting.await.expect("submitted").expect("applied"), vec![(40, 0)]);
        }
        assert_eq!(entries.recv().await, Some(vec![1]), "only the waiting caller's request");
        assert_eq!(
            first.await.expect("caller task").expect("submitted").expect("applied"),
            vec![(7, 0)]
        );
        drop(batcher);
        task.await.expect("the batching task ends when every Batcher is dropped");
        assert!(entries.recv().await.is_none(), "nothing else was proposed");
    }

    /// Proposes `requests` (each: event count, judgement) as one entry and returns the
    /// operation proposed; every caller gets its outcome.
    async fn proposed(kind: Kind, requests: &[(u32, Option<bool>)]) -> Op {
        #[derive(Clone)]
        struct Recorder(mpsc::Sender<Op>);
        impl Propose for Recorder {
            async fn write(&self, command: Command) -> Result<CommandReply, ReplicaError> {
                let requests = match &command.op {
                    Op::CreateAccounts { requests, .. }
                    | Op::CreateTransfers { requests, .. }
                    | Op::CreateAccountsJudged { requests, .. }
                    | Op::CreateTransfersJudged { requests, .. } => requests.clone(),
                    Op::Pulse => panic!("the batcher proposes no pulse"),
                };
                self.0.send(command.op).await.expect("the test listens");
                let outcome = |&n: &u32| Ok(vec![(0, 0); n as usize]);
                Ok(CommandReply { requests: requests.iter().map(outcome).collect() })
            }
        }
        let (tx, mut rx) = mpsc::channel(1);
        let mut waiting = Vec::new();
        let group = requests
            .iter()
            .map(|&(events, imported)| {
                let (reply, outcome) = oneshot::channel();
                waiting.push((events, outcome));
                Submission { kind, events, imported, records: vec![0; events as usize], reply }
            })
            .collect();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.expect("open");
        propose(Recorder(tx), group, permit).await;
        for (events, outcome) in waiting {
            let outcome = outcome.await.expect("answered").expect("applied").expect("outcomes");
            assert_eq!(outcome.len(), events as usize);
        }
        rx.recv().await.expect("one entry")
    }

    /// An entry holding a part judged by its whole request's `imported` flag carries every
    /// request's judgement; an entry without one is proposed as before (the log format
    /// older nodes read).
    #[tokio::test]
    async fn an_entry_carries_the_judgement_of_a_split_requests_part() {
        let plain = [(2, None), (1, None)];
        assert_eq!(
            proposed(Kind::Transfers, &plain).await,
            Op::CreateTransfers { requests: vec![2, 1], events: vec![0; 3] }
        );
        assert_eq!(
            proposed(Kind::Accounts, &plain).await,
            Op::CreateAccounts { requests: vec![2, 1], events: vec![0; 3] }
        );
        let judged = [(2, None), (1, Some(true)), (1, Some(false))];
        let imported = vec![None, Some(true), Some(false)];
        assert_eq!(
            proposed(Kind::Transfers, &judged).await,
            Op::CreateTransfersJudged {
                requests: vec![2, 1, 1],
                imported: imported.clone(),
                events: vec![0; 4]
            }
        );
        assert_eq!(
            proposed(Kind::Accounts, &judged).await,
            Op::CreateAccountsJudged { requests: vec![2, 1, 1], imported, events: vec![0; 4] }
        );
    }
}
