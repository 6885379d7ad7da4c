//! `tallyd keygen`: a new cluster key (`tally_proto::auth`).

use std::path::Path;

use tally_proto::auth::ClusterKey;

/// Random bytes in a new key (written as twice as many hex digits).
pub const KEY_BYTES: usize = 32;

/// A new key: [`KEY_BYTES`] bytes from the operating system's random source, in hex.
///
/// # Errors
/// The operating system gave no random bytes.
pub fn generate() -> Result<ClusterKey, String> {
    let mut bytes = [0_u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes from the system: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ClusterKey::parse(&hex)
}

/// Writes a new key to a new file at `path` (mode 600, never overwriting one).
///
/// # Errors
/// No random bytes, `path` exists, or the file cannot be written.
pub fn write_new(path: &Path) -> Result<(), String> {
    ClusterKey::write_new_file(path, &generate()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_new_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        write_new(&a).unwrap();
        write_new(&b).unwrap();
        let (text_a, text_b) =
            (std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
        assert_eq!(text_a.trim().len(), 2 * KEY_BYTES);
        assert!(text_a.trim().chars().all(|c| c.is_ascii_hexdigit()), "{text_a}");
        assert_ne!(text_a, text_b);
        ClusterKey::read_file(&a).unwrap();
        // An existing file is kept.
        assert!(write_new(&a).is_err());
        assert_eq!(std::fs::read_to_string(&a).unwrap(), text_a);
    }
}
