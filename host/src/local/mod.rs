//! `etcd-operator local --dir DIR`: the operator without Kubernetes.
//!
//! Desired state is every `*.yaml` in DIR (EtcdCluster, EtcdBackup,
//! EtcdRestore, and v1 Secrets for storage credentials); status is written
//! to `DIR/.status/<kind>/<name>.yaml`, events to `DIR/.status/events.log`,
//! member data to `DIR/.data/`. Edits and deletions of the YAML files act
//! like `kubectl apply` and `kubectl delete`. Storage plugins come from a
//! plugin directory; the `local` plugin stores backups under one directory.

mod backups;
pub mod manifests;
mod restores;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{EtcdBackup, EtcdCluster, EtcdClusterSpec, EtcdClusterStatus};
use crate::backup::Storage;
use crate::backup::location::{HostGrants, SecretStore};
use crate::controller::{ClusterKey, Event, Reconciler, RecoverySource, Tuning};
use crate::plugins::catalog::CatalogError;
use crate::plugins::{Limits, PluginEngine, PluginRegistry, PluginSources};
use crate::runtime::LocalRuntime;
use crate::runtime::binaries::EtcdBinaries;
use manifests::Manifests;

/// How `local` runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// Leave members running at exit, to be re-adopted by the next run.
    pub keep_members: bool,
    /// Directories searched for etcd binaries (then PATH).
    pub etcd_dirs: Vec<PathBuf>,
    pub tuning: Tuning,
    /// How often DIR is re-read.
    pub poll_interval: Duration,
    /// Storage and backup-policy plugins (`*.wasm`, rescanned while running).
    pub plugin_dir: Option<PathBuf>,
    /// Where the plugins were looked for when `plugin_dir` was not given
    /// (named when none was found there).
    pub plugin_dirs_searched: Vec<PathBuf>,
    /// The one directory the `local` storage plugin may use (default DIR/.backups).
    pub backup_dir: Option<PathBuf>,
    /// Private networks storage plugins may reach (e.g. 127.0.0.1/32 for a
    /// test server, 10.0.0.0/8 for an in-cluster MinIO).
    pub allow_networks: Vec<String>,
    pub plugin_limits: Limits,
    /// What the operator accepts from storage and policy plugins.
    pub storage_bounds: crate::backup::Bounds,
    /// The plugin catalog, its fetching, the compile cache, and the
    /// --plugin-dir plugins a catalog entry may replace.
    pub plugin_sources: PluginSources,
}

/// Errors that stop `local` from running at all.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {message}")]
    Dir { path: String, message: String },
    /// The plugin engine could not be set up (bad limits).
    #[error(
        "cannot set up the plugin engine: {0}; check --plugin-memory-mib and --plugin-call-timeout"
    )]
    Plugins(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Appends events as JSON lines and logs them.
#[derive(Clone)]
pub(crate) struct EventLog {
    path: PathBuf,
}

impl EventLog {
    fn emit(&self, kind: &str, name: &str, e: &Event) {
        if e.warning {
            tracing::warn!(kind, name, reason = %e.reason, "{}", e.message);
        } else {
            tracing::info!(kind, name, reason = %e.reason, "{}", e.message);
        }
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "kind": kind,
            "name": name,
            "type": if e.warning { "Warning" } else { "Normal" },
            "reason": e.reason,
            "message": e.message,
        });
        // One write per event: workers append concurrently, and a line
        // written in pieces could interleave with another worker's.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn status_path(dir: &Path, kind: &str, name: &str) -> PathBuf {
    dir.join(".status")
        .join(kind.to_ascii_lowercase())
        .join(format!("{name}.yaml"))
}

