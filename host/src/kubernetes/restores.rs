//! The EtcdRestore controller on Kubernetes. A restore runs once, in its
//! own task: Verifying (the operator downloads the backup and checks its
//! sha256, etcd's trailer and `snapshot status`; the cluster is untouched)
//! → Restoring (every member Pod replaced by one whose init containers fetch
//! the verified snapshot from the operator and restore it) → Completed once
//! all members serve the snapshot's revision; or Failed. With
//! `spec.newCluster` the EtcdCluster is created (paused until its members
//! are restored, so the cluster controller does not seed it meanwhile).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::runtime::KubeRuntime;
use super::scope::Scope;
use super::secrets::KubeSecrets;
use super::{KubeError, events};
use crate::api::{EtcdCluster, EtcdClusterSpec, EtcdRestore, EtcdRestoreStatus};
use crate::backup::Storage;
use crate::backup::restore::{
    Report, failure_reason, progress_status, verify_supervised, wait_serving,
};
use crate::controller::{ClusterKey, Event, Reconciler};
use crate::runtime::binaries::EtcdBinaries;

/// How long restored members get to serve before the restore is reported failed.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: kube::Client,
    pub runtime: Arc<KubeRuntime>,
    pub reconciler: Arc<Reconciler<KubeRuntime>>,
    pub storage: Arc<Storage<KubeSecrets>>,
    pub recorder: Recorder,
    pub scope: Scope,
    /// Where verified snapshots are downloaded.
    pub staging: PathBuf,
    /// etcdutl/etcdctl, to verify snapshots.
    pub binaries: Arc<EtcdBinaries>,
    /// Restores in progress, by uid.
    pub running: Mutex<HashSet<String>>,
}

/// Status updates and events of one restore.
struct Progress {
    ctx: Arc<Context>,
    restore: Arc<EtcdRestore>,
    status: EtcdRestoreStatus,
}

/// Write `status` to the EtcdRestore (a failure is only logged: the next
/// write carries everything again).
async fn write_status(client: kube::Client, restore: Arc<EtcdRestore>, status: EtcdRestoreStatus) {
    let api: Api<EtcdRestore> = Api::namespaced(client, &restore.namespace().unwrap_or_default());
    if let Err(e) = super::status::apply_status(&api, &restore.name_any(), &status).await {
        tracing::warn!(restore = %restore.name_any(), error = %e, "cannot write EtcdRestore status");
    }
}

impl Progress {
    async fn set(&mut self, phase: &str, type_: &str, ok: bool, reason: &str, message: String) {
        self.status.set(phase, type_, ok, reason, message);
        write_status(
            self.ctx.client.clone(),
            self.restore.clone(),
            self.status.clone(),
        )
        .await;
    }

    async fn event(&self, e: Event) {
        events::publish(
            &self.ctx.recorder,
            &self.restore.object_ref(&()),
            "Restore",
            &e,
        )
        .await;
    }

    async fn fail(&mut self, reason: &str, message: String) {
        self.status.succeeded = false;
        self.status.reason = Some(message.clone());
        self.event(Event::warning("RestoreFailed", message.clone()))
            .await;
        self.set("Failed", "Failed", true, reason, message).await;
    }
}

