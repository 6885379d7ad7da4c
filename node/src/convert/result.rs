//! Per-event results -> `tally.v1.Create*Result`. The ledger's status values are the wire
//! values (a test checks every one against the generated enum by name).

use tally_proto::v1;

use crate::ledger::{CreateAccountResult, CreateTransferResult};

/// Encodes the results of a `CreateAccounts` batch.
#[must_use]
pub fn account_results_to_proto(results: &[CreateAccountResult]) -> v1::CreateAccountsReply {
    let results = results
        .iter()
        .map(|r| v1::CreateAccountResult { timestamp: r.timestamp, status: wire(r.status.code()) })
        .collect();
    v1::CreateAccountsReply { results }
}

/// Encodes the results of a `CreateTransfers` batch.
#[must_use]
pub fn transfer_results_to_proto(results: &[CreateTransferResult]) -> v1::CreateTransfersReply {
    let results = results
        .iter()
        .map(|r| v1::CreateTransferResult { timestamp: r.timestamp, status: wire(r.status.code()) })
        .collect();
    v1::CreateTransfersReply { results }
}

fn wire(code: u32) -> i32 {
    i32::try_from(code).expect("status codes are small")
}
