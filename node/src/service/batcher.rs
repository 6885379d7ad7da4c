//! Group commit: concurrent create requests for a shard become one Raft entry.
//!
//! Requests queue in a bounded channel (`batch.queue_requests_max`; beyond it a caller is
//! told `Overloaded` at once). One task takes the oldest request, waits for a free
//! in-flight slot (`batch.in_flight_entries_max` entries proposed and not yet applied),
//! then gathers every request already queued of the same kind, and keeps gathering for up
//! to `batch.linger_us` while the entry is below `batch.events_max` events. The entry keeps
//! each request's events together and in order, and the state machine applies each
//! request as its own batch (so a linked chain never spans two callers); every caller gets
//! exactly the outcomes of its own events. While entries are in flight, requests keep
//! queueing, so batches grow with load: one fsync and one consensus round serve thousands
//! of events.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::BatchConfig;
use crate::raft::node::{Replica, ReplicaError};
use crate::raft::{Command, Op, RequestOutcome};

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
    /// Starts the batching task for `replica`. It ends when every `Batcher` is dropped.
    #[must_use]
    pub fn start(replica: Replica, config: &BatchConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_requests_max as usize);
        let task = tokio::spawn(run(replica, config.clone(), rx));
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
        let (reply, outcome) = oneshot::channel();
        let submission = Submission { kind, events, records, reply };
        self.tx.try_send(submission).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                SubmitError::Overloaded { queue_requests_max: self.queue_requests_max }
            }
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        outcome.await.map_err(|_| SubmitError::Closed)?
    }
}

async fn run(replica: Replica, config: BatchConfig, mut rx: mpsc::Receiver<Submission>) {
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
        let (group, rest) = gather(first, &mut rx, config.events_max, linger).await;
        carry = rest;
        tokio::spawn(propose(replica.clone(), group, permit));
    }
}

/// Takes `first` and whatever follows of the same kind, within `events_max` and `linger`.
/// Returns the group and the request that did not fit, if any.
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
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(s)) => s,
                    Ok(None) | Err(_) => break,
                }
            }
        };
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

async fn propose(replica: Replica, group: Vec<Submission>, permit: OwnedSemaphorePermit) {
    let kind = group[0].kind;
    let requests: Vec<u32> = group.iter().map(|s| s.events).collect();
    let mut events = Vec::with_capacity(group.iter().map(|s| s.records.len()).sum());
    for s in &group {
        events.extend_from_slice(&s.records);
    }
    let op = match kind {
        Kind::Accounts => Op::CreateAccounts { requests, events },
        Kind::Transfers => Op::CreateTransfers { requests, events },
    };
    let command = Command { cluster_time_ns: cluster_time_now_ns(), op };
    let result = replica.write(command).await;
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
