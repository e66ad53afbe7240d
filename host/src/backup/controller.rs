//! The EtcdBackup controller: decides whether a backup is due, runs it
//! through the storage plugin, applies retention, and reports the outcome as
//! status, conditions and events. It knows nothing of Kubernetes or of local
//! mode: the caller supplies the object, the cluster's endpoints and a place
//! to keep retry pacing between calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::bounds::{Bounds, some_keys};
use super::location::{self, HostGrants, LocationError, SecretStore, Target};
use super::schedule::{self, Due};
use super::snapshot::{self, BackupError, BackupMeta, BackupOwner, meta_key};
use crate::api::condition::set_condition;
use crate::api::{Condition, EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, EtcdClusterStatus};
use crate::controller::Event;
use crate::plugins::policy::{BackupContext, PolicyPlugin, PreBackupDecision};
use crate::plugins::storage::{ObjectInfo, StorageSession};
use crate::plugins::{GuestErrorKind, PluginError, PluginRegistry};

/// Default `timeoutInSecond`, as in the CoreOS operator.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Storage plugins plus what resolving a location needs.
pub struct Storage<S> {
    pub registry: Arc<PluginRegistry>,
    pub secrets: Arc<S>,
    pub host: HostGrants,
    /// What the operator accepts from plugins in one operation.
    pub bounds: Bounds,
}

impl<S: SecretStore> Storage<S> {
    /// Resolve a location and open a session on its plugin.
    pub async fn open(&self, target: &Target) -> Result<StorageSession, PluginError> {
        let plugin = self.registry.storage(&target.plugin)?;
        plugin.open(&target.config, &target.grants).await
    }

    pub async fn backup_target(
        &self,
        namespace: &str,
        spec: &EtcdBackupSpec,
    ) -> Result<Target, LocationError> {
        location::resolve(
            &spec.storage_type,
            "storageType",
            spec.source(),
            namespace,
            self.secrets.as_ref(),
            &self.host,
        )
        .await
    }
}

/// Pacing kept between calls for one EtcdBackup (not persisted: after a
/// restart a failing backup is simply tried once more).
#[derive(Debug, Default)]
pub struct BackupMemory {
    failures: u32,
    retry_at: Option<Instant>,
    /// The spec and Secret contents a permanent failure was reported for;
    /// nothing runs until one of them changes.
    gave_up_on: Option<(EtcdBackupSpec, String)>,
    /// A policy plugin skipped the run; the next attempt waits a full interval.
    skipped_until: Option<Instant>,
}

/// What one call produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub status: EtcdBackupStatus,
    pub events: Vec<Event>,
    /// Call again after this long at the latest.
    pub requeue: Duration,
    /// How the run this call made ended; `None` when none was due.
    pub ran: Option<RunResult>,
}

/// How one backup run ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Succeeded,
    /// The backup-policy plugin declined this run.
    Skipped,
    /// Failed, whether it is retried or not.
    Failed,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Succeeded => "succeeded",
            RunResult::Skipped => "skipped",
            RunResult::Failed => "failed",
        }
    }
}

/// When the last backup succeeded, in seconds since the epoch (from
/// `status.lastSuccessDate`, so it survives operator restarts).
pub fn last_success_unix(status: &EtcdBackupStatus) -> Option<i64> {
    status
        .last_success_date
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp())
}

/// `spec.backupPolicy.backupIntervalInSecond`; zero for a one-shot backup.
pub fn interval_secs(spec: &EtcdBackupSpec) -> u64 {
    interval_of(spec).as_secs()
}