/// Write a status file atomically (readers never see half a file).
fn write_status<T: serde::Serialize>(path: &Path, status: &T) {
    let Ok(text) = serde_yaml::to_string(status) else {
        return;
    };
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let tmp = path.with_extension("yaml.tmp");
    if std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot write status");
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_yaml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn read_status(path: &Path) -> Option<EtcdClusterStatus> {
    read_yaml(path)
}

/// Secrets from the `kind: Secret` manifests in DIR.
struct LocalSecrets(Arc<RwLock<Manifests>>);

impl SecretStore for LocalSecrets {
    async fn get(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.0
            .read()
            .expect("manifests lock")
            .secrets()
            .remove(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| {
                "not found: add a `kind: Secret` manifest of that name to the directory".to_string()
            })
    }
}

/// What the backup and restore workers share.
pub(crate) struct Context {
    dir: PathBuf,
    events: EventLog,
    reconciler: Arc<Reconciler<LocalRuntime>>,
    storage: Arc<Storage<LocalSecrets>>,
    manifests: Arc<RwLock<Manifests>>,
    /// Where verified snapshots wait to be restored.
    staging: PathBuf,
}

impl Context {
    fn has_cluster(&self, name: &str) -> bool {
        self.cluster_spec(name).is_some()
    }

    /// The spec of EtcdRestore `name` as its manifest now says, if it exists.
    fn restore_spec(&self, name: &str) -> Option<crate::api::EtcdRestoreSpec> {
        self.manifests
            .read()
            .expect("manifests lock")
            .restores()
            .get(name)
            .map(|r| r.spec.clone())
    }

    fn cluster_spec(&self, name: &str) -> Option<EtcdClusterSpec> {
        self.manifests
            .read()
            .expect("manifests lock")
            .clusters()
            .get(name)
            .map(|c| c.spec.clone())
    }
}

/// Quorum-loss recovery's last resort: the newest backup, among those of the
/// EtcdBackups that name the cluster, that downloads and verifies.
fn recovery_source(
    storage: Arc<Storage<LocalSecrets>>,
    manifests: Arc<RwLock<Manifests>>,
    runtime: &LocalRuntime,
    staging: PathBuf,
) -> RecoverySource {
    let binaries = Arc::new(runtime.binaries().clone());
    crate::backup::restore::recovery_source(storage, binaries, staging, move |key: ClusterKey| {
        let backups: Vec<EtcdBackup> = manifests
            .read()
            .expect("manifests lock")
            .backups()
            .into_values()
            .filter(|b| {
                b.metadata.namespace.as_deref().unwrap_or("default") == key.namespace
                    && b.spec.etcd_cluster.as_ref().map(|r| r.name.as_str()) == Some(&key.name)
            })
            .collect();
        std::future::ready(Ok(backups))
    })
}

/// How long after a member process exits its cluster is looked at.
const EXIT_SETTLE: Duration = Duration::from_millis(200);

/// Reconcile one cluster until it is deleted or the operator stops.
async fn cluster_worker(
    reconciler: Arc<Reconciler<LocalRuntime>>,
    runtime: Arc<LocalRuntime>,
    key: ClusterKey,
    mut desired: watch::Receiver<Option<EtcdCluster>>,
    mut stop: watch::Receiver<bool>,
    dir: PathBuf,
    events: EventLog,
) {
    let path = status_path(&dir, "EtcdCluster", &key.name);
    let mut previous = read_status(&path);
    // A member process that exits is acted on at once, not at the next tick.
    let exits = runtime.exit_signal(&key);
    loop {
        let Some(cluster) = desired.borrow_and_update().clone() else {
            match reconciler.delete(&key).await {
                Ok(()) => events.emit(
                    "EtcdCluster",
                    &key.name,
                    &Event::normal("ClusterDeleted", "deleted all members and their data"),
                ),
                Err(e) => events.emit(
                    "EtcdCluster",
                    &key.name,
                    &Event::warning("DeleteFailed", e.to_string()),
                ),
            }
            let _ = std::fs::remove_file(&path);
            return;
        };
        let outcome = reconciler
            .reconcile(&key, &cluster.spec, previous.as_ref())
            .await;
        let mut status = outcome.status;
        status.observed_generation = cluster.metadata.generation;
        // Status first: whoever acts on an Event finds the status it reports.
        if previous.as_ref() != Some(&status) {
            write_status(&path, &status);
        }
        for e in &outcome.events {
            events.emit("EtcdCluster", &key.name, e);
        }
        previous = Some(status);
        tokio::select! {
            _ = desired.changed() => {}
            _ = tokio::time::sleep(outcome.requeue) => {}
            _ = exits.notified() => {
                // Let what killed the process finish first: a member killed
                // and then wiped (`kill -9; rm -rf`) must be seen wiped, not
                // restarted on a half-deleted data directory.
                tokio::time::sleep(EXIT_SETTLE).await;
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// After a clean shutdown the status must not claim members are serving.
fn mark_stopped(path: &Path) {
    let Some(mut s) = read_status(path) else {
        return;
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut all = std::mem::take(&mut s.members.ready);
    all.append(&mut s.members.unready);
    s.members.unready = all;
    s.client_urls.clear();
    if let Some(r) = &s.ready {
        s.ready = r.split_once('/').map(|(_, size)| format!("0/{size}"));
    }
    crate::api::condition::set_condition(
        &mut s.conditions,
        crate::api::Condition {
            type_: "Available".into(),
            status: "False".into(),
            reason: Some("OperatorStopped".into()),
            message: Some("the operator stopped all members at shutdown; they restart with their data on its next run".into()),
            ..Default::default()
        },
        &now,
    );
    write_status(path, &s);
}

/// Run until `shutdown` resolves.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), LocalError> {
    let dir = opts.dir.canonicalize().map_err(|e| LocalError::Dir {
        path: opts.dir.display().to_string(),
        message: format!("{e}; create the directory and put EtcdCluster YAML in it"),
    })?;
    std::fs::create_dir_all(dir.join(".status")).map_err(|e| LocalError::Dir {
        path: dir.display().to_string(),
        message: format!("cannot create .status: {e}"),
    })?;
    let binaries = EtcdBinaries::discover(&opts.etcd_dirs);
    let versions: Vec<String> = binaries
        .versions()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(dir = %dir.display(), etcd_versions = ?versions, "local operator starting");
    if versions.is_empty() {
        tracing::warn!("no etcd binary found: run scripts/setup.sh or pass --etcd-dir");
    }
    let runtime = Arc::new(LocalRuntime::new(dir.join(".data"), binaries));
    let events = EventLog {
        path: dir.join(".status").join("events.log"),
    };

    let engine = PluginEngine::new(
        opts.plugin_limits.clone(),
        opts.plugin_sources.cache_dir.clone(),
    )
    .map_err(|e| LocalError::Plugins(e.to_string()))?;
    // Plugins compiled ahead of time beside them (`plugin precompile DIR`),
    // as the image ships them: no compile at start, even with no writable cache.
    if let Some(pdir) = &opts.plugin_dir {
        engine
            .cache()
            .add_precompiled(crate::plugins::cache::precompiled_dir(pdir));
    }
    let registry = Arc::new(PluginRegistry::new(engine));
    let mut _plugin_watch = None;
    let mut bundled = BTreeSet::new();
    match &opts.plugin_dir {
        Some(pdir) => {
            // Compiled in the background, so clusters start at once: a cold
            // compile of a JavaScript or Python component takes a minute on
            // two cores. Meanwhile a resource naming one is told it is being
            // compiled, and retries.
            bundled = crate::plugins::registry::dir_names(pdir);
            registry.expect_base(bundled.clone());
            let r = registry.clone();
            let pd = pdir.clone();
            tokio::spawn(async move {
                let dir = pd.clone();
                match tokio::task::spawn_blocking(move || r.load_dir(&pd)).await {
                    Ok(Ok(report)) => {
                        tracing::info!(dir = %dir.display(), loaded = ?report.loaded, "plugins loaded");
                        for (name, e) in report.failed {
                            tracing::error!(plugin = name, error = %e, "plugin not loaded; other plugins keep working");
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot read the plugin directory"),
                    Err(e) => tracing::error!(error = %e, "loading plugins panicked"),
                }
            });
            _plugin_watch = Some(registry.watch_dir(pdir.clone(), Duration::from_secs(2)));
        }
        None if opts.plugin_sources.catalog.is_none() => {
            let searched: Vec<String> = opts
                .plugin_dirs_searched
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            tracing::warn!(
                searched = %searched.join(", "),
                "no plugins: EtcdBackup and EtcdRestore cannot run. Pass --plugin-dir, or build the plugins with \
                 plugins/build.sh and start from the checkout (plugins/dist)"
            )
        }
        None => {}
    }
    let _catalog = opts
        .plugin_sources
        .start_catalog(&registry, &bundled)
        .await?;
    let backup_dir = opts
        .backup_dir
        .clone()
        .unwrap_or_else(|| dir.join(".backups"));
    std::fs::create_dir_all(&backup_dir).map_err(|e| LocalError::Dir {
        path: backup_dir.display().to_string(),
        message: format!("cannot create the backup directory: {e}"),
    })?;
    let shared = Arc::new(RwLock::new(Manifests::default()));
    let storage = Arc::new(Storage {
        registry,
        secrets: Arc::new(LocalSecrets(shared.clone())),
        host: HostGrants {
            dirs: BTreeMap::from([("local".to_string(), backup_dir)]),
            private_networks: opts.allow_networks.clone(),
            ..Default::default()
        },
        bounds: opts.storage_bounds.clone(),
    });
    let staging = dir.join(".data").join(".staging");
    crate::backup::restore::clear_staging(&staging);
    let reconciler = Arc::new(Reconciler::new(runtime.clone(), opts.tuning).with_recovery(
        recovery_source(storage.clone(), shared.clone(), &runtime, staging.clone()),
    ));
    let ctx = Arc::new(Context {
        dir: dir.clone(),
        events: events.clone(),
        reconciler: reconciler.clone(),
        storage,
        manifests: shared.clone(),
        staging,
    });
    let mut backup_workers: HashMap<
        String,
        (
            watch::Sender<Option<EtcdBackup>>,
            tokio::task::JoinHandle<()>,
        ),
    > = HashMap::new();
    let mut restore_workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers: HashMap<
        String,
        (
            watch::Sender<Option<EtcdCluster>>,
            tokio::task::JoinHandle<()>,
        ),
    > = HashMap::new();
    let mut manifests = Manifests::default();
    let mut last_errors: Vec<String> = Vec::new();
    tokio::pin!(shutdown);

    // Clusters with data but no manifest were deleted while we were down.
    let mut orphans: Vec<ClusterKey> = runtime.clusters();
    let spawn_worker = |key: ClusterKey, rx: watch::Receiver<Option<EtcdCluster>>| {
        tokio::spawn(cluster_worker(
            reconciler.clone(),
            runtime.clone(),
            key,
            rx,
            stop_rx.clone(),
            dir.clone(),
            events.clone(),
        ))
    };
    loop {
        let errors = manifests.refresh(&dir);
        if errors != last_errors {
            for e in &errors {
                tracing::error!("{e}; keeping the previous version of this file");
            }
            last_errors = errors;
        }
        let clusters = manifests.clusters();
        for (name, cluster) in &clusters {
            match workers.get(name) {
                Some((tx, _)) => {
                    tx.send_if_modified(|current| {
                        let changed = current.as_ref().map(|c| &c.spec) != Some(&cluster.spec);
                        if changed {
                            *current = Some(cluster.clone());
                        }
                        changed
                    });
                }
                None => {
                    let key = ClusterKey {
                        namespace: cluster
                            .metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        name: name.clone(),
                    };
                    orphans.retain(|k| k != &key);
                    let (tx, rx) = watch::channel(Some(cluster.clone()));
                    let handle = spawn_worker(key, rx);
                    workers.insert(name.clone(), (tx, handle));
                }
            }
        }
        for key in orphans.drain(..) {
            tracing::info!(cluster = %key, "cluster has data but no manifest; deleting it");
            let (_, rx) = watch::channel(None);
            spawn_worker(key, rx);
        }
        let gone: Vec<String> = workers
            .keys()
            .filter(|n| !clusters.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((tx, _handle)) = workers.remove(&name) {
                tracing::info!(cluster = %name, "manifest removed; deleting the cluster");
                // The worker sees None, deletes the members and exits.
                let _ = tx.send(None);
            }
        }
        *shared.write().expect("manifests lock") = manifests.clone();

        let backups = manifests.backups();
        for (name, backup) in &backups {
            match backup_workers.get(name) {
                Some((tx, _)) => {
                    tx.send_if_modified(|current| {
                        let changed = current.as_ref().map(|b| &b.spec) != Some(&backup.spec);
                        if changed {
                            *current = Some(backup.clone());
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(Some(backup.clone()));
                    let handle = tokio::spawn(backups::worker(
                        ctx.clone(),
                        name.clone(),
                        rx,
                        stop_rx.clone(),
                    ));
                    backup_workers.insert(name.clone(), (tx, handle));
                }
            }
        }
        backup_workers.retain(|name, (tx, _)| {
            let keep = backups.contains_key(name);
            if !keep {
                let _ = tx.send(None);
            }
            keep
        });
        let restores = manifests.restores();
        for (name, restore) in restores {
            restore_workers.entry(name).or_insert_with(|| {
                tokio::spawn(restores::worker(ctx.clone(), restore, stop_rx.clone()))
            });
        }
        // A deleted EtcdRestore's status goes with it; a running one finishes.
        for name in restore_workers.keys() {
            if !manifests.restores().contains_key(name) {
                let _ = std::fs::remove_file(status_path(&dir, "EtcdRestore", name));
            }
        }
        restore_workers
            .retain(|name, h| manifests.restores().contains_key(name) || !h.is_finished());
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(opts.poll_interval) => {}
        }
    }

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for (_, (_, handle)) in workers.drain() {
        let _ = handle.await;
    }
    for (_, (_, handle)) in backup_workers.drain() {
        let _ = handle.await;
    }
    for (_, handle) in restore_workers.drain() {
        let _ = handle.await;
    }
    if opts.keep_members {
        tracing::info!("leaving members running (--keep-members); the next run re-adopts them");
    } else {
        runtime.stop_all().await;
        for name in manifests.clusters().keys() {
            mark_stopped(&status_path(&dir, "EtcdCluster", name));
        }
        tracing::info!(
            "all members stopped; their data is kept under {}",
            dir.join(".data").display()
        );
    }
    Ok(())
}
