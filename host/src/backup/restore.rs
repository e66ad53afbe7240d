//! Fetching a backup and proving it sound before anything is restored from
//! it, and finding the newest sound backup of a cluster for quorum-loss
//! recovery. Nothing here touches a running cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::controller::Storage;
use super::location::{SecretStore, Target};
use super::schedule;
use super::snapshot::{BackupMeta, BackupOwner, meta_key};
use super::verify::{Digests, SnapshotDigest, SnapshotStatus, snapshot_status};
use crate::controller::BackupPin;
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
    #[error(
        "backup `{key}` was written by {owner}, not for EtcdCluster {namespace}/{cluster}; nothing was \
         restored. If restoring that cluster's data here is what you want, set \
         spec.allowOtherClusterBackup: true on the EtcdRestore"
    )]
    OtherCluster {
        key: String,
        owner: BackupOwner,
        namespace: String,
        cluster: String,
    },
    #[error("backup `{key}` is refused: {why}")]
    TooLarge { key: String, why: String },
    #[error(
        "the download and verification did not finish within {limit:?} ({progress}); nothing was \
         restored. Raise spec.timeoutInSecond (or --restore-timeout) if the backup is just large"
    )]
    TimedOut { limit: Duration, progress: String },
    #[error("stopped: the EtcdRestore was deleted or changed while its backup was being verified")]
    Cancelled,
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
            match &self.meta {
                Some(BackupMeta {
                    owner: Some(owner), ..
                }) => format!(", matches its metadata, written by {owner}"),
                Some(_) => ", matches its metadata".to_string(),
                None => ", no metadata: checked against etcd's own trailer".to_string(),
            }
        )
    }
}

/// How far a download has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    pub bytes: u64,
    /// From the metadata, else from the plugin.
    pub total: Option<u64>,
    pub bytes_per_second: u64,
}

impl std::fmt::Display for Transferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        write!(f, "{:.1} MiB", self.bytes as f64 / MIB)?;
        if let Some(t) = self.total {
            write!(f, " of {:.1} MiB", t as f64 / MIB)?;
        }
        write!(
            f,
            " downloaded at {:.1} MiB/s",
            self.bytes_per_second as f64 / MIB
        )
    }
}

/// A download's progress as EtcdRestore status shows it.
pub fn progress_status(t: &Transferred) -> crate::api::RestoreProgress {
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    crate::api::RestoreProgress {
        bytes_read: i(t.bytes),
        total_bytes: t.total.map(i),
        bytes_per_second: i(t.bytes_per_second),
    }
}

/// What a caller learns while a verification runs.
#[derive(Debug, Clone)]
pub enum Report {
    /// An attempt failed and is retried.
    Retrying(String),
    Progress(Transferred),
}

/// Hears reports; shared with the task that writes status.
pub type Reporter<'a> = &'a (dyn Fn(Report) + Send + Sync);

/// What a backup must be to be restored from, besides sound.
pub struct Expect<'a> {
    /// The cluster it is restored into, `(namespace, name)`: metadata that
    /// names another cluster is refused unless `other_cluster_ok`.
    pub cluster: (&'a str, &'a str),
    pub other_cluster_ok: bool,
    /// Most bytes downloaded (metadata's size is a tighter bound).
    pub max_bytes: u64,
}

/// A staged download, removed when dropped unless kept: a failed,
/// timed-out or cancelled verification leaves nothing on the staging disk.
struct Staged {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Chunks waiting for the staging writer: the plugin's next read overlaps
/// the hashing and writing of the previous ones, and memory stays at a few
/// chunks.
const STAGING_DEPTH: usize = 4;

/// Hashes a download ([`SnapshotDigest`]) and writes it to its staging file
/// on a blocking thread of its own, so the plugin's reads, the sha256 and
/// the disk writes run side by side: one pass over the bytes. The staged
/// file is not synced: it is read back at once by the restore, from the page
/// cache, and a crash clears the staging directory at the next start
/// ([`clear_staging`]) rather than trusting what it holds.
struct StagingWriter {
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
    done: tokio::task::JoinHandle<std::io::Result<Digests>>,
}

impl StagingWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        let mut file = std::fs::File::create(path)?;
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(STAGING_DEPTH);
        let done = tokio::task::spawn_blocking(move || {
            let mut digest = SnapshotDigest::default();
            while let Some(chunk) = rx.blocking_recv() {
                digest.update(&chunk);
                file.write_all(&chunk)?;
            }
            Ok(digest.finish())
        });
        Ok(Self { chunks, done })
    }

    /// Queue a chunk; `false` once the writer has stopped on an error.
    async fn write(&mut self, chunk: Vec<u8>) -> bool {
        self.chunks.send(chunk).await.is_ok()
    }

    /// Wait for every queued chunk, and return the digests of them all.
    async fn finish(self) -> std::io::Result<Digests> {
        drop(self.chunks);
        self.done
            .await
            .map_err(|e| std::io::Error::other(format!("the staging writer stopped: {e}")))?
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

/// Remove what a previous run of the operator left in `staging` (a process
/// killed mid-download runs no drop guard). Called at start, before any
/// download: nothing in it belongs to this run yet.
pub fn clear_staging(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a staged file a previous run left")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale staged file")
                }
            }
        }
    }
}

