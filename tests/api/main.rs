//! The custom resources: CoreOS YAML applies unchanged, the committed CRDs
//! are current, and the schemas (structure + CEL rules) reject bad objects
//! with messages that name the field.
//!
//! Schemas are checked here with a JSON-Schema validator and a client-side
//! CEL evaluator; the real API server check belongs to the Kubernetes tests.

use std::path::PathBuf;

use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore, crd};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const CRD_FILE: &str = "crds/etcd-operator.crds.yaml";

#[test]
fn committed_crds_match_the_types() {
    let generated = crd::to_yaml().unwrap();
    let committed = std::fs::read_to_string(repo().join(CRD_FILE)).unwrap_or_default();
    assert!(
        generated == committed,
        "{CRD_FILE} is out of date: regenerate it with `cargo run -p etcd-operator -- crd > {CRD_FILE}`"
    );
}

/// Every YAML document in a fixture folder, with its file name.
fn documents(folder: &str) -> Vec<(String, Value)> {
    let dir = repo().join("tests/fixtures").join(folder);
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !value.is_null() {
                out.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

/// Drop null values and empty objects: `path:` with no value and a missing
/// `path` mean the same on the wire.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !matches!(v, Value::Object(m) if m.is_empty()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn round_trip(value: &Value) -> Value {
    match value["kind"].as_str().unwrap() {
        "EtcdCluster" => {
            serde_json::to_value(serde_json::from_value::<EtcdCluster>(value.clone()).unwrap())
                .unwrap()
        }
        "EtcdBackup" => {
            serde_json::to_value(serde_json::from_value::<EtcdBackup>(value.clone()).unwrap())
                .unwrap()
        }
        "EtcdRestore" => {
            serde_json::to_value(serde_json::from_value::<EtcdRestore>(value.clone()).unwrap())
                .unwrap()
        }
        other => panic!("unexpected kind {other}"),
    }
}

/// The openAPIV3Schema of each kind, from the generated CRDs.
fn schema_of(kind: &str) -> Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// OpenAPI's `nullable: true` is JSON Schema's `type: [T, "null"]`.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "nullable")
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type")
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// Validate like the API server would: structure first, then CEL rules.
/// Returns every error message.
fn validate(object: &Value) -> Vec<String> {
    let schema = schema_of(object["kind"].as_str().unwrap());
    let validator = jsonschema::validator_for(&to_json_schema(&schema)).unwrap();
    let mut errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path, e))
        .collect();
    if errors.is_empty()
        && let Err(cel) = kube_cel::Validator::new().validate(&schema, object, None)
    {
        errors.extend(cel.into_vec().into_iter().map(|e| e.to_string()));
    }
    errors
}

fn check_fixtures(folder: &str) {
    for (file, value) in documents(folder) {
        assert_eq!(
            value["apiVersion"], "etcd.database.coreos.com/v1beta2",
            "{file}"
        );
        let back = round_trip(&value);
        assert_eq!(
            normalize(&back),
            normalize(&value),
            "{file} does not survive a round trip"
        );
        let errors = validate(&value);
        assert!(
            errors.is_empty(),
            "{file} must be accepted as is: {errors:?}"
        );
    }
}

#[test]
fn the_seed_examples_apply_unchanged() {
    check_fixtures("seed");
}

#[test]
fn coreos_examples_apply_unchanged() {
    check_fixtures("coreos");
}

#[test]
fn extension_examples_apply() {
    check_fixtures("extensions");
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn cluster(spec: &str) -> Value {
    yaml(&format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata: {{name: c}}\nspec:\n{spec}"
    ))
}

fn backup(spec: &str) -> Value {
    yaml(&format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata: {{name: b}}\nspec:\n{spec}"
    ))
}

fn restore(name: &str, spec: &str) -> Value {
    yaml(&format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    ))
}