/// Where the cluster to back up answers: `etcdEndpoints`, or the client URLs
/// of the referenced EtcdCluster (`cluster` is its status, if it exists).
pub fn endpoints_of(
    spec: &EtcdBackupSpec,
    cluster: Option<&EtcdClusterStatus>,
) -> Result<Vec<String>, String> {
    if let Some(eps) = spec.etcd_endpoints.as_ref().filter(|e| !e.is_empty()) {
        return Ok(eps.clone());
    }
    let Some(r) = &spec.etcd_cluster else {
        return Err(
            "neither spec.etcdEndpoints nor spec.etcdCluster is set: name the cluster to back up"
                .into(),
        );
    };
    match cluster {
        None => Err(format!(
            "EtcdCluster {} (spec.etcdCluster.name) does not exist",
            r.name
        )),
        Some(s) if s.client_urls.is_empty() => {
            Err(format!("EtcdCluster {} has no serving member yet", r.name))
        }
        Some(s) => Ok(s.client_urls.clone()),
    }
}

/// A failed run.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    retryable: bool,
    /// For the Failed condition of permanent failures.
    reason: &'static str,
}

impl Failure {
    fn retry(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
            reason: "",
        }
    }

    fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
            reason,
        }
    }
}

impl From<PluginError> for Failure {
    fn from(e: PluginError) -> Self {
        let message = e.to_string();
        match &e {
            // May be installed later (a ConfigMap not yet applied).
            PluginError::Missing { .. } | PluginError::Config(_) => Failure::retry(message),
            _ if e.is_retryable() => Failure::retry(message),
            _ => Failure::permanent(
                match e.guest_kind() {
                    Some(GuestErrorKind::Unauthorized) => "Unauthorized",
                    Some(GuestErrorKind::InvalidConfig) => "InvalidConfig",
                    Some(GuestErrorKind::NotFound) => "NotFound",
                    _ => "PluginError",
                },
                message,
            ),
        }
    }
}

impl From<BackupError> for Failure {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Plugin(p) => p.into(),
            other => Failure::retry(other.to_string()),
        }
    }
}

impl From<LocationError> for Failure {
    fn from(e: LocationError) -> Self {
        match e {
            LocationError::Spec(m) => Failure::permanent("InvalidSpec", m),
            LocationError::Secret(m) => Failure::retry(m),
        }
    }
}

/// A completed run.
#[derive(Debug)]
enum Ran {
    Done {
        meta: Box<BackupMeta>,
        took: Duration,
        pruned: Vec<String>,
        retention_error: Option<String>,
    },
    Skipped(String),
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn cond(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// The interval of a periodic backup; zero for one-shot.
fn interval_of(spec: &EtcdBackupSpec) -> Duration {
    let secs = spec
        .backup_policy
        .as_ref()
        .and_then(|p| p.backup_interval_in_second)
        .unwrap_or(0);
    Duration::from_secs(secs.max(0) as u64)
}

fn timeout_of(spec: &EtcdBackupSpec) -> Duration {
    match spec
        .backup_policy
        .as_ref()
        .and_then(|p| p.timeout_in_second)
    {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => DEFAULT_TIMEOUT,
    }
}

/// One reconcile of an EtcdBackup: run a backup if one is due. A panic in
/// it is contained: reported as a retried failure of this EtcdBackup only.
pub async fn reconcile<S: SecretStore>(
    storage: &Storage<S>,
    backup: &EtcdBackup,
    endpoints: Result<Vec<String>, String>,
    previous: &EtcdBackupStatus,
    memory: &mut BackupMemory,
) -> BackupOutcome {
    let step = reconcile_step(storage, backup, endpoints, previous, memory);
    match crate::supervise::contained(step).await {
        Ok(outcome) => outcome,
        Err(panicked) => {
            let mut status = previous.clone();
            let stamp = rfc3339(Utc::now());
            let message = panicked.to_string();
            status.succeeded = false;
            status.reason = Some(message.clone());
            set_condition(
                &mut status.conditions,
                cond("BackupSucceeded", false, "InternalError", &message),
                &stamp,
            );
            set_condition(
                &mut status.conditions,
                cond("Retrying", true, "InternalError", &message),
                &stamp,
            );
            BackupOutcome {
                status,
                events: vec![Event::warning("InternalError", message)],
                requeue: Duration::from_secs(60),
                ran: Some(RunResult::Failed),
            }
        }
    }
}

async fn reconcile_step<S: SecretStore>(
    storage: &Storage<S>,
    backup: &EtcdBackup,
    endpoints: Result<Vec<String>, String>,
    previous: &EtcdBackupStatus,
    memory: &mut BackupMemory,
) -> BackupOutcome {
    let spec = &backup.spec;
    let interval = interval_of(spec);
    let mut status = previous.clone();
    status.observed_generation = backup.metadata.generation;
    let idle = |status: EtcdBackupStatus, requeue| BackupOutcome {
        status,
        events: Vec::new(),
        requeue,
        ran: None,
    };

    if let Some((failed_spec, failed_secrets)) = &memory.gave_up_on {
        if failed_spec == spec && *failed_secrets == secrets_digest(storage, backup).await {
            return idle(status, Duration::from_secs(30));
        }
        memory.gave_up_on = None;
    }
    if let Some(Err(message)) = spec.backup_policy.as_ref().map(|p| p.check()) {
        return gave_up(
            storage,
            backup,
            memory,
            status,
            Failure::permanent("InvalidSpec", message),
        )
        .await;
    }
    let now = Utc::now();
    let last_success = previous
        .last_success_date
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc));
    match schedule::next_due(interval, previous.succeeded, last_success, now) {
        Due::Never => return idle(status, Duration::from_secs(3600)),
        Due::In(wait) => return idle(status, wait),
        Due::Now => {}
    }
    let instant = Instant::now();
    for at in [memory.retry_at, memory.skipped_until]
        .into_iter()
        .flatten()
    {
        if at > instant {
            return idle(status, at - instant);
        }
    }

