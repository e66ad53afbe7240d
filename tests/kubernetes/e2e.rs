//! The operator on the real test node ([`crate::node`]): installed with
//! `helm install` of its chart, running as a container under the chart's
//! ServiceAccount, reaching the API server through the `kubernetes` Service,
//! its member Pods run by the kubelet in containers, resolving each other
//! through cluster DNS.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::common::{Moto, issue_cert, make_ca};
use crate::node::{Node, OPERATOR_IMAGE_TAG};

/// The metrics and health port of the chart (`metrics.port`).
const METRICS_PORT: u16 = 8080;

/// One `helm install` of the chart; its operator Pods' logs are printed if
/// a test fails.
pub(crate) struct Operator {
    client: kube::Client,
    namespace: String,
    release: String,
}

impl Operator {
    /// `helm install RELEASE` into `namespace` with the image under test and
    /// `set` values, waiting until its Deployment is available.
    pub(crate) async fn install(env: &Env, release: &str, set: &[&str]) -> Operator {
        let node = Node::shared();
        let kubeconfig = node.admin_kubeconfig();
        let chart = crate::common::repo().join("deploy/helm/etcd-operator");
        let tag = format!("image.tag={OPERATOR_IMAGE_TAG}");
        let mut args = vec![
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &env.ns,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--skip-crds",
            "--set",
            &tag,
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout",
            "240s",
        ];
        for s in set {
            args.extend(["--set", s]);
        }
        let op = Operator {
            client: env.client.clone(),
            namespace: env.ns.clone(),
            release: release.to_string(),
        };
        let helm = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || crate::deploy::try_helm(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        if let Err(e) = helm {
            panic!(
                "helm install {release} failed: {e}\noperator logs:\n{}",
                op.logs().await
            );
        }
        op
    }

    /// `helm upgrade --reuse-values` of this release with `set` values,
    /// waiting for its rollout (run beside the test: it takes a while).
    pub(crate) fn upgrade(&self, set: &[&str]) -> tokio::task::JoinHandle<Result<String, String>> {
        let kubeconfig = Node::shared().admin_kubeconfig();
        let chart = crate::common::repo().join("deploy/helm/etcd-operator");
        let mut args: Vec<String> = [
            "upgrade",
            &self.release,
            chart.to_str().unwrap(),
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--reuse-values",
            "--wait",
            "--timeout",
            "240s",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for v in set {
            args.extend(["--set".to_string(), v.to_string()]);
        }
        tokio::task::spawn_blocking(move || {
            crate::deploy::try_helm(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    }

    /// The operator's Pods (not being deleted).
    pub(crate) async fn pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name=etcd-operator,app.kubernetes.io/instance={}",
                self.release
            )))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// The tail of every operator Pod's log, through the API server and kubelet.
    async fn logs(&self) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut out = String::new();
        for pod in self.pods().await {
            let name = pod.metadata.name.unwrap_or_default();
            let params = kube::api::LogParams {
                tail_lines: Some(60),
                ..Default::default()
            };
            let text = pods
                .logs(&name, &params)
                .await
                .unwrap_or_else(|e| e.to_string());
            out.push_str(&format!("--- {name}\n{text}\n"));
        }
        out
    }

    /// GET a path of a ready operator Pod's metrics/health server: status and body.
    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        use http_body_util::BodyExt;
        let pod = self.pods().await.into_iter().find(is_ready)?;
        let addr = format!("{}:{METRICS_PORT}", pod.status?.pod_ip?);
        let stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", &addr)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let node = Node::shared();
            eprintln!("kubelet log tail:\n{}", node.log_tail("kubelet", 20));
            // The Pods' container logs as the kubelet wrote them.
            let dir = node.state.join("pod-logs");
            let prefix = format!("{}_{}-", self.namespace, self.release);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                    continue;
                }
                let logs = entry.path().join("etcd-operator");
                for file in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                    let text = std::fs::read_to_string(file.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!(
                        "operator log tail ({}):\n{}",
                        file.path().display(),
                        lines[lines.len().saturating_sub(60)..].join("\n")
                    );
                }
            }
        }
    }
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Poll `check` until it returns Some, or fail after `timeout` saying `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A test's namespace on the shared node, and an admin client.
pub(crate) struct Env {
    pub(crate) client: kube::Client,
    pub(crate) ns: String,
}

impl Env {
    /// The shared node (started on first use), the CRDs installed, and a
    /// fresh namespace `ns`.
    pub(crate) async fn new(ns: &str) -> Env {
        Env::with_labels(ns, serde_json::json!({})).await
    }

    /// [`Env::new`] with a namespace that enforces the Pod Security
    /// `restricted` level: the API server refuses any Pod (member, init
    /// container, restore probe, the operator's own) that runs as root,
    /// keeps a capability, may escalate privileges or has no seccomp profile.
    pub(crate) async fn restricted(ns: &str) -> Env {
        Env::with_labels(
            ns,
            serde_json::json!({"pod-security.kubernetes.io/enforce": "restricted",
                               "pod-security.kubernetes.io/enforce-version": "latest"}),
        )
        .await
    }

    async fn with_labels(ns: &str, labels: serde_json::Value) -> Env {
        let node = tokio::task::block_in_place(Node::shared);
        let client = node.client().await;
        crate::install_crds(&client).await;
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns, "labels": labels}}))
                .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        Env {
            client,
            ns: ns.to_string(),
        }
    }

    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) fn cluster(
        &self,
        name: &str,
        size: i32,
        annotations: serde_json::Value,
    ) -> EtcdCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
            "metadata": {"name": name, "namespace": self.ns, "annotations": annotations},
            "spec": {"size": size, "version": "3.5.17"},
        }))
        .unwrap()
    }

    pub(crate) async fn member_pods(&self, cluster: &str) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default().labels(&format!("etcd_cluster={cluster}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Wait until the cluster is Running with `size` ready members and exactly
    /// `size` member Pods; returns its status.
    pub(crate) async fn wait_ready(
        &self,
        name: &str,
        size: usize,
        timeout: Duration,
    ) -> etcd_operator::api::EtcdClusterStatus {
        let api: Api<EtcdCluster> = self.api();
        eventually(
            &format!("EtcdCluster {name} Running with {size} ready members"),
            timeout,
            || async {
                let c = api.get(name).await.ok()?;
                let s = c.status?;
                let pods = self.member_pods(name).await.len();
                (s.phase.as_deref() == Some("Running")
                    && s.members.ready.len() == size
                    && s.members.unready.is_empty()
                    && pods == size)
                    .then_some(s)
            },
        )
        .await
    }

    pub(crate) async fn events_for(&self, name: &str) -> Vec<Event> {
        self.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// The reasons of the Events about `name`.
    pub(crate) async fn reasons_for(&self, name: &str) -> Vec<String> {
        self.events_for(name)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// How many times an Event with `reason` about `name` was published:
    /// the recorder folds repeats (same reason and action, any note) into
    /// one Event with a `series` count.
    pub(crate) async fn count_of(&self, name: &str, reason: &str) -> usize {
        self.events_for(name)
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
            .sum()
    }

    /// Wait for an Event with `reason` about `name`.
    pub(crate) async fn wait_event(&self, name: &str, reason: &str, timeout: Duration) {
        eventually(
            &format!("a {reason} Event about {name}"),
            timeout,
            || async {
                self.reasons_for(name)
                    .await
                    .iter()
                    .any(|r| r == reason)
                    .then_some(())
            },
        )
        .await
    }

    /// A client of a cluster through its members' Pod IPs (the test process,
    /// on the node but outside cluster DNS, does not resolve their names).
    pub(crate) async fn etcd_of(&self, cluster: &str) -> etcd_client::Client {
        etcd(&self.member_urls(cluster).await).await
    }
}

impl Env {
    /// The client URLs of a cluster's member Pods (by Pod IP).
    pub(crate) async fn member_urls(&self, cluster: &str) -> Vec<String> {
        self.member_pods(cluster)
            .await
            .into_iter()
            .filter_map(|p| p.status?.pod_ip)
            .map(|ip| format!("http://{ip}:2379"))
            .collect()
    }

    /// A writer to the cluster's member Pods, found again each round.
    pub(crate) fn writer(&self, cluster: &str, prefix: &str) -> crate::common::writer::Writer {
        let env = Env {
            client: self.client.clone(),
            ns: self.ns.clone(),
        };
        let env = std::sync::Arc::new(env);
        let cluster = cluster.to_string();
        crate::common::writer::Writer::spawn(
            prefix,
            Box::new(move || {
                let (env, cluster) = (env.clone(), cluster.clone());
                Box::pin(async move { env.member_urls(&cluster).await })
            }),
        )
    }

    /// Every acknowledged write reads back from the cluster.
    pub(crate) async fn assert_all_acked_readable(
        &self,
        cluster: &str,
        prefix: &str,
        acked: &[(String, String)],
    ) {
        let mut kv = self.etcd_of(cluster).await;
        let stored = crate::common::writer::read_prefix(&mut kv, prefix).await;
        crate::common::writer::assert_all_stored(acked, &stored);
    }

    /// The member IDs etcd reports, sorted.
    pub(crate) async fn member_ids(&self, cluster: &str) -> Vec<u64> {
        crate::common::writer::member_ids(&mut self.etcd_of(cluster).await).await
    }
}

async fn etcd(urls: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(urls, None).await.unwrap()
}

/// A directory for a test's own files (certificates), removed on drop.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kube-e2e-")
        .tempdir()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_runs_scales_heals_and_scope_is_honoured_as_the_service_account() {
    let env = Env::new("e2e-scale").await;
    // The chart, installed into this namespace: the operator runs in a
    // container with its ServiceAccount's rules and nothing more.
    let op = Operator::install(&env, "etcd-operator", &["memberFailureGrace=5s"]).await;
    let clusters: Api<EtcdCluster> = env.api();

    // The clusterwide-annotated cluster is not this namespaced operator's.
    clusters
        .create(
            &PostParams::default(),
            &env.cluster(
                "wide",
                1,
                serde_json::json!({"etcd.database.coreos.com/scope": "clusterwide"}),
            ),
        )
        .await
        .unwrap();
    clusters
        .create(
            &PostParams::default(),
            &env.cluster("example", 3, serde_json::json!({})),
        )
        .await
        .unwrap();
    let status = env.wait_ready("example", 3, Duration::from_secs(120)).await;
    assert_eq!(status.service_name.as_deref(), Some("example-client"));
    assert_eq!(status.client_port, Some(2379));

    // Both Services, the budget and owner references, as CoreOS laid them out.
    let services: Api<Service> = env.api();
    let peer = services.get("example").await.unwrap().spec.unwrap();
    assert_eq!(peer.cluster_ip.as_deref(), Some("None"));
    let ports: Vec<i32> = peer.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [2379, 2380]);
    let client_svc = services.get("example-client").await.unwrap().spec.unwrap();
    assert_eq!(client_svc.ports.unwrap()[0].port, 2379);
    assert_eq!(client_svc.selector.unwrap()["etcd_cluster"], "example");
    env.api::<PodDisruptionBudget>()
        .get("example")
        .await
        .unwrap();
    let uid = clusters.get("example").await.unwrap().metadata.uid.unwrap();
    for pod in env.member_pods("example").await {
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("EtcdCluster", uid.as_str())
        );
        assert_eq!(pod.spec.unwrap().subdomain.as_deref(), Some("example"));
    }
    let reasons = env.reasons_for("example").await;
    assert!(reasons.iter().any(|r| r == "ClusterSeeded"), "{reasons:?}");
    // A new cluster starts its three members at once (a static bootstrap):
    // none joined as a learner.
    assert!(!reasons.iter().any(|r| r == "MemberAdded"), "{reasons:?}");

    let mut kv = env.etcd_of("example").await;
    kv.put("/e2e/key", "kept", None).await.unwrap();

    // Scale 3 → 5 → 3.
    let size = |n: i32| Patch::Merge(serde_json::json!({"spec": {"size": n}}));
    clusters
        .patch("example", &PatchParams::default(), &size(5))
        .await
        .unwrap();
    env.wait_ready("example", 5, Duration::from_secs(120)).await;
    // Growth beyond the first size is learner-first.
    let reasons = env.reasons_for("example").await;
    assert!(reasons.iter().any(|r| r == "MemberAdded"), "{reasons:?}");
    clusters
        .patch("example", &PatchParams::default(), &size(3))
        .await
        .unwrap();
    let status = env.wait_ready("example", 3, Duration::from_secs(120)).await;

    // Delete a member Pod: it is replaced and the data is still there.
    let victim = status.members.ready[0].clone();
    env.api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted member replaced",
        Duration::from_secs(120),
        || async {
            let s = env.wait_ready("example", 3, Duration::from_secs(120)).await;
            (!s.members.ready.contains(&victim)).then_some(s)
        },
    )
    .await;
    let mut kv = env.etcd_of("example").await;
    let got = kv.get("/e2e/key", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
    let reasons = env.reasons_for("example").await;
    assert!(reasons.iter().any(|r| r == "MemberReplaced"), "{reasons:?}");

    new_flags_replace_emptydir_members_one_at_a_time(&env, &clusters).await;

    // Metrics and health (a gauge follows the latest reconcile: poll it).
    let ready_gauge =
        r#"etcd_operator_cluster_ready_members{namespace="e2e-scale",cluster="example"} 3"#;
    let metrics = eventually(
        "the ready-members gauge at 3",
        Duration::from_secs(30),
        || async {
            let (code, metrics) = op.get("/metrics").await?;
            (code == 200 && metrics.contains(ready_gauge)).then_some(metrics)
        },
    )
    .await;
    assert!(
        metrics.contains(r#"etcd_operator_reconciles_total{kind="EtcdCluster",result="ok"}"#),
        "{metrics}"
    );
    assert_eq!(op.get("/readyz").await.unwrap().0, 200);
    assert_eq!(op.get("/healthz").await.unwrap().0, 200);

    // After all that, the annotated cluster was never touched...
    let wide = clusters.get("wide").await.unwrap();
    assert!(wide.status.is_none(), "{:?}", wide.status);
    assert!(env.member_pods("wide").await.is_empty());
    // ...until a --cluster-wide operator runs (as the ServiceAccount of the
    // chart rendered with clusterWide=true): it manages that one only.
    // It is installed in a namespace of its own, as cluster-wide operators
    // usually are: its ClusterRole reaches this namespace.
    let wide_env = Env::new("e2e-wide").await;
    let _wide_op = Operator::install(
        &wide_env,
        "etcd-operator-wide",
        &["clusterWide=true", "memberFailureGrace=5s"],
    )
    .await;
    env.wait_ready("wide", 1, Duration::from_secs(90)).await;
    // Cluster-wide, tenants stay apart: an EtcdBackup may not point the
    // operator at etcd endpoints outside its namespace's EtcdClusters (the
    // operator would stream another tenant's database to this one's bucket).
    let backups: Api<EtcdBackup> = env.api();
    let foreign: EtcdBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
        "metadata": {"name": "foreign", "namespace": env.ns,
                     "annotations": {"etcd.database.coreos.com/scope": "clusterwide"}},
        "spec": {"etcdEndpoints": ["http://wide-abc.wide.e2e-other.svc:2379"],
                 "storageType": "S3",
                 "s3": {"path": "b/k", "awsSecret": "aws"}},
    }))
    .unwrap();
    backups
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let reason = eventually(
        "the foreign endpoints refused",
        Duration::from_secs(60),
        || async { backups.get("foreign").await.ok()?.status?.reason },
    )
    .await;
    assert!(
        reason.contains("not a member of an EtcdCluster in namespace")
            && reason.contains("wide.e2e-other.svc"),
        "{reason}"
    );
    backups
        .delete("foreign", &DeleteParams::default())
        .await
        .unwrap();
    let wide_reporters: Vec<String> = env
        .events_for("example")
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    let namespaced: Vec<String> = op
        .pods()
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        wide_reporters.iter().all(|r| namespaced.contains(r)),
        "{wide_reporters:?} (the namespaced operator is {namespaced:?})"
    );

    // PVC-backed members: a deleted Pod comes back under the same name and
    // rejoins with its data instead of being replaced.
    let mut durable = env.cluster("durable", 3, serde_json::json!({}));
    durable.spec.pod = Some(
        serde_json::from_value(serde_json::json!({
            "persistentVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
            // The node's hostPath provisioner makes root-only (0750)
            // directories, and hostPath volumes ignore fsGroup: members on
            // such storage run as root, which the policy must say.
            "securityContext": {"runAsUser": 0},
        }))
        .unwrap(),
    );
    clusters
        .create(&PostParams::default(), &durable)
        .await
        .unwrap();
    let status = env.wait_ready("durable", 3, Duration::from_secs(120)).await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = env.api();
    let claim_names: Vec<String> = claims
        .list(&ListParams::default().labels("etcd_cluster=durable"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let mut members = status.members.ready.clone();
    members.sort();
    let mut sorted_claims = claim_names.clone();
    sorted_claims.sort();
    assert_eq!(sorted_claims, members, "one PVC per member, named after it");
    let mut kv = env.etcd_of("durable").await;
    kv.put("/durable", "kept", None).await.unwrap();
    let restarted = members[0].clone();
    let pods: Api<Pod> = env.api();
    let old_uid = pods.get(&restarted).await.unwrap().metadata.uid;
    pods.delete(&restarted, &DeleteParams::default())
        .await
        .unwrap();
    env.wait_event("durable", "MemberRestarted", Duration::from_secs(90))
        .await;
    let status = env.wait_ready("durable", 3, Duration::from_secs(120)).await;
    let mut after = status.members.ready.clone();
    after.sort();
    assert_eq!(after, members, "the same members, none replaced");
    let reasons = env.reasons_for("durable").await;
    assert!(
        !reasons.iter().any(|r| r == "MemberReplaced"),
        "{reasons:?}"
    );
    // The restarted member itself serves the data (it kept its volume).
    // The cluster status can report it ready before the new Pod's own
    // status is written, so wait for the new Pod (another uid) to be Ready.
    let ip = eventually(
        "the restarted Pod Ready with an IP",
        Duration::from_secs(60),
        || async {
            let pod = pods.get(&restarted).await.ok()?;
            if pod.metadata.uid == old_uid {
                return None;
            }
            let status = pod.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(status.pod_ip?)
        },
    )
    .await;
    let mut kv = etcd(&[format!("http://{ip}:2379")]).await;
    let local = etcd_client::GetOptions::new().with_serializable();
    assert_eq!(
        kv.get("/durable", Some(local)).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "kept"
    );

    // A majority of the PVC members' Pods deleted at once (quorum lost for
    // a while): they come back on their volumes, the same members, the data
    // kept, nothing recovered or replaced.
    let ids = env.member_ids("durable").await;
    let mut old_uids = Vec::new();
    for member in &members[1..] {
        old_uids.push(pods.get(member).await.unwrap().metadata.uid);
        pods.delete(member, &DeleteParams::default()).await.unwrap();
    }
    let status = eventually(
        "the deleted majority back",
        Duration::from_secs(240),
        || async {
            let s = env.wait_ready("durable", 3, Duration::from_secs(240)).await;
            let new = env
                .member_pods("durable")
                .await
                .iter()
                .filter(|p| !old_uids.contains(&p.metadata.uid))
                .count();
            (new == 3).then_some(s)
        },
    )
    .await;
    let mut after = status.members.ready.clone();
    after.sort();
    assert_eq!(after, members, "the same members, none replaced");
    assert_eq!(env.member_ids("durable").await, ids);
    let reasons = env.reasons_for("durable").await;
    assert!(
        !reasons
            .iter()
            .any(|r| r == "MemberReplaced" || r.starts_with("QuorumRecovered")),
        "{reasons:?}"
    );
    let mut kv = env.etcd_of("durable").await;
    assert_eq!(
        kv.get("/durable", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "kept"
    );

    new_flags_restart_pvc_members_in_place(&env, &clusters).await;

    // Deleting the EtcdCluster takes its Pods, PVCs, Services and budget
    // with it: owner references, collected by the garbage collector.
    clusters
        .delete("durable", &DeleteParams::default())
        .await
        .unwrap();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = env.api();
    let budgets: Api<PodDisruptionBudget> = env.api();
    eventually(
        "everything of durable collected",
        Duration::from_secs(60),
        || async {
            let pods = env.member_pods("durable").await.len();
            let pvcs = claims
                .list(&ListParams::default().labels("etcd_cluster=durable"))
                .await
                .ok()?
                .items
                .len();
            let peer = services.get_opt("durable").await.ok()?;
            let client = services.get_opt("durable-client").await.ok()?;
            let pdb = budgets.get_opt("durable").await.ok()?;
            (pods == 0 && pvcs == 0 && peer.is_none() && client.is_none() && pdb.is_none())
                .then_some(())
        },
    )
    .await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Delete EtcdRestore `name` and wait until the API server no longer has it
/// (an in-place EtcdRestore is named after its cluster, so the next one
/// needs the name).
async fn delete_and_wait_gone(restores: &Api<EtcdRestore>, name: &str) {
    restores
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        &format!("EtcdRestore {name} gone"),
        Duration::from_secs(30),
        || async {
            restores
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// A plugin ConfigMap of `kind` (`storage` or `policy`).
fn plugin_config_map(ns: &str, kind: &str, name: &str, key: &str, bytes: Vec<u8>) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"etcd.database.coreos.com/plugin": kind}},
        "binaryData": {key: k8s_openapi::ByteString(bytes)},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_go_to_s3_through_a_plugin_configmap_that_hot_reloads_and_restore() {
    // Restricted: restored members' init containers and the restore probe
    // meet the Pod Security `restricted` level too.
    let env = Env::restricted("e2e-backup").await;
    let node = Node::shared();
    // The S3 test server on the node's address, where Pods reach the host.
    let moto = Moto::start_on(&node.ip);
    moto.create_bucket("etcd-backups");
    let allow = format!("plugins.allowNetworks={{{}/32}}", node.ip);
    let op = Operator::install(&env, "etcd-operator", &[&allow, "memberFailureGrace=5s"]).await;

    // A broken component first: it is rejected with an Event, and what
    // names it is blocked, saying which plugin.
    let maps: Api<ConfigMap> = env.api();
    let go_policy = |bytes: Vec<u8>| {
        plugin_config_map(
            &env.ns,
            "policy",
            "go-policy",
            "count-age.wasm.gz",
            gzip(&bytes),
        )
    };
    maps.create(
        &PostParams::default(),
        &go_policy(b"not a component".to_vec()),
    )
    .await
    .unwrap();
    env.wait_event("go-policy", "PluginRejected", Duration::from_secs(60))
        .await;
    // A working component that names itself `s3` may not replace the bundled
    // s3 plugin (it would receive every S3 credential and snapshot): refused
    // with an Event, and the S3 backups below still land in moto.
    let impostor = gzip(&std::fs::read(crate::common::plugin_path("faults")).unwrap());
    maps.create(
        &PostParams::default(),
        &plugin_config_map(&env.ns, "storage", "s3-impostor", "s3.wasm.gz", impostor),
    )
    .await
    .unwrap();
    env.wait_event(
        "s3-impostor",
        "PluginOverrideRefused",
        Duration::from_secs(60),
    )
    .await;

    env.api::<EtcdCluster>()
        .create(
            &PostParams::default(),
            &env.cluster("example", 1, serde_json::json!({})),
        )
        .await
        .unwrap();
    env.wait_ready("example", 1, Duration::from_secs(120)).await;
    let mut kv = env.etcd_of("example").await;
    for i in 0..100 {
        kv.put(format!("/k8s/{i:03}"), format!("value-{i}"), None)
            .await
            .unwrap();
    }

    create_aws_secret(&env, &moto).await;
    // CoreOS YAML: a one-shot backup of the cluster to S3, through the
    // image's bundled s3 plugin.
    let backups: Api<EtcdBackup> = env.api();
    let done = one_shot_s3_backup(&env, &moto, "to-s3", "example", "k8s/example.db").await;
    assert_eq!(done.last_backup_key.as_deref(), Some("k8s/example.db"));
    assert!(done.last_backup_size.unwrap_or(0) > 0);
    assert!(
        moto.keys("etcd-backups")
            .contains(&"k8s/example.db".to_string())
    );
    let metrics = eventually("the backup counted", Duration::from_secs(30), || async {
        let (_, metrics) = op.get("/metrics").await?;
        metrics
            .contains(r#"etcd_operator_backups_total{namespace="e2e-backup",backup="to-s3",result="succeeded"} 1"#)
            .then_some(metrics)
    })
    .await;
    assert!(
        metrics.contains(r#"etcd_operator_plugin_call_duration_seconds_count{plugin="s3",function="complete",result="ok"}"#),
        "{metrics}"
    );

    // A periodic EtcdBackup whose names come from the backup policy written
    // in Go, shipped gzipped in its ConfigMap (it fits: ≈0.8 MiB). While the
    // ConfigMap holds the broken component, the backup waits on it.
    let dated: EtcdBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
        "metadata": {"name": "dated", "namespace": env.ns},
        "spec": {"etcdCluster": {"name": "example"}, "storageType": "S3",
                 "backupPolicy": {"backupIntervalInSecond": 3600,
                                  "plugin": {"name": "count-age",
                                             "config": {"dated-names": "true", "keep": "3"}}},
                 "s3": {"path": "etcd-backups/k8s/dated", "awsSecret": "aws",
                        "endpoint": moto.endpoint, "forcePathStyle": true}},
    }))
    .unwrap();
    backups
        .create(&PostParams::default(), &dated)
        .await
        .unwrap();
    let reason = eventually(
        "the periodic backup blocked on the count-age plugin",
        Duration::from_secs(60),
        || async {
            let s = backups.get("dated").await.ok()?.status?;
            s.reason.filter(|r| r.contains("count-age") && !s.succeeded)
        },
    )
    .await;
    assert!(reason.contains("plugin"), "{reason}");
    // The real component replaces it: hot-reloaded, no operator restart.
    let real = std::fs::read(crate::common::example_path("count-age")).unwrap();
    maps.replace("go-policy", &PostParams::default(), &go_policy(real))
        .await
        .unwrap();
    env.wait_event("go-policy", "PluginLoaded", Duration::from_secs(120))
        .await;
    let named = eventually(
        "the Go-named periodic backup",
        Duration::from_secs(120),
        || async {
            let s = backups.get("dated").await.ok()?.status?;
            s.succeeded.then_some(s)
        },
    )
    .await;
    // The failure's reason went with it (status is applied whole).
    assert_eq!(named.reason, None, "{named:?}");
    let key = named.last_backup_key.clone().unwrap();
    assert!(
        key.starts_with("k8s/dated.") && key.ends_with(&format!(".r{}.db", named.etcd_revision)),
        "{key}"
    );
    assert!(moto.keys("etcd-backups").contains(&key));
    // Its schedule gauges, for the EtcdBackupStale alert: the last success
    // from status, and the interval.
    let succeeded_at =
        chrono::DateTime::parse_from_rfc3339(named.last_success_date.as_deref().unwrap())
            .unwrap()
            .timestamp();
    let last_success = format!(
        r#"etcd_operator_backup_last_success_timestamp_seconds{{namespace="{}",backup="dated"}} {succeeded_at}"#,
        env.ns
    );
    let metrics = eventually(
        "the backup's last success in the metrics",
        Duration::from_secs(30),
        || async {
            let (_, metrics) = op.get("/metrics").await?;
            metrics.contains(&last_success).then_some(metrics)
        },
    )
    .await;
    assert!(
        metrics.contains(&format!(
            r#"etcd_operator_backup_interval_seconds{{namespace="{}",backup="dated"}} 3600"#,
            env.ns
        )),
        "{metrics}"
    );
    backups.delete("dated", &Default::default()).await.unwrap();

    // Written after the backup: a restore must take the cluster back before it.
    kv.put("/k8s/after-backup", "x", None).await.unwrap();
    let restore = |name: &str, cluster: &str, new_cluster: serde_json::Value| -> EtcdRestore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
            "metadata": {"name": name, "namespace": env.ns},
            "spec": {"etcdCluster": {"name": cluster}, "backupStorageType": "S3",
                     "newCluster": new_cluster,
                     "s3": {"path": "etcd-backups/k8s/example.db", "awsSecret": "aws",
                            "endpoint": moto.endpoint, "forcePathStyle": true}},
        }))
        .unwrap()
    };
    let restores: Api<EtcdRestore> = env.api();
    let completed = |name: &'static str| {
        let restores = restores.clone();
        async move {
            eventually(
                &format!("EtcdRestore {name} Completed"),
                Duration::from_secs(180),
                || async {
                    let s = restores.get(name).await.ok()?.status?;
                    assert_ne!(s.phase.as_deref(), Some("Failed"), "{s:?}");
                    (s.phase.as_deref() == Some("Completed")).then_some(s)
                },
            )
            .await
        }
    };
    // In place: every member replaced from the verified backup.
    let old_pods: Vec<String> = env
        .member_pods("example")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    restores
        .create(
            &PostParams::default(),
            &restore("example", "example", serde_json::Value::Null),
        )
        .await
        .unwrap();
    let done = completed("example").await;
    assert!(done.succeeded);
    // The deleted EtcdBackup's schedule gauges went (within 30 s of its
    // deletion), so it cannot look stale to an alert; its run counters stay.
    let gauges = [
        "etcd_operator_backup_last_success_timestamp_seconds",
        "etcd_operator_backup_interval_seconds",
    ]
    .map(|g| format!(r#"{g}{{namespace="{}",backup="dated"}}"#, env.ns));
    eventually(
        "the deleted backup's gauges gone",
        Duration::from_secs(60),
        || async {
            let (_, metrics) = op.get("/metrics").await?;
            (!gauges.iter().any(|g| metrics.contains(g))).then_some(())
        },
    )
    .await;
    let status = env.wait_ready("example", 1, Duration::from_secs(90)).await;
    assert!(!status.members.ready.iter().any(|m| old_pods.contains(m)));
    let mut kv = env.etcd_of("example").await;
    assert_eq!(
        kv.get("/k8s/042", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "value-42"
    );
    assert!(
        kv.get("/k8s/after-backup", None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
    );
    let pod = &env.member_pods("example").await[0];
    let init: Vec<String> = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        init,
        [
            "check-dns",
            "fetch-snapshot",
            "restore-datadir",
            "remove-snapshot"
        ]
    );
    // The token that fetched the database was never in the Pod, and its
    // Secret is gone once used.
    let spec_text = serde_json::to_string(pod.spec.as_ref().unwrap()).unwrap();
    assert!(!spec_text.contains("SNAPSHOT_TOKEN"), "{spec_text}");
    let member = pod.metadata.name.clone().unwrap();
    let secrets: Api<Secret> = env.api();
    eventually(
        "the used snapshot token's Secret deleted",
        Duration::from_secs(60),
        || async {
            secrets
                .get_opt(&format!("{member}-snapshot-token"))
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Into a new cluster of three, created by the restore.
    restores
        .create(
            &PostParams::default(),
            &restore(
                "copy",
                "copy",
                serde_json::json!({"size": 3, "version": "3.5.17"}),
            ),
        )
        .await
        .unwrap();
    completed("copy").await;
    env.wait_ready("copy", 3, Duration::from_secs(120)).await;
    let spec = env.api::<EtcdCluster>().get("copy").await.unwrap().spec;
    assert_ne!(
        spec.paused,
        Some(true),
        "the restored cluster must be handed back unpaused"
    );
    let mut kv = env.etcd_of("copy").await;
    let all = kv
        .get(
            "/k8s/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(all.count(), 100);

    // A backup that does not exist: refused, the running cluster untouched.
    let mut missing = restore("example", "example", serde_json::Value::Null);
    missing.metadata.name = Some("example".into());
    missing.spec.s3.as_mut().unwrap().path = Some("etcd-backups/k8s/none.db".into());
    delete_and_wait_gone(&restores, "example").await;
    restores
        .create(&PostParams::default(), &missing)
        .await
        .unwrap();
    let reason = eventually("the restore refused", Duration::from_secs(60), || async {
        let s = restores.get("example").await.ok()?.status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s.reason?)
    })
    .await;
    assert!(
        reason.contains("does not exist") && reason.contains("untouched"),
        "{reason}"
    );
    let mut kv = env.etcd_of("example").await;
    assert_eq!(
        kv.get("/k8s/042", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "value-42"
    );

    // A storage plugin that trickles its download (the test-only `faults`
    // plugin, from a ConfigMap): the progress shows in status, and deleting
    // the EtcdRestore stops the download.
    let faults = gzip(&std::fs::read(crate::common::plugin_path("faults")).unwrap());
    maps.create(
        &PostParams::default(),
        &plugin_config_map(
            &env.ns,
            "storage",
            "faults-plugin",
            "faults.wasm.gz",
            faults,
        ),
    )
    .await
    .unwrap();
    env.wait_event("faults-plugin", "PluginLoaded", Duration::from_secs(120))
        .await;
    // (An in-place EtcdRestore is named after its cluster: the refused one
    // above goes first.)
    delete_and_wait_gone(&restores, "example").await;
    let stalled: EtcdRestore = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
        "metadata": {"name": "example", "namespace": env.ns},
        "spec": {"etcdCluster": {"name": "example"}, "backupStorageType": "faults",
                 "plugin": {"path": "x/any",
                            "config": {"fault": "slow-read", "read-ms": "100"}}},
    }))
    .unwrap();
    restores
        .create(&PostParams::default(), &stalled)
        .await
        .unwrap();
    eventually(
        "the stalled restore's progress in status",
        Duration::from_secs(60),
        || async {
            let s = restores.get("example").await.ok()?.status?;
            let read = s.progress.as_ref()?.bytes_read;
            (s.phase.as_deref() == Some("Verifying") && read > 0).then_some(())
        },
    )
    .await;
    restores
        .delete("example", &DeleteParams::default())
        .await
        .unwrap();
    let note = eventually(
        "the stalled restore stopped",
        Duration::from_secs(60),
        || async {
            env.events_for("example")
                .await
                .into_iter()
                .filter_map(|e| e.note)
                .find(|n| n.contains("deleted or changed"))
        },
    )
    .await;
    assert!(note.contains("nothing was restored"), "{note}");

    // Every member Pod deleted at once (emptyDir: the data went with them).
    let pods: Api<Pod> = env.api();
    let delete_all = |cluster: &'static str| {
        let (pods, env) = (pods.clone(), &env);
        async move {
            for p in env.member_pods(cluster).await {
                pods.delete(&p.metadata.name.unwrap(), &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
    };
    // "example" has a backup: it comes back from it instead of empty.
    delete_all("example").await;
    env.wait_event(
        "example",
        "QuorumRecoveredFromBackup",
        Duration::from_secs(120),
    )
    .await;
    env.wait_ready("example", 1, Duration::from_secs(120)).await;
    let mut kv = env.etcd_of("example").await;
    assert_eq!(
        kv.get("/k8s/042", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "value-42"
    );
    // "copy" has none: the operator stops and says so rather than seeding an empty cluster.
    delete_all("copy").await;
    let reason = eventually("copy reported lost", Duration::from_secs(60), || async {
        let s = env.api::<EtcdCluster>().get("copy").await.ok()?.status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s.reason?)
    })
    .await;
    assert!(
        reason.contains("will not start an empty cluster"),
        "{reason}"
    );
    assert!(env.member_pods("copy").await.is_empty());
}

/// The Secret `aws` with `moto`'s credentials, as the CoreOS `awsSecret`.
/// The spec's etcd flags a member Pod runs with: its command ends with
/// them, and its annotation names them.
fn assert_pod_runs_flags(pod: &Pod, flags: &[&str]) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let command = pod.spec.as_ref().unwrap().containers[0]
        .command
        .clone()
        .unwrap_or_default();
    assert_eq!(
        command[command.len() - flags.len()..],
        *flags,
        "{name}: {command:?}"
    );
    let remembered: Vec<String> = serde_json::from_str(
        &pod.metadata.annotations.as_ref().unwrap()["etcd.database.coreos.com/etcd-flags"],
    )
    .unwrap();
    assert_eq!(remembered, flags, "{name}");
}

/// Patch `cluster`'s etcd flags to [`E2E_FLAGS`], and wait for `n`
/// MemberReconfigured Events and the cluster ready again, its Pods all
/// running the flags.
async fn reconfigure(
    env: &Env,
    clusters: &Api<EtcdCluster>,
    cluster: &str,
    n: usize,
) -> etcd_operator::api::EtcdClusterStatus {
    let patch = serde_json::json!({"spec": {
        "quotaBackendBytes": 104857600,
        "etcdOptions": {"snapshot-count": "5000"},
    }});
    clusters
        .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        &format!("{n} members of {cluster} reconfigured"),
        Duration::from_secs(300),
        || async { (env.count_of(cluster, "MemberReconfigured").await >= n).then_some(()) },
    )
    .await;
    let status = eventually(
        &format!("{cluster}'s Pods all on the new flags"),
        Duration::from_secs(180),
        || async {
            let s = env.wait_ready(cluster, 3, Duration::from_secs(180)).await;
            let pods = env.member_pods(cluster).await;
            let all = pods.len() == 3
                && pods.iter().all(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("etcd.database.coreos.com/etcd-flags"))
                });
            all.then_some(s)
        },
    )
    .await;
    for pod in env.member_pods(cluster).await {
        assert_pod_runs_flags(&pod, E2E_FLAGS);
    }
    let events = env.events_for(cluster).await;
    for bad in ["StepFailed", "SpecRefused", "QuorumRecovered"] {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(bad))
            .map(|e| e.note.clone())
            .collect();
        assert!(found.is_empty(), "{bad}: {found:?}");
    }
    status
}

/// What [`reconfigure`]'s patch makes the members run.
const E2E_FLAGS: &[&str] = &["--quota-backend-bytes=104857600", "--snapshot-count=5000"];

/// New etcd flags on members whose data lives in an emptyDir: a new Pod is
/// a new volume, so each member in turn is removed and a fresh one added
/// with the flags; the data stays in the cluster.
async fn new_flags_replace_emptydir_members_one_at_a_time(env: &Env, clusters: &Api<EtcdCluster>) {
    let before = env.member_ids("example").await;
    reconfigure(env, clusters, "example", 3).await;
    let after = env.member_ids("example").await;
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "every member new: {before:?} → {after:?}"
    );
    let mut kv = env.etcd_of("example").await;
    let got = kv.get("/e2e/key", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
}

/// New etcd flags on PVC members: each restarted on its volume, followers
/// first, the same members and the data kept.
async fn new_flags_restart_pvc_members_in_place(env: &Env, clusters: &Api<EtcdCluster>) {
    let ids = env.member_ids("durable").await;
    reconfigure(env, clusters, "durable", 3).await;
    assert_eq!(env.member_ids("durable").await, ids, "the same members");
    let mut kv = env.etcd_of("durable").await;
    assert_eq!(
        kv.get("/durable", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "kept"
    );
}

async fn create_aws_secret(env: &Env, moto: &Moto) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aws", "namespace": env.ns},
        "stringData": {
            "credentials": moto.credentials(),
            "config": "[default]\nregion = us-east-1\n",
        },
    }))
    .unwrap();
    env.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A one-shot EtcdBackup `name` of `cluster` to `etcd-backups/<key>` on
/// moto (CoreOS YAML), waited for until it succeeds.
async fn one_shot_s3_backup(
    env: &Env,
    moto: &Moto,
    name: &str,
    cluster: &str,
    key: &str,
) -> etcd_operator::api::EtcdBackupStatus {
    let backup: EtcdBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
        "metadata": {"name": name, "namespace": env.ns},
        "spec": {"etcdCluster": {"name": cluster}, "storageType": "S3",
                 "s3": {"path": format!("etcd-backups/{key}"), "awsSecret": "aws",
                        "endpoint": moto.endpoint, "forcePathStyle": true}},
    }))
    .unwrap();
    let backups: Api<EtcdBackup> = env.api();
    backups
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    eventually(
        &format!("EtcdBackup {name} to succeed"),
        Duration::from_secs(120),
        || async {
            let s = backups.get(name).await.ok()?.status?;
            s.succeeded.then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_whose_pods_cannot_fetch_the_snapshot_is_refused_before_anything_is_deleted() {
    let env = Env::new("e2e-probe").await;
    let node = Node::shared();
    let moto = Moto::start_on(&node.ip);
    moto.create_bucket("etcd-backups");
    let allow = format!("plugins.allowNetworks={{{}/32}}", node.ip);
    // Member Pods fetch snapshots from --advertise-url: here each Pod's own
    // loopback, where nothing listens, as when a NetworkPolicy or a wrong
    // address keeps Pods from the operator.
    let _op = Operator::install(
        &env,
        "etcd-operator",
        &[&allow, "extraArgs[0]=--advertise-url=http://127.0.0.1:9"],
    )
    .await;
    env.api::<EtcdCluster>()
        .create(
            &PostParams::default(),
            &env.cluster("probed", 1, serde_json::json!({})),
        )
        .await
        .unwrap();
    env.wait_ready("probed", 1, Duration::from_secs(120)).await;
    let mut kv = env.etcd_of("probed").await;
    kv.put("/probe/kept", "yes", None).await.unwrap();
    create_aws_secret(&env, &moto).await;
    one_shot_s3_backup(&env, &moto, "probed-b", "probed", "probe/probed.db").await;
    let pods = || async {
        env.member_pods("probed")
            .await
            .into_iter()
            .map(|p| (p.metadata.name, p.metadata.uid))
            .collect::<Vec<_>>()
    };
    let before = pods().await;

    let restore: EtcdRestore = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
        "metadata": {"name": "probed", "namespace": env.ns},
        "spec": {"etcdCluster": {"name": "probed"}, "backupStorageType": "S3",
                 "s3": {"path": "etcd-backups/probe/probed.db", "awsSecret": "aws",
                        "endpoint": moto.endpoint, "forcePathStyle": true}},
    }))
    .unwrap();
    let restores: Api<EtcdRestore> = env.api();
    restores
        .create(&PostParams::default(), &restore)
        .await
        .unwrap();
    let failed = eventually(
        "the restore refused by its probe",
        Duration::from_secs(240),
        || async {
            let s = restores.get("probed").await.ok()?.status?;
            (s.phase.as_deref() == Some("Failed")).then_some(s)
        },
    )
    .await;
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason
            .contains("could not fetch from the operator's snapshot endpoint http://127.0.0.1:9/")
            && reason.contains("left untouched"),
        "{failed:?}"
    );
    // Nothing was deleted: the same Pod, its data, and no probe left over.
    assert_eq!(pods().await, before);
    env.wait_ready("probed", 1, Duration::from_secs(60)).await;
    let mut kv = env.etcd_of("probed").await;
    assert_eq!(
        kv.get("/probe/kept", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "yes"
    );
    let probes = env
        .api::<Pod>()
        .list(&ListParams::default().labels(etcd_operator::kubernetes::members::LABEL_PROBE))
        .await
        .unwrap();
    assert!(
        probes.items.is_empty(),
        "{} probe Pods left",
        probes.items.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_runs_with_the_operator_presenting_its_client_certificate() {
    let env = Env::restricted("e2e-tls").await;

    // Certificates as the CoreOS TLS guide lays them out: members named by
    // a wildcard of the peer Service, plus the client Service.
    let scratch = scratch();
    let pki = scratch.path();
    make_ca(pki, "etcd-test-ca");
    issue_cert(
        pki,
        "member",
        "/CN=etcd-member",
        // etcd checks a peer's client certificate against the reverse DNS
        // name of its address, which cluster DNS answers in full
        // (`<member>.<cluster>.<namespace>.svc.cluster.local`).
        "subjectAltName=DNS:*.secure.e2e-tls.svc,DNS:*.secure.e2e-tls.svc.cluster.local,\
         DNS:secure-client.e2e-tls.svc,DNS:localhost\n\
         extendedKeyUsage=serverAuth,clientAuth",
    );
    issue_cert(
        pki,
        "operator",
        "/CN=etcd-operator",
        "extendedKeyUsage=clientAuth",
    );
    let read = |f: &str| k8s_openapi::ByteString(std::fs::read(pki.join(f)).unwrap());
    let secrets: Api<Secret> = env.api();
    for (name, prefix, cert, key) in [
        ("etcd-peer-tls", "peer", "member.pem", "member-key.pem"),
        ("etcd-server-tls", "server", "member.pem", "member-key.pem"),
        (
            "etcd-client-tls",
            "etcd-client",
            "operator.pem",
            "operator-key.pem",
        ),
    ] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": env.ns},
            "data": {
                format!("{prefix}.crt"): read(cert),
                format!("{prefix}.key"): read(key),
                format!("{prefix}-ca.crt"): read("ca.pem"),
            },
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let _op = Operator::install(&env, "etcd-operator", &[]).await;
    let mut secure = env.cluster("secure", 3, serde_json::json!({}));
    secure.spec.tls = Some(
        serde_json::from_value(serde_json::json!({"static": {
            "member": {"peerSecret": "etcd-peer-tls", "serverSecret": "etcd-server-tls"},
            "operatorSecret": "etcd-client-tls",
        }}))
        .unwrap(),
    );
    env.api::<EtcdCluster>()
        .create(&PostParams::default(), &secure)
        .await
        .unwrap();
    let status = env.wait_ready("secure", 3, Duration::from_secs(120)).await;
    assert!(
        status
            .client_urls
            .iter()
            .all(|u| u.starts_with("https://") && u.ends_with(".secure.e2e-tls.svc:2379")),
        "{:?}",
        status.client_urls
    );
    let pod = &env.member_pods("secure").await[0];
    // Admitted under `restricted`, as a non-root user, and not BestEffort.
    let status_of = pod.status.as_ref().unwrap();
    assert_eq!(status_of.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(
        pod.spec
            .as_ref()
            .unwrap()
            .security_context
            .as_ref()
            .unwrap()
            .run_as_user,
        Some(etcd_operator::kubernetes::members::MEMBER_UID)
    );
    let cmd = pod.spec.as_ref().unwrap().containers[0]
        .command
        .clone()
        .unwrap();
    assert!(
        cmd.contains(&"--client-cert-auth=true".to_string()),
        "{cmd:?}"
    );
    assert!(
        cmd.contains(&"--peer-client-cert-auth=true".to_string()),
        "{cmd:?}"
    );

    // A client without a certificate is refused; with the operator's it works.
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let endpoint = [format!("https://{ip}:2379")];
    let tls = |with_identity: bool| {
        let mut t = etcd_client::TlsOptions::new()
            .domain_name("secure-client.e2e-tls.svc")
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem").0));
        if with_identity {
            t = t.identity(etcd_client::Identity::from_pem(
                read("operator.pem").0,
                read("operator-key.pem").0,
            ));
        }
        etcd_client::ConnectOptions::new()
            .with_tls(t)
            .with_timeout(Duration::from_secs(5))
    };
    let anonymous = async {
        let mut c = etcd_client::Client::connect(endpoint.clone(), Some(tls(false))).await?;
        c.put("/secure", "no", None).await
    };
    assert!(
        anonymous.await.is_err(),
        "a client without a certificate was served"
    );
    let mut c = etcd_client::Client::connect(endpoint, Some(tls(true)))
        .await
        .unwrap();
    c.put("/secure", "yes", None).await.unwrap();
    let got = c.get("/secure", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "yes");
}
