//! One snapshot, streamed from the etcd member with the highest revision into
//! a storage session in bounded chunks, with integrity metadata beside it.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::etcd;
use crate::plugins::PluginError;
use crate::plugins::storage::{CHUNK_SIZE, StorageSession};

/// Integrity metadata stored as `<key>.meta.json` beside each backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMeta {
    pub key: String,
    pub size: u64,
    /// Lower-case hex sha256 of the snapshot bytes.
    pub sha256: String,
    pub etcd_version: String,
    pub revision: i64,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// The EtcdBackup that wrote it. Retention only ever deletes objects
    /// whose metadata names its own EtcdBackup (absent in metadata written
    /// before this field, and for one-off backups taken outside one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<BackupOwner>,
}

/// Which EtcdBackup wrote a backup, and of which cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupOwner {
    pub namespace: String,
    /// The EtcdBackup's name.
    pub backup: String,
    /// The EtcdCluster it backs up, when the EtcdBackup names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl BackupOwner {
    /// Whether this owner names a cluster other than `namespace`/`cluster`.
    pub fn names_other_cluster(&self, namespace: &str, cluster: &str) -> bool {
        self.cluster
            .as_deref()
            .is_some_and(|c| self.namespace != namespace || c != cluster)
    }
}

impl std::fmt::Display for BackupOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdBackup {}/{}", self.namespace, self.backup)?;
        if let Some(c) = &self.cluster {
            write!(f, " of EtcdCluster {}/{c}", self.namespace)?;
        }
        Ok(())
    }
}

/// The key of the metadata object of backup `key`.
pub fn meta_key(key: &str) -> String {
    format!("{key}.meta.json")
}

/// Why a backup failed. Nothing is left half-written: a failed upload is aborted.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no etcd endpoint answered: {0}")]
    NoEndpoint(String),
    #[error("reading the snapshot from {endpoint} failed: {message}")]
    Snapshot { endpoint: String, message: String },
    #[error(
        "the backup did not finish within {limit:?} (spec.backupPolicy.timeoutInSecond); the partial upload was aborted"
    )]
    TimedOut { limit: Duration },
    #[error(
        "the storage plugin reports {stored} bytes stored for `{key}` but {sent} were sent; the object \
         was deleted and the backup failed (a plugin that keeps less than it was given cannot be restored from); \
         check the storage backend, or fix the plugin (spec.storageType)"
    )]
    Incomplete { key: String, sent: u64, stored: u64 },
    #[error(
        "the storage plugin reported `{key}` stored, but its listing does not show it: the backup failed \
         and what the plugin kept of it was deleted (for a backend whose listings lag behind its writes, the \
         operator's admin can turn this check off with --list-after-upload=false)"
    )]
    NotListed { key: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl BackupError {
    /// Whether trying again later may succeed (etcd down, a slow or flaky
    /// backend); credentials and configuration errors are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Plugin(e) => e.is_retryable(),
            _ => true,
        }
    }
}

/// The endpoint with the highest revision, and its status.
pub async fn pick_endpoint(
    endpoints: &[String],
    tls: Option<&etcd::ClientTls>,
) -> Result<(String, etcd::Status), BackupError> {
    let mut best: Option<(String, etcd::Status)> = None;
    let mut errors = Vec::new();
    for e in endpoints {
        match etcd::status_with(e, tls).await {
            Ok(s) if best.as_ref().is_none_or(|(_, b)| s.revision > b.revision) => {
                best = Some((e.clone(), s))
            }
            Ok(_) => {}
            Err(err) => errors.push(err.to_string()),
        }
    }
    best.ok_or_else(|| {
        BackupError::NoEndpoint(if errors.is_empty() {
            "no endpoints given".into()
        } else {
            errors.join("; ")
        })
    })
}

/// What to check of an upload once the plugin reports it complete.
#[derive(Debug, Clone, Copy)]
pub struct UploadCheck {
    /// List the key and compare the size the backend shows with the bytes
    /// sent (`--list-after-upload`, on by default).
    pub list_after_upload: bool,
}

/// Delete what a failed backup made visible: the object, and metadata of an
/// earlier backup under the same key, which no longer describes it.
async fn remove_unusable(session: &mut StorageSession, key: &str) {
    for k in [key.to_string(), meta_key(key)] {
        match session.delete(&k).await {
            Ok(()) => {}
            Err(e) if e.guest_kind() == Some(crate::plugins::GuestErrorKind::NotFound) => {}
            Err(e) => tracing::warn!(key = %k, error = %e, "deleting an incomplete backup failed"),
        }
    }
}