    let namespace = backup.metadata.namespace.as_deref().unwrap_or("default");
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let result = run(storage, namespace, name, spec, endpoints, previous, now).await;
    let stamp = rfc3339(Utc::now());
    let mut events = Vec::new();
    let ran = match &result {
        Ok(Ran::Done { .. }) => RunResult::Succeeded,
        Ok(Ran::Skipped(_)) => RunResult::Skipped,
        Err(_) => RunResult::Failed,
    };
    let requeue = match result {
        Ok(Ran::Done {
            meta,
            took,
            pruned,
            retention_error,
        }) => {
            memory.failures = 0;
            memory.retry_at = None;
            memory.skipped_until = None;
            status.succeeded = true;
            status.reason = None;
            status.etcd_version = Some(meta.etcd_version.clone());
            status.etcd_revision = meta.revision;
            status.last_success_date = Some(stamp.clone());
            status.last_backup_key = Some(meta.key.clone());
            status.last_backup_size = Some(meta.size as i64);
            status.last_backup_sha256 = Some(meta.sha256.clone());
            let message = format!(
                "backed up revision {} (etcd {}, {} bytes, sha256 {}) to {} in {:.1}s",
                meta.revision,
                meta.etcd_version,
                meta.size,
                &meta.sha256[..12],
                meta.key,
                took.as_secs_f64()
            );
            set_condition(
                &mut status.conditions,
                cond("BackupSucceeded", true, "BackupCompleted", &message),
                &stamp,
            );
            set_condition(
                &mut status.conditions,
                cond("Retrying", false, "BackupCompleted", "no retry pending"),
                &stamp,
            );
            set_condition(
                &mut status.conditions,
                cond(
                    "Failed",
                    false,
                    "BackupCompleted",
                    "the last backup succeeded",
                ),
                &stamp,
            );
            if status.conditions.iter().any(|c| c.type_ == "Skipped") {
                set_condition(
                    &mut status.conditions,
                    cond(
                        "Skipped",
                        false,
                        "BackupCompleted",
                        "the last run took a backup",
                    ),
                    &stamp,
                );
            }
            events.push(Event::normal("BackupSucceeded", message));
            if !pruned.is_empty() {
                events.push(Event::normal(
                    "BackupsPruned",
                    format!(
                        "retention deleted {}: {}",
                        pruned.len(),
                        some_keys(&pruned, 5)
                    ),
                ));
            }
            if let Some(e) = retention_error {
                events.push(Event::warning(
                    "RetentionFailed",
                    format!("the backup succeeded but retention failed (old backups kept): {e}"),
                ));
            }
            if interval.is_zero() {
                Duration::from_secs(3600)
            } else {
                interval
            }
        }
        Ok(Ran::Skipped(reason)) => {
            memory.skipped_until = Some(Instant::now() + interval.max(Duration::from_secs(1)));
            let message = format!("the backup policy skipped this run: {reason}");
            set_condition(
                &mut status.conditions,
                cond("Skipped", true, "PolicySkipped", &message),
                &stamp,
            );
            events.push(Event::normal("BackupSkipped", message));
            interval.max(Duration::from_secs(1))
        }
        Err(f) if f.retryable => {
            memory.failures += 1;
            let delay = schedule::retry_delay(memory.failures, interval);
            memory.retry_at = Some(Instant::now() + delay);
            status.succeeded = false;
            status.reason = Some(f.message.clone());
            let message = format!(
                "attempt {} failed: {}; retrying in {}s",
                memory.failures,
                f.message,
                delay.as_secs()
            );
            set_condition(
                &mut status.conditions,
                cond("BackupSucceeded", false, "BackupFailed", &f.message),
                &stamp,
            );
            set_condition(
                &mut status.conditions,
                cond("Retrying", true, "TransientError", &message),
                &stamp,
            );
            events.push(Event::warning("BackupRetrying", message));
            delay
        }
        Err(f) => return gave_up(storage, backup, memory, status, f).await,
    };
    BackupOutcome {
        status,
        events,
        requeue,
        ran: Some(ran),
    }
}

