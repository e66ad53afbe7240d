//! EtcdRestore objects in local mode. A restore runs once:
//! Verifying (download, sha256 against the metadata, etcd's trailer,
//! `snapshot status`) → Restoring (every member replaced from the verified
//! snapshot) → Completed once all members serve; or Failed, with the
//! cluster untouched whenever the failure came before Restoring.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Context, read_yaml, status_path, write_status};
use crate::api::{API_VERSION, EtcdCluster, EtcdClusterSpec, EtcdRestore, EtcdRestoreStatus};
use crate::backup::restore::{
    Report, Verified, failure_reason, progress_status, verify_supervised, wait_serving,
};
use crate::controller::{ClusterKey, Event, Runtime};

/// How long restored members get to serve before the restore is reported failed.
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);

struct Progress {
    ctx: Arc<Context>,
    name: String,
    status: EtcdRestoreStatus,
}

impl Progress {
    fn set(&mut self, phase: &str, cond: (&str, bool, &str, String)) {
        let (type_, ok, reason, message) = cond;
        self.status.set(phase, type_, ok, reason, message);
        write_status(
            &status_path(&self.ctx.dir, "EtcdRestore", &self.name),
            &self.status,
        );
    }

    fn fail(&mut self, reason: &str, message: String) {
        self.status.succeeded = false;
        self.status.reason = Some(message.clone());
        self.ctx.events.emit(
            "EtcdRestore",
            &self.name,
            &Event::warning("RestoreFailed", message.clone()),
        );
        self.set("Failed", ("Failed", true, reason, message));
    }
}

/// Run one EtcdRestore to its end (or until the operator stops).
pub(super) async fn worker(
    ctx: Arc<Context>,
    restore: EtcdRestore,
    mut stop: watch::Receiver<bool>,
) {
    let name = restore.metadata.name.clone().unwrap_or_default();
    let path = status_path(&ctx.dir, "EtcdRestore", &name);
    let status: EtcdRestoreStatus = read_yaml(&path).unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Completed" | "Failed")) {
        return; // A restore runs once; re-create the object to run it again.
    }
    let mut p = Progress {
        ctx: ctx.clone(),
        name,
        status,
    };
    tokio::select! {
        ran = crate::supervise::contained(run(&mut p, &restore)) => {
            if let Err(panicked) = ran {
                p.fail("InternalError", panicked.to_string());
            }
        }
        _ = stop.changed() => {}
    }
}

async fn run(p: &mut Progress, restore: &EtcdRestore) {
    let ctx = p.ctx.clone();
    let spec = &restore.spec;
    let namespace = restore
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let key = ClusterKey {
        namespace: namespace.clone(),
        name: spec.etcd_cluster.name.clone(),
    };

    // Which cluster, and with which spec: checked before any download.
    let cluster_spec: EtcdClusterSpec = match (&spec.new_cluster, ctx.cluster_spec(&key.name)) {
        (Some(_), Some(_)) => {
            return p.fail(
                "ClusterExists",
                format!(
                    "spec.newCluster is set but EtcdCluster {} already exists; it is left untouched. \
                     Choose another spec.etcdCluster.name, or remove spec.newCluster to replace it",
                    key.name
                ),
            );
        }
        (Some(new), None) => {
            let members = ctx
                .reconciler
                .runtime()
                .list(&key)
                .await
                .unwrap_or_default();
            if !members.is_empty() {
                return p.fail(
                    "ClusterExists",
                    format!(
                        "spec.newCluster is set but cluster {} still has members on disk; they are left untouched",
                        key.name
                    ),
                );
            }
            new.clone()
        }
        (None, Some(existing)) => existing,
        (None, None) => {
            return p.fail(
                "ClusterNotFound",
                format!(
                    "EtcdCluster {} (spec.etcdCluster.name) does not exist: create it, or set spec.newCluster \
                     to restore into a new cluster",
                    key.name
                ),
            );
        }
    };
    if !(1..=7).contains(&cluster_spec.size) {
        return p.fail(
            "InvalidSpec",
            format!(
                "the cluster's spec.size is {}; it must be between 1 and 7",
                cluster_spec.size
            ),
        );
    }

    let verified = match verify(p, restore, &namespace).await {
        Some(v) => v,
        None => return,
    };
    let described = verified.describe();
    p.ctx.events.emit(
        "EtcdRestore",
        &p.name,
        &Event::normal("BackupVerified", format!("verified backup {described}")),
    );
    p.set(
        "Restoring",
        (
            "Verified",
            true,
            "BackupVerified",
            format!("verified backup {described}"),
        ),
    );

    let restored = ctx
        .reconciler
        .restore(&key, &cluster_spec, &verified.path)
        .await;
    let _ = std::fs::remove_file(&verified.path);
    if let Err(e) = restored {
        return p.fail(
            "RestoreFailed",
            format!("restoring the members from the verified backup failed: {e}"),
        );
    }
    ctx.events.emit(
        "EtcdCluster",
        &key.name,
        &Event::warning(
            "ClusterRestored",
            format!(
                "all members replaced from backup {described} (EtcdRestore {})",
                p.name
            ),
        ),
    );
    if spec.new_cluster.is_some()
        && let Err(e) = write_cluster_manifest(&ctx, &key, &cluster_spec)
    {
        return p.fail("RestoreFailed", e);
    }

    match wait_serving(
        ctx.reconciler.runtime().as_ref(),
        &key,
        cluster_spec.size as usize,
        verified.status.revision,
        SERVE_TIMEOUT,
    )
    .await
    {
        Ok(()) => {
            let message = format!(
                "cluster {} serves the data of backup {described} on {} members",
                key.name, cluster_spec.size
            );
            p.status.succeeded = true;
            p.status.reason = None;
            ctx.events.emit(
                "EtcdRestore",
                &p.name,
                &Event::normal("RestoreCompleted", message.clone()),
            );
            p.set(
                "Completed",
                ("Completed", true, "RestoreCompleted", message),
            );
        }
        Err(e) => p.fail("NotServing", e),
    }
}

