//! The public `tally.v1.LedgerService`.
//!
//! Writes: validated at the edge (a malformed request is refused whole, naming the event
//! and field), encoded as ledger records, and handed to the shard's [`Batcher`]; the reply
//! carries one result per event, in order. A follower answers `NotLeader` with the
//! leader's address at once (before queueing).
//!
//! Reads are linearizable: each waits for a ReadIndex barrier (the leader confirms with a
//! quorum that it still leads and waits until it has applied everything committed before
//! the read began), then reads its own state machine. A follower answers `NotLeader`.
//!
//! Every request is bounded by `request_timeout_ms` inside the node.

use std::time::Duration;

use tally_proto::v1;
use tally_proto::v1::ledger_service_server::LedgerService;
use tonic::{Request, Response, Status};

use super::batcher::{Batcher, Kind};
use super::status;
use crate::convert;
use crate::raft::node::{Replica, ReplicaError};
use crate::raft::{EventOutcome, RequestOutcome};
use crate::storage::records;

/// The ledger service of one node (one shard for now).
#[derive(Clone, Debug)]
pub struct LedgerApi {
    replica: Replica,
    batcher: Batcher,
    request_timeout: Duration,
}

impl LedgerApi {
    /// Serves `replica` through `batcher`.
    #[must_use]
    pub fn new(replica: Replica, batcher: Batcher, request_timeout: Duration) -> Self {
        Self { replica, batcher, request_timeout }
    }

    fn leader_check(&self) -> Result<(), Status> {
        if self.replica.is_leader() {
            return Ok(());
        }
        // A group stopped by an I/O error still names its last leader (often itself):
        // say it stopped instead of sending the client back here.
        if let Some(e) = self.replica.fatal() {
            return Err(status::replica(&ReplicaError::Stopped(e)));
        }
        Err(status::replica(&ReplicaError::NotLeader(self.replica.leader_hint())))
    }

    async fn write(
        &self,
        kind: Kind,
        events: usize,
        records: Vec<u8>,
    ) -> Result<Vec<EventOutcome>, Status> {
        self.leader_check()?;
        let events = u32::try_from(events).expect("validated against BATCH_EVENTS_MAX");
        let submit = self.batcher.submit(kind, events, records);
        let outcome: RequestOutcome = tokio::time::timeout(self.request_timeout, submit)
            .await
            .map_err(|_| status::timeout(self.timeout_ms()))?
            .map_err(|e| status::submit(&e))?;
        let outcomes = outcome.map_err(|reason| status::refused(&reason))?;
        assert_eq!(outcomes.len(), events as usize, "one outcome per event");
        Ok(outcomes)
    }

    async fn read_barrier(&self) -> Result<(), Status> {
        tokio::time::timeout(self.request_timeout, self.replica.read_barrier())
            .await
            .map_err(|_| status::timeout(self.timeout_ms()))?
            .map_err(|e| status::replica(&e))
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

fn wire_status(code: u32) -> i32 {
    i32::try_from(code).expect("status codes are small")
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn create_accounts(
        &self,
        request: Request<v1::CreateAccountsRequest>,
    ) -> Result<Response<v1::CreateAccountsReply>, Status> {
        let accounts =
            convert::accounts_from_request(request.get_ref()).map_err(|e| status::invalid(&e))?;
        let records: Vec<u8> = accounts.iter().flat_map(records::account_encode).collect();
        let outcomes = self.write(Kind::Accounts, accounts.len(), records).await?;
        let results = outcomes
            .into_iter()
            .map(|(timestamp, code)| v1::CreateAccountResult {
                timestamp,
                status: wire_status(code),
            })
            .collect();
        Ok(Response::new(v1::CreateAccountsReply { results }))
    }

    async fn create_transfers(
        &self,
        request: Request<v1::CreateTransfersRequest>,
    ) -> Result<Response<v1::CreateTransfersReply>, Status> {
        let transfers =
            convert::transfers_from_request(request.get_ref()).map_err(|e| status::invalid(&e))?;
        let records: Vec<u8> = transfers.iter().flat_map(records::transfer_encode).collect();
        let outcomes = self.write(Kind::Transfers, transfers.len(), records).await?;
        let results = outcomes
            .into_iter()
            .map(|(timestamp, code)| v1::CreateTransferResult {
                timestamp,
                status: wire_status(code),
            })
            .collect();
        Ok(Response::new(v1::CreateTransfersReply { results }))
    }

    async fn lookup_accounts(
        &self,
        request: Request<v1::LookupAccountsRequest>,
    ) -> Result<Response<v1::LookupAccountsReply>, Status> {
        let ids = convert::account_ids_from_proto(&request.get_ref().ids)
            .map_err(|e| status::invalid(&e))?;
        self.read_barrier().await?;
        let found = self.replica.ledger.read().machine.lookup_accounts(&ids);
        let accounts = found.iter().map(convert::account_to_proto).collect();
        Ok(Response::new(v1::LookupAccountsReply { accounts }))
    }

    async fn lookup_transfers(
        &self,
        request: Request<v1::LookupTransfersRequest>,
    ) -> Result<Response<v1::LookupTransfersReply>, Status> {
        let ids = convert::transfer_ids_from_proto(&request.get_ref().ids)
            .map_err(|e| status::invalid(&e))?;
        self.read_barrier().await?;
        let found = self.replica.ledger.read().machine.lookup_transfers(&ids);
        let transfers = found.iter().map(convert::transfer_to_proto).collect();
        Ok(Response::new(v1::LookupTransfersReply { transfers }))
    }

    async fn get_account_transfers(
        &self,
        request: Request<v1::GetAccountTransfersRequest>,
    ) -> Result<Response<v1::GetAccountTransfersReply>, Status> {
        let filter = convert::filter_from_proto(request.get_ref().filter.as_ref())
            .map_err(|e| status::invalid(&e))?;
        self.read_barrier().await?;
        let found = self.replica.ledger.read().machine.get_account_transfers(&filter);
        let transfers = found.iter().map(convert::transfer_to_proto).collect();
        Ok(Response::new(v1::GetAccountTransfersReply { transfers }))
    }

    async fn get_account_balances(
        &self,
        request: Request<v1::GetAccountBalancesRequest>,
    ) -> Result<Response<v1::GetAccountBalancesReply>, Status> {
        let filter = convert::filter_from_proto(request.get_ref().filter.as_ref())
            .map_err(|e| status::invalid(&e))?;
        self.read_barrier().await?;
        let found = self.replica.ledger.read().machine.get_account_balances(&filter);
        let balances = found.iter().map(convert::balance_to_proto).collect();
        Ok(Response::new(v1::GetAccountBalancesReply { balances }))
    }
}