/// A permanent failure: reported in status and not retried until the
/// EtcdBackup or its Secret changes.
async fn gave_up<S: SecretStore>(
    storage: &Storage<S>,
    backup: &EtcdBackup,
    memory: &mut BackupMemory,
    mut status: EtcdBackupStatus,
    f: Failure,
) -> BackupOutcome {
    let stamp = rfc3339(Utc::now());
    memory.failures = 0;
    memory.retry_at = None;
    memory.gave_up_on = Some((backup.spec.clone(), secrets_digest(storage, backup).await));
    status.succeeded = false;
    status.reason = Some(f.message.clone());
    let message = format!(
        "{}; not retrying until the EtcdBackup or its Secret is changed",
        f.message
    );
    set_condition(
        &mut status.conditions,
        cond("BackupSucceeded", false, "BackupFailed", &f.message),
        &stamp,
    );
    set_condition(
        &mut status.conditions,
        cond("Retrying", false, f.reason, "the error is permanent"),
        &stamp,
    );
    set_condition(
        &mut status.conditions,
        cond("Failed", true, f.reason, &message),
        &stamp,
    );
    BackupOutcome {
        status,
        events: vec![Event::warning("BackupFailed", message)],
        requeue: Duration::from_secs(60),
        ran: Some(RunResult::Failed),
    }
}

/// A digest of the Secrets a backup reads, so fixing credentials in a
/// Secret resumes a backup that failed for good.
async fn secrets_digest<S: SecretStore>(storage: &Storage<S>, backup: &EtcdBackup) -> String {
    use sha2::{Digest, Sha256};
    let namespace = backup.metadata.namespace.as_deref().unwrap_or("default");
    let kind = crate::api::StorageKind::parse(&backup.spec.storage_type);
    let names = [
        backup.spec.source().secret(&kind).ok().flatten(),
        backup.spec.client_tls_secret.clone(),
    ];
    let mut h = Sha256::new();
    for name in names.into_iter().flatten() {
        h.update(name.as_bytes());
        if let Ok(data) = storage.secrets.get(namespace, &name).await {
            for (k, v) in data {
                h.update(k.as_bytes());
                h.update(&v);
            }
        }
    }
    hex::encode(h.finalize())
}

