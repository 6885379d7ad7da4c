//! The cluster key: the secret that every node of a cluster, and only its operators, hold
//! (`docs/OPERATING.md`, "Who may reach a node's port").
//!
//! One port serves clients, the other nodes and admins. A call only nodes make — every
//! `tally.raft.v1.RaftService` call, a ledger request carrying a node's routing headers
//! ([`SHARD_METADATA_KEY`](crate::routing::SHARD_METADATA_KEY) or `tally-raw`, which skip
//! the edge checks that keep clients away from Tally's internal accounts and ids), and the
//! admin calls that change the cluster (`TransferLeader`, `SetShardReplicas`) — must carry
//! the key under [`NODE_KEY_METADATA_KEY`]; without it, or with another key, it is refused
//! `UNAUTHENTICATED` `TALLY:Unauthenticated` before anything is done. Clients of the ledger
//! (the client library) send none of these headers and need no key.
//!
//! The key is the text of a file ([`ClusterKey::read_file`]): 32 to 256 visible ASCII
//! characters (`tallyd keygen` writes 64 random hex digits), readable by its owner only.
//! The file may hold a second key on a second line: accepted too, never sent, so a
//! cluster's key is changed by rolling restarts (`docs/OPERATING.md`, "Rotation"). The
//! key travels as it is in every node call: on a network others can watch, it must be
//! carried inside TLS or a private network (the port has no TLS yet).
//!
//! Every keyed call also carries the sender's node protocol version
//! ([`NODE_PROTOCOL_VERSION`], under [`NODE_PROTOCOL_METADATA_KEY`]); a node refuses a
//! keyed call of another version `UNAVAILABLE` `TALLY:ProtocolMismatch`, so two builds
//! that both check (from commit 6d99873 on) and could apply one Raft log differently
//! never replicate to each other: each is shut out from the other as if partitioned. A
//! build from before checks nothing and would still take a newer leader's entries
//! (`docs/OPERATING.md`, "Upgrading": stop every node to go to or from one).

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// gRPC metadata key holding the cluster key on a node's call.
pub const NODE_KEY_METADATA_KEY: &str = "tally-node-key";
/// gRPC metadata key holding the sender's [`NODE_PROTOCOL_VERSION`] on a node's call.
pub const NODE_PROTOCOL_METADATA_KEY: &str = "tally-node-protocol";
/// The node protocol version of this build. Raised whenever two builds could disagree:
/// on the state one Raft log gives (the ledger's rules, the formats of log entries and
/// snapshots) or on what a node-to-node call means. Nodes of different versions refuse
/// each other's keyed calls. Builds before commit 6d99873 send none (refused as "none")
/// and check none.
///
/// 1 (commit 6d99873, 2026-12-07): Tally's resolutions of cross-shard legs take ids in a reserved range,
/// which a build before would refuse to apply.
///
/// 2 (2026-12-07): a part of a request split over shards is judged imported or not by the
/// whole request's first event: the log entries `CreateAccountsJudged` and
/// `CreateTransfersJudged`, which a build before cannot decode, and the node header
/// `tally-imported`.
pub const NODE_PROTOCOL_VERSION: u32 = 2;
/// A channel whose every call carries the cluster key (`Client::new(keyed)`, or
/// `Client::with_interceptor(channel, key)`).
pub type KeyedChannel = InterceptedService<Channel, ClusterKey>;

/// Fewest characters of a cluster key (32 characters of hex: 128 bits).
pub const CLUSTER_KEY_LEN_MIN: usize = 32;
/// Most characters of a cluster key.
pub const CLUSTER_KEY_LEN_MAX: usize = 256;
/// Largest cluster key file read, bytes (two keys of the longest, with room for blank
/// lines and surrounding whitespace).
pub const KEY_FILE_BYTES_MAX: usize = 1024;

