//! The Kubernetes runtime: members are Pods (and, with
//! `spec.pod.persistentVolumeClaimSpec`, PersistentVolumeClaims that outlive
//! them). The reconcile core decides; this only creates, lists and deletes.
//!
//! A member is running while its Pod is `Pending` or `Running`; it has data while its Pod
//! exists (emptyDir) or its PVC does. A member whose Pod was deleted but
//! whose PVC remains is reported stopped-with-data, so the core restarts it
//! and it rejoins under the same name and peer URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::members::{
    self, ANNOTATION_VERSION, FIELD_MANAGER, LABEL_NODE, add_restore, cluster_selector, member_pod,
    member_pvc, member_urls, restore_probe_pod, restore_token_secret, restore_token_secret_name,
    uses_pvc,
};
use super::snapshots::{Offer, SnapshotServer};
use crate::api::EtcdCluster;
use crate::controller::{
    ClusterKey, MemberPlan, MemberUrls, Runtime, RuntimeError, RuntimeMember, StartMode, Version,
    check_supported,
};
use crate::etcd::ClientTls;

/// Members as Pods. The controller hands it each EtcdCluster before a
/// reconcile ([`KubeRuntime::set_cluster`]): the pod policy, TLS and owner
/// come from the resource, not from the runtime contract.
pub struct KubeRuntime {
    client: kube::Client,
    /// Serves verified snapshots to restoring Pods (absent: restores refused).
    snapshots: Option<Arc<SnapshotServer>>,
    clusters: RwLock<HashMap<ClusterKey, Arc<EtcdCluster>>>,
    /// How long to wait for a deleted Pod to disappear before recreating it.
    pod_gone_timeout: Duration,
    /// The operator's client certificates per cluster, and when they were read.
    tls_cache: Mutex<HashMap<ClusterKey, (Instant, Option<ClientTls>)>>,
}

/// How long the operator's client certificates are reused before re-reading them.
const TLS_REFRESH: Duration = Duration::from_secs(30);

fn api_err(what: &str, e: kube::Error) -> RuntimeError {
    RuntimeError::Other(format!("{what}: {e}"))
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl KubeRuntime {
    pub fn new(client: kube::Client, snapshots: Option<Arc<SnapshotServer>>) -> Self {
        KubeRuntime {
            client,
            snapshots,
            clusters: RwLock::default(),
            pod_gone_timeout: Duration::from_secs(60),
            tls_cache: Mutex::default(),
        }
    }

    /// Remember the latest version of a cluster's resource.
    pub fn set_cluster(&self, key: &ClusterKey, cluster: Arc<EtcdCluster>) {
        self.clusters
            .write()
            .expect("clusters lock")
            .insert(key.clone(), cluster);
    }

    /// Forget a deleted cluster.
    pub fn forget(&self, key: &ClusterKey) {
        self.clusters.write().expect("clusters lock").remove(key);
    }

    fn cluster(&self, key: &ClusterKey) -> Result<Arc<EtcdCluster>, RuntimeError> {
        self.clusters
            .read()
            .expect("clusters lock")
            .get(key)
            .cloned()
            .ok_or_else(|| RuntimeError::Other(format!("EtcdCluster {key} is not known")))
    }

    fn pods(&self, key: &ClusterKey) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    fn pvcs(&self, key: &ClusterKey) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    /// Wait until a deleted Pod is gone (its name can then be reused).
    async fn wait_pod_gone(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        let start = Instant::now();
        loop {
            match self.pods(key).get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if start.elapsed() < self.pod_gone_timeout => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Ok(Some(_)) => {
                    return Err(RuntimeError::Member {
                        member: name.into(),
                        message: format!(
                            "the Pod is still terminating after {}s",
                            self.pod_gone_timeout.as_secs()
                        ),
                    });
                }
                Err(e) => return Err(api_err("reading a member Pod", e)),
            }
        }
    }

    async fn delete_pod(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        match self.pods(key).delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err("deleting a member Pod", e)),
        }
    }

    async fn ensure_pvc(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        plan: &MemberPlan,
    ) -> Result<(), RuntimeError> {
        let Some(pvc) = member_pvc(cluster, &plan.name, &plan.version) else {
            return Ok(());
        };
        match self.pvcs(key).create(&PostParams::default(), &pvc).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => {
                // The claim remembers the version its data was last run
                // with, so a member recreated from it never downgrades.
                let patch = serde_json::json!({
                    "metadata": {"annotations": {ANNOTATION_VERSION: plan.version}},
                });
                self.pvcs(key)
                    .patch(&plan.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| api_err("updating a member PVC", e))?;
                Ok(())
            }
            Err(e) => Err(RuntimeError::Member {
                member: plan.name.clone(),
                message: format!(
                    "cannot create its PersistentVolumeClaim: {e}; check spec.pod.persistentVolumeClaimSpec"
                ),
            }),
        }
    }

    async fn create_pod(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        plan: &MemberPlan,
    ) -> Result<(), RuntimeError> {
        self.ensure_pvc(key, cluster, plan).await?;
        let mut pod = member_pod(cluster, plan);
        let mut offer = None;
        if plan.mode == StartMode::Restore {
            let o = self.offer(plan)?;
            self.put_restore_token(key, cluster, plan, &o).await?;
            add_restore(&mut pod, cluster, plan, &o.url);
            offer = Some(o);
        }
        let created = self.pods(key).create(&PostParams::default(), &pod).await;
        if let Some(offer) = offer {
            self.delete_restore_token_when_settled(key, &plan.name, offer);
        }
        match created {
            Ok(_) => {
                tracing::info!(cluster = %key, member = plan.name, version = plan.version, mode = ?plan.mode, "member Pod created");
                Ok(())
            }
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(RuntimeError::Member {
                member: plan.name.clone(),
                message: format!("cannot create its Pod: {e}"),
            }),
        }
    }
}