#[test]
fn invalid_objects_are_rejected_with_their_messages() {
    let table: Vec<(&str, Value, &str)> = vec![
        ("size below 1", cluster("  size: 0"), "/spec/size"),
        ("size above 7", cluster("  size: 9"), "/spec/size"),
        (
            "size missing",
            cluster("  version: 3.5.1"),
            "\"size\" is a required property",
        ),
        (
            "version not a release",
            cluster("  size: 3\n  version: latest"),
            "/spec/version",
        ),
        ("size not a number", cluster("  size: three"), "/spec/size"),
        (
            "negative DNS timeout",
            cluster("  size: 1\n  pod: {DNSTimeoutInSecond: -1}"),
            "/spec/pod/DNSTimeoutInSecond",
        ),
        (
            "S3 without an s3 block",
            backup("  storageType: S3\n  oss: {path: a/b}"),
            "spec.storageType is S3, so spec.s3 is required",
        ),
        (
            "ABS without an abs block",
            backup("  storageType: ABS"),
            "spec.abs is required",
        ),
        (
            "GCS without a gcs block",
            backup("  storageType: GCS"),
            "spec.gcs is required",
        ),
        (
            "OSS without an oss block",
            backup("  storageType: OSS\n  s3: {path: a/b}"),
            "spec.oss is required",
        ),
        (
            "plugin type without a plugin block",
            backup("  storageType: local"),
            "spec.storageType names a storage plugin (it is not S3, ABS, GCS or OSS), so spec.plugin is required",
        ),
        (
            "two source blocks",
            backup("  storageType: S3\n  s3: {path: a/b}\n  abs: {path: c/d}"),
            "give exactly one source block",
        ),
        (
            "storage type with spaces",
            backup("  storageType: my store\n  plugin: {path: x}"),
            "/spec/storageType",
        ),
        (
            "negative maxBackups",
            backup("  storageType: S3\n  s3: {path: a/b}\n  backupPolicy: {maxBackups: -1}"),
            "/spec/backupPolicy/maxBackups",
        ),
        (
            "timeout as a string",
            backup(
                "  storageType: S3\n  s3: {path: a/b}\n  backupPolicy: {timeoutInSecond: \"60\"}",
            ),
            "/spec/backupPolicy/timeoutInSecond",
        ),
        (
            "restore named differently from its cluster",
            restore(
                "other",
                "  etcdCluster: {name: example}\n  backupStorageType: S3\n  s3: {path: a/b}",
            ),
            "metadata.name must equal spec.etcdCluster.name",
        ),
        (
            "restore without a cluster",
            restore("example", "  backupStorageType: S3\n  s3: {path: a/b}"),
            "\"etcdCluster\" is a required property",
        ),
        (
            "restore from S3 without an s3 block",
            restore(
                "example",
                "  etcdCluster: {name: example}\n  backupStorageType: S3",
            ),
            "spec.backupStorageType is S3, so spec.s3 is required",
        ),
        (
            "restore into a new cluster of size 0",
            restore(
                "copy",
                "  etcdCluster: {name: other}\n  backupStorageType: S3\n  s3: {path: a/b}\n  newCluster: {size: 0}",
            ),
            "/spec/newCluster/size",
        ),
    ];
    for (what, object, expected) in table {
        let errors = validate(&object);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{what}: expected an error containing {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn a_restore_into_a_new_cluster_may_have_any_name() {
    let ok = restore(
        "copy",
        "  etcdCluster: {name: other}\n  backupStorageType: S3\n  s3: {path: a/b}\n  newCluster: {size: 3}",
    );
    assert_eq!(validate(&ok), Vec::<String>::new());
}

#[test]
fn crds_are_namespaced_with_status_printer_columns_and_short_names() {
    for (crd, short, columns) in [
        (
            crd::etcd_cluster(),
            "etcdc",
            vec!["Size", "Version", "Ready", "Phase", "Age"],
        ),
        (
            crd::etcd_backup(),
            "etcdbk",
            vec!["Storage", "Last Success", "Revision", "Age"],
        ),
        (
            crd::etcd_restore(),
            "etcdrs",
            vec!["Cluster", "Phase", "Age"],
        ),
    ] {
        assert_eq!(crd.spec.group, "etcd.database.coreos.com");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1beta2");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        let names: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, columns);
    }
}

#[test]
fn the_crd_command_prints_the_committed_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo().join(CRD_FILE)).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}