/// Download and verify, retrying transient errors. `None`: failed (status written).
async fn verify(p: &mut Progress, restore: &EtcdRestore, namespace: &str) -> Option<Verified> {
    let ctx = p.ctx.clone();
    p.set(
        "Verifying",
        (
            "Verified",
            false,
            "Verifying",
            "downloading and verifying the backup; the cluster is untouched".into(),
        ),
    );
    let tool = match ctx.reconciler.runtime().binaries().snapshot_tool(None) {
        Ok(t) => t,
        Err(e) => {
            p.fail(
                "VerificationFailed",
                format!("{e}; nothing was restored and the cluster is untouched"),
            );
            return None;
        }
    };
    // Stopped if the manifest is removed or its spec edited meanwhile.
    let name = p.name.clone();
    let wanted = || {
        let still = ctx.restore_spec(&name).as_ref() == Some(&restore.spec);
        std::future::ready(still)
    };
    let result = verify_supervised(
        &ctx.storage,
        &restore.spec,
        namespace,
        &ctx.staging,
        &tool,
        |report| {
            match report {
                Report::Retrying(message) => {
                    p.set("Verifying", ("Verified", false, "Retrying", message))
                }
                Report::Progress(t) => {
                    p.status.progress = Some(progress_status(&t));
                    p.set(
                        "Verifying",
                        (
                            "Verified",
                            false,
                            "Verifying",
                            format!("{t}; the cluster is untouched"),
                        ),
                    )
                }
            }
            std::future::ready(())
        },
        wanted,
    )
    .await;
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            p.fail(
                failure_reason(&e),
                format!("{e}; nothing was restored and the cluster is untouched"),
            );
            None
        }
    }
}

/// The restored cluster appears as a manifest, as the Kubernetes runtime
/// creates the EtcdCluster object.
fn write_cluster_manifest(
    ctx: &Context,
    key: &ClusterKey,
    spec: &EtcdClusterSpec,
) -> Result<(), String> {
    let mut cluster = EtcdCluster::new(&key.name, spec.clone());
    cluster.metadata.namespace = Some(key.namespace.clone());
    let mut value = serde_json::to_value(&cluster).map_err(|e| e.to_string())?;
    value["apiVersion"] = API_VERSION.into();
    let text = serde_yaml::to_string(&value).map_err(|e| e.to_string())?;
    let path = ctx.dir.join(format!("{}.restored.yaml", key.name));
    std::fs::write(
        &path,
        format!("# Created by EtcdRestore: the cluster restored into a new EtcdCluster.\n{text}"),
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