/// Download backup `key` into a new file in `staging` and verify it:
/// whose it is (before downloading), metadata sha256 and size, etcd's
/// integrity trailer, `snapshot status`. The download stops at the size the
/// metadata gives (else at `expect.max_bytes`). On failure, or if the
/// future is dropped, the file is removed.
pub async fn fetch_verified(
    session: &mut StorageSession,
    target: &Target,
    key: &str,
    staging: &Path,
    tool: &SnapshotTool,
    expect: &Expect<'_>,
    report: Reporter<'_>,
) -> Result<Verified, RestoreError> {
    let meta = read_meta(session, key).await?;
    let (namespace, cluster) = expect.cluster;
    if let Some(owner) = meta.as_ref().and_then(|m| m.owner.as_ref())
        && owner.names_other_cluster(namespace, cluster)
        && !expect.other_cluster_ok
    {
        return Err(RestoreError::OtherCluster {
            key: key.into(),
            owner: owner.clone(),
            namespace: namespace.into(),
            cluster: cluster.into(),
        });
    }
    std::fs::create_dir_all(staging).map_err(|e| RestoreError::Staging {
        path: staging.display().to_string(),
        message: e.to_string(),
    })?;
    let mut staged = Staged {
        path: staging.join(format!(
            "restore-{}-{}.db",
            std::process::id(),
            rand::random::<u64>()
        )),
        keep: false,
    };
    let fetch = Fetch {
        target,
        key,
        path: &staged.path,
        meta,
        tool,
        max_bytes: expect.max_bytes,
        report,
    };
    let verified = download_and_check(session, fetch).await?;
    staged.keep = true;
    Ok(verified)
}

/// One download into one staged file.
struct Fetch<'a> {
    target: &'a Target,
    key: &'a str,
    path: &'a Path,
    meta: Option<BackupMeta>,
    tool: &'a SnapshotTool,
    max_bytes: u64,
    report: Reporter<'a>,
}

/// How often a download reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