/// One backup run: resolve, snapshot, upload, retention.
async fn run<S: SecretStore>(
    storage: &Storage<S>,
    namespace: &str,
    name: &str,
    spec: &EtcdBackupSpec,
    endpoints: Result<Vec<String>, String>,
    previous: &EtcdBackupStatus,
    now: DateTime<Utc>,
) -> Result<Ran, Failure> {
    // First what to back up: a cluster that does not exist (yet) or endpoints
    // the operator refuses (another tenant's) say so before anything else.
    let endpoints = endpoints.map_err(Failure::retry)?;
    let tls = match spec.client_tls_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => Some(client_tls(storage.secrets.as_ref(), namespace, secret).await?),
        None => None,
    };
    let target = storage.backup_target(namespace, spec).await?;
    let plugin = storage.registry.storage(&target.plugin)?;
    let policy_ref = spec.backup_policy.as_ref().and_then(|p| p.plugin.as_ref());
    let policy: Option<(PolicyPlugin, Vec<(String, String)>)> = match policy_ref {
        Some(p) => Some((
            storage.registry.policy(&p.name)?,
            p.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )),
        None => None,
    };
    let limit = timeout_of(spec);
    let deadline = tokio::time::Instant::now() + limit;
    let started = Instant::now();
    let (endpoint, etcd_status) =
        tokio::time::timeout_at(deadline, snapshot::pick_endpoint(&endpoints, tls.as_ref()))
            .await
            .map_err(|_| Failure::retry(BackupError::TimedOut { limit }.to_string()))?
            .map_err(Failure::from)?;

    let interval = interval_of(spec);
    let now_ms = now.timestamp_millis().max(0) as u64;
    let ctx = BackupContext {
        namespace: namespace.to_string(),
        name: name.to_string(),
        path_prefix: target.path.clone(),
        revision: etcd_status.revision,
        etcd_version: etcd_status.version.clone(),
        last_backup_revision: previous
            .last_success_date
            .as_ref()
            .map(|_| previous.etcd_revision),
        last_backup_ms: previous
            .last_success_date
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.timestamp_millis().max(0) as u64),
        now_ms,
    };
    let mut key = if interval.is_zero() {
        target.path.clone()
    } else {
        schedule::periodic_key(&target.path, etcd_status.revision, now)
    };
    if let Some((p, config)) = &policy {
        if let PreBackupDecision::Skip(reason) = p.pre_backup(config, &ctx).await? {
            return Ok(Ran::Skipped(reason));
        }
        if !interval.is_zero()
            && let Some(custom) = p.backup_name(config, &ctx).await?
        {
            super::keys::check_policy_name(&target.path, &custom).map_err(|why| {
                Failure::permanent(
                    "BackupNameRefused",
                    format!(
                        "backup-policy plugin `{}` (spec.backupPolicy.plugin.name) named the next backup \
                         wrongly: {why}; nothing was written",
                        p.name()
                    ),
                )
            })?;
            key = custom;
        }
    }

    let mut session = plugin.open(&target.config, &target.grants).await?;
    let owner = BackupOwner {
        namespace: namespace.to_string(),
        backup: name.to_string(),
        cluster: spec.etcd_cluster.as_ref().map(|c| c.name.clone()),
    };
    ensure_not_anothers(&mut session, &key, &owner).await?;
    let source = snapshot::Source {
        endpoint: &endpoint,
        status: etcd_status,
        tls: tls.as_ref(),
        owner: Some(owner.clone()),
    };
    let check = snapshot::UploadCheck {
        list_after_upload: storage.bounds.list_after_upload,
    };
    let meta = snapshot::backup_from(&mut session, source, &key, deadline, limit, check).await?;
    let took = started.elapsed();

    // Retention: only for periodic backups, only now that a new one exists.
    let max = spec
        .backup_policy
        .as_ref()
        .and_then(|p| p.max_backups)
        .unwrap_or(0);
    let (mut pruned, mut retention_error) = (Vec::new(), None);
    if !interval.is_zero() && (max > 0 || policy.is_some()) {
        let scope = Scope {
            prefix: &target.path,
            owner: &owner,
            newest: &meta.key,
        };
        let pass = Pass {
            max: max as usize,
            policy: policy.as_ref(),
            now_ms,
            bounds: &storage.bounds,
            deadline,
            limit,
        };
        match retention(&mut session, &scope, &pass).await {
            Ok(deleted) => pruned = deleted,
            Err((deleted, e)) => {
                pruned = deleted;
                retention_error = Some(e.to_string());
            }
        }
    }
    Ok(Ran::Done {
        meta: Box::new(meta),
        took,
        pruned,
        retention_error,
    })
}

