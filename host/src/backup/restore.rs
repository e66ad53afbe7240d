//! Fetching a backup and proving it sound before anything is restored from
//! it, and finding the newest sound backup of a cluster for quorum-loss
//! recovery. Nothing here touches a running cluster.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::controller::Storage;
use super::location::{SecretStore, Target};
use super::schedule;
use super::snapshot::{BackupMeta, meta_key};
use super::verify::{Digests, SnapshotDigest, SnapshotStatus, snapshot_status};
use crate::plugins::storage::{CHUNK_SIZE, StorageSession};
use crate::plugins::{GuestErrorKind, PluginError};
use crate::runtime::binaries::SnapshotTool;

/// Metadata objects are small; refuse anything that is not.
const META_LIMIT: usize = 1 << 20;

/// Why a backup cannot be restored. The running cluster is untouched in
/// every case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup `{key}` does not exist in {location}")]
    NotFound { key: String, location: String },
    #[error("backup `{key}` failed verification: {why}")]
    Corrupt { key: String, why: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("staging the backup at {path}: {message}")]
    Staging { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl RestoreError {
    /// Worth trying again (a flaky backend), as opposed to a missing or
    /// damaged backup, which stays so.
    pub fn is_retryable(&self) -> bool {
        match self {
            RestoreError::Plugin(e) => e.is_retryable(),
            RestoreError::Staging { .. } => true,
            _ => false,
        }
    }
}

/// A backup downloaded to a local file and verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: String,
    pub path: PathBuf,
    pub digests: Digests,
    /// The metadata written at backup time; `None` for backups taken by
    /// other tools (the CoreOS operator wrote none).
    pub meta: Option<BackupMeta>,
    pub status: SnapshotStatus,
}

impl Verified {
    /// One line for status and events.
    pub fn describe(&self) -> String {
        format!(
            "`{}` (revision {}, {} keys, {} bytes, sha256 {}{})",
            self.key,
            self.status.revision,
            self.status.total_key,
            self.digests.size,
            &self.digests.sha256[..12],
            if self.meta.is_some() {
                ", matches its metadata"
            } else {
                ", no metadata: checked against etcd's own trailer"
            }
        )
    }
}

