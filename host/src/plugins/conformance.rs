//! The conformance kit behind `etcd-operator plugin test`: checks any plugin
//! against the contract the operator relies on, and reports each check.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use super::policy::{BackupContext, PreBackupDecision};
use super::storage::{CHUNK_SIZE, Grants, StorageSession};
use super::{GuestErrorKind, LoadedPlugin, PolicyPlugin, StoragePlugin};

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub duration: Duration,
}

/// All checks of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub plugin: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }

    fn record(&mut self, name: &str, started: Instant, result: Result<String, String>) -> bool {
        let passed = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.checks.push(Check {
            name: name.to_string(),
            passed,
            detail,
            duration: started.elapsed(),
        });
        passed
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "conformance of plugin `{}`", self.plugin)?;
        for c in &self.checks {
            let mark = if c.passed { "PASS" } else { "FAIL" };
            writeln!(
                f,
                "  {mark}  {:<28} {:>8.1?}  {}",
                c.name, c.duration, c.detail
            )?;
        }
        let failed = self.failures();
        let passed = self.checks.len() - failed;
        writeln!(f, "{passed} passed, {failed} failed")
    }
}

/// Options of a storage run.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub config: Vec<(String, String)>,
    pub grants: Grants,
    /// Size of the large round-trip, big enough to need a multipart upload.
    pub large_bytes: u64,
    /// Key prefix under which the kit writes (and cleans up) its objects.
    pub prefix: String,
}

impl StorageOptions {
    pub fn new(config: Vec<(String, String)>, grants: Grants) -> Self {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        StorageOptions {
            config,
            grants,
            large_bytes: 24 << 20,
            prefix: format!("conformance-{run}/"),
        }
    }
}

/// Deterministic-size random bytes, produced chunk by chunk and hashed on
/// the way, so a multi-GiB round-trip never holds the object in memory.
struct RandomReader {
    left: u64,
    hasher: Sha256,
}