/// The client certificates of `clientTLSSecret`. A missing Secret or key
/// may be fixed by creating it, so it is retried.
async fn client_tls<S: SecretStore>(
    secrets: &S,
    namespace: &str,
    name: &str,
) -> Result<crate::etcd::ClientTls, Failure> {
    let data = secrets.get(namespace, name).await.map_err(|e| {
        Failure::retry(format!(
            "Secret {namespace}/{name} (spec.clientTLSSecret): {e}"
        ))
    })?;
    let key = |k: &str| {
        data.get(k).cloned().ok_or_else(|| {
            Failure::retry(format!(
                "Secret {namespace}/{name} (spec.clientTLSSecret) has no key `{k}`: it needs \
                 etcd-client.crt, etcd-client.key and etcd-client-ca.crt"
            ))
        })
    };
    Ok(crate::etcd::ClientTls {
        cert: key("etcd-client.crt")?,
        key: key("etcd-client.key")?,
        ca: key("etcd-client-ca.crt")?,
    })
}

/// Refuse to write over a backup another EtcdBackup wrote: whatever name a
/// policy chose (or two EtcdBackups given one path), one EtcdBackup's
/// snapshot never replaces another's. A key with no metadata (a backup of
/// another tool, or none yet) is free.
async fn ensure_not_anothers(
    session: &mut StorageSession,
    key: &str,
    owner: &BackupOwner,
) -> Result<(), Failure> {
    let refuse = |whose: String| {
        Failure::permanent(
            "KeyOwnedElsewhere",
            format!(
                "the backup key `{key}` already holds {whose}: refused to write over it; nothing was \
                 written. Give each EtcdBackup a path of its own"
            ),
        )
    };
    match super::restore::read_meta(session, key).await {
        Ok(Some(BackupMeta {
            owner: Some(theirs),
            ..
        })) if &theirs != owner => Err(refuse(format!("a backup written by {theirs}"))),
        Ok(_) => Ok(()),
        Err(super::restore::RestoreError::Plugin(e)) => Err(e.into()),
        Err(e) => Err(refuse(format!(
            "an object whose metadata cannot be read ({e})"
        ))),
    }
}

/// What one EtcdBackup's retention may touch.
struct Scope<'a> {
    /// The EtcdBackup's storage path: objects are listed under it.
    prefix: &'a str,
    owner: &'a BackupOwner,
    /// The backup just written: never deleted.
    newest: &'a str,
}

/// Why retention stopped.
#[derive(Debug, thiserror::Error)]
enum RetentionError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(
        "the backup-policy plugin asked to delete {} object(s) it was not shown, e.g. {}; they were \
         kept: retention only deletes this EtcdBackup's own backups",
        .0.len(),
        some_keys(.0.as_slice(), 3)
    )]
    NotShown(Vec<String>),
    #[error(
        "the storage plugin listed {listed} objects under the path, more than the {max} retention \
         looks at; nothing was deleted. Give this EtcdBackup a path of its own (spec.<storage>.path), \
         or check what the plugin lists"
    )]
    TooMany { listed: usize, max: usize },
    #[error(
        "retention stopped at the backup's time limit of {limit:?} (spec.backupPolicy.timeoutInSecond) \
         after deleting {deleted}; the rest waits for the next backup"
    )]
    TimedOut { limit: Duration, deleted: usize },
}

/// How one retention pass runs.
struct Pass<'a> {
    /// `maxBackups` (0: no count limit).
    max: usize,
    policy: Option<&'a (PolicyPlugin, Vec<(String, String)>)>,
    now_ms: u64,
    bounds: &'a Bounds,
    /// The backup's own deadline: retention runs within the same time limit.
    deadline: tokio::time::Instant,
    limit: Duration,
}

