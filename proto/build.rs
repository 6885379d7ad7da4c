//! Compiles `proto/tally/v1/*.proto` and `proto/tally/raft/v1/*.proto` with protox (pure Rust; no system `protoc`), then
//! generates prost messages and tonic stubs. The encoded descriptor set is written next to
//! the generated code for gRPC server reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTO_FILES: &[&str] =
    &["tally/v1/ledger.proto", "tally/v1/admin.proto", "tally/raft/v1/raft.proto"];
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tally_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
