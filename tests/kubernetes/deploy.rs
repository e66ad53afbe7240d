//! The Helm chart and the plain manifests rendered from it: lint, render
//! for each mode, stay current, and (in [`crate::e2e`]) apply to a real API
//! server where the operator then runs as the chart's ServiceAccount.

use std::path::Path;
use std::process::Command;

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;

use crate::common::{repo, run_ok, tools};

/// Run helm (installed by scripts/setup.sh) with throwaway state directories.
pub fn helm(args: &[&str]) -> String {
    try_helm(args).unwrap_or_else(|e| panic!("helm {args:?} failed: {e}"))
}

/// [`helm`], its output or what it printed on failure.
pub fn try_helm(args: &[&str]) -> Result<String, String> {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(tools().join("helm/helm"))
        .args(args)
        .env("HELM_CACHE_HOME", state.path().join("cache"))
        .env("HELM_CONFIG_HOME", state.path().join("config"))
        .env("HELM_DATA_HOME", state.path().join("data"))
        .output()
        .map_err(|e| format!("cannot run helm (run scripts/setup.sh): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn chart() -> String {
    repo()
        .join("deploy/helm/etcd-operator")
        .display()
        .to_string()
}

/// `helm template` of the chart into `namespace` with `--set` values.
pub fn render(namespace: &str, set: &[&str]) -> Vec<serde_json::Value> {
    render_release("etcd-operator", namespace, set)
}

/// [`render`] as release `release` (objects are named after it).
pub fn render_release(release: &str, namespace: &str, set: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    let text = helm(&args);
    crate::documents_of(&text)
}

fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

/// Server-side apply every document (any kind) into `namespace`.
pub async fn apply_all(client: &kube::Client, docs: &[serde_json::Value], namespace: &str) {
    let pp = PatchParams::apply("etcd-operator-tests").force();
    for doc in docs {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                doc["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        api.patch(name, &pp, &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("the API server refused {} {name}: {e}", gvk.kind));
    }
}

#[test]
fn the_chart_lints_strictly_and_renders_each_mode() {
    for set in [
        vec![],
        vec!["clusterWide=true"],
        vec![
            "replicas=2",
            "etcdCluster.create=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict"];
        let chart = chart();
        args.push(&chart);
        for s in &set {
            args.extend(["--set", s]);
        }
        helm(&args);
    }

    // Namespaced (default): a Role in the release namespace, no cluster-wide rights.
    let docs = render("etcd", &[]);
    assert_eq!(
        kinds(&docs),
        [
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--leader-elect=true"),
        "leader election also with one replica: {args:?}"
    );
    assert!(!args.contains(&"--cluster-wide"), "{args:?}");
    assert!(args.contains(&"--lease-name=etcd-operator"), "{args:?}");
    // Two releases in one namespace elect their leaders apart.
    let other = render_release("etcd-operator-wide", "etcd", &["clusterWide=true"]);
    let other = other.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let other_args = other["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        other_args.contains("--lease-name=etcd-operator-wide"),
        "{other_args}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["MY_POD_NAMESPACE", "MY_POD_NAME", "MY_POD_IP"]);

    // Cluster-wide: a ClusterRole and the flag.
    let docs = render("etcd", &["clusterWide=true", "replicas=2"]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--cluster-wide") && args.contains("--leader-elect=true"),
        "{args}"
    );

    // The optional EtcdCluster and ServiceMonitor.
    let docs = render(
        "etcd",
        &[
            "etcdCluster.create=true",
            "etcdCluster.size=5",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let cluster = docs.iter().find(|d| d["kind"] == "EtcdCluster").unwrap();
    assert_eq!(cluster["spec"]["size"], 5);
    assert!(docs.iter().any(|d| d["kind"] == "ServiceMonitor"));

    // A plugin catalog: a ConfigMap the operator reads, credentials and a CA
    // mounted for its sources, and a checksum that rolls the operator.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let source = format!("plugins.catalog.webdav.source=oci://r.example.com/p/webdav@{digest}");
    let docs = render(
        "etcd",
        &[
            &source,
            "plugins.catalog.webdav.memoryMiB=128",
            "plugins.registrySecret=regcred",
            "plugins.sourceCAConfigMap=registry-ca",
        ],
    );
    let catalog = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let text = catalog["data"]["catalog.yaml"].as_str().unwrap();
    let parsed = etcd_operator::plugins::catalog::Catalog::parse("rendered catalog", text).unwrap();
    assert_eq!(parsed.entries[0].name, "webdav");
    assert_eq!(parsed.entries[0].limits.memory_mib, Some(128));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    for flag in [
        "--plugin-catalog=/etc/etcd-operator/catalog/catalog.yaml",
        "--plugin-registry-auth=/etc/etcd-operator/registry/config.json",
        "--plugin-source-ca=/etc/etcd-operator/source-ca/ca.crt",
        "--plugin-cache-dir=/var/cache/etcd-operator",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    let volumes = pod["volumes"].to_string();
    assert!(
        volumes.contains("regcred")
            && volumes.contains("registry-ca")
            && volumes.contains("plugin-cache"),
        "{volumes}"
    );
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/plugin-catalog"]
            .is_string()
    );
}

#[test]
fn the_plain_manifests_are_the_chart_rendered_with_defaults() {
    let out = tempfile::tempdir().unwrap();
    run_ok(Command::new(repo().join("scripts/render-manifests.sh")).arg(out.path()));
    for file in ["etcd-operator.yaml", "etcd-operator-clusterwide.yaml"] {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let committed =
            std::fs::read_to_string(repo().join("deploy/manifests").join(file)).unwrap();
        assert!(
            fresh == committed,
            "deploy/manifests/{file} is stale: run scripts/render-manifests.sh"
        );
    }
    // The chart's CRDs are the generated ones (a link, not a copy).
    let linked = Path::new("deploy/helm/etcd-operator/crds/etcd-operator.crds.yaml");
    assert_eq!(
        std::fs::read_to_string(repo().join(linked)).unwrap(),
        std::fs::read_to_string(repo().join("crds/etcd-operator.crds.yaml")).unwrap()
    );
}

#[test]
fn the_image_tree_builds_without_docker_and_loads_its_plugins() {
    let root = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(repo().join("scripts/build-image-root.sh"))
            .arg(root.path())
            .env("ETCD_OPERATOR_BIN", env!("CARGO_BIN_EXE_etcd-operator")),
    );
    let bin = root.path().join("usr/local/bin/etcd-operator");
    let plugins = root.path().join("usr/lib/etcd-operator/plugins");
    let mut names: Vec<String> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "abs.wasm",
            "gcs.wasm",
            "local.wasm",
            "oss.wasm",
            "retention.wasm",
            "s3.wasm"
        ]
    );
    for name in &names {
        let report = run_ok(
            Command::new(&bin)
                .args(["plugin", "inspect"])
                .arg(plugins.join(name)),
        );
        assert!(report.contains("world"), "{report}");
    }
    // Compiled ahead of time: an engine pointed at `.compiled` loads every
    // bundled plugin without compiling one.
    let engine = etcd_operator::plugins::PluginEngine::new(Default::default(), None).unwrap();
    engine
        .cache()
        .add_precompiled(etcd_operator::plugins::cache::precompiled_dir(&plugins));
    for name in &names {
        let bytes = std::fs::read(plugins.join(name)).unwrap();
        etcd_operator::plugins::registry::load(&engine, name.trim_end_matches(".wasm"), &bytes)
            .unwrap();
    }
    let stats = &engine.cache().stats;
    assert_eq!(
        (
            stats.hits.load(std::sync::atomic::Ordering::Relaxed),
            stats.misses.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (names.len() as u64, 0),
        "every bundled plugin precompiled"
    );
    let version = run_ok(Command::new(root.path().join("usr/local/bin/etcdutl")).arg("version"));
    assert!(version.contains("etcdutl version: 3.5"), "{version}");
}