/// Five random lowercase letters and digits, for probe Pod names.
fn random_suffix() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(5)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

/// Why a Pod's first container waits, e.g. `ErrImagePull: ...`.
fn waiting_reason(status: Option<&k8s_openapi::api::core::v1::PodStatus>) -> Option<String> {
    let waiting = status?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    Some(match (&waiting.reason, &waiting.message) {
        (Some(r), Some(m)) => format!("{r}: {m}"),
        (Some(r), None) => r.clone(),
        (None, m) => m.clone().unwrap_or_else(|| "waiting".into()),
    })
}

/// How long a restore's reachability probe may take (scheduling, pulling
/// the init image, the fetch).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

impl KubeRuntime {
    /// Run a [`restore_probe_pod`] and wait for it to succeed: a restore
    /// whose members could not fetch their snapshot (an `--advertise-url`
    /// Pods cannot reach, a NetworkPolicy, an init image that cannot be
    /// pulled) is refused before anything is deleted. The probe Pod is
    /// deleted however it ends.
    async fn probe_snapshot_endpoint(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        plan: &MemberPlan,
    ) -> Result<(), String> {
        let Some(server) = &self.snapshots else {
            return Err("no snapshot endpoint (--advertise-url)".into());
        };
        let offer = server
            .offer_probe()
            .map_err(|e| format!("cannot offer a probe file: {e}"))?;
        let probe = format!("{}-restore-probe-{}", key.name, random_suffix());
        let pod = restore_probe_pod(cluster, plan, &offer, &probe);
        self.pods(key)
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| format!("cannot create the restore probe Pod {probe}: {e}"))?;
        let outcome = self.wait_probe(key, &probe, &offer.url).await;
        if let Err(e) = self.delete_pod(key, &probe).await {
            tracing::warn!(cluster = %key, pod = probe, error = %e, "cannot delete the restore probe Pod");
        }
        outcome
    }

    async fn wait_probe(&self, key: &ClusterKey, probe: &str, url: &str) -> Result<(), String> {
        let start = Instant::now();
        let mut last = "not scheduled yet".to_string();
        while start.elapsed() < PROBE_TIMEOUT {
            let pod = self
                .pods(key)
                .get_opt(probe)
                .await
                .map_err(|e| format!("reading the restore probe Pod {probe}: {e}"))?;
            let status = pod.and_then(|p| p.status);
            match status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Succeeded") => return Ok(()),
                Some("Failed") => {
                    let why = status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|c| c.first())
                        .and_then(|c| c.state.as_ref())
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "exit code {}{}",
                                t.exit_code,
                                t.message
                                    .as_deref()
                                    .map(|m| format!(": {}", m.trim()))
                                    .unwrap_or_default()
                            )
                        })
                        .or_else(|| status.as_ref().and_then(|s| s.reason.clone()))
                        .unwrap_or_else(|| "failed".into());
                    return Err(format!(
                        "a Pod scheduled like the restored members could not fetch from the operator's \
                         snapshot endpoint {url} ({why}); check --advertise-url and any NetworkPolicy \
                         between member Pods and the operator"
                    ));
                }
                phase => {
                    last = waiting_reason(status.as_ref())
                        .unwrap_or_else(|| phase.unwrap_or("no phase yet").to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!(
            "the restore probe Pod {probe} did not finish within {}s ({last}); a Pod must be able to \
             start and fetch from {url} before the running members are replaced",
            PROBE_TIMEOUT.as_secs()
        ))
    }

    /// Put a restoring member's one-use token in its Secret (replacing an
    /// older offer's: that one stays valid until used or expired).
    async fn put_restore_token(
        &self,
        key: &ClusterKey,
        cluster: &EtcdCluster,
        plan: &MemberPlan,
        offer: &Offer,
    ) -> Result<(), RuntimeError> {
        let secret = restore_token_secret(cluster, &plan.name, &offer.token);
        Api::<Secret>::namespaced(self.client.clone(), &key.namespace)
            .patch(
                &restore_token_secret_name(&plan.name),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|e| RuntimeError::Member {
                member: plan.name.clone(),
                message: format!(
                    "cannot write the Secret of its snapshot token: {e}; the operator's Role needs \
                     create, patch and delete on secrets"
                ),
            })?;
        Ok(())
    }

    /// Delete the token Secret once its offer is settled (the download
    /// began, or the offer expired): the token opens nothing any more.
    /// A Secret left by an operator that stopped first holds a dead token
    /// and goes with its cluster.
    fn delete_restore_token_when_settled(&self, key: &ClusterKey, member: &str, offer: Offer) {
        let Some(server) = self.snapshots.clone() else {
            return;
        };
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &key.namespace);
        let name = restore_token_secret_name(member);
        let key = key.clone();
        tokio::spawn(async move {
            while !server.settled(&offer) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(cluster = %key, secret = name, "snapshot token used or expired: its Secret deleted")
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(cluster = %key, secret = name, error = %e, "cannot delete a used snapshot token's Secret")
                }
            }
        });
    }

    /// Offer the plan's snapshot to the member's init container.
    fn offer(&self, plan: &MemberPlan) -> Result<Offer, RuntimeError> {
        let member_err = |message: String| RuntimeError::Member {
            member: plan.name.clone(),
            message,
        };
        let Some(server) = &self.snapshots else {
            return Err(member_err(
                "restoring from a snapshot needs the operator's snapshot endpoint: set --advertise-url \
                 (or MY_POD_IP) so member Pods can fetch it"
                    .into(),
            ));
        };
        let Some(snapshot) = &plan.snapshot else {
            return Err(member_err(
                "a restore was asked for without a snapshot".into(),
            ));
        };
        server
            .offer(snapshot)
            .map_err(|e| member_err(format!("cannot offer the snapshot to its Pod: {e}")))
    }
}

