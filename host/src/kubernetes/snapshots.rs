//! Hands verified snapshots to restoring member Pods. The operator holds
//! the snapshot (it downloaded and verified it); each restored member's
//! init container fetches it from the operator over HTTP with a bearer
//! token, as the CoreOS restore-operator's pods fetched theirs, then runs
//! `etcdutl snapshot restore` into its data directory.
//!
//! An offer is a hard link (or copy) of the snapshot under the operator's
//! own directory, so the caller may delete its file as soon as the Pods are
//! created; it is served, streamed in bounded chunks, until it expires.
//!
//! Each offer is for one Pod and serves one download: its token is random,
//! compared in constant time, and refused once used, so a token read from
//! anywhere after the member fetched its snapshot opens nothing. The Pod
//! gets its token from a Secret mounted only into its fetching init container
//! ([`super::members::restore_token_secret`]), never from its spec, which
//! anyone allowed to `view` the namespace can read.

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
    /// The one download was authorized.
    used: bool,
}

pub struct SnapshotServer {
    dir: PathBuf,
    /// e.g. `http://10.0.3.7:8080` (the operator Pod's address).
    base_url: String,
    ttl: Duration,
    /// Offer id → served file.
    entries: Mutex<HashMap<String, Entry>>,
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
        })
    }

    /// Offer `snapshot` to one Pod, for one download.
    pub fn offer(&self, snapshot: &Path) -> std::io::Result<Offer> {
        self.expire();
        let mut entries = self.entries.lock().expect("snapshot offers");
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
                used: false,
            },
        );
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

    /// The file for `id` if `authorization` is `Bearer <its token>` and the
    /// offer's one download has not been authorized yet. (The file stays
    /// until the offer expires, so the download in progress keeps it.)
    pub fn authorize(&self, id: &str, authorization: Option<&str>) -> Option<PathBuf> {
        self.expire();
        let mut entries = self.entries.lock().expect("snapshot offers");
        let e = entries.get_mut(id)?;
        let given = authorization?.strip_prefix("Bearer ")?;
        if e.used || !constant_time_eq(given.as_bytes(), e.token.as_bytes()) {
            return None;
        }
        e.used = true;
        Some(e.path.clone())
    }

    /// Is `offer` done with: its download authorized, or expired? Its token
    /// opens nothing any more, so whatever holds it can go.
    pub fn settled(&self, offer: &Offer) -> bool {
        self.expire();
        let id = offer.url.rsplit('/').next().unwrap_or_default();
        self.entries
            .lock()
            .expect("snapshot offers")
            .get(id)
            .is_none_or(|e| e.used)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_serves_one_download_and_needs_the_token() {
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
        let b = server.offer(&snap).unwrap();
        assert_ne!(a, b, "one offer per Pod");
        assert!(a.url.starts_with("http://10.0.0.1:8080/snapshots/"));
        // The caller may delete its file: the offer keeps its own link.
        std::fs::remove_file(&snap).unwrap();
        let id = a.url.rsplit('/').next().unwrap();
        assert!(server.authorize(id, Some("Bearer wrong")).is_none());
        assert!(server.authorize(id, None).is_none());
        assert!(!server.settled(&a), "a wrong token does not use it up");
        let path = server
            .authorize(id, Some(&format!("Bearer {}", a.token)))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"snapshot");
        // Used: the same token opens nothing again, and the other Pod's
        // offer is untouched.
        assert!(server.settled(&a) && !server.settled(&b));
        assert!(
            server
                .authorize(id, Some(&format!("Bearer {}", a.token)))
                .is_none()
        );
        let b_id = b.url.rsplit('/').next().unwrap();
        assert!(
            server
                .authorize(b_id, Some(&format!("Bearer {}", b.token)))
                .is_some()
        );
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
        assert!(server.settled(&a));
        assert_eq!(
            std::fs::read_dir(dir.path().join("served"))
                .unwrap()
                .count(),
            0
        );
    }
}
