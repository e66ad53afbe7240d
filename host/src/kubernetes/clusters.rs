//! The EtcdCluster controller: kube-rs watches EtcdClusters and their Pods,
//! the reconcile core decides each step, the Kubernetes runtime carries it
//! out, and the result lands in the status subresource and in Events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::members::{self, CLIENT_PORT};
use super::runtime::{KubeRuntime, apply_cluster_objects};
use super::scope::Scope;
use super::{KubeError, events};
use crate::api::EtcdCluster;
use crate::controller::{ClusterKey, Reconciler};

pub struct Context {
    pub client: kube::Client,
    pub runtime: Arc<KubeRuntime>,
    pub reconciler: Arc<Reconciler<KubeRuntime>>,
    pub recorder: Recorder,
    pub scope: Scope,
}

fn key_of(c: &EtcdCluster) -> ClusterKey {
    ClusterKey {
        namespace: c.namespace().unwrap_or_else(|| "default".into()),
        name: c.name_any(),
    }
}

async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    if !ctx.scope.manages(&cluster.metadata) {
        return Ok(Action::await_change());
    }
    let key = key_of(&cluster);
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references take the Pods, PVCs, Services and budget with it.
        ctx.runtime.forget(&key);
        crate::metrics::cluster_deleted(&key.namespace, &key.name);
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let reference = cluster.object_ref(&());
    ctx.runtime.set_cluster(&key, cluster.clone());
    if let Err(e) = apply_cluster_objects(&ctx.client, &cluster).await {
        let event = crate::controller::Event::warning(
            "ServicesFailed",
            format!("cannot create or update the Services and PodDisruptionBudget: {e}"),
        );
        events::publish(&ctx.recorder, &reference, "Reconcile", &event).await;
        crate::metrics::reconciled("EtcdCluster", started.elapsed(), false);
        return Err(KubeError::Api(e));
    }
    let outcome = ctx
        .reconciler
        .reconcile(&key, &cluster.spec, cluster.status.as_ref())
        .await;
    let mut status = outcome.status;
    status.observed_generation = cluster.metadata.generation;
    status.service_name = Some(format!("{}-client", key.name));
    status.client_port = Some(CLIENT_PORT);
    if cluster.status.as_ref() != Some(&status) {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &key.namespace);
        super::status::apply_status(&api, &key.name, &status)
            .await
            .map_err(KubeError::Api)?;
    }
    for e in &outcome.events {
        events::publish(&ctx.recorder, &reference, "Reconcile", e).await;
    }
    crate::metrics::cluster_alarms(&key.namespace, &key.name, &status.alarms);
    if let Some(reclaimed) = outcome.defragmented {
        crate::metrics::defragmented(&key.namespace, &key.name, reclaimed);
    }
    crate::metrics::cluster_members(
        &key.namespace,
        &key.name,
        i64::from(cluster.spec.size),
        status.members.ready.len() as i64,
        outcome.unreachable as i64,
    );
    crate::metrics::reconciled("EtcdCluster", started.elapsed(), true);
    Ok(Action::requeue(outcome.requeue))
}

fn error_policy(_: Arc<EtcdCluster>, error: &KubeError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "EtcdCluster reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run the controller (for as long as the returned future is polled).
pub async fn run(ctx: Arc<Context>) {
    let clusters: Api<EtcdCluster> = ctx.scope.api(&ctx.client);
    let pods: Api<Pod> = ctx.scope.api(&ctx.client);
    Controller::new(clusters, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels(&format!("{}=etcd", members::LABEL_APP)),
        )
        .run(
            |obj, ctx| async move {
                let (object, recorder) = (obj.clone(), ctx.recorder.clone());
                super::supervised(&*object, &recorder, reconcile(obj, ctx)).await
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "EtcdCluster controller");
            }
        })
        .await;
}