impl KubeRuntime {
    async fn read_client_tls(&self, key: &ClusterKey) -> Result<Option<ClientTls>, RuntimeError> {
        let cluster = self.cluster(key)?;
        let Some(tls) = cluster
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.static_tls.as_ref())
        else {
            return Ok(None);
        };
        if tls
            .member
            .as_ref()
            .and_then(|m| m.server_secret.as_ref())
            .is_none()
        {
            return Ok(None);
        }
        let Some(name) = &tls.operator_secret else {
            return Err(RuntimeError::Other(
                "spec.TLS.static.member.serverSecret makes members require client certificates: \
                 set spec.TLS.static.operatorSecret to a Secret with etcd-client.crt, etcd-client.key \
                 and etcd-client-ca.crt"
                    .into(),
            ));
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| api_err("reading spec.TLS.static.operatorSecret", e))?
            .ok_or_else(|| {
                RuntimeError::Other(format!(
                    "Secret {}/{name} (spec.TLS.static.operatorSecret) does not exist",
                    key.namespace
                ))
            })?;
        let data = secret.data.unwrap_or_default();
        let get = |k: &str| {
            data.get(k).map(|v| v.0.clone()).ok_or_else(|| {
                RuntimeError::Other(format!(
                    "Secret {}/{name} (spec.TLS.static.operatorSecret) has no key `{k}`: it needs \
                     etcd-client.crt, etcd-client.key and etcd-client-ca.crt",
                    key.namespace
                ))
            })
        };
        Ok(Some(ClientTls {
            cert: get("etcd-client.crt")?,
            key: get("etcd-client.key")?,
            ca: get("etcd-client-ca.crt")?,
        }))
    }
}

