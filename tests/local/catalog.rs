//! Plugins delivered through the operator's plugin catalog from a real OCI
//! registry (docker-registry, TLS, htpasswd): the JavaScript WebDAV storage
//! plugin and the Python time-window policy, pinned by digest, back up and
//! restore a real cluster; they keep serving from the cache while the
//! registry is down; a moved tag and a wrong password are reported in the
//! EtcdBackup's status, naming the source.

use std::path::Path;
use std::time::Duration;

use etcd_operator::api::{EtcdBackupStatus, EtcdRestoreStatus};
use etcd_operator::plugins::source::Sha256Digest;

use crate::common::oci_registry::Registry;
use crate::common::webdav::{self, WebDav};
use crate::common::{example_path, wait_for};
use crate::harness::{Operator, cluster_yaml, read_prefix, write_keys};

fn dav_secret(op: &Operator) {
    op.apply("secret.yaml", &webdav::secret_yaml());
}

fn webdav_block(dav: &WebDav, path: &str) -> String {
    format!(
        "  plugin:\n    name: webdav\n    path: {path}\n    secretRef: dav\n    config:\n      url: {}\n    \
         allowedEndpoints:\n    - {}\n",
        dav.url, dav.endpoint
    )
}

fn backup_yaml(name: &str, policy: &str, dav: &WebDav, path: &str) -> String {
    format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  \
         etcdCluster:\n    name: c\n  storageType: webdav\n  backupPolicy:\n    timeoutInSecond: 120\n{policy}{}",
        webdav_block(dav, path)
    )
}

/// The operator's flags for a catalog at `catalog`, fetched from `registry`
/// with `auth`, cached in `cache`.
fn catalog_args(registry: &Registry, catalog: &Path, auth: &Path, cache: &Path) -> Vec<String> {
    [
        "--allow-network",
        "127.0.0.1/32",
        "--plugin-catalog",
        catalog.to_str().unwrap(),
        "--plugin-registry-auth",
        auth.to_str().unwrap(),
        "--plugin-source-ca",
        registry.ca().to_str().unwrap(),
        "--plugin-cache-dir",
        cache.to_str().unwrap(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// Wait until the operator's log says a catalog's first fetch round ended
/// `starts` times (once per operator start).
async fn catalog_fetched(op: &Operator, starts: usize) {
    wait_for(
        "the catalog's first fetch round",
        Duration::from_secs(600),
        || {
            std::fs::read_to_string(op.path().join("operator.log"))
                .ok()
                .filter(|log| log.matches("plugin catalog fetched").count() >= starts)
        },
    )
    .await;
}

async fn backup_reason(op: &Operator, name: &str, contains: &str) -> String {
    wait_for(
        &format!("EtcdBackup {name} to report `{contains}`"),
        Duration::from_secs(60),
        || {
            op.object_status::<EtcdBackupStatus>("EtcdBackup", name)
                .and_then(|s| s.reason)
                .filter(|r| r.contains(contains))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_and_python_plugins_from_a_registry_back_up_and_restore_and_outlive_it() {
    let mut registry = Registry::start();
    let webdav_file = example_path("webdav");
    let webdav_manifest = registry.push(&webdav_file, "etcd-plugins/webdav:1.0");
    let policy_file = example_path("time-window");
    registry.push(&policy_file, "etcd-plugins/time-window:1.0");
    let policy_sha = Sha256Digest::of(&std::fs::read(&policy_file).unwrap());
    let webdav_sha = Sha256Digest::of(&std::fs::read(&webdav_file).unwrap());

    // The JavaScript engine needs 128 MiB: the catalog gives it that, while
    // the operator's default stays 64 MiB. `moved` pins a digest its tag no
    // longer holds.
    let work = tempfile::tempdir().unwrap();
    let catalog = work.path().join("catalog.yaml");
    std::fs::write(
        &catalog,
        format!(
            "plugins:\n  webdav:\n    source: {}@{webdav_manifest}\n    memoryMiB: 128\n    callTimeout: 2m\n  \
             time-window:\n    source: {}\n    sha256: {policy_sha}\n  \
             moved:\n    source: {}\n    sha256: {webdav_sha}\n",
            registry.reference("etcd-plugins/webdav"),
            registry.reference("etcd-plugins/time-window:1.0"),
            registry.reference("etcd-plugins/time-window:1.0"),
        ),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let args = catalog_args(&registry, &catalog, &registry.auth_file(), &cache);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dav = WebDav::start();
    let mut op = Operator::start(&args);
    // The first start compiles both engines (30 s alone, minutes on a loaded
    // machine) in the background; backups naming them meanwhile are retried
    // with backoff. Wait for the catalog so the backoff does not decide the
    // test's time.
    catalog_fetched(&op, 1).await;
    dav_secret(&op);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    let written = write_keys(&s, "/cat", 100).await;

    op.apply(
        "b.yaml",
        &backup_yaml(
            "b",
            "    plugin:\n      name: time-window\n",
            &dav,
            "c/from-catalog",
        ),
    );
    let b = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "b", "BackupSucceeded", |s| s.succeeded)
        .await;
    let key = b.last_backup_key.clone().unwrap();
    assert!(dav.keys().contains(&key), "{:?}", dav.keys());

    // A moved tag: refused, naming the source and both digests.
    op.apply(
        "m.yaml",
        &backup_yaml("m", "    plugin:\n      name: moved\n", &dav, "c/moved"),
    );
    let reason = backup_reason(&op, "m", "the tag moved").await;
    assert!(
        reason.contains("etcd-plugins/time-window:1.0") && reason.contains(&webdav_sha.to_string()),
        "{reason}"
    );
    op.remove("m.yaml");
    op.remove("b.yaml");

    // The registry goes away and the operator restarts: both plugins serve
    // from the cache, and a restore through them brings every key back.
    registry.stop();
    op.kill();
    op.restart();
    catalog_fetched(&op, 2).await;
    let mut client = crate::harness::client(&s).await;
    client
        .delete(
            "/cat",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    op.apply(
        "r.yaml",
        &format!(
            "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata:\n  name: r\nspec:\n  \
             etcdCluster:\n    name: c\n  backupStorageType: webdav\n{}",
            webdav_block(&dav, &key)
        ),
    );
    let r = op
        .wait_object::<EtcdRestoreStatus>("EtcdRestore", "r", "Completed", |s| {
            s.phase.as_deref() == Some("Completed")
        })
        .await;
    assert!(r.succeeded, "{r:?}");
    let before = s.client_urls.clone();
    let s = op
        .wait("c", "the restored member to be ready", |s| {
            s.members.ready.len() == 1 && s.client_urls != before
        })
        .await;
    assert_eq!(read_prefix(&s, "/cat/").await, written, "every key is back");
    drop(op);

    // A wrong registry password, with nothing cached: a clear, lasting reason.
    registry.restart();
    let cold = work.path().join("cold-cache");
    let wrong = registry.auth_file_with("plugins", "not-the-password");
    let args = catalog_args(&registry, &catalog, &wrong, &cold);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = Operator::start(&args);
    catalog_fetched(&op, 1).await;
    dav_secret(&op);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    op.apply("w.yaml", &backup_yaml("w", "", &dav, "c/wrong-password"));
    let reason = backup_reason(&op, "w", "refused the credentials").await;
    assert!(
        reason.contains("plugin `webdav`") && reason.contains(&registry.address()),
        "{reason}"
    );
}
