//! On a real single-node Kubernetes ([`node`]: control plane, kubelet,
//! containerd, kube-proxy and cluster DNS, built and started by the harness):
//! the generated CRDs install, their schemas and CEL rules are accepted, CoreOS
//! objects apply unchanged, and invalid objects are rejected with the
//! messages the rules carry; and the operator itself ([`e2e`]), installed
//! with its chart, runs clusters, backups, restores and plugin ConfigMaps.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod catalog;
mod deploy;
mod e2e;
mod faults;
mod monitoring;
mod node;

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde::Deserialize;

use common::repo;
use node::Node;

/// The namespace the CoreOS fixtures are created in (deleted afterwards, so
/// no operator of another test ever manages them).
const FIXTURES: &str = "fixtures";

fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    documents_of(&std::fs::read_to_string(path).unwrap())
}

/// The YAML documents of `text`, empty ones dropped.
fn documents_of(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", kind),
        &plural,
    )
}

async fn create(
    client: &kube::Client,
    doc: &serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let kind = doc["kind"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), FIXTURES, &resource(kind));
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await
}

/// Install (server-side apply: every test of the shared node does it) the
/// generated CRDs and wait until they are established.
pub async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = documents(&repo().join("crds/etcd-operator.crds.yaml"));
    assert_eq!(installed.len(), 3);
    for doc in &installed {
        let crd: CustomResourceDefinition = serde_json::from_value(doc.clone()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("etcd-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused a CRD: {e}"));
    }
    let start = Instant::now();
    for doc in &installed {
        let name = doc["metadata"]["name"].as_str().unwrap();
        loop {
            let crd = crds.get(name).await.unwrap();
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} not established"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_on_a_real_api_server_and_their_rules_reject_invalid_objects() {
    let node = tokio::task::block_in_place(Node::shared);
    let client = node.client().await;

    install_crds(&client).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let fixtures: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": FIXTURES}})).unwrap();
    namespaces
        .create(&PostParams::default(), &fixtures)
        .await
        .unwrap();

    // The plain manifests (both modes) are accepted as they are.
    for file in ["etcd-operator.yaml", "etcd-operator-clusterwide.yaml"] {
        let docs = documents(&repo().join("deploy/manifests").join(file));
        deploy::apply_all(&client, &docs, "etcd-operator").await;
    }

    // What CoreOS users already have applies unchanged.
    for dir in ["seed", "coreos", "extensions"] {
        for entry in std::fs::read_dir(repo().join("tests/fixtures").join(dir)).unwrap() {
            let path = entry.unwrap().path();
            for mut doc in documents(&path) {
                // Fixtures reuse names across files; keep them apart.
                let name = format!("{dir}-{}", path.file_stem().unwrap().to_string_lossy());
                let kind = doc["kind"].as_str().unwrap().to_string();
                if kind == "EtcdRestore" && doc["spec"]["newCluster"].is_null() {
                    // The CoreOS rule: a restore is named after its cluster.
                    doc["spec"]["etcdCluster"]["name"] = name.clone().into();
                }
                doc["metadata"]["name"] = name.clone().into();
                doc["metadata"]["namespace"] = FIXTURES.into();
                create(&client, &doc)
                    .await
                    .unwrap_or_else(|e| panic!("{} ({kind}) was refused: {e}", path.display()));
            }
        }
    }

    // Invalid objects are refused with the rules' messages.
    let refused = |doc: serde_json::Value, says: &'static str| {
        let client = client.clone();
        async move {
            match create(&client, &doc).await {
                Err(kube::Error::Api(e)) => {
                    assert_eq!(e.code, 422, "{e:?}");
                    assert!(e.message.contains(says), "{}", e.message);
                }
                other => panic!("expected a 422 saying {says:?}, got {other:?}"),
            }
        }
    };
    refused(
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
            "metadata": {"name": "no-s3-block"},
            "spec": {"etcdEndpoints": ["http://a:2379"], "storageType": "S3"},
        }),
        "spec.storageType is S3, so spec.s3 is required",
    )
    .await;
    refused(
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdBackup",
            "metadata": {"name": "two-blocks"},
            "spec": {"storageType": "S3", "s3": {"path": "b/k", "awsSecret": "a"},
                     "abs": {"path": "c/k", "absSecret": "z"}},
        }),
        "give exactly one source block",
    )
    .await;
    refused(
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdRestore",
            "metadata": {"name": "other-name"},
            "spec": {"etcdCluster": {"name": "example"}, "backupStorageType": "S3",
                     "s3": {"path": "b/k", "awsSecret": "a"}},
        }),
        "metadata.name must equal spec.etcdCluster.name",
    )
    .await;
    refused(
        serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
            "metadata": {"name": "bad-size"},
            "spec": {"size": "three"},
        }),
        "spec.size",
    )
    .await;

    // Nothing of this test is left for another test's operator to manage
    // (the plain manifests' Deployments name an image the node does not have).
    for ns in [FIXTURES, "etcd-operator"] {
        namespaces.delete(ns, &Default::default()).await.unwrap();
    }
}
