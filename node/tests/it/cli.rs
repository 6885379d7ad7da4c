//! The `tallyd` binary's handling of bad configuration: exit code 2 and the field named.

use std::process::Command;

fn start_with(args: &[&str], file: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tallyd"));
    command.arg("start").args(args).arg("--data-dir").arg(dir.path());
    if let Some(toml) = file {
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, toml).unwrap();
        command.arg("--config").arg(path);
    }
    let output = command.env_remove("RUST_LOG").output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn an_invalid_field_in_the_file_stops_start_with_its_name() {
    // A rule broken in the file: exit code 2, the dotted field path in the message.
    let (code, stderr) = start_with(&[], Some("[raft]\nelection_timeout_min_ms = 10\n"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("raft.election_timeout_min_ms"), "{stderr}");
}

#[test]
fn an_unknown_field_and_a_bad_flag_are_refused() {
    // A typo in the file and a malformed --bootstrap are both refused with exit code 2.
    let (code, stderr) = start_with(&[], Some("[batch]\nlinger = 5\n"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("linger"), "{stderr}");
    let (code, stderr) = start_with(&["--bootstrap", "1:127.0.0.1:7001"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bootstrap"), "{stderr}");
}

#[test]
fn ledger_memory_beyond_the_machine_is_refused_before_anything_is_allocated() {
    // 16 shard replicas of 2^32-2 transfers each would take terabytes: exit code 2, the
    // `memory` section named, at once (nothing is allocated before the check).
    let toml = "shards = 16\n[memory]\ntransfers_per_shard = 4294967294\n";
    let (code, stderr) = start_with(&[], Some(toml));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("memory") && stderr.contains("more than the machine's"), "{stderr}");
    // One past the bound is refused by the config's own rule.
    let (code, stderr) = start_with(&[], Some("[memory]\ntransfers_per_shard = 4294967295\n"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("memory.transfers_per_shard"), "{stderr}");
}
