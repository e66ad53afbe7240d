//! The operator binary (`etcd-operator run`) against a real kube-apiserver,
//! its member Pods run as local etcd processes by the test pod runner.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::apiserver::ApiServer;
use crate::common::{Moto, Process, free_port, issue_cert, make_ca, plugin_bytes, tools};
use crate::install_crds;
use crate::pod_runner::PodRunner;

const NS: &str = "e2e";

/// The operator binary, killed on drop; its log is printed if a test fails.
struct Operator {
    _process: Process,
    log: PathBuf,
    metrics: String,
}

impl Operator {
    /// Start `etcd-operator run`, resolving member DNS names through the
    /// runner's hosts file, as an in-cluster operator does through cluster DNS.
    fn start(
        kubeconfig: &Path,
        runner: &PodRunner,
        dir: &Path,
        name: &str,
        args: &[&str],
    ) -> Operator {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(runner.hosts_file())
            .arg(env!("CARGO_BIN_EXE_etcd-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", NS])
            .arg(format!("--metrics-address=127.0.0.1:{port}"))
            // Restoring Pods fetch snapshots from here (the runner's
            // processes share the host's loopback).
            .arg(format!("--advertise-url=http://127.0.0.1:{port}"))
            .arg("--work-dir")
            .arg(dir.join(format!("{name}-work")))
            .arg("--etcd-dir")
            .arg(tools().join("etcd"))
            .args(["--member-failure-grace", "5s"])
            .args(args)
            .env("MY_POD_NAME", name)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Operator {
            _process: Process(child),
            log,
            metrics: format!("127.0.0.1:{port}"),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// GET a path of the metrics/health server: status and body.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(&self.metrics).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", &self.metrics)
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
            eprintln!(
                "operator log tail ({}):\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// Poll `check` until it returns Some, or fail after `timeout` saying `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn cluster(name: &str, size: i32, annotations: serde_json::Value) -> EtcdCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"size": size, "version": "3.5.17"},
    }))
    .unwrap()
}