/// Read `<key>.meta.json`, if there is one.
pub(crate) async fn read_meta(
    session: &mut StorageSession,
    key: &str,
) -> Result<Option<BackupMeta>, RestoreError> {
    let mk = meta_key(key);
    let download = match session.open_download(&mk).await {
        Ok(d) => d,
        Err(e) if e.guest_kind() == Some(GuestErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    loop {
        let chunk = session.read(&download, 64 << 10).await?;
        if chunk.is_empty() {
            break;
        }
        bytes.extend_from_slice(&chunk);
        if bytes.len() > META_LIMIT {
            return Err(RestoreError::Corrupt {
                key: key.into(),
                why: format!("its metadata {mk} is larger than 1 MiB"),
            });
        }
    }
    session.close_download(download).await;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RestoreError::Corrupt {
            key: key.into(),
            why: format!("its metadata {mk} is not valid: {e}"),
        })
}

/// Download backup `key` into a new file in `staging` and verify it:
/// metadata sha256 and size, etcd's integrity trailer, `snapshot status`.
/// On failure the file is removed.
pub async fn fetch_verified(
    session: &mut StorageSession,
    target: &Target,
    key: &str,
    staging: &Path,
    tool: &SnapshotTool,
) -> Result<Verified, RestoreError> {
    let meta = read_meta(session, key).await?;
    std::fs::create_dir_all(staging).map_err(|e| RestoreError::Staging {
        path: staging.display().to_string(),
        message: e.to_string(),
    })?;
    let path = staging.join(format!(
        "restore-{}-{}.db",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = download_and_check(session, target, key, &path, meta, tool).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result
}

async fn download_and_check(
    session: &mut StorageSession,
    target: &Target,
    key: &str,
    path: &Path,
    meta: Option<BackupMeta>,
    tool: &SnapshotTool,
) -> Result<Verified, RestoreError> {
    let staging_err = |e: std::io::Error| RestoreError::Staging {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let download = match session.open_download(key).await {
        Ok(d) => d,
        Err(e) if e.guest_kind() == Some(GuestErrorKind::NotFound) => {
            return Err(RestoreError::NotFound {
                key: key.into(),
                location: target.display.clone(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut file = tokio::fs::File::create(path).await.map_err(staging_err)?;
    let mut digest = SnapshotDigest::default();
    loop {
        let chunk = session.read(&download, CHUNK_SIZE as u32).await?;
        if chunk.is_empty() {
            break;
        }
        digest.update(&chunk);
        file.write_all(&chunk).await.map_err(staging_err)?;
    }
    file.sync_all().await.map_err(staging_err)?;
    drop(file);
    session.close_download(download).await;
    let digests = digest.finish();
    let corrupt = |why: String| RestoreError::Corrupt {
        key: key.into(),
        why,
    };
    if let Some(m) = &meta {
        if m.size != digests.size {
            return Err(corrupt(format!(
                "it is {} bytes but its metadata says {} (truncated or replaced)",
                digests.size, m.size
            )));
        }
        if !m.sha256.eq_ignore_ascii_case(&digests.sha256) {
            return Err(corrupt(format!(
                "its sha256 is {} but its metadata says {}",
                digests.sha256, m.sha256
            )));
        }
    }
    if !digests.trailer_ok {
        return Err(corrupt(
            "etcd's integrity trailer (the sha256 at the end of every snapshot) does not match its contents"
                .into(),
        ));
    }
    let status = snapshot_status(tool, path).await.map_err(corrupt)?;
    Ok(Verified {
        key: key.to_string(),
        path: path.to_path_buf(),
        digests,
        meta,
        status,
    })
}

/// The newest backup among `targets` that verifies, downloaded into
/// `staging`. Candidates are the exact `path` of each target and the
/// periodic backups under it, newest first; a candidate that fails
/// verification is reported and the next older one is tried.
/// `Ok(None)`: there is no backup at all.
///
/// `rejected` remembers backups that failed verification (by location, key
/// and modification time), so a caller asking again — quorum-loss recovery
/// retries every few seconds — does not download the same damaged objects
/// each time; a backup written anew under the same key is tried again.
pub async fn newest_verified<S: SecretStore>(
    storage: &Storage<S>,
    targets: &[Target],
    staging: &Path,
    tool: &SnapshotTool,
    rejected: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<Option<Verified>, String> {
    let id = |t: &Target, key: &str, modified: u64| format!("{}|{key}|{modified}", t.display);
    let mut candidates = Vec::new();
    let mut errors = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mut session = match storage.open(t).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        match session.list(&t.path).await {
            Ok(objects) => candidates.extend(
                objects
                    .into_iter()
                    .filter(|o| o.key == t.path || schedule::is_periodic_key(&t.path, &o.key))
                    .filter(|o| {
                        !rejected.lock().expect("rejected backups").contains(&id(
                            t,
                            &o.key,
                            o.last_modified_ms,
                        ))
                    })
                    .map(|o| (o.last_modified_ms, o.key, i)),
            ),
            Err(e) => errors.push(e.to_string()),
        }
    }
    candidates.sort_by(|a, b| b.cmp(a));
    for (modified, key, i) in candidates.into_iter().take(5) {
        let t = &targets[i];
        let fetched = match storage.open(t).await {
            Ok(mut session) => fetch_verified(&mut session, t, &key, staging, tool).await,
            Err(e) => Err(e.into()),
        };
        match fetched {
            Ok(v) => return Ok(Some(v)),
            Err(e) => {
                tracing::warn!(key, error = %e, "backup not usable for recovery; trying an older one");
                if !e.is_retryable() {
                    rejected
                        .lock()
                        .expect("rejected backups")
                        .insert(id(t, &key, modified));
                }
                errors.push(e.to_string());
            }
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(errors.join("; "))
    }
}

/// Resolve an EtcdRestore's location, download and verify the backup,
/// retrying transient failures (5 s doubling, six attempts); `on_retry` hears
/// each retry's message. Shared by every runtime's restore controller.
pub async fn verify_with_retries<S: SecretStore>(
    storage: &Storage<S>,
    spec: &crate::api::EtcdRestoreSpec,
    namespace: &str,
    staging: &Path,
    tool: &SnapshotTool,
    mut on_retry: impl FnMut(String),
) -> Result<Verified, RestoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: Result<Verified, RestoreError> = async {
            let target = super::location::resolve(
                &spec.backup_storage_type,
                "backupStorageType",
                spec.source(),
                namespace,
                storage.secrets.as_ref(),
                &storage.host,
            )
            .await
            .map_err(|e| RestoreError::Other(e.to_string()))?;
            let mut session = storage.open(&target).await?;
            let key = target.path.clone();
            fetch_verified(&mut session, &target, &key, staging, tool).await
        }
        .await;
        match result {
            Err(e) if e.is_retryable() && attempt < 6 => {
                let delay = schedule::retry_delay(attempt, std::time::Duration::ZERO);
                on_retry(format!(
                    "attempt {attempt} failed: {e}; retrying in {}s",
                    delay.as_secs()
                ));
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// The EtcdRestore condition reason for a verification failure.
pub fn failure_reason(e: &RestoreError) -> &'static str {
    match e {
        RestoreError::NotFound { .. } => "BackupNotFound",
        RestoreError::Corrupt { .. } => "BackupCorrupt",
        _ => "VerificationFailed",
    }
}

/// Poll until `size` members of `key` serve with a leader and a revision at
/// least `revision` (the snapshot's), or `timeout` passes.
pub async fn wait_serving<R: crate::controller::Runtime>(
    runtime: &R,
    key: &crate::controller::ClusterKey,
    size: usize,
    revision: i64,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("no member answered yet");
    while std::time::Instant::now() < deadline {
        let members = runtime.list(key).await.map_err(|e| e.to_string())?;
        let tls = runtime.client_tls(key).await.map_err(|e| e.to_string())?;
        let mut serving = 0;
        for m in &members {
            if let Ok(s) = crate::etcd::status_with(&m.urls.client, tls.as_ref()).await
                && s.leader != 0
                && s.revision >= revision
            {
                serving += 1;
            }
        }
        if serving >= size {
            return Ok(());
        }
        last = format!("{serving} of {size} restored members serve");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(format!(
        "the restored members did not all serve within {}s ({last}); see the EtcdCluster's status",
        timeout.as_secs()
    ))
}

/// Quorum-loss recovery's last resort, for any runtime: among `backups`
/// (the EtcdBackups of cluster `key`), the newest backup that downloads and
/// verifies. `Ok(None)`: none is usable. Backups in `rejected` failed
/// verification before and are not downloaded again.
pub async fn recovery_snapshot<S: SecretStore>(
    storage: &Storage<S>,
    key: &crate::controller::ClusterKey,
    backups: &[crate::api::EtcdBackup],
    staging: &Path,
    binaries: &crate::runtime::binaries::EtcdBinaries,
    rejected: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<Option<crate::controller::RecoverySnapshot>, String> {
    let mut targets = Vec::new();
    for b in backups {
        match storage.backup_target(&key.namespace, &b.spec).await {
            Ok(t) => targets.push(t),
            Err(e) => {
                tracing::warn!(cluster = %key, error = %e, "backup location unusable for recovery")
            }
        }
    }
    if targets.is_empty() {
        return Ok(None);
    }
    let tool = binaries.snapshot_tool(None).map_err(|e| e.to_string())?;
    Ok(newest_verified(storage, &targets, staging, &tool, rejected)
        .await?
        .map(|v| crate::controller::RecoverySnapshot {
            description: v.describe(),
            path: v.path,
        }))
}