/// Is `key` a backup this EtcdBackup wrote? Its metadata must name the
/// EtcdBackup. Metadata from before owners were recorded (or none) counts
/// only for the CoreOS name of a periodic backup of exactly this path:
/// `<path>_v<rev>_<time>`. Anything else under the prefix (another
/// EtcdBackup's path `<path>-eu`, a policy's custom names from before) is
/// left alone: retention never deletes what it cannot show is its own.
async fn owned(session: &mut StorageSession, scope: &Scope<'_>, key: &str) -> bool {
    match super::restore::read_meta(session, key).await {
        Ok(Some(BackupMeta {
            owner: Some(owner), ..
        })) => &owner == scope.owner,
        Ok(_) => schedule::is_periodic_key(scope.prefix, key),
        Err(e) => {
            tracing::debug!(key, error = %e, "retention skips a backup whose metadata cannot be read");
            false
        }
    }
}

/// Delete old backups (and their metadata) beyond the limit or as the
/// policy says, never the newest, and only backups this EtcdBackup wrote
/// ([`owned`]); the policy is shown only those. At most
/// `retention_max_deletes` per pass, within the backup's deadline. Returns
/// what was deleted.
async fn retention(
    session: &mut StorageSession,
    scope: &Scope<'_>,
    pass: &Pass<'_>,
) -> Result<Vec<String>, (Vec<String>, RetentionError)> {
    let mut deleted = Vec::new();
    match tokio::time::timeout_at(
        pass.deadline,
        retention_pass(session, scope, pass, &mut deleted),
    )
    .await
    {
        Ok(Ok(())) => Ok(deleted),
        Ok(Err(e)) => Err((deleted, e)),
        Err(_) => {
            let n = deleted.len();
            Err((
                deleted,
                RetentionError::TimedOut {
                    limit: pass.limit,
                    deleted: n,
                },
            ))
        }
    }
}

async fn retention_pass(
    session: &mut StorageSession,
    scope: &Scope<'_>,
    pass: &Pass<'_>,
    deleted: &mut Vec<String>,
) -> Result<(), RetentionError> {
    let listed = session.list(scope.prefix).await?;
    if listed.len() > pass.bounds.max_listed {
        return Err(RetentionError::TooMany {
            listed: listed.len(),
            max: pass.bounds.max_listed,
        });
    }
    let mut backups: Vec<ObjectInfo> = Vec::new();
    for o in listed {
        if !o.key.ends_with(".meta.json") && owned(session, scope, &o.key).await {
            backups.push(o);
        }
    }
    let doomed: Vec<String> = match pass.policy {
        Some((p, config)) => p.retention(config, &backups, pass.now_ms).await?,
        None => schedule::over_limit(&backups, pass.max, scope.newest),
    };
    let shown: std::collections::HashSet<&str> = backups.iter().map(|o| o.key.as_str()).collect();
    let (doomed, not_shown): (Vec<String>, Vec<String>) = doomed
        .into_iter()
        .filter(|k| k != scope.newest)
        .partition(|k| shown.contains(k.as_str()));
    let mut seen = std::collections::HashSet::new();
    let doomed: Vec<String> = doomed
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect();
    if doomed.len() > pass.bounds.retention_max_deletes {
        tracing::info!(
            prefix = scope.prefix,
            doomed = doomed.len(),
            max = pass.bounds.retention_max_deletes,
            "retention deletes the first backups of this pass only (--retention-max-deletes); the rest wait"
        );
    }
    for key in doomed.into_iter().take(pass.bounds.retention_max_deletes) {
        session.delete(&key).await?;
        match session.delete(&meta_key(&key)).await {
            Ok(()) => {}
            Err(e) if e.guest_kind() == Some(GuestErrorKind::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        deleted.push(key);
    }
    if !not_shown.is_empty() {
        return Err(RetentionError::NotShown(not_shown));
    }
    Ok(())
}