async fn member_pods(client: &kube::Client, cluster: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
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
async fn wait_ready(
    client: &kube::Client,
    name: &str,
    size: usize,
    timeout: Duration,
) -> etcd_operator::api::EtcdClusterStatus {
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    eventually(
        &format!("EtcdCluster {name} Running with {size} ready members"),
        timeout,
        || async {
            let c = api.get(name).await.ok()?;
            let s = c.status?;
            let pods = member_pods(client, name).await.len();
            (s.phase.as_deref() == Some("Running")
                && s.members.ready.len() == size
                && s.members.unready.is_empty()
                && pods == size)
                .then_some(s)
        },
    )
    .await
}

async fn events_for(client: &kube::Client, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// A client of a cluster through its members' Pod IPs (the test process,
/// unlike the operator, does not resolve the members' DNS names).
/// The reasons of the Events about `name`.
async fn reasons_for(client: &kube::Client, name: &str) -> Vec<String> {
    events_for(client, name)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Wait for an Event with `reason` about `name`.
async fn wait_event(client: &kube::Client, name: &str, reason: &str, timeout: Duration) {
    eventually(
        &format!("a {reason} Event about {name}"),
        timeout,
        || async {
            reasons_for(client, name)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        },
    )
    .await
}

async fn etcd_of(client: &kube::Client, cluster: &str) -> etcd_client::Client {
    let urls: Vec<String> = member_pods(client, cluster)
        .await
        .into_iter()
        .filter_map(|p| p.status?.pod_ip)
        .map(|ip| format!("http://{ip}:2379"))
        .collect();
    etcd(&urls).await
}

async fn etcd(urls: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(urls, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_runs_scales_heals_and_scope_is_honoured_as_the_service_account() {
    let server = ApiServer::start().await;
    let admin = server.client().await;
    install_crds(&admin).await;
    create_namespace(&admin, NS).await;
    // The chart, rendered for this namespace, applies (Deployment included;
    // nothing runs it here) and its ServiceAccount's rules are all the
    // operator gets: a token of that ServiceAccount, not admin.
    crate::deploy::apply_all(&admin, &crate::deploy::render(NS, &[]), NS).await;
    let kubeconfig = server.service_account_kubeconfig(NS, "etcd-operator").await;
    let runner = PodRunner::start(admin.clone(), NS, &server.dir.path().join("pods"));
    let op = Operator::start(&kubeconfig, &runner, server.dir.path(), "operator-ns", &[]);
    let clusters: Api<EtcdCluster> = Api::namespaced(admin.clone(), NS);

    // The clusterwide-annotated cluster is not this namespaced operator's.
    clusters
        .create(
            &PostParams::default(),
            &cluster(
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
            &cluster("example", 3, serde_json::json!({})),
        )
        .await
        .unwrap();
    let status = wait_ready(&admin, "example", 3, Duration::from_secs(120)).await;
    assert_eq!(status.service_name.as_deref(), Some("example-client"));
    assert_eq!(status.client_port, Some(2379));

    // Both Services, the budget and owner references, as CoreOS laid them out.
    let services: Api<Service> = Api::namespaced(admin.clone(), NS);
    let peer = services.get("example").await.unwrap().spec.unwrap();
    assert_eq!(peer.cluster_ip.as_deref(), Some("None"));
    let ports: Vec<i32> = peer.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [2379, 2380]);
    let client_svc = services.get("example-client").await.unwrap().spec.unwrap();
    assert_eq!(client_svc.ports.unwrap()[0].port, 2379);
    assert_eq!(client_svc.selector.unwrap()["etcd_cluster"], "example");
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), NS)
        .get("example")
        .await
        .unwrap();
    let uid = clusters.get("example").await.unwrap().metadata.uid.unwrap();
    for pod in member_pods(&admin, "example").await {
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("EtcdCluster", uid.as_str())
        );
        assert_eq!(pod.spec.unwrap().subdomain.as_deref(), Some("example"));
    }
    let reasons = reasons_for(&admin, "example").await;
    assert!(reasons.iter().any(|r| r == "ClusterSeeded"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "MemberAdded"), "{reasons:?}");

    let mut kv = etcd_of(&admin, "example").await;
    kv.put("/e2e/key", "kept", None).await.unwrap();

    // Scale 3 → 5 → 3.
    let size = |n: i32| Patch::Merge(serde_json::json!({"spec": {"size": n}}));
    clusters
        .patch("example", &PatchParams::default(), &size(5))
        .await
        .unwrap();
    wait_ready(&admin, "example", 5, Duration::from_secs(120)).await;
    clusters
        .patch("example", &PatchParams::default(), &size(3))
        .await
        .unwrap();
    let status = wait_ready(&admin, "example", 3, Duration::from_secs(120)).await;

    // Delete a member Pod: it is replaced and the data is still there.
    let victim = status.members.ready[0].clone();
    Api::<Pod>::namespaced(admin.clone(), NS)
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted member replaced",
        Duration::from_secs(120),
        || async {
            let s = wait_ready(&admin, "example", 3, Duration::from_secs(120)).await;
            (!s.members.ready.contains(&victim)).then_some(s)
        },
    )
    .await;
    let mut kv = etcd_of(&admin, "example").await;
    let got = kv.get("/e2e/key", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
    let reasons = reasons_for(&admin, "example").await;
    assert!(reasons.iter().any(|r| r == "MemberReplaced"), "{reasons:?}");

    // Metrics and health (a gauge follows the latest reconcile: poll it).
    let ready_gauge = r#"etcd_operator_cluster_ready_members{namespace="e2e",cluster="example"} 3"#;
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
    assert!(member_pods(&admin, "wide").await.is_empty());
    // ...until a --cluster-wide operator runs (as the ServiceAccount of the
    // chart rendered with clusterWide=true): it manages that one only.
    let wide = crate::deploy::render_release("etcd-operator-wide", NS, &["clusterWide=true"]);
    crate::deploy::apply_all(&admin, &wide, NS).await;
    let wide_config = server
        .service_account_kubeconfig(NS, "etcd-operator-wide")
        .await;
    let _wide_op = Operator::start(
        &wide_config,
        &runner,
        server.dir.path(),
        "operator-wide",
        &[
            "--cluster-wide",
            "--lease-name",
            "etcd-operator-clusterwide",
        ],
    );
    wait_ready(&admin, "wide", 1, Duration::from_secs(90)).await;
    let wide_reporters: Vec<String> = events_for(&admin, "example")
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(
        wide_reporters.iter().all(|r| r == "operator-ns"),
        "{wide_reporters:?}"
    );

    // PVC-backed members: a deleted Pod comes back under the same name and
    // rejoins with its data instead of being replaced.
    let mut durable = cluster("durable", 3, serde_json::json!({}));
    durable.spec.pod = Some(
        serde_json::from_value(serde_json::json!({
            "persistentVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }))
        .unwrap(),
    );
    clusters
        .create(&PostParams::default(), &durable)
        .await
        .unwrap();
    let status = wait_ready(&admin, "durable", 3, Duration::from_secs(120)).await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(admin.clone(), NS);
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
    let mut kv = etcd_of(&admin, "durable").await;
    kv.put("/durable", "kept", None).await.unwrap();
    let restarted = members[0].clone();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let old_uid = pods.get(&restarted).await.unwrap().metadata.uid;
    pods.delete(&restarted, &DeleteParams::default())
        .await
        .unwrap();
    wait_event(
        &admin,
        "durable",
        "MemberRestarted",
        Duration::from_secs(90),
    )
    .await;
    let status = wait_ready(&admin, "durable", 3, Duration::from_secs(120)).await;
    let mut after = status.members.ready.clone();
    after.sort();
    assert_eq!(after, members, "the same members, none replaced");
    let reasons = reasons_for(&admin, "durable").await;
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

    // Deleting the EtcdCluster takes its Pods, PVCs, Services and budget
    // with it: owner references, collected by the garbage collector.
    clusters
        .delete("durable", &DeleteParams::default())
        .await
        .unwrap();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(admin.clone(), NS);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), NS);
    eventually(
        "everything of durable collected",
        Duration::from_secs(60),
        || async {
            let pods = member_pods(&admin, "durable").await.len();
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

fn plugin_config_map(name: &str, key: &str, bytes: Vec<u8>) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"etcd.database.coreos.com/plugin": "storage"}},
        "binaryData": {key: k8s_openapi::ByteString(bytes)},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_go_to_s3_through_a_plugin_configmap_that_hot_reloads_and_restore() {
    let moto = Moto::start();
    moto.create_bucket("etcd-backups");
    let server = ApiServer::start().await;
    let admin = server.client().await;
    install_crds(&admin).await;
    create_namespace(&admin, NS).await;
    let runner = PodRunner::start(admin.clone(), NS, &server.dir.path().join("pods"));

    // A broken component first: it is rejected with an Event.
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    maps.create(
        &PostParams::default(),
        &plugin_config_map("storage-plugins", "s3.wasm.gz", gzip(b"not a component")),
    )
    .await
    .unwrap();
    // No bundled plugins: only what the ConfigMaps carry.
    let op = Operator::start(
        &server.admin_kubeconfig(),
        &runner,
        server.dir.path(),
        "operator",
        &["--allow-network", "127.0.0.1/32", "--leader-elect=false"],
    );
    wait_event(
        &admin,
        "storage-plugins",
        "PluginRejected",
        Duration::from_secs(60),
    )
    .await;

    Api::<EtcdCluster>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &cluster("example", 1, serde_json::json!({})),
        )
        .await
        .unwrap();
    wait_ready(&admin, "example", 1, Duration::from_secs(90)).await;
    let mut kv = etcd_of(&admin, "example").await;
    for i in 0..100 {
        kv.put(format!("/k8s/{i:03}"), format!("value-{i}"), None)
            .await
            .unwrap();
    }

    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aws", "namespace": NS},
        "stringData": {
            "credentials": Moto::credentials(),
            "config": "[default]\nregion = us-east-1\n",
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // CoreOS YAML: a one-shot backup of the cluster to S3.
    let backup: EtcdBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
        "metadata": {"name": "to-s3", "namespace": NS},
        "spec": {"etcdCluster": {"name": "example"}, "storageType": "S3",
                 "s3": {"path": "etcd-backups/k8s/example.db", "awsSecret": "aws",
                        "endpoint": moto.endpoint, "forcePathStyle": true}},
    }))
    .unwrap();
    let backups: Api<EtcdBackup> = Api::namespaced(admin.clone(), NS);
    backups
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    // The broken plugin cannot run it; the status says which plugin.
    let reason = eventually(
        "the backup blocked on the s3 plugin",
        Duration::from_secs(60),
        || async {
            let s = backups.get("to-s3").await.ok()?.status?;
            s.reason.filter(|r| r.contains("s3") && !s.succeeded)
        },
    )
    .await;
    assert!(reason.contains("plugin"), "{reason}");

    // Replace the ConfigMap with the real plugin: no operator restart.
    maps.replace(
        "storage-plugins",
        &PostParams::default(),
        &plugin_config_map("storage-plugins", "s3.wasm.gz", gzip(&plugin_bytes("s3"))),
    )
    .await
    .unwrap();
    let done = eventually(
        "the backup to succeed",
        Duration::from_secs(120),
        || async {
            let s = backups.get("to-s3").await.ok()?.status?;
            s.succeeded.then_some(s)
        },
    )
    .await;
    assert_eq!(done.last_backup_key.as_deref(), Some("k8s/example.db"));
    assert!(done.last_backup_size.unwrap_or(0) > 0);
    assert!(
        moto.keys("etcd-backups")
            .contains(&"k8s/example.db".to_string())
    );
    let reasons = reasons_for(&admin, "storage-plugins").await;
    assert!(reasons.iter().any(|r| r == "PluginLoaded"), "{reasons:?}");
    let (_, metrics) = op.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(
            r#"etcd_operator_backups_total{namespace="e2e",backup="to-s3",result="succeeded"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"etcd_operator_plugin_call_duration_seconds_count{plugin="s3",function="complete",result="ok"}"#),
        "{metrics}"
    );

    // A backup policy written in Go, shipped gzipped in its own ConfigMap (it
    // fits: ≈0.8 MiB), names the backups of a periodic EtcdBackup.
    let go_policy = crate::common::example_path("count-age");
    let mut map = plugin_config_map(
        "go-policy",
        "count-age.wasm.gz",
        gzip(&std::fs::read(go_policy).unwrap()),
    );
    map.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("etcd.database.coreos.com/plugin".into(), "policy".into());
    maps.create(&PostParams::default(), &map).await.unwrap();
    wait_event(
        &admin,
        "go-policy",
        "PluginLoaded",
        Duration::from_secs(120),
    )
    .await;
    let dated: EtcdBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
        "metadata": {"name": "dated", "namespace": NS},
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
    let named = eventually(
        "the Go-named periodic backup",
        Duration::from_secs(120),
        || async {
            let s = backups.get("dated").await.ok()?.status?;
            s.succeeded.then_some(s)
        },
    )
    .await;
    let key = named.last_backup_key.clone().unwrap();
    assert!(
        key.starts_with("k8s/dated.") && key.ends_with(&format!(".r{}.db", named.etcd_revision)),
        "{key}"
    );
    assert!(moto.keys("etcd-backups").contains(&key));
    backups.delete("dated", &Default::default()).await.unwrap();

    // Written after the backup: a restore must take the cluster back before it.
    kv.put("/k8s/after-backup", "x", None).await.unwrap();
    let restore = |name: &str, cluster: &str, new_cluster: serde_json::Value| -> EtcdRestore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"etcdCluster": {"name": cluster}, "backupStorageType": "S3",
                     "newCluster": new_cluster,
                     "s3": {"path": "etcd-backups/k8s/example.db", "awsSecret": "aws",
                            "endpoint": moto.endpoint, "forcePathStyle": true}},
        }))
        .unwrap()
    };
    let restores: Api<EtcdRestore> = Api::namespaced(admin.clone(), NS);
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
    let old_pods: Vec<String> = member_pods(&admin, "example")
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
    let status = wait_ready(&admin, "example", 1, Duration::from_secs(90)).await;
    assert!(!status.members.ready.iter().any(|m| old_pods.contains(m)));
    let mut kv = etcd_of(&admin, "example").await;
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
    let pod = &member_pods(&admin, "example").await[0];
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
        ["fetch-snapshot", "restore-datadir", "remove-snapshot"]
    );

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
    wait_ready(&admin, "copy", 3, Duration::from_secs(120)).await;
    let spec = Api::<EtcdCluster>::namespaced(admin.clone(), NS)
        .get("copy")
        .await
        .unwrap()
        .spec;
    assert_ne!(
        spec.paused,
        Some(true),
        "the restored cluster must be handed back unpaused"
    );
    let mut kv = etcd_of(&admin, "copy").await;
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
    restores
        .delete("example", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the old EtcdRestore gone",
        Duration::from_secs(30),
        || async {
            restores
                .get_opt("example")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
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
    let mut kv = etcd_of(&admin, "example").await;
    assert_eq!(
        kv.get("/k8s/042", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "value-42"
    );

    // Every member Pod deleted at once (emptyDir: the data went with them).
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let delete_all = |cluster: &'static str| {
        let (pods, admin) = (pods.clone(), admin.clone());
        async move {
            for p in member_pods(&admin, cluster).await {
                pods.delete(&p.metadata.name.unwrap(), &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
    };
    // "example" has a backup: it comes back from it instead of empty.
    delete_all("example").await;
    wait_event(
        &admin,
        "example",
        "QuorumRecoveredFromBackup",
        Duration::from_secs(120),
    )
    .await;
    wait_ready(&admin, "example", 1, Duration::from_secs(120)).await;
    let mut kv = etcd_of(&admin, "example").await;
    assert_eq!(
        kv.get("/k8s/042", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "value-42"
    );
    // "copy" has none: the operator stops and says so rather than seeding an empty cluster.
    delete_all("copy").await;
    let reason = eventually("copy reported lost", Duration::from_secs(60), || async {
        let s = Api::<EtcdCluster>::namespaced(admin.clone(), NS)
            .get("copy")
            .await
            .ok()?
            .status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s.reason?)
    })
    .await;
    assert!(
        reason.contains("will not start an empty cluster"),
        "{reason}"
    );
    assert!(member_pods(&admin, "copy").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_runs_with_the_operator_presenting_its_client_certificate() {
    let server = ApiServer::start().await;
    let admin = server.client().await;
    install_crds(&admin).await;
    create_namespace(&admin, NS).await;
    let runner = PodRunner::start(admin.clone(), NS, &server.dir.path().join("pods"));

    // Certificates as the CoreOS TLS guide lays them out: members named by
    // a wildcard of the peer Service, plus the client Service.
    let pki = server.dir.path().join("etcd-pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "etcd-test-ca");
    issue_cert(
        &pki,
        "member",
        "/CN=etcd-member",
        "subjectAltName=DNS:*.secure.e2e.svc,DNS:secure-client.e2e.svc,DNS:localhost\n\
         extendedKeyUsage=serverAuth,clientAuth",
    );
    issue_cert(
        &pki,
        "operator",
        "/CN=etcd-operator",
        "extendedKeyUsage=clientAuth",
    );
    let read = |f: &str| k8s_openapi::ByteString(std::fs::read(pki.join(f)).unwrap());
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
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
            "metadata": {"name": name, "namespace": NS},
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
    let _op = Operator::start(
        &server.admin_kubeconfig(),
        &runner,
        server.dir.path(),
        "operator",
        &["--leader-elect=false"],
    );
    let mut secure = cluster("secure", 3, serde_json::json!({}));
    secure.spec.tls = Some(
        serde_json::from_value(serde_json::json!({"static": {
            "member": {"peerSecret": "etcd-peer-tls", "serverSecret": "etcd-server-tls"},
            "operatorSecret": "etcd-client-tls",
        }}))
        .unwrap(),
    );
    Api::<EtcdCluster>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secure)
        .await
        .unwrap();
    let status = wait_ready(&admin, "secure", 3, Duration::from_secs(120)).await;
    assert!(
        status
            .client_urls
            .iter()
            .all(|u| u.starts_with("https://") && u.ends_with(".secure.e2e.svc:2379")),
        "{:?}",
        status.client_urls
    );
    let pod = &member_pods(&admin, "secure").await[0];
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
            .domain_name("secure-client.e2e.svc")
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
