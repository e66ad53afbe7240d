//! Plugins that reach a running operator on Kubernetes without a new image:
//! the JavaScript WebDAV storage plugin and the Python time-window policy,
//! pushed to a real OCI registry (docker-registry with TLS and htpasswd, on
//! the node's address), declared in the chart's plugin catalog by digest,
//! pulled with a `kubernetes.io/dockerconfigjson` Secret, back up and
//! restore a cluster; after a container restart they load from the cache
//! volume, not compiled again.

use std::time::Duration;

use etcd_operator::api::{EtcdBackup, EtcdRestore};
use etcd_operator::plugins::source::Sha256Digest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, PostParams};

use crate::common::example_path;
use crate::common::oci_registry::Registry;
use crate::common::webdav::{self, WebDav};
use crate::e2e::{Env, Operator, eventually, is_ready};
use crate::node::Node;

/// `etcd_operator_plugin_loads_total{plugin,from}` in `metrics`.
fn loads(metrics: &str, plugin: &str, from: &str) -> u64 {
    let series = format!(r#"etcd_operator_plugin_loads_total{{plugin="{plugin}",from="{from}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn load_seconds(metrics: &str, plugin: &str) -> String {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("etcd_operator_plugin_load_duration_seconds_sum")
                && l.contains(&format!(r#"plugin="{plugin}""#))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_and_python_plugins_from_a_registry_reach_the_operator_without_a_new_image() {
    let env = Env::new("e2e-catalog").await;
    let node = Node::shared();
    let registry = Registry::start_on(&node.ip);
    let webdav_manifest = registry.push(&example_path("webdav"), "etcd-plugins/webdav:1.0");
    let policy = example_path("time-window");
    registry.push(&policy, "etcd-plugins/time-window:1.0");
    let policy_sha = Sha256Digest::of(&std::fs::read(&policy).unwrap());
    let dav = WebDav::start_on(&node.ip);

    create(
        &env.api::<Secret>(),
        serde_json::json!({
            "metadata": {"name": "regcred", "namespace": env.ns},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": std::fs::read_to_string(registry.auth_file()).unwrap()},
        }),
    )
    .await;
    create(
        &env.api::<ConfigMap>(),
        serde_json::json!({
            "metadata": {"name": "registry-ca", "namespace": env.ns},
            "data": {"ca.crt": std::fs::read_to_string(registry.ca()).unwrap()},
        }),
    )
    .await;
    create(
        &env.api::<Secret>(),
        serde_json::json!({
            "metadata": {"name": "dav", "namespace": env.ns},
            "stringData": {"username": webdav::USER, "password": webdav::PASSWORD},
        }),
    )
    .await;

    let allow = format!("plugins.allowNetworks={{{}/32}}", node.ip);
    let webdav_source = format!(
        "plugins.catalog.webdav.source={}@{webdav_manifest}",
        registry.reference("etcd-plugins/webdav")
    );
    let policy_source = format!(
        "plugins.catalog.time-window.source={}",
        registry.reference("etcd-plugins/time-window:1.0")
    );
    let policy_pin = format!("plugins.catalog.time-window.sha256={}", policy_sha.hex());
    // The JavaScript engine needs 128 MiB; every other plugin keeps 64.
    let op = Operator::install(
        &env,
        "etcd-operator",
        &[
            &allow,
            &webdav_source,
            "plugins.catalog.webdav.memoryMiB=128",
            &policy_source,
            &policy_pin,
            "plugins.registrySecret=regcred",
            "plugins.sourceCAConfigMap=registry-ca",
        ],
    )
    .await;

    env.api::<etcd_operator::api::EtcdCluster>()
        .create(
            &PostParams::default(),
            &env.cluster("cat", 1, serde_json::json!({})),
        )
        .await
        .unwrap();
    env.wait_ready("cat", 1, Duration::from_secs(180)).await;
    let mut kv = env.etcd_of("cat").await;
    for i in 0..50 {
        kv.put(format!("/cat/{i:02}"), format!("v{i}"), None)
            .await
            .unwrap();
    }

    let plugin_block = serde_json::json!({
        "name": "webdav", "secretRef": "dav", "config": {"url": dav.url},
        "allowedEndpoints": [dav.endpoint],
    });
    let backups: Api<EtcdBackup> = env.api();
    let mut block = plugin_block.clone();
    block["path"] = "k8s/cat.db".into();
    create(
        &backups,
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
            "metadata": {"name": "cat", "namespace": env.ns},
            "spec": {"etcdCluster": {"name": "cat"}, "storageType": "webdav",
                     "backupPolicy": {"timeoutInSecond": 180, "plugin": {"name": "time-window"}},
                     "plugin": block},
        }),
    )
    .await;
    let done = eventually(
        "the backup through the catalog plugins",
        Duration::from_secs(240),
        || async {
            let s = backups.get("cat").await.ok()?.status?;
            s.succeeded.then_some(s)
        },
    )
    .await;
    assert_eq!(done.last_backup_key.as_deref(), Some("k8s/cat.db"));
    assert!(
        dav.keys().contains(&"k8s/cat.db".to_string()),
        "{:?}",
        dav.keys()
    );
    let (_, first) = op.get("/metrics").await.expect("metrics");
    assert_eq!(loads(&first, "webdav", "compiled"), 1, "{first}");
    assert_eq!(loads(&first, "time-window", "compiled"), 1, "{first}");

    // The operator's container restarts (same Pod, same cache volume): the
    // catalog plugins are neither fetched nor compiled again.
    let pod = op.pods().await.into_iter().find(is_ready).unwrap();
    let name = pod.metadata.name.clone().unwrap();
    let container = pod.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.container_pid(&container) as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let pods: Api<Pod> = env.api();
    eventually(
        "the operator container restarted and ready",
        Duration::from_secs(180),
        || async {
            let p = pods.get(&name).await.ok()?;
            let restarts = p.status.as_ref()?.container_statuses.as_ref()?[0].restart_count;
            (restarts >= 1 && is_ready(&p)).then_some(())
        },
    )
    .await;
    let again = eventually(
        "metrics after the restart",
        Duration::from_secs(60),
        || async {
            let (_, m) = op.get("/metrics").await?;
            (loads(&m, "webdav", "cache") == 1).then_some(m)
        },
    )
    .await;
    assert_eq!(loads(&again, "webdav", "compiled"), 0, "{again}");
    assert_eq!(loads(&again, "time-window", "cache"), 1, "{again}");
    eprintln!(
        "webdav load: first start {}; after a container restart {}",
        load_seconds(&first, "webdav"),
        load_seconds(&again, "webdav")
    );

    // Lose data, then restore from the WebDAV backup through the plugin.
    kv.delete(
        "/cat/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let mut block = plugin_block;
    block["path"] = "k8s/cat.db".into();
    let restores: Api<EtcdRestore> = env.api();
    create(
        &restores,
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
            "metadata": {"name": "cat", "namespace": env.ns},
            "spec": {"etcdCluster": {"name": "cat"}, "backupStorageType": "webdav", "plugin": block},
        }),
    )
    .await;
    eventually(
        "the restore Completed",
        Duration::from_secs(240),
        || async {
            let s = restores.get("cat").await.ok()?.status?;
            assert_ne!(s.phase.as_deref(), Some("Failed"), "{s:?}");
            (s.phase.as_deref() == Some("Completed")).then_some(s)
        },
    )
    .await;
    env.wait_ready("cat", 1, Duration::from_secs(180)).await;
    let mut kv = env.etcd_of("cat").await;
    let back = kv
        .get("/cat/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(back.kvs().len(), 50, "every key is back");
}