/// A cluster key, checked to be usable as a gRPC metadata value, and the key a rotation
/// also accepts. `Debug` shows neither.
#[derive(Clone)]
pub struct ClusterKey {
    /// Sent, and accepted.
    value: AsciiMetadataValue,
    /// Accepted too (the second line of the file), while the cluster's key changes.
    also: Option<AsciiMetadataValue>,
    /// The node protocol version sent, and the only one accepted.
    protocol: u32,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key written in `text` (surrounding whitespace and blank lines ignored), and the
    /// key on its second line, if any, accepted as well.
    ///
    /// # Errors
    /// No key or more than two lines, or a key of fewer than [`CLUSTER_KEY_LEN_MIN`] or
    /// more than [`CLUSTER_KEY_LEN_MAX`] characters, or with a character that is not
    /// visible ASCII (`!`..=`~`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let value = one_key(lines.next().unwrap_or(""))?;
        let also = lines.next().map(one_key).transpose()?;
        if lines.next().is_some() {
            return Err("a cluster key file holds one key, or two while the key changes (the \
                        first sent, both accepted), not more"
                .to_owned());
        }
        Ok(Self { value, also, protocol: NODE_PROTOCOL_VERSION })
    }

    /// This key, sending and accepting node protocol `version` instead of
    /// [`NODE_PROTOCOL_VERSION`] (for tests that run a node as another version would).
    #[must_use]
    pub fn with_protocol(self, version: u32) -> Self {
        Self { protocol: version, ..self }
    }

    /// The node protocol version sent and accepted.
    #[must_use]
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// The key in the file at `path`, which only its owner may read or write.
    ///
    /// # Errors
    /// The file cannot be read, can be read or written by its group or by others, or does
    /// not hold a key ([`ClusterKey::parse`]).
    pub fn read_file(path: &Path) -> Result<Self, String> {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display();
        // One open: the mode checked is the mode of the file read.
        let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: mode {mode:o} lets its group or others use the cluster key; \
                 chmod 600 it"
            ));
        }
        let mut text = String::new();
        let limit = KEY_FILE_BYTES_MAX as u64 + 1;
        file.take(limit).read_to_string(&mut text).map_err(|e| format!("{shown}: {e}"))?;
        if text.len() > KEY_FILE_BYTES_MAX {
            return Err(format!(
                "{shown}: a cluster key file holds at most {KEY_FILE_BYTES_MAX} bytes (two keys)"
            ));
        }
        Self::parse(&text).map_err(|e| format!("{shown}: {e}"))
    }

    /// Writes `key` (followed by a newline) to a new file at `path`, readable and writable
    /// by its owner only, and syncs it.
    ///
    /// # Errors
    /// `path` exists, or the file cannot be created or written.
    pub fn write_new_file(path: &Path, key: &Self) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let shown = path.display();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{shown}: {e}"))?;
        file.write_all(key.value.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{shown}: {e}"))
    }

    /// Puts this key and the node protocol version in `request`'s metadata, as a node's
    /// call carries them.
    pub fn attach_to<T>(&self, request: &mut Request<T>) {
        let metadata = request.metadata_mut();
        metadata.insert(NODE_KEY_METADATA_KEY, self.value.clone());
        metadata.insert(NODE_PROTOCOL_METADATA_KEY, AsciiMetadataValue::from(self.protocol));
    }

    /// Whether `metadata` carries this key or the one also accepted (compared in constant
    /// time).
    #[must_use]
    pub fn is_in(&self, metadata: &MetadataMap) -> bool {
        let Some(sent) = metadata.get(NODE_KEY_METADATA_KEY) else { return false };
        let sent = sent.as_bytes();
        let also = self.also.as_ref().map_or_else(|| 0.into(), |also| sent.ct_eq(also.as_bytes()));
        bool::from(sent.ct_eq(self.value.as_bytes()) | also)
    }

    /// Refuses a node-only call (`what`) that does not carry this key, or that carries it
    /// from a node of another protocol version.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` `TALLY:Unauthenticated`, saying whether the key was missing or
    /// wrong; with the key, `UNAVAILABLE` `TALLY:ProtocolMismatch` naming both versions
    /// (retryable: during an upgrade another node may serve the call).
    pub fn check(&self, metadata: &MetadataMap, what: &str) -> Result<(), Status> {
        if self.is_in(metadata) {
            return self.check_protocol(metadata, what);
        }
        let why = if metadata.contains_key(NODE_KEY_METADATA_KEY) {
            "is not this cluster's key"
        } else {
            "is missing"
        };
        Err(Status::unauthenticated(format!(
            "TALLY:Unauthenticated: {what} is for the cluster's nodes and operators only, and \
             its cluster key ({NODE_KEY_METADATA_KEY}) {why}"
        )))
    }

    /// Refuses a keyed call (`what`) from a node of another protocol version.
    fn check_protocol(&self, metadata: &MetadataMap, what: &str) -> Result<(), Status> {
        let sent = metadata.get(NODE_PROTOCOL_METADATA_KEY);
        let version = sent.map(|v| v.to_str().ok().and_then(|v| v.parse::<u32>().ok()));
        if version == Some(Some(self.protocol)) {
            return Ok(());
        }
        let theirs = match (sent, version) {
            (None, _) => "none (a build from before the version check)".to_owned(),
            (Some(_), Some(Some(v))) => v.to_string(),
            (Some(raw), _) => format!("unreadable ({raw:?})"),
        };
        Err(Status::unavailable(format!(
            "TALLY:ProtocolMismatch: {what} came from a node of node protocol version {theirs}, \
             and this node runs version {}: it takes no node call of another version; run \
             one version on every node (docs/OPERATING.md, \"Upgrading\")",
            self.protocol
        )))
    }
}

