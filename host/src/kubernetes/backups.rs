//! The EtcdBackup controller on Kubernetes. It reuses
//! the runtime-agnostic backup controller: the operator streams the snapshot
//! from a member (the EtcdCluster's client URLs) through the storage plugin.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::scope::Scope;
use super::secrets::KubeSecrets;
use super::{KubeError, events};
use crate::api::{EtcdBackup, EtcdCluster};
use crate::backup::Storage;
use crate::backup::controller::{self, BackupMemory};

pub struct Context {
    pub client: kube::Client,
    pub storage: Arc<Storage<KubeSecrets>>,
    pub recorder: Recorder,
    pub scope: Scope,
    /// `etcdEndpoints` outside the EtcdBackup's namespace are allowed
    /// (`--allow-foreign-etcd-endpoints`); only cluster-wide mode checks.
    pub foreign_endpoints: bool,
    /// Retry pacing per EtcdBackup (namespace/name).
    memory: Mutex<HashMap<String, BackupMemory>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        storage: Arc<Storage<KubeSecrets>>,
        recorder: Recorder,
        scope: Scope,
        foreign_endpoints: bool,
    ) -> Self {
        Context {
            client,
            storage,
            recorder,
            scope,
            foreign_endpoints,
            memory: Mutex::default(),
        }
    }
}

async fn reconcile_backup(backup: Arc<EtcdBackup>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    if !ctx.scope.manages(&backup.metadata) || backup.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let name = backup.name_any();
    let id = format!("{ns}/{name}");
    let cluster = match &backup.spec.etcd_cluster {
        Some(r) => Api::<EtcdCluster>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await
            .map_err(KubeError::Api)?
            .map(|c| c.status.unwrap_or_default()),
        None => None,
    };
    let mut endpoints = controller::endpoints_of(&backup.spec, cluster.as_ref());
    let named = backup
        .spec
        .etcd_endpoints
        .as_ref()
        .filter(|e| !e.is_empty());
    if let (Scope::ClusterWide, false, Some(named)) = (&ctx.scope, ctx.foreign_endpoints, named) {
        let clusters = Api::<EtcdCluster>::namespaced(ctx.client.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(KubeError::Api)?;
        if let Err(refused) = super::tenancy::check_endpoints(named, &ns, &clusters.items) {
            endpoints = Err(refused);
        }
    }
    let previous = backup.status.clone().unwrap_or_default();
    let mut memory = ctx
        .memory
        .lock()
        .expect("backup memory")
        .remove(&id)
        .unwrap_or_default();
    let outcome =
        controller::reconcile(&ctx.storage, &backup, endpoints, &previous, &mut memory).await;
    ctx.memory
        .lock()
        .expect("backup memory")
        .insert(id.clone(), memory);
    if outcome.status != previous {
        let api: Api<EtcdBackup> = Api::namespaced(ctx.client.clone(), &ns);
        super::status::apply_status(&api, &name, &outcome.status)
            .await
            .map_err(KubeError::Api)?;
    }
    let reference = backup.object_ref(&());
    if let Some(ran) = outcome.ran {
        crate::metrics::backup_run(&ns, &name, ran.as_str(), started.elapsed());
    }
    crate::metrics::backup_schedule(
        &ns,
        &name,
        controller::last_success_unix(&outcome.status),
        controller::interval_secs(&backup.spec),
    );
    for e in &outcome.events {
        events::publish(&ctx.recorder, &reference, "Backup", e).await;
    }
    crate::metrics::reconciled("EtcdBackup", started.elapsed(), true);
    Ok(Action::requeue(outcome.requeue))
}

fn error_policy(_: Arc<EtcdBackup>, error: &KubeError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// How often the schedule gauges of deleted EtcdBackups are dropped (an
/// EtcdBackup has no finalizer, so its reconcile never sees the deletion).
const FORGET_DELETED_EVERY: Duration = Duration::from_secs(30);

pub async fn run_backups(ctx: Arc<Context>) {
    let api: Api<EtcdBackup> = ctx.scope.api(&ctx.client);
    let controller = Controller::new(api, watcher::Config::default());
    let store = controller.store();
    let forget = {
        let ctx = ctx.clone();
        async move {
            // Until the first list the store is empty, not the truth.
            if store.wait_until_ready().await.is_err() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(FORGET_DELETED_EVERY).await;
                let present: HashSet<(String, String)> = store
                    .state()
                    .iter()
                    .map(|b| (b.namespace().unwrap_or_default(), b.name_any()))
                    .collect();
                crate::metrics::backups_present(&present);
                ctx.memory.lock().expect("backup memory").retain(|id, _| {
                    id.split_once('/')
                        .is_some_and(|(ns, n)| present.contains(&(ns.to_string(), n.to_string())))
                });
            }
        }
    };
    let run = controller
        .run(
            |obj, ctx| async move {
                let (object, recorder) = (obj.clone(), ctx.recorder.clone());
                super::supervised(&*object, &recorder, reconcile_backup(obj, ctx)).await
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {});
    // The controller's run decides when this ends; forgetting never does.
    tokio::select! {
        _ = run => {}
        _ = forget => {}
    }
}
