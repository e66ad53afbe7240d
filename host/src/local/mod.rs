//! `etcd-operator local --dir DIR`: the operator without Kubernetes.
//!
//! Desired state is every `*.yaml` in DIR; status is written to
//! `DIR/.status/<kind>/<name>.yaml`, events to `DIR/.status/events.log`,
//! member data to `DIR/.data/`. Edits and deletions of the YAML files act
//! like `kubectl apply` and `kubectl delete`.

pub mod manifests;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{EtcdCluster, EtcdClusterStatus};
use crate::controller::{ClusterKey, Event, Reconciler, Tuning};
use crate::runtime::LocalRuntime;
use crate::runtime::binaries::EtcdBinaries;
use manifests::{Manifests, Object};

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
}

/// Errors that stop `local` from running at all.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {message}")]
    Dir { path: String, message: String },
}

/// Appends events as JSON lines and logs them.
#[derive(Clone)]
struct EventLog {
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
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "{line}");
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

fn read_status(path: &Path) -> Option<EtcdClusterStatus> {
    serde_yaml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Reconcile one cluster until it is deleted or the operator stops.
async fn cluster_worker(
    reconciler: Arc<Reconciler<LocalRuntime>>,
    key: ClusterKey,
    mut desired: watch::Receiver<Option<EtcdCluster>>,
    mut stop: watch::Receiver<bool>,
    dir: PathBuf,
    events: EventLog,
) {
    let path = status_path(&dir, "EtcdCluster", &key.name);
    let mut previous = read_status(&path);
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
        for e in &outcome.events {
            events.emit("EtcdCluster", &key.name, e);
        }
        if previous.as_ref() != Some(&status) {
            write_status(&path, &status);
        }
        previous = Some(status);
        tokio::select! {
            _ = desired.changed() => {}
            _ = tokio::time::sleep(outcome.requeue) => {}
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

/// Statuses of kinds this mode does not handle yet.
fn not_yet(dir: &Path, o: &Object) {
    let message = format!(
        "{} is not handled by `etcd-operator local` yet; it is left untouched",
        o.kind()
    );
    let status = serde_json::json!({
        "succeeded": false,
        "reason": message,
        "conditions": [{"type": "Supported", "status": "False", "reason": "NotYetImplemented", "message": message}],
    });
    write_status(&status_path(dir, o.kind(), &o.name()), &status);
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
    let reconciler = Arc::new(Reconciler::new(runtime.clone(), opts.tuning));
    let events = EventLog {
        path: dir.join(".status").join("events.log"),
    };
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
    let mut announced: std::collections::HashSet<(&'static str, String)> = Default::default();
    let spawn_worker = |key: ClusterKey, rx: watch::Receiver<Option<EtcdCluster>>| {
        tokio::spawn(cluster_worker(
            reconciler.clone(),
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
        // Their status never changes: write it once per object.
        for o in manifests.objects() {
            if !matches!(o, Object::Cluster(_)) && announced.insert((o.kind(), o.name())) {
                not_yet(&dir, o);
            }
        }
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
