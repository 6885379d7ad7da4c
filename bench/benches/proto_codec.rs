//! The per-request CPU cost at the edge, for one full batch of 8190 transfers with
//! realistic values (random 128-bit ids and user data, amounts up to 10^6):
//! - `request_encode` / `request_decode`: prost encoding of `tally.v1.CreateTransfersRequest`
//!   (the client encodes into a reused buffer, as tonic does; tallyd decodes);
//! - `reply_encode` / `reply_decode`: the matching `CreateTransfersReply` of 8190 `Created`
//!   results with present-day nanosecond timestamps (tallyd encodes, the client decodes);
//! - `edge_convert`: `convert::transfers_from_request`, validation into ledger types;
//! - `edge_records`: the 128-byte records (`storage::records::transfer_encode`) that go
//!   into the Raft entry;
//! - `edge_total`: decode + convert + records, everything tallyd does with a request's
//!   bytes before it hands them to group commit.
//!
//! Throughput is in events (transfers or results). Every case asserts that its output is
//! whole (every event decoded, converted or encoded; every decoded result `Created`); the
//! round trip back to the original transfers is checked once before measuring.
//!
//! Run: `cargo bench -p tally-bench --bench proto_codec`
//! Smoke (CI): `cargo bench -p tally-bench --bench proto_codec -- --test`

mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tally_bench::workload::Rng;
use tally_node::convert::{transfer_to_proto, transfers_from_request};
use tally_node::ledger::Transfer;
use tally_node::storage::records::{TRANSFER_BYTES, transfer_decode, transfer_encode};
use tally_proto::limits::BATCH_EVENTS_MAX;
use tally_proto::v1;

/// Events in the request: a full batch.
const EVENTS: usize = BATCH_EVENTS_MAX as usize;
/// Accounts the transfers move between (only the ids' values matter here).
const ACCOUNTS: u64 = 1_000_000;
/// A present-day cluster time (2025), so result timestamps take their real varint length.
const CLUSTER_TIME_NS: u64 = 1_750_000_000_000_000_000;

/// What tallyd builds for the Raft entry from a decoded request's transfers.
fn records(transfers: &[Transfer]) -> Vec<u8> {
    let records: Vec<u8> = transfers.iter().flat_map(transfer_encode).collect();
    assert_eq!(records.len(), transfers.len() * TRANSFER_BYTES, "every transfer encoded");
    records
}

fn decode_request(bytes: &[u8]) -> v1::CreateTransfersRequest {
    let request = v1::CreateTransfersRequest::decode(bytes).expect("a valid encoding");
    assert_eq!(request.transfers.len(), EVENTS, "every transfer decoded");
    request
}

fn convert(request: &v1::CreateTransfersRequest) -> Vec<Transfer> {
    let transfers = transfers_from_request(request).expect("a valid request");
    assert_eq!(transfers.len(), EVENTS, "every transfer converted");
    transfers
}

fn reply() -> v1::CreateTransfersReply {
    let created = v1::CreateTransferStatus::Created as i32;
    let results = (CLUSTER_TIME_NS..)
        .take(EVENTS)
        .map(|timestamp| v1::CreateTransferResult { timestamp, status: created })
        .collect();
    v1::CreateTransfersReply { results }
}

fn codec(c: &mut Criterion) {
    let transfers = support::transfers_realistic(&mut Rng::new(42), ACCOUNTS, EVENTS);
    let request =
        v1::CreateTransfersRequest { transfers: transfers.iter().map(transfer_to_proto).collect() };
    let request_bytes = request.encode_to_vec();
    assert_eq!(convert(&decode_request(&request_bytes)), transfers, "the wire round trip");
    let decoded: Vec<Transfer> =
        records(&transfers).chunks_exact(TRANSFER_BYTES).map(transfer_decode).collect();
    assert_eq!(decoded, transfers, "the record round trip");
    let reply = reply();
    let reply_bytes = reply.encode_to_vec();
    let mut buffer = Vec::with_capacity(request_bytes.len().max(reply_bytes.len()));

    let mut group = c.benchmark_group("proto_codec");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(2));
    let mut encode = |name: &str, message: &dyn Fn(&mut Vec<u8>), length: usize| {
        group.bench_function(name, |b| {
            b.iter(|| {
                buffer.clear();
                message(&mut buffer);
                assert_eq!(buffer.len(), length, "the whole message encoded");
            });
        });
    };
    encode("request_encode", &|out| request.encode(out).expect("a Vec grows"), request_bytes.len());
    encode("reply_encode", &|out| reply.encode(out).expect("a Vec grows"), reply_bytes.len());
    group.bench_function("request_decode", |b| b.iter(|| decode_request(&request_bytes)));
    group.bench_function("reply_decode", |b| {
        b.iter(|| {
            let reply = v1::CreateTransfersReply::decode(reply_bytes.as_slice()).expect("valid");
            assert_eq!(reply.results.len(), EVENTS, "every result decoded");
            let created = v1::CreateTransferStatus::Created as i32;
            assert!(reply.results.iter().all(|r| r.status == created), "every event created");
            reply
        });
    });
    group.bench_function("edge_convert", |b| b.iter(|| convert(&request)));
    group.bench_function("edge_records", |b| b.iter(|| records(&transfers)));
    group.bench_function("edge_total", |b| {
        b.iter(|| records(&convert(&decode_request(&request_bytes))));
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