impl AsyncRead for RandomReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        if n > 0 {
            let dst = buf.initialize_unfilled_to(n);
            rand::rng().fill_bytes(dst);
            self.hasher.update(&dst[..n]);
            buf.advance(n);
            self.left -= n as u64;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

async fn round_trip(session: &mut StorageSession, key: &str, bytes: u64) -> Result<String, String> {
    let mut source = RandomReader {
        left: bytes,
        hasher: Sha256::new(),
    };
    let up = session
        .upload_from(key, &mut source)
        .await
        .map_err(|e| format!("upload failed: {e}"))?;
    let expected = hex::encode(source.hasher.finalize());
    if up.size != bytes || up.sha256 != expected {
        return Err(format!(
            "upload reported {} bytes, expected {bytes}",
            up.size
        ));
    }
    let down = session
        .download_to(key, tokio::io::sink())
        .await
        .map_err(|e| format!("download failed: {e}"))?;
    if down.size != bytes {
        return Err(format!("downloaded {} bytes, uploaded {bytes}", down.size));
    }
    if down.sha256 != expected {
        return Err("downloaded bytes differ from the uploaded ones (sha256 mismatch)".into());
    }
    Ok(format!("{bytes} bytes, sha256 {}…", &expected[..12]))
}

fn expect_not_found<T>(what: &str, r: Result<T, super::PluginError>) -> Result<String, String> {
    match r {
        Err(e) if e.guest_kind() == Some(GuestErrorKind::NotFound) => {
            Ok(format!("{what}: not-found as required"))
        }
        Err(e) => Err(format!("{what}: expected not-found, got: {e}")),
        Ok(_) => Err(format!("{what}: expected not-found, but it succeeded")),
    }
}

/// An upload whose sandbox is dropped mid-way (as after a trap: no `abort`,
/// no destructor) is discarded by `abandon-uploads` in a fresh sandbox, and
/// `abandon-uploads` of a completed key leaves that object alone.
async fn lost_upload_cleanup(
    plugin: &StoragePlugin,
    opts: &StorageOptions,
    completed: &str,
) -> Result<String, String> {
    if !plugin.cleans_up_uploads() {
        return Ok(
            "not exported (world storage-backend): what a crashed upload sent stays at the \
             backend; implement storage-backend-with-cleanup"
                .into(),
        );
    }
    let lost = format!("{}lost.db", opts.prefix);
    let mut session = plugin
        .open(&opts.config, &opts.grants)
        .await
        .map_err(|e| e.to_string())?;
    let up = session
        .start_upload(&lost)
        .await
        .map_err(|e| e.to_string())?;
    // Two multipart parts and more (opendal sends a part once the next one
    // starts), so the backend holds an upload in progress.
    let chunk = vec![7u8; CHUNK_SIZE];
    for _ in 0..17 {
        session
            .write(&up, &chunk)
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(session);
    let n = plugin
        .abandon_uploads(&opts.config, &opts.grants, &lost)
        .await
        .map_err(|e| format!("abandon-uploads of `{lost}`: {e}"))?
        .unwrap_or(0);
    plugin
        .abandon_uploads(&opts.config, &opts.grants, completed)
        .await
        .map_err(|e| format!("abandon-uploads of the completed `{completed}`: {e}"))?;
    let mut session = plugin
        .open(&opts.config, &opts.grants)
        .await
        .map_err(|e| e.to_string())?;
    let items = session
        .list(&opts.prefix)
        .await
        .map_err(|e| e.to_string())?;
    if items.iter().any(|o| o.key == lost) {
        return Err(format!("`{lost}` is listed after its upload was lost"));
    }
    if !items.iter().any(|o| o.key == completed) {
        return Err(format!(
            "abandon-uploads of the completed `{completed}` removed it"
        ));
    }
    Ok(format!(
        "discarded {n} unfinished upload(s); the completed object was kept"
    ))
}

/// Run the storage checks. Stops early only when the plugin cannot be opened.
pub async fn test_storage(plugin: &StoragePlugin, opts: &StorageOptions) -> Report {
    let mut report = Report {
        plugin: plugin.name().to_string(),
        checks: Vec::new(),
    };
    let t = Instant::now();
    let mut session = match plugin.open(&opts.config, &opts.grants).await {
        Ok(s) => {
            report.record("open", t, Ok("configuration accepted".into()));
            s
        }
        Err(e) => {
            report.record("open", t, Err(e.to_string()));
            return report;
        }
    };
    let p = &opts.prefix;
    let small = format!("{p}small.db");
    let large = format!("{p}large.db");
    let aborted = format!("{p}aborted.db");

    let t = Instant::now();
    let r = round_trip(&mut session, &small, 1000).await;
    report.record("small round-trip", t, r);

    let t = Instant::now();
    let r = round_trip(&mut session, &large, opts.large_bytes).await;
    let mib = opts.large_bytes as f64 / (1 << 20) as f64;
    let r = r.map(|d| format!("{d} ({:.1} MiB/s)", mib / t.elapsed().as_secs_f64()));
    report.record("large round-trip (multipart)", t, r);

    let t = Instant::now();
    let r = match session.list(p).await {
        Err(e) => Err(e.to_string()),
        Ok(items) => {
            let find = |k: &str| items.iter().find(|o| o.key == k).map(|o| o.size);
            match (find(&small), find(&large)) {
                (Some(1000), Some(s)) if s == opts.large_bytes => {
                    if items.iter().all(|o| o.key.starts_with(p.as_str())) {
                        Ok(format!("{} objects under {p}", items.len()))
                    } else {
                        Err(format!("list returned keys outside the prefix {p}"))
                    }
                }
                other => Err(format!(
                    "expected both objects with their sizes, got {other:?} in {items:?}"
                )),
            }
        }
    };
    report.record("list by prefix", t, r);

    let t = Instant::now();
    let missing = format!("{p}does-not-exist");
    let r = expect_not_found(
        "open-download of a missing key",
        session.open_download(&missing).await,
    );
    report.record("not-found on download", t, r);

    let t = Instant::now();
    let r = expect_not_found("delete of a missing key", session.delete(&missing).await);
    report.record("not-found on delete", t, r);

    let t = Instant::now();
    let r: Result<String, String> = async {
        let up = session
            .start_upload(&aborted)
            .await
            .map_err(|e| e.to_string())?;
        session
            .write(&up, &vec![7u8; CHUNK_SIZE])
            .await
            .map_err(|e| e.to_string())?;
        session.abort(up).await.map_err(|e| e.to_string())?;
        let items = session.list(p).await.map_err(|e| e.to_string())?;
        if items.iter().any(|o| o.key == aborted) {
            Err("an aborted upload is still listed".into())
        } else {
            Ok("aborted upload left nothing behind".into())
        }
    }
    .await;
    report.record("abort leaves nothing", t, r);

    let t = Instant::now();
    let r = lost_upload_cleanup(plugin, opts, &small).await;
    report.record("clean-up of a lost upload", t, r);

    let t = Instant::now();
    let r: Result<String, String> = async {
        for k in [&small, &large] {
            session.delete(k).await.map_err(|e| e.to_string())?;
        }
        let items = session.list(p).await.map_err(|e| e.to_string())?;
        if items.is_empty() {
            Ok("deleted objects are gone from the listing".into())
        } else {
            Err(format!("still listed after delete: {items:?}"))
        }
    }
    .await;
    report.record("delete", t, r);
    report
}

/// Run a policy's hooks on sample inputs and check the answers are sane.
pub async fn test_policy(plugin: &PolicyPlugin, config: &[(String, String)]) -> Report {
    let mut report = Report {
        plugin: plugin.name().to_string(),
        checks: Vec::new(),
    };
    let now: u64 = 1_700_000_000_000;
    let ctx = BackupContext {
        namespace: "default".into(),
        name: "sample".into(),
        path_prefix: "bucket/etcd".into(),
        revision: 42,
        etcd_version: "3.5.1".into(),
        last_backup_revision: Some(41),
        last_backup_ms: Some(now - 3_600_000),
        now_ms: now,
    };

    // Every hook runs in a fresh instance, so this is each call's fixed cost.
    let t = Instant::now();
    let r = plugin
        .instantiate_only()
        .await
        .map(|()| "a fresh sandbox per hook".to_string())
        .map_err(|e| e.to_string());
    report.record("instantiate", t, r);

    let t = Instant::now();
    let r = match plugin.pre_backup(config, &ctx).await {
        Ok(PreBackupDecision::Proceed) => Ok("proceed".to_string()),
        Ok(PreBackupDecision::Skip(reason)) if !reason.trim().is_empty() => {
            Ok(format!("skip: {reason}"))
        }
        Ok(PreBackupDecision::Skip(_)) => {
            Err("skip without a reason; users need to know why".into())
        }
        Err(e) => Err(e.to_string()),
    };
    report.record("pre-backup", t, r);

    let t = Instant::now();
    let r = match plugin.backup_name(config, &ctx).await {
        Ok(None) => Ok("operator default name".to_string()),
        Ok(Some(name)) if !name.is_empty() && !name.ends_with('/') => Ok(format!("`{name}`")),
        Ok(Some(name)) => Err(format!("`{name}` is not a usable object key")),
        Err(e) => Err(e.to_string()),
    };
    report.record("backup-name", t, r);

    // Sample: one backup an hour for ten days, newest first at `now`.
    let backups: Vec<super::ObjectInfo> = (0..240u64)
        .map(|i| super::ObjectInfo {
            key: format!("bucket/etcd_v{}_{i:03}", 1000 - i),
            size: 1 << 20,
            last_modified_ms: now - i * 3_600_000,
        })
        .collect();
    let t = Instant::now();
    let r = match plugin.retention(config, &backups, now).await {
        Err(e) => Err(e.to_string()),
        Ok(delete) if delete.contains(&backups[0].key) => {
            Err("it would delete the newest backup".into())
        }
        Ok(delete) => {
            let mut unique = delete.clone();
            unique.sort();
            unique.dedup();
            if unique.len() != delete.len() {
                Err("it returned the same key twice".into())
            } else {
                Ok(format!(
                    "deletes {} of {} sample backups, keeps {}",
                    delete.len(),
                    backups.len(),
                    backups.len() - delete.len()
                ))
            }
        }
    };
    report.record("retention", t, r);
    report
}

/// Run whichever kit fits the plugin's world.
pub async fn test_plugin(plugin: &LoadedPlugin, opts: &StorageOptions) -> Report {
    match plugin {
        LoadedPlugin::Storage(p) => test_storage(p, opts).await,
        LoadedPlugin::Policy(p) => test_policy(p, &opts.config).await,
    }
}
