//! Hands verified snapshots to restoring member Pods. The operator holds
//! the snapshot (it downloaded and verified it); each restored member's
//! init container fetches it from the operator over HTTP with a bearer
//! token, as the CoreOS restore-operator's pods fetched theirs, then runs
//! `etcdutl snapshot restore` into its data directory.
//!
//! An offer is a hard link (or copy) of the snapshot under the operator's
//! own directory, so the caller may delete its file as soon as the Pods are
//! created; it is served, streamed in bounded chunks, until it expires.
//! The token is random per snapshot and compared in constant time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a Pod needs to fetch one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub url: String,
    pub token: String,
}

struct Entry {
    path: PathBuf,
    token: String,
    expires: Instant,
}

pub struct SnapshotServer {
    dir: PathBuf,
    /// e.g. `http://10.0.3.7:8080` (the operator Pod's address).
    base_url: String,
    ttl: Duration,
    /// Offer id → served file.
    entries: Mutex<HashMap<String, Entry>>,
    /// Source snapshot → offer id, so every member of one restore shares it.
    by_source: Mutex<HashMap<PathBuf, String>>,
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SnapshotServer {
    pub fn new(dir: PathBuf, base_url: String, ttl: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotServer {
            dir,
            base_url: base_url.trim_end_matches('/').to_string(),
            ttl,
            entries: Mutex::default(),
            by_source: Mutex::default(),
        })
    }

    /// Offer `snapshot` to Pods (the same offer for the same file).
    pub fn offer(&self, snapshot: &Path) -> std::io::Result<Offer> {
        self.expire();
        let mut by_source = self.by_source.lock().expect("snapshot offers");
        let mut entries = self.entries.lock().expect("snapshot offers");
        if let Some(id) = by_source.get(snapshot)
            && let Some(e) = entries.get(id)
        {
            return Ok(Offer {
                url: format!("{}/snapshots/{id}", self.base_url),
                token: e.token.clone(),
            });
        }
        let id = random_token(20).to_ascii_lowercase();
        let path = self.dir.join(format!("{id}.db"));
        if std::fs::hard_link(snapshot, &path).is_err() {
            std::fs::copy(snapshot, &path)?;
        }
        let token = random_token(40);
        entries.insert(
            id.clone(),
            Entry {
                path,
                token: token.clone(),
                expires: Instant::now() + self.ttl,
            },
        );
        by_source.insert(snapshot.to_path_buf(), id.clone());
        Ok(Offer {
            url: format!("{}/snapshots/{id}", self.base_url),
            token,
        })
    }

    /// A tiny file offered like a snapshot, for a Pod to prove it can
    /// fetch from this endpoint before a restore deletes anything. It
    /// expires after `ttl` like every offer.
    pub fn offer_probe(&self) -> std::io::Result<Offer> {
        let source = self.dir.join(format!(
            "probe-{}.txt",
            random_token(12).to_ascii_lowercase()
        ));
        std::fs::write(&source, b"etcd-operator restore probe\n")?;
        let offer = self.offer(&source);
        let _ = std::fs::remove_file(&source);
        offer
    }

    /// The file for `id` if `authorization` is `Bearer <its token>`.
    pub fn authorize(&self, id: &str, authorization: Option<&str>) -> Option<PathBuf> {
        self.expire();
        let entries = self.entries.lock().expect("snapshot offers");
        let e = entries.get(id)?;
        let given = authorization?.strip_prefix("Bearer ")?;
        constant_time_eq(given.as_bytes(), e.token.as_bytes()).then(|| e.path.clone())
    }

    fn expire(&self) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("snapshot offers");
        entries.retain(|_, e| {
            let keep = e.expires > now;
            if !keep {
                let _ = std::fs::remove_file(&e.path);
            }
            keep
        });
        self.by_source
            .lock()
            .expect("snapshot offers")
            .retain(|_, id| entries.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_shared_per_snapshot_and_need_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s.db");
        std::fs::write(&snap, b"snapshot").unwrap();
        let server = SnapshotServer::new(
            dir.path().join("served"),
            "http://10.0.0.1:8080/".into(),
            Duration::from_secs(60),
        )
        .unwrap();
        let a = server.offer(&snap).unwrap();
        assert_eq!(server.offer(&snap).unwrap(), a);
        assert!(a.url.starts_with("http://10.0.0.1:8080/snapshots/"));
        // The caller may delete its file: the offer keeps its own link.
        std::fs::remove_file(&snap).unwrap();
        let id = a.url.rsplit('/').next().unwrap();
        let path = server
            .authorize(id, Some(&format!("Bearer {}", a.token)))
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"snapshot");
        assert!(server.authorize(id, Some("Bearer wrong")).is_none());
        assert!(server.authorize(id, None).is_none());
        assert!(
            server
                .authorize("other", Some(&format!("Bearer {}", a.token)))
                .is_none()
        );
    }

    #[test]
    fn a_probe_is_a_tiny_offer_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let server = SnapshotServer::new(
            dir.path().join("served"),
            "http://h".into(),
            Duration::from_secs(60),
        )
        .unwrap();
        let a = server.offer_probe().unwrap();
        let b = server.offer_probe().unwrap();
        assert_ne!(a, b, "one offer per probe");
        let id = a.url.rsplit('/').next().unwrap();
        let path = server
            .authorize(id, Some(&format!("Bearer {}", a.token)))
            .unwrap();
        assert!(std::fs::read(path).unwrap().len() < 64);
        // Only the offered links stay (the probe's source file is gone).
        assert_eq!(
            std::fs::read_dir(dir.path().join("served"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn expired_offers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s.db");
        std::fs::write(&snap, b"x").unwrap();
        let server =
            SnapshotServer::new(dir.path().join("served"), "http://h".into(), Duration::ZERO)
                .unwrap();
        let a = server.offer(&snap).unwrap();
        let id = a.url.rsplit('/').next().unwrap();
        assert!(
            server
                .authorize(id, Some(&format!("Bearer {}", a.token)))
                .is_none()
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("served"))
                .unwrap()
                .count(),
            0
        );
    }
}