async fn run(p: &mut Progress) {
    let ctx = p.ctx.clone();
    let restore = p.restore.clone();
    let spec = &restore.spec;
    let namespace = restore.namespace().unwrap_or_else(|| "default".into());
    let key = ClusterKey {
        namespace: namespace.clone(),
        name: spec.etcd_cluster.name.clone(),
    };
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = match clusters.get_opt(&key.name).await {
        Ok(c) => c,
        Err(e) => {
            return p
                .fail(
                    "ApiError",
                    format!("cannot read EtcdCluster {}: {e}", key.name),
                )
                .await;
        }
    };
    let cluster_spec = match (&spec.new_cluster, &existing) {
        (Some(_), Some(_)) => {
            return p
                .fail(
                    "ClusterExists",
                    format!(
                        "spec.newCluster is set but EtcdCluster {} already exists; it is left untouched. \
                         Choose another spec.etcdCluster.name, or remove spec.newCluster to replace it",
                        key.name
                    ),
                )
                .await;
        }
        (Some(new), None) => new.clone(),
        (None, Some(c)) => c.spec.clone(),
        (None, None) => {
            return p
                .fail(
                    "ClusterNotFound",
                    format!(
                        "EtcdCluster {} (spec.etcdCluster.name) does not exist: create it, or set spec.newCluster \
                         to restore into a new cluster",
                        key.name
                    ),
                )
                .await;
        }
    };
    if !(1..=7).contains(&cluster_spec.size) {
        return p
            .fail(
                "InvalidSpec",
                format!(
                    "the cluster's spec.size is {}; it must be between 1 and 7",
                    cluster_spec.size
                ),
            )
            .await;
    }

    p.set(
        "Verifying",
        "Verified",
        false,
        "Verifying",
        "downloading and verifying the backup; the cluster is untouched".into(),
    )
    .await;
    let tool = match ctx.binaries.snapshot_tool(None) {
        Ok(t) => t,
        Err(e) => {
            return p
                .fail(
                    "VerificationFailed",
                    format!("{e}; nothing was restored and the cluster is untouched"),
                )
                .await;
        }
    };
    // Status as the verification reports it; stopped if the EtcdRestore
    // is deleted, re-created or its spec edited meanwhile.
    let status = Mutex::new(p.status.clone());
    let on_report = |report: Report| {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        match report {
            Report::Retrying(m) => {
                tracing::warn!(restore = %restore.name_any(), "{m}");
                s.set("Verifying", "Verified", false, "Retrying", m);
            }
            Report::Progress(t) => {
                s.progress = Some(progress_status(&t));
                let message = format!("{t}; the cluster is untouched");
                s.set("Verifying", "Verified", false, "Verifying", message);
            }
        }
        write_status(ctx.client.clone(), restore.clone(), s.clone())
    };
    let restores: Api<EtcdRestore> = Api::namespaced(ctx.client.clone(), &namespace);
    let wanted = || async {
        match restores.get_opt(&restore.name_any()).await {
            Ok(Some(now)) => {
                now.metadata.uid == restore.metadata.uid
                    && now.metadata.deletion_timestamp.is_none()
                    && now.spec == restore.spec
            }
            Ok(None) => false,
            // The API server not answering is not a reason to stop.
            Err(_) => true,
        }
    };
    let verified = verify_supervised(
        &ctx.storage,
        spec,
        &namespace,
        &ctx.staging,
        &tool,
        on_report,
        wanted,
    )
    .await;
    p.status = status.into_inner().unwrap_or_else(|e| e.into_inner());
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            return p
                .fail(
                    failure_reason(&e),
                    format!("{e}; nothing was restored and the cluster is untouched"),
                )
                .await;
        }
    };
    let described = verified.describe();
    p.event(Event::normal(
        "BackupVerified",
        format!("verified backup {described}"),
    ))
    .await;
    p.set(
        "Restoring",
        "Verified",
        true,
        "BackupVerified",
        format!("verified backup {described}"),
    )
    .await;

    // A new cluster is created paused: the restore, not the cluster
    // controller, starts its members.
    let target = match existing {
        Some(c) => c,
        None => {
            let mut c = EtcdCluster::new(
                &key.name,
                EtcdClusterSpec {
                    paused: Some(true),
                    ..cluster_spec.clone()
                },
            );
            c.metadata.namespace = Some(namespace.clone());
            match clusters.create(&PostParams::default(), &c).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_file(&verified.path);
                    return p
                        .fail(
                            "RestoreFailed",
                            format!("cannot create EtcdCluster {}: {e}", key.name),
                        )
                        .await;
                }
            }
        }
    };
    ctx.runtime.set_cluster(&key, Arc::new(target));
    let restored = ctx
        .reconciler
        .restore(&key, &cluster_spec, &verified.path)
        .await;
    // The Pods fetch their own link to it from the snapshot server.
    let _ = std::fs::remove_file(&verified.path);
    if spec.new_cluster.is_some() {
        let unpause = serde_json::json!({"spec": {"paused": cluster_spec.paused}});
        if let Err(e) = clusters
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&unpause))
            .await
        {
            tracing::warn!(cluster = %key, error = %e, "cannot unpause the restored cluster");
        }
    }
    match restored {
        Ok(e) => {
            let reference = EtcdCluster::new(&key.name, cluster_spec.clone());
            let mut reference = reference.object_ref(&());
            reference.namespace = Some(namespace.clone());
            events::publish(&ctx.recorder, &reference, "Restore", &e).await;
        }
        Err(e) => {
            return p
                .fail(
                    "RestoreFailed",
                    format!("restoring the members from the verified backup failed: {e}"),
                )
                .await;
        }
    }
    match wait_serving(
        ctx.runtime.as_ref(),
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
            p.event(Event::normal("RestoreCompleted", message.clone()))
                .await;
            p.set("Completed", "Completed", true, "RestoreCompleted", message)
                .await;
        }
        Err(e) => p.fail("NotServing", e).await,
    }
}

async fn reconcile(restore: Arc<EtcdRestore>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    if !ctx.scope.manages(&restore.metadata) || restore.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = restore.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Completed" | "Failed")) {
        return Ok(Action::await_change()); // Runs once; re-create to run again.
    }
    let uid = restore.uid().unwrap_or_default();
    if !ctx.running.lock().expect("restores").insert(uid.clone()) {
        return Ok(Action::await_change());
    }
    let started = std::time::Instant::now();
    let task_ctx = ctx.clone();
    tokio::spawn(async move {
        let mut p = Progress {
            ctx: task_ctx.clone(),
            restore,
            status,
        };
        if let Err(panicked) = crate::supervise::contained(run(&mut p)).await {
            p.fail("InternalError", panicked.to_string()).await;
        }
        crate::metrics::reconciled("EtcdRestore", started.elapsed(), p.status.succeeded);
        task_ctx
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
    });
    Ok(Action::await_change())
}

fn error_policy(_: Arc<EtcdRestore>, error: &KubeError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "EtcdRestore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

pub async fn run_restores(ctx: Arc<Context>) {
    let api: Api<EtcdRestore> = ctx.scope.api(&ctx.client);
    Controller::new(api, watcher::Config::default())
        .run(
            |obj, ctx| async move {
                let (object, recorder) = (obj.clone(), ctx.recorder.clone());
                super::supervised(&*object, &recorder, reconcile(obj, ctx)).await
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}
