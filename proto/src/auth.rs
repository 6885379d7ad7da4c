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
//! The key is the trimmed text of a file ([`ClusterKey::read_file`]): 32 to 256 visible
//! ASCII characters (`tallyd keygen` writes 64 random hex digits), readable by its owner
//! only. It travels as it is in every node call: on a network others can watch, it must
//! be carried inside TLS or a private network (the port has no TLS yet).

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

/// gRPC metadata key holding the cluster key on a node's call.
pub const NODE_KEY_METADATA_KEY: &str = "tally-node-key";
/// Fewest characters of a cluster key (32 characters of hex: 128 bits).
pub const CLUSTER_KEY_LEN_MIN: usize = 32;
/// Most characters of a cluster key.
pub const CLUSTER_KEY_LEN_MAX: usize = 256;

/// A cluster key, checked to be usable as a gRPC metadata value. `Debug` does not show it.
#[derive(Clone)]
pub struct ClusterKey {
    value: AsciiMetadataValue,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key written in `text` (surrounding whitespace ignored).
    ///
    /// # Errors
    /// Fewer than [`CLUSTER_KEY_LEN_MIN`] or more than [`CLUSTER_KEY_LEN_MAX`] characters,
    /// or a character that is not visible ASCII (`!`..=`~`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let key = text.trim();
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
        let value = key.parse().map_err(|e| format!("not a metadata value: {e}"))?;
        Ok(Self { value })
    }

    /// The key in the file at `path`, which only its owner may read or write.
    ///
    /// # Errors
    /// The file cannot be read, can be read or written by its group or by others, or does
    /// not hold a key ([`ClusterKey::parse`]).
    pub fn read_file(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: mode {mode:o} lets its group or others use the cluster key; \
                 chmod 600 it"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
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

    /// Puts this key in `request`'s metadata, as a node's call carries it.
    pub fn attach_to<T>(&self, request: &mut Request<T>) {
        request.metadata_mut().insert(NODE_KEY_METADATA_KEY, self.value.clone());
    }

    /// Whether `metadata` carries this key (compared in constant time).
    #[must_use]
    pub fn is_in(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get(NODE_KEY_METADATA_KEY)
            .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(self.value.as_bytes())))
    }

    /// Refuses a node-only call (`what`) that does not carry this key.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` `TALLY:Unauthenticated`, saying whether the key was missing or wrong.
    pub fn check(&self, metadata: &MetadataMap, what: &str) -> Result<(), Status> {
        if self.is_in(metadata) {
            return Ok(());
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = ClusterKey::read_file(&path).unwrap_err();
        assert!(open.contains("mode 640") && open.contains("chmod 600"), "{open}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
