//! `etcd-operator plugin inspect|test` as a plugin author runs them.

use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
}

#[test]
fn inspect_shows_world_version_digest_and_imports() {
    let path = common::plugin_path("local");
    let out = operator()
        .args(["plugin", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let digest = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    assert!(
        text.contains("world:       etcd-operator:plugin/storage-backend"),
        "{text}"
    );
    assert!(text.contains("wit version: 0.1.1"), "{text}");
    assert!(text.contains("cleans up lost uploads: yes"), "{text}");
    assert!(text.contains(&format!("sha256:      {digest}")), "{text}");
    assert!(
        text.contains("etcd-operator:plugin/storage@0.1.1")
            && text.contains("etcd-operator:plugin/upload-cleanup@0.1.1"),
        "{text}"
    );
    assert!(
        !text.contains("wasi:sockets"),
        "the local plugin needs no sockets: {text}"
    );
}

#[test]
fn inspect_explains_a_non_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    std::fs::write(&file, wat::parse_str("(module)").unwrap()).unwrap();
    let out = operator()
        .args(["plugin", "inspect"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a component") && err.contains("wasm32-wasip2"),
        "{err}"
    );
}

#[test]
fn test_passes_for_the_local_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = operator()
        .args(["plugin", "test"])
        .arg(common::plugin_path("local"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--large-mib", "8"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("9 passed, 0 failed"), "{text}");
}

#[test]
fn test_fails_with_a_readable_report() {
    let out = operator()
        .args(["plugin", "test"])
        .arg(common::plugin_path("faults"))
        .args(["--config", "fault=panic"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  open") && text.contains("crashed"),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");
}

#[test]
fn test_runs_policy_hooks() {
    let out = operator()
        .args(["plugin", "test"])
        .arg(common::plugin_path("retention"))
        .args(["--config", "keep-last=5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PASS  retention") && text.contains("4 passed, 0 failed"),
        "{text}"
    );
}