/// One key, checked.
fn one_key(key: &str) -> Result<AsciiMetadataValue, String> {
    if !(CLUSTER_KEY_LEN_MIN..=CLUSTER_KEY_LEN_MAX).contains(&key.len()) {
        return Err(format!(
            "a cluster key has {CLUSTER_KEY_LEN_MIN} to {CLUSTER_KEY_LEN_MAX} characters, \
         not {} (`tallyd keygen` writes one)",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "a cluster key holds visible ASCII characters only, not {c:?} (`tallyd keygen` \
         writes one)"
        ));
    }
    key.parse().map_err(|e| format!("not a metadata value: {e}"))
}

/// Sends the key with every call of a client (`Client::with_interceptor(channel, key)`).
impl tonic::service::Interceptor for ClusterKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.attach_to(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_key_is_32_to_256_visible_characters() {
        assert!(ClusterKey::parse(&format!("  {KEY}\n")).is_ok());
        assert!(ClusterKey::parse(&"k".repeat(CLUSTER_KEY_LEN_MAX)).is_ok());
        let short = ClusterKey::parse(&KEY[1..]).unwrap_err();
        assert!(short.contains("not 31"), "{short}");
        assert!(ClusterKey::parse(&"k".repeat(CLUSTER_KEY_LEN_MAX + 1)).is_err());
        let spaced = ClusterKey::parse(&format!("{} {}", &KEY[..16], &KEY[16..])).unwrap_err();
        assert!(spaced.contains("' '"), "{spaced}");
        assert!(ClusterKey::parse(&format!("{KEY}é")).is_err());
    }

    #[test]
    fn a_call_passes_with_the_key_only() {
        let key = ClusterKey::parse(KEY).unwrap();
        let mut sent = tonic::service::Interceptor::call(&mut key.clone(), Request::new(()))
            .unwrap()
            .into_parts()
            .0;
        assert!(key.check(&sent, "this call").is_ok());
        let missing = key.check(&MetadataMap::new(), "this call").unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("is missing"), "{}", missing.message());
        let other = format!("{}x", &KEY[..KEY.len() - 1]);
        sent.insert(NODE_KEY_METADATA_KEY, other.parse().unwrap());
        let wrong = key.check(&sent, "this call").unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(wrong.message().contains("is not this cluster's key"), "{}", wrong.message());
        // A prefix of the key is not the key.
        sent.insert(NODE_KEY_METADATA_KEY, KEY[..KEY.len() - 1].parse().unwrap());
        assert!(!key.is_in(&sent));
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
    }

    #[test]
    fn a_keyed_call_of_another_protocol_version_is_refused() {
        let key = ClusterKey::parse(KEY).unwrap();
        assert_eq!(key.protocol(), NODE_PROTOCOL_VERSION);
        let sent_by = |key: &ClusterKey| {
            let mut request = Request::new(());
            key.attach_to(&mut request);
            request.into_parts().0
        };
        assert!(key.check(&sent_by(&key), "this call").is_ok());
        let newer = key.clone().with_protocol(NODE_PROTOCOL_VERSION + 1);
        for (metadata, theirs) in [
            (sent_by(&newer), (NODE_PROTOCOL_VERSION + 1).to_string()),
            (
                {
                    let mut old = sent_by(&key);
                    old.remove(NODE_PROTOCOL_METADATA_KEY);
                    old
                },
                "none (a build from before the version check)".to_owned(),
            ),
            (
                {
                    let mut odd = sent_by(&key);
                    odd.insert(NODE_PROTOCOL_METADATA_KEY, "x1".parse().unwrap());
                    odd
                },
                "unreadable".to_owned(),
            ),
        ] {
            let refused = key.check(&metadata, "this call").unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unavailable);
            let message = refused.message();
            assert!(message.starts_with("TALLY:ProtocolMismatch: this call"), "{message}");
            assert!(message.contains(&format!("version {theirs}")), "{message}");
            assert!(
                message.contains(&format!("runs version {NODE_PROTOCOL_VERSION}")),
                "{message}"
            );
        }
        // Each side refuses the other's calls.
        assert!(newer.check(&sent_by(&key), "this call").is_err());
        assert!(newer.check(&sent_by(&newer), "this call").is_ok());
        // Without the key, the key is what is reported.
        let keyless = newer.check(&MetadataMap::new(), "this call").unwrap_err();
        assert_eq!(keyless.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_second_key_is_accepted_and_never_sent() {
        // A rotation's steps: old + new on every node, then new + old, then new alone.
        let (old, new) = (KEY.to_owned(), KEY.replace('0', "z"));
        let sent_by = |file: &str| {
            let mut request = Request::new(());
            ClusterKey::parse(file).unwrap().attach_to(&mut request);
            request.into_parts().0
        };
        let step_1 = ClusterKey::parse(&format!("{old}\n{new}\n")).unwrap();
        let step_2 = ClusterKey::parse(&format!("\n{new}\n\n{old}")).unwrap();
        let step_3 = ClusterKey::parse(&new).unwrap();
        for (node, accepts_old) in [(&step_1, true), (&step_2, true), (&step_3, false)] {
            assert!(node.is_in(&sent_by(&new)), "every step accepts the new key");
            assert_eq!(node.is_in(&sent_by(&old)), accepts_old);
        }
        assert!(step_1.is_in(&sent_by(&format!("{old}\n{new}"))), "the first line is sent");
        assert!(!step_3.is_in(&sent_by(&format!("{old}\n{new}"))));
        let three = ClusterKey::parse(&format!("{old}\n{new}\n{old}")).unwrap_err();
        assert!(three.contains("not more"), "{three}");
        let second_bad = ClusterKey::parse(&format!("{old}\nshort")).unwrap_err();
        assert!(second_bad.contains("not 5"), "{second_bad}");
        assert!(ClusterKey::parse("\n \n").unwrap_err().contains("not 0"));
    }

    #[test]
    fn the_file_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tally-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        let _ = std::fs::remove_file(&path);
        let key = ClusterKey::parse(KEY).unwrap();
        ClusterKey::write_new_file(&path, &key).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(ClusterKey::read_file(&path).unwrap().value == key.value);
        // Never overwritten.
        assert!(ClusterKey::write_new_file(&path, &key).unwrap_err().contains("exists"));
        for mode in [0o640, 0o620, 0o604, 0o602, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let open = ClusterKey::read_file(&path).unwrap_err();
            assert!(
                open.contains(&format!("mode {mode:o}")) && open.contains("chmod 600"),
                "{open}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        ClusterKey::read_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, format!("{KEY}\n").repeat(40)).unwrap();
        let long = ClusterKey::read_file(&path).unwrap_err();
        assert!(long.contains("at most 1024 bytes"), "{long}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