async fn download_and_check(
    session: &mut StorageSession,
    fetch: Fetch<'_>,
) -> Result<Verified, RestoreError> {
    let Fetch {
        target,
        key,
        path,
        meta,
        tool,
        max_bytes,
        report,
    } = fetch;
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
    let too_large = |why: String| RestoreError::TooLarge {
        key: key.into(),
        why,
    };
    if let Some(m) = &meta
        && m.size > max_bytes
    {
        return Err(too_large(format!(
            "its metadata gives {} bytes, more than the {max_bytes} a restore downloads \
             (--max-backup-size)",
            m.size
        )));
    }
    let reported = session.size(&download).await?;
    let total = meta.as_ref().map(|m| m.size).or(reported);
    let bound = total.unwrap_or(max_bytes).min(max_bytes);
    let mut staged = StagingWriter::create(path).map_err(staging_err)?;
    let (started, mut reported_at) = (Instant::now(), Instant::now());
    let mut bytes = 0u64;
    loop {
        let chunk = session.read(&download, CHUNK_SIZE as u32).await?;
        if chunk.is_empty() {
            break;
        }
        bytes += chunk.len() as u64;
        if bytes > bound {
            return Err(match (&meta, reported) {
                (Some(m), _) => RestoreError::Corrupt {
                    key: key.into(),
                    why: format!(
                        "it is longer than the {} bytes its metadata says; the download was stopped there",
                        m.size
                    ),
                },
                (None, Some(r)) if r < max_bytes => too_large(format!(
                    "the storage plugin gives its size as {r} bytes but sends more; the download was stopped there"
                )),
                _ => too_large(format!(
                    "it is larger than the {max_bytes} bytes a restore downloads (--max-backup-size); \
                     the download was stopped there"
                )),
            });
        }
        if !staged.write(chunk).await {
            break; // The writer failed; `finish` says why.
        }
        if reported_at.elapsed() >= PROGRESS_EVERY {
            reported_at = Instant::now();
            report(Report::Progress(transferred(bytes, total, started)));
        }
    }
    report(Report::Progress(transferred(bytes, total, started)));
    let digests = staged.finish().await.map_err(staging_err)?;
    session.close_download(download).await;
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

fn transferred(bytes: u64, total: Option<u64>, started: Instant) -> Transferred {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    Transferred {
        bytes,
        total,
        bytes_per_second: (bytes as f64 / secs) as u64,
    }
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
///
/// Backups whose metadata names another cluster than `cluster` are not
/// candidates (recovery never seeds a cluster with another one's data).
pub async fn newest_verified<S: SecretStore>(
    storage: &Storage<S>,
    targets: &[Target],
    cluster: (&str, &str),
    staging: &Path,
    tool: &SnapshotTool,
    rejected: &std::sync::Mutex<std::collections::HashSet<String>>,
    pin: Option<&BackupPin>,
) -> Result<Option<Verified>, String> {
    let expect = Expect {
        cluster,
        other_cluster_ok: false,
        max_bytes: storage.bounds.max_backup_bytes,
    };
    let quiet = |_: Report| {};
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
            Ok(objects) if objects.len() > storage.bounds.max_listed => errors.push(format!(
                "the storage plugin listed {} objects under `{}`, more than the {} recovery looks at",
                objects.len(),
                t.path,
                storage.bounds.max_listed
            )),
            Ok(objects) => candidates.extend(
                objects
                    .into_iter()
                    .filter(|o| o.key == t.path || schedule::is_periodic_key(&t.path, &o.key))
                    .filter(|o| pin.is_none_or(|p| p.key == o.key))
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
            Ok(mut session) => {
                fetch_verified(&mut session, t, &key, staging, tool, &expect, &quiet).await
            }
            Err(e) => Err(e.into()),
        };
        match fetched {
            Ok(v) if pin.is_some_and(|p| p.sha256 != v.digests.sha256) => {
                let _ = std::fs::remove_file(&v.path);
                errors.push(format!(
                    "backup `{key}` has changed since the restore began (sha256 {} now)",
                    v.digests.sha256
                ));
            }
            Ok(v) => return Ok(Some(v)),
            Err(e) => {
                // The EtcdRestore field that lets a restore take another
                // cluster's backup does not apply here: say so plainly.
                let why = match &e {
                    RestoreError::OtherCluster { key, owner, .. } => format!(
                        "backup `{key}` was written by {owner}; recovery uses only this cluster's own backups"
                    ),
                    other => other.to_string(),
                };
                tracing::warn!(key, error = %why, "backup not usable for recovery; trying an older one");
                if !e.is_retryable() {
                    rejected
                        .lock()
                        .expect("rejected backups")
                        .insert(id(t, &key, modified));
                }
                errors.push(why);
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
/// retrying transient failures (5 s doubling, six attempts), all within the
/// restore's time limit (`spec.timeoutInSecond`, else `--restore-timeout`);
/// `report` hears each retry and the download's progress.
async fn verify_with_retries<S: SecretStore>(
    storage: &Storage<S>,
    spec: &crate::api::EtcdRestoreSpec,
    namespace: &str,
    staging: &Path,
    tool: &SnapshotTool,
    report: Reporter<'_>,
) -> Result<Verified, RestoreError> {
    let limit = restore_timeout(spec, &storage.bounds);
    let last = std::sync::Mutex::new(String::from("nothing downloaded yet"));
    let tracking = |r: Report| {
        if let Report::Progress(t) = &r {
            *last.lock().expect("progress") = t.to_string();
        }
        report(r)
    };
    let attempts = async {
        let expect = Expect {
            cluster: (namespace, &spec.etcd_cluster.name),
            // A restore into a new cluster seeds it from another cluster's
            // backup by definition; its status names where the data came from.
            other_cluster_ok: spec.allow_other_cluster_backup || spec.new_cluster.is_some(),
            max_bytes: storage.bounds.max_backup_bytes,
        };
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
                fetch_verified(
                    &mut session,
                    &target,
                    &key,
                    staging,
                    tool,
                    &expect,
                    &tracking,
                )
                .await
            }
            .await;
            match result {
                Err(e) if e.is_retryable() && attempt < 6 => {
                    let delay = schedule::retry_delay(attempt, std::time::Duration::ZERO);
                    tracking(Report::Retrying(format!(
                        "attempt {attempt} failed: {e}; retrying in {}s",
                        delay.as_secs()
                    )));
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(limit, attempts).await {
        Ok(result) => result,
        Err(_) => Err(RestoreError::TimedOut {
            limit,
            progress: last.lock().expect("progress").clone(),
        }),
    }
}

/// The time limit of one restore's download and verification.
pub fn restore_timeout(spec: &crate::api::EtcdRestoreSpec, bounds: &super::Bounds) -> Duration {
    match spec.timeout_in_second {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => bounds.restore_timeout,
    }
}

/// How often a running verification asks whether its EtcdRestore is still
/// there, unchanged.
const STILL_WANTED_EVERY: Duration = Duration::from_secs(2);

/// Verify an EtcdRestore's backup the way every runtime's restore
/// controller does: [`verify_with_retries`] under the restore's time limit,
/// each report handed to `on_report` (which writes status), and stopped
/// with [`RestoreError::Cancelled`] once `still_wanted` says the EtcdRestore
/// was deleted or changed. Dropping the download removes its staged file.
pub async fn verify_supervised<S, R, RF, W, WF>(
    storage: &Storage<S>,
    spec: &crate::api::EtcdRestoreSpec,
    namespace: &str,
    staging: &Path,
    tool: &SnapshotTool,
    mut on_report: R,
    mut still_wanted: W,
) -> Result<Verified, RestoreError>
where
    S: SecretStore,
    R: FnMut(Report) -> RF,
    RF: std::future::Future<Output = ()>,
    W: FnMut() -> WF,
    WF: std::future::Future<Output = bool>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let send = move |r: Report| {
        let _ = tx.send(r);
    };
    let verify = verify_with_retries(storage, spec, namespace, staging, tool, &send);
    tokio::pin!(verify);
    let mut tick = tokio::time::interval(STILL_WANTED_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut verify => {
                while let Ok(r) = rx.try_recv() {
                    on_report(r).await;
                }
                return result;
            }
            Some(r) = rx.recv() => on_report(r).await,
            _ = tick.tick() => {
                if !still_wanted().await {
                    return Err(RestoreError::Cancelled);
                }
            }
        }
    }
}

/// The EtcdRestore condition reason for a verification failure.
pub fn failure_reason(e: &RestoreError) -> &'static str {
    match e {
        RestoreError::NotFound { .. } => "BackupNotFound",
        RestoreError::Corrupt { .. } => "BackupCorrupt",
        RestoreError::OtherCluster { .. } => "BackupOfAnotherCluster",
        RestoreError::TooLarge { .. } => "BackupTooLarge",
        RestoreError::TimedOut { .. } => "TimedOut",
        RestoreError::Cancelled => "Cancelled",
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

/// Quorum-loss recovery's last resort, for any runtime: a
/// [`crate::controller::RecoverySource`] that lists the EtcdBackups of a
/// cluster with `backups_of` (the only part that differs between runtimes)
/// and fetches the newest of their backups that downloads and verifies (or
/// the pinned one). Backups that failed verification are remembered and not
/// downloaded again.
pub fn recovery_source<S, L, LF>(
    storage: Arc<Storage<S>>,
    binaries: Arc<crate::runtime::binaries::EtcdBinaries>,
    staging: PathBuf,
    backups_of: L,
) -> crate::controller::RecoverySource
where
    S: SecretStore + 'static,
    L: Fn(crate::controller::ClusterKey) -> LF + Send + Sync + 'static,
    LF: std::future::Future<Output = Result<Vec<crate::api::EtcdBackup>, String>> + Send + 'static,
{
    let rejected = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let backups_of = Arc::new(backups_of);
    Arc::new(move |key, pin| {
        let (storage, binaries, staging, rejected, backups_of) = (
            storage.clone(),
            binaries.clone(),
            staging.clone(),
            rejected.clone(),
            backups_of.clone(),
        );
        Box::pin(async move {
            let backups = backups_of(key.clone()).await?;
            recovery_snapshot(
                &storage,
                &key,
                &backups,
                &staging,
                &binaries,
                &rejected,
                pin.as_ref(),
            )
            .await
        })
    })
}

/// Among `backups` (the EtcdBackups of cluster `key`), the newest backup
/// that downloads and verifies. `Ok(None)`: none is usable. Backups in
/// `rejected` failed verification before and are not downloaded again.
async fn recovery_snapshot<S: SecretStore>(
    storage: &Storage<S>,
    key: &crate::controller::ClusterKey,
    backups: &[crate::api::EtcdBackup],
    staging: &Path,
    binaries: &crate::runtime::binaries::EtcdBinaries,
    rejected: &std::sync::Mutex<std::collections::HashSet<String>>,
    pin: Option<&BackupPin>,
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
    let limit = storage.bounds.restore_timeout;
    let cluster = (key.namespace.as_str(), key.name.as_str());
    let search = newest_verified(storage, &targets, cluster, staging, &tool, rejected, pin);
    let found = tokio::time::timeout(limit, search).await.map_err(|_| {
        format!(
            "no backup was downloaded and verified within {limit:?} (--restore-timeout); trying again later"
        )
    })??;
    Ok(found.map(|v| crate::controller::RecoverySnapshot {
        description: v.describe(),
        pin: BackupPin {
            key: v.key.clone(),
            sha256: v.digests.sha256.clone(),
        },
        path: v.path,
    }))
}
