//! Checking a snapshot before anything is restored from it.
//!
//! Three independent checks, all before the running cluster is touched:
//! the sha256 of the whole object against the metadata written at backup
//! time; the integrity trailer etcd appends to every snapshot it streams
//! (the last 32 bytes are the sha256 of everything before them, the check
//! `etcdutl snapshot restore` makes); and `snapshot status`, which opens
//! the database and reads its revision and key count.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::runtime::binaries::SnapshotTool;

const TRAILER: usize = 32;

/// Streaming digests of a snapshot: the sha256 of all bytes, and of all
/// but the last 32 (which must equal those 32 bytes). One pass of sha256:
/// the whole object's digest continues the body's (sha256 is computed left
/// to right, so hashing the body and then the held-back trailer gives the
/// whole), so the bytes are hashed once. Memory: 32 bytes.
#[derive(Default)]
pub struct SnapshotDigest {
    body: Sha256,
    /// The last bytes seen, held back from `body` until more arrive.
    tail: Vec<u8>,
    size: u64,
}

/// What the digests concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    /// Lower-case hex sha256 of the whole object.
    pub sha256: String,
    /// The trailer matches the body.
    pub trailer_ok: bool,
}

impl SnapshotDigest {
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if chunk.len() >= TRAILER {
            // The held-back bytes and all of this chunk but its last 32 are
            // body now: hash them in place rather than through `tail`.
            let (body, tail) = chunk.split_at(chunk.len() - TRAILER);
            self.body.update(&self.tail);
            self.body.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
            return;
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > TRAILER {
            let spill = self.tail.len() - TRAILER;
            self.body.update(&self.tail[..spill]);
            self.tail.drain(..spill);
        }
    }

    pub fn finish(self) -> Digests {
        let body = self.body.clone().finalize();
        let trailer_ok = self.tail.len() == TRAILER && body[..] == self.tail[..];
        let mut whole = self.body;
        whole.update(&self.tail);
        Digests {
            size: self.size,
            sha256: hex::encode(whole.finalize()),
            trailer_ok,
        }
    }
}

/// `snapshot status` of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

/// Run `snapshot status -w json` on `path`; an error carries the tool's words.
pub async fn snapshot_status(tool: &SnapshotTool, path: &Path) -> Result<SnapshotStatus, String> {
    let out = tool
        .command()
        .arg("snapshot")
        .arg("status")
        .arg(path)
        .args(["-w", "json"])
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", tool.path.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(format!("`snapshot status` rejected it: {}", last.trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "`snapshot status` printed something unexpected ({e}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_like(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&Sha256::digest(body));
        v
    }

    #[test]
    fn trailer_is_checked_whatever_the_chunking() {
        let data = snapshot_like(&(0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        for chunk in [1, 7, 31, 32, 33, 4096, data.len()] {
            let mut d = SnapshotDigest::default();
            data.chunks(chunk).for_each(|c| d.update(c));
            let r = d.finish();
            assert!(r.trailer_ok, "chunk {chunk}");
            assert_eq!(r.size, data.len() as u64);
            assert_eq!(r.sha256, hex::encode(Sha256::digest(&data)));
        }
        let mut corrupt = data.clone();
        corrupt[5000] ^= 1;
        let mut d = SnapshotDigest::default();
        d.update(&corrupt);
        assert!(!d.finish().trailer_ok);
        let mut short = SnapshotDigest::default();
        short.update(b"tiny");
        let short = short.finish();
        assert!(!short.trailer_ok);
        assert_eq!(short.sha256, hex::encode(Sha256::digest(b"tiny")));
        // Small and large chunks mixed: both paths through `update`.
        let mut d = SnapshotDigest::default();
        let (mut at, mut step) = (0, 0);
        while at < data.len() {
            let n = [5, 40, 31, 1000, 2][step % 5].min(data.len() - at);
            d.update(&data[at..at + n]);
            (at, step) = (at + n, step + 1);
        }
        let r = d.finish();
        assert!(r.trailer_ok);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(&data)));
    }
}
