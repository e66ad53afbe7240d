//! The snapshot data path: a real cluster streamed into the `local` plugin.

use std::sync::Arc;

use etcd_operator::backup::{BackupError, BackupMeta, backup_to, meta_key};
use etcd_operator::plugins::{EgressPolicy, Grants, LoadedPlugin, StorageSession};
use sha2::{Digest, Sha256};

use crate::common;
use crate::harness::{Operator, cluster_yaml, write_keys};

/// A session of the `local` plugin granted `dir`.
async fn local_session(dir: &std::path::Path) -> StorageSession {
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "local") else {
        panic!("local is a storage plugin")
    };
    let grants = Grants {
        egress: Arc::new(EgressPolicy::deny_all()),
        dir: Some(dir.to_path_buf()),
    };
    plugin.open(&[], &grants).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streams_into_the_local_plugin_with_verifiable_metadata() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    write_keys(&s, "/backup", 200).await;

    let store = tempfile::tempdir().unwrap();
    let mut session = local_session(store.path()).await;
    let meta = backup_to(
        &mut session,
        &s.client_urls,
        "c/backup_v1",
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();

    let file = store.path().join("c/backup_v1");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(meta.etcd_version, "3.5.1");
    assert!(meta.revision > 200, "revision {}", meta.revision);
    let stored: BackupMeta =
        serde_json::from_slice(&std::fs::read(store.path().join(meta_key("c/backup_v1"))).unwrap())
            .unwrap();
    assert_eq!(stored, meta);

    // etcd itself accepts the object as a snapshot of that revision.
    let out = common::run_ok(
        std::process::Command::new(common::tools().join("etcd/3.5/etcdutl"))
            .args(["snapshot", "status", "-w", "json"])
            .arg(&file),
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["revision"].as_i64(), Some(meta.revision));
}

#[tokio::test]
async fn no_reachable_endpoint_fails_without_writing_anything() {
    let store = tempfile::tempdir().unwrap();
    let mut session = local_session(store.path()).await;
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let err = backup_to(
        &mut session,
        &[dead],
        "c/never",
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::NoEndpoint(_)), "{err}");
    assert!(session.list("").await.unwrap().is_empty());
}
