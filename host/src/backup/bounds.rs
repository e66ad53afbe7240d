//! How much the operator accepts from a storage or policy plugin in one
//! operation. What a plugin returns is checked like user input: a broken or
//! hostile plugin must not fill the staging disk, delete a million objects
//! in one pass, or keep a restore busy for ever.

use std::time::Duration;

/// The operator-wide bounds, set by the admin (`--max-backup-size`,
/// `--retention-max-deletes`, `--restore-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Largest backup a restore or a recovery downloads when the backup's
    /// metadata does not give its size (with metadata, its size is the bound).
    pub max_backup_bytes: u64,
    /// Most backups one retention pass deletes; the rest wait for the next.
    pub retention_max_deletes: usize,
    /// Most objects a listing may return before retention or recovery refuses it.
    pub max_listed: usize,
    /// Time a restore's download and verification may take in all (retries
    /// included), unless the EtcdRestore sets `spec.timeoutInSecond`; also the
    /// bound of a quorum-loss recovery's search for a usable backup.
    pub restore_timeout: Duration,
    /// After each upload, list its key and check the backend shows it with
    /// the size sent (`--list-after-upload`).
    pub list_after_upload: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_backup_bytes: 64 << 30,
            retention_max_deletes: 100,
            max_listed: 100_000,
            restore_timeout: Duration::from_secs(3600),
            list_after_upload: true,
        }
    }
}

/// At most `n` keys for a status message or an Event: the first few, then
/// how many more (an Event carrying a million keys is 38 MB).
pub fn some_keys(keys: &[String], n: usize) -> String {
    let shown: Vec<&str> = keys.iter().take(n).map(|k| k.as_str()).collect();
    let mut text = shown
        .iter()
        .map(|k| super::keys::quote(k))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > n {
        text.push_str(&format!(" and {} more", keys.len() - n));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_keys_is_bounded() {
        let keys: Vec<String> = (0..1_000_000).map(|i| format!("b/p_{i}")).collect();
        let text = some_keys(&keys, 3);
        assert_eq!(text, "`b/p_0`, `b/p_1`, `b/p_2` and 999997 more");
        assert_eq!(some_keys(&keys[..2], 3), "`b/p_0`, `b/p_1`");
    }
}