/// The extra flags the Pod was created with ([`members::ANNOTATION_FLAGS`]);
/// none on a Pod that has no such annotation (created before flags were
/// passed, or with none).
fn pod_flags(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(members::ANNOTATION_FLAGS))
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default()
}

fn pod_version(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_VERSION))
        .cloned()
        .unwrap_or_default()
}

fn member_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_NODE))
        .cloned()
        .or_else(|| meta.name.clone())
        .unwrap_or_default()
}

impl Runtime for KubeRuntime {
    async fn reserve(&self, cluster: &ClusterKey, name: &str) -> Result<MemberUrls, RuntimeError> {
        // The URLs are DNS names derived from the member name: nothing to allocate.
        Ok(member_urls(&*self.cluster(cluster)?, name))
    }

    async fn list(&self, key: &ClusterKey) -> Result<Vec<RuntimeMember>, RuntimeError> {
        let cluster = self.cluster(key)?;
        let lp = ListParams::default().labels(&cluster_selector(&key.name));
        let pods = self
            .pods(key)
            .list(&lp)
            .await
            .map_err(|e| api_err("listing member Pods", e))?;
        let mut out: Vec<RuntimeMember> = Vec::new();
        for pod in pods.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = member_name(&pod.metadata);
            let status = pod.status.as_ref();
            // A Pending Pod counts as running: it is being scheduled or
            // pulled, and restarting it would not help. If it never
            // becomes healthy the core replaces it after the failure grace.
            let running = matches!(
                status.and_then(|s| s.phase.as_deref()),
                None | Some("Pending" | "Running")
            );
            let failed = matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            );
            out.push(RuntimeMember {
                urls: member_urls(&cluster, &name),
                running,
                // An emptyDir dies with its Pod: a failed Pod's data is gone
                // for the core's purposes unless a PVC holds it (added below).
                has_data: !failed,
                ever_started: true,
                version: pod_version(&pod),
                flags: pod_flags(&pod),
                name,
            });
        }
        if uses_pvc(&cluster) {
            let pvcs = self
                .pvcs(key)
                .list(&lp)
                .await
                .map_err(|e| api_err("listing member PVCs", e))?;
            for pvc in pvcs.items {
                if pvc.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let name = member_name(&pvc.metadata);
                match out.iter_mut().find(|m| m.name == name) {
                    Some(m) => m.has_data = true,
                    None => out.push(RuntimeMember {
                        urls: member_urls(&cluster, &name),
                        running: false,
                        has_data: true,
                        ever_started: true,
                        version: pvc
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANNOTATION_VERSION))
                            .cloned()
                            .unwrap_or_default(),
                        flags: Vec::new(),
                        name,
                    }),
                }
            }
        }
        Ok(out)
    }

    async fn start(&self, key: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        let cluster = self.cluster(key)?;
        let existing = self
            .pods(key)
            .get_opt(&plan.name)
            .await
            .map_err(|e| api_err("reading a member Pod", e))?;
        if let Some(pod) = existing {
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let failed = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            );
            if !terminating && !failed {
                if plan.mode == StartMode::ForceNewCluster {
                    // New flags need a new Pod; only a PVC keeps the data.
                    if !uses_pvc(&cluster) {
                        return Err(RuntimeError::Member {
                            member: plan.name.clone(),
                            message: "recovering quorum from a survivor needs its data to outlive its Pod: \
                                      set spec.pod.persistentVolumeClaimSpec (or restore from a backup)"
                                .into(),
                        });
                    }
                    self.delete_pod(key, &plan.name).await?;
                    self.wait_pod_gone(key, &plan.name).await?;
                    return self.create_pod(key, &cluster, plan).await;
                }
                if pod_version(&pod) != plan.version {
                    // Upgrade in place: the container restarts on the new
                    // image with the same volume (an emptyDir survives it).
                    let patch = serde_json::json!({
                        "metadata": {"annotations": {ANNOTATION_VERSION: plan.version}},
                        "spec": {"containers": [{"name": "etcd", "image": members::image(&cluster, &plan.version)}]},
                    });
                    self.pods(key)
                        .patch(
                            &plan.name,
                            &PatchParams::default(),
                            &Patch::Strategic(patch),
                        )
                        .await
                        .map_err(|e| api_err("upgrading a member Pod", e))?;
                    if uses_pvc(&cluster) {
                        self.ensure_pvc(key, &cluster, plan).await?;
                    }
                    tracing::info!(cluster = %key, member = plan.name, version = plan.version, "member Pod image updated");
                }
                return Ok(());
            }
            // A failed Pod (or one on its way out) is replaced by a new one.
            self.delete_pod(key, &plan.name).await?;
            self.wait_pod_gone(key, &plan.name).await?;
        }
        self.create_pod(key, &cluster, plan).await
    }

    async fn restart_keeps_data(&self, key: &ClusterKey) -> bool {
        self.cluster(key).is_ok_and(|c| uses_pvc(&c))
    }

    async fn stop(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        // With a PVC the Pod can go and come back with the data. Without
        // one, deleting the Pod would delete the data: the member keeps
        // running and `start` changes it in place.
        if uses_pvc(&*self.cluster(key)?) {
            self.delete_pod(key, name).await?;
            self.wait_pod_gone(key, name).await?;
        }
        Ok(())
    }

    async fn delete(&self, key: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        self.delete_pod(key, name).await?;
        match self.pvcs(key).delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err("deleting a member PVC", e)),
        }
        self.wait_pod_gone(key, name).await
    }

    /// `spec.TLS.static.operatorSecret` when members require client TLS,
    /// read at most every [`TLS_REFRESH`] (each reconcile observes the
    /// cluster; a rotated Secret is picked up within that time).
    async fn client_tls(&self, key: &ClusterKey) -> Result<Option<ClientTls>, RuntimeError> {
        if let Some((read, tls)) = self.tls_cache.lock().expect("tls cache").get(key)
            && read.elapsed() < TLS_REFRESH
        {
            return Ok(tls.clone());
        }
        let tls = self.read_client_tls(key).await?;
        self.tls_cache
            .lock()
            .expect("tls cache")
            .insert(key.clone(), (Instant::now(), tls.clone()));
        Ok(tls)
    }

    /// The snapshot endpoint is set up, and the API server accepts the
    /// first restored member's Pod (a server-side dry run: validation,
    /// admission, quota), before the running Pods are deleted.
    async fn check_restore(&self, key: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        let cluster = self.cluster(key)?;
        let member_err = |message: String| RuntimeError::Member {
            member: plan.name.clone(),
            message,
        };
        if self.snapshots.is_none() {
            return Err(member_err(
                "restoring from a snapshot needs the operator's snapshot endpoint: set --advertise-url \
                 (or MY_POD_IP) so member Pods can fetch it"
                    .into(),
            ));
        }
        if !plan.snapshot.as_ref().is_some_and(|p| p.is_file()) {
            return Err(member_err("the verified snapshot file is missing".into()));
        }
        let pod = member_pod(&cluster, plan);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        self.pods(key)
            .create(&dry_run, &pod)
            .await
            .map_err(|e| member_err(format!("the API server would not create its Pod: {e}")))?;
        self.probe_snapshot_endpoint(key, &cluster, plan)
            .await
            .map_err(member_err)
    }

    async fn resolve_version(&self, requested: &str) -> Result<String, RuntimeError> {
        // Any supported release has an image; the kubelet reports a missing one.
        let v = Version::parse(requested).map_err(|message| RuntimeError::VersionUnavailable {
            requested: requested.into(),
            message,
        })?;
        check_supported(&v).map_err(|message| RuntimeError::VersionUnavailable {
            requested: requested.into(),
            message,
        })?;
        Ok(v.to_string())
    }
}

/// Create or update (server-side apply) the Services and the budget.
pub async fn apply_cluster_objects(
    client: &kube::Client,
    cluster: &EtcdCluster,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let ns = cluster.metadata.namespace.as_deref().unwrap_or("default");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for svc in [
        members::peer_service(cluster),
        members::client_service(cluster),
    ] {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut value = serde_json::to_value(&svc).unwrap_or_default();
        value["apiVersion"] = "v1".into();
        value["kind"] = "Service".into();
        services.patch(&name, &pp, &Patch::Apply(value)).await?;
    }
    let pdb = members::disruption_budget(cluster);
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&pdb).unwrap_or_default();
    value["apiVersion"] = "policy/v1".into();
    value["kind"] = "PodDisruptionBudget".into();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    pdbs.patch(&name, &pp, &Patch::Apply(value)).await?;
    Ok(())
}