/// Stream a snapshot of the best endpoint into `key`, then write its
/// metadata. Memory stays bounded by one chunk whatever the snapshot size.
/// Past `limit` the upload is aborted and [`BackupError::TimedOut`] returned.
pub async fn backup_to(
    session: &mut StorageSession,
    endpoints: &[String],
    key: &str,
    limit: Duration,
) -> Result<BackupMeta, BackupError> {
    let deadline = tokio::time::Instant::now() + limit;
    let (endpoint, status) = tokio::time::timeout_at(deadline, pick_endpoint(endpoints, None))
        .await
        .map_err(|_| BackupError::TimedOut { limit })??;
    let source = Source {
        endpoint: &endpoint,
        status,
        tls: None,
        owner: None,
    };
    let check = UploadCheck {
        list_after_upload: true,
    };
    backup_from(session, source, key, deadline, limit, check).await
}

/// The member a snapshot is read from.
pub struct Source<'a> {
    pub endpoint: &'a str,
    /// Its status, as [`pick_endpoint`] found it.
    pub status: etcd::Status,
    pub tls: Option<&'a etcd::ClientTls>,
    /// Recorded in the metadata.
    pub owner: Option<BackupOwner>,
}

/// [`backup_to`] from a chosen member.
pub async fn backup_from(
    session: &mut StorageSession,
    source: Source<'_>,
    key: &str,
    deadline: tokio::time::Instant,
    limit: Duration,
    check: UploadCheck,
) -> Result<BackupMeta, BackupError> {
    let Source {
        endpoint,
        status,
        tls,
        owner,
    } = source;
    let endpoint = endpoint.to_string();
    let timed_out = || BackupError::TimedOut { limit };
    let snap_err = |message: String| BackupError::Snapshot {
        endpoint: endpoint.clone(),
        message,
    };
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(etcd::REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
    if let Some(t) = tls {
        opts = t.apply(opts);
    }
    let mut stream = tokio::time::timeout_at(deadline, async {
        let mut client = Client::connect([endpoint.as_str()], Some(opts))
            .await
            .map_err(|e| snap_err(e.to_string()))?;
        client.snapshot().await.map_err(|e| snap_err(e.to_string()))
    })
    .await
    .map_err(|_| timed_out())??;

    let upload = session.start_upload(key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_SIZE);
    let streamed: Result<(), BackupError> = async {
        loop {
            let message = tokio::time::timeout_at(deadline, stream.message())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| snap_err(e.to_string()))?;
            let blob = message.as_ref().map(|m| m.blob()).unwrap_or_default();
            hasher.update(blob);
            size += blob.len() as u64;
            buf.extend_from_slice(blob);
            if buf.len() >= CHUNK_SIZE || (message.is_none() && !buf.is_empty()) {
                session.write(&upload, &buf).await?;
                buf.clear();
                if tokio::time::Instant::now() >= deadline {
                    return Err(timed_out());
                }
            }
            if message.is_none() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = streamed {
        if let Err(abort) = session.abort(upload).await {
            tracing::warn!(key, error = %abort, "aborting a failed backup upload also failed");
        }
        return Err(e);
    }
    if size == 0 {
        session.abort(upload).await?;
        return Err(snap_err("the snapshot stream was empty".into()));
    }
    let stored = session.complete(upload).await?;
    if stored != size {
        remove_unusable(session, key).await;
        return Err(BackupError::Incomplete {
            key: key.to_string(),
            sent: size,
            stored,
        });
    }
    if check.list_after_upload {
        // What the backend shows, not what the plugin says: a plugin that
        // reports success for an object it did not keep is found now, not
        // at restore time.
        let listed = session.list(key).await?;
        match listed.iter().find(|o| o.key == key) {
            Some(o) if o.size == size => {}
            found => {
                remove_unusable(session, key).await;
                return Err(match found {
                    Some(o) => BackupError::Incomplete {
                        key: key.to_string(),
                        sent: size,
                        stored: o.size,
                    },
                    None => BackupError::NotListed {
                        key: key.to_string(),
                    },
                });
            }
        }
    }
    let meta = BackupMeta {
        key: key.to_string(),
        size,
        sha256: hex::encode(hasher.finalize()),
        etcd_version: status.version.clone(),
        revision: status.revision,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        owner,
    };
    let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
    session
        .upload_from(&meta_key(key), &json[..])
        .await
        .map_err(|e| match e {
            crate::plugins::storage::UploadError::Plugin(p) => BackupError::Plugin(p),
            crate::plugins::storage::UploadError::Source(io) => snap_err(io.to_string()),
        })?;
    Ok(meta)
}
