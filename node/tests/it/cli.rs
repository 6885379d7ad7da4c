//! The `tallyd` binary's handling of bad configuration: exit code 2 and the field named.

use std::process::Command;

/// `tallyd start` with `args`, the config `file` and a usable cluster key.
fn start_with(args: &[&str], file: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    tally_node::keygen::write_new(&key).unwrap();
    let key = key.display().to_string();
    let keyed: Vec<&str> =
        ["--cluster-key-file", key.as_str()].into_iter().chain(args.iter().copied()).collect();
    start_unkeyed(&keyed, file, &dir)
}

fn start_unkeyed(args: &[&str], file: Option<&str>, dir: &tempfile::TempDir) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tallyd"));
    command.arg("start").args(args).arg("--data-dir").arg(dir.path());
    if let Some(toml) = file {
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, toml).unwrap();
        command.arg("--config").arg(path);
    }
    let output =
        command.env_remove("RUST_LOG").env_remove("TALLY_CLUSTER_KEY_FILE").output().unwrap();
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

#[test]
fn a_node_needs_a_usable_cluster_key() {
    // Without a key file, with one others may read, or with one that holds no key, `start`
    // stops at once with exit code 2 naming `cluster_key_file` (nothing is opened).
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = start_unkeyed(&[], None, &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cluster_key_file") && stderr.contains("tallyd keygen"), "{stderr}");
    let key = dir.path().join("cluster.key");
    let flag = ["--cluster-key-file", key.to_str().unwrap()];
    let (code, stderr) = start_unkeyed(&flag, None, &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cluster_key_file") && stderr.contains("No such file"), "{stderr}");
    tally_node::keygen::write_new(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = start_unkeyed(&flag, None, &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("mode 644") && stderr.contains("chmod 600"), "{stderr}");
    std::fs::write(&key, "too short\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = start_unkeyed(&flag, None, &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("32 to 256 characters"), "{stderr}");
    assert!(!dir.path().join("rocksdb").exists(), "nothing opened");
}

#[test]
fn keygen_writes_a_new_key_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let keygen = || {
        Command::new(env!("CARGO_BIN_EXE_tallyd"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let first = keygen();
    assert!(first.status.success(), "{first:?}");
    let written = std::fs::read_to_string(&key).unwrap();
    tally_proto::auth::ClusterKey::read_file(&key).unwrap();
    let second = keygen();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("exists"), "{second:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), written);
}

#[test]
fn an_operators_change_needs_a_usable_key_file() {
    // `tallyd shards transfer-leader` reads the key before it connects: a missing or
    // open key file is refused, naming it.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let transfer = || {
        let output = Command::new(env!("CARGO_BIN_EXE_tallyd"))
            .args(["shards", "transfer-leader", "--endpoint", "127.0.0.1:1", "--shard", "1"])
            .args(["--to", "2", "--cluster-key-file"])
            .arg(&key)
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, stderr) = transfer();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cluster key:") && stderr.contains("No such file"), "{stderr}");
    tally_node::keygen::write_new(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let (code, stderr) = transfer();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("mode 604"), "{stderr}");
    // A usable key gets as far as the node (none listens on port 1).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = transfer();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach 127.0.0.1:1"), "{stderr}");
}
