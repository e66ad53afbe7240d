//! The example plugins from other languages driving a real cluster's backups
//! in `etcd-operator local`: the JavaScript `webdav` storage plugin stores
//! backups on a real WebDAV server (nginx) and restores from them; the
//! Python `time-window` and Go `count-age` policies decide skips, names and
//! retention.

use std::time::{Duration, Instant};

use etcd_operator::api::{EtcdBackupStatus, EtcdRestoreStatus};

use crate::common::webdav::{self, WebDav};
use crate::harness::{Operator, cluster_yaml, read_prefix, write_keys};

fn events_of(op: &Operator, backup: &str, reason: &str) -> Vec<serde_json::Value> {
    op.events_of(reason)
        .into_iter()
        .filter(|e| e["kind"] == "EtcdBackup" && e["name"] == backup)
        .collect()
}

fn webdav_block(dav: &WebDav, path: &str) -> String {
    format!(
        "  plugin:\n    path: {path}\n    secretRef: dav\n    config:\n      url: {}\n    \
         allowedEndpoints:\n    - {}\n",
        dav.url, dav.endpoint
    )
}

fn backup_yaml(name: &str, policy: &str, dav: &WebDav, path: &str) -> String {
    format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  \
         etcdCluster:\n    name: c\n  storageType: webdav\n  backupPolicy:\n    backupIntervalInSecond: 2\n    \
         timeoutInSecond: 120\n{policy}{}",
        webdav_block(dav, path)
    )
}

async fn wait_until(op: &Operator, what: &str, pred: impl Fn() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}: {:?}",
            op.events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stored backups (not their metadata) whose keys start with `prefix`.
fn stored(dav: &WebDav, prefix: &str) -> Vec<String> {
    dav.keys()
        .into_iter()
        .filter(|k| k.starts_with(prefix) && !k.ends_with(".meta.json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_storage_with_python_and_go_policies_backs_up_and_restores_a_cluster() {
    let plugins = tempfile::tempdir().unwrap();
    for name in ["webdav", "time-window", "count-age"] {
        std::os::unix::fs::symlink(
            crate::common::example_path(name),
            plugins.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let dav = WebDav::start();
    let op = Operator::start_with_plugins(
        plugins.path(),
        &[
            "--allow-network",
            "127.0.0.1/32",
            "--plugin-memory-mib",
            "128",
        ],
    );
    op.apply("secret.yaml", &webdav::secret_yaml());
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/dav", 200).await;

    // Python: back up every 2 s, but only when the revision moved.
    op.apply(
        "daily.yaml",
        &backup_yaml(
            "daily",
            "    plugin:\n      name: time-window\n",
            &dav,
            "c/daily",
        ),
    );
    // Go: keep the newest two, under dated names.
    op.apply(
        "counted.yaml",
        &backup_yaml(
            "counted",
            "    plugin:\n      name: count-age\n      config:\n        keep: \"2\"\n        \
             max-age: 0s\n        dated-names: \"true\"\n",
            &dav,
            "c/counted",
        ),
    );

    wait_until(&op, "the first Python-policy backup", || {
        events_of(&op, "daily", "BackupSucceeded").len() == 1
    })
    .await;
    wait_until(&op, "a skip of the unchanged revision", || {
        !events_of(&op, "daily", "BackupSkipped").is_empty()
    })
    .await;
    let skipped = events_of(&op, "daily", "BackupSkipped");
    assert!(
        skipped[0]["message"]
            .as_str()
            .unwrap()
            .contains("unchanged"),
        "{skipped:?}"
    );
    assert_eq!(events_of(&op, "daily", "BackupSucceeded").len(), 1);
    assert_eq!(stored(&dav, "c/daily").len(), 1, "{:?}", dav.keys());

    // The Go policy keeps two and prunes the rest; its names carry the revision.
    wait_until(&op, "the Go policy pruning", || {
        !events_of(&op, "counted", "BackupsPruned").is_empty()
    })
    .await;
    wait_until(&op, "two counted backups left", || {
        stored(&dav, "c/counted").len() == 2
    })
    .await;
    let counted: EtcdBackupStatus = op.object_status("EtcdBackup", "counted").unwrap();
    let last = counted.last_backup_key.clone().unwrap();
    assert!(
        last.starts_with("c/counted.")
            && last.ends_with(&format!(".r{}.db", counted.etcd_revision)),
        "{last}"
    );

    // A write: the Python policy lets the next run through.
    write_keys(&s, "/dav-more", 1).await;
    wait_until(&op, "a second Python-policy backup", || {
        events_of(&op, "daily", "BackupSucceeded").len() == 2
    })
    .await;
    // The Event is written before the status: wait for the status to name
    // the newest daily backup the server holds (the first is pruned, unless
    // the two fall on different UTC days; the names sort by time).
    let last_daily = || {
        op.object_status::<EtcdBackupStatus>("EtcdBackup", "daily")
            .and_then(|s| s.last_backup_key)
    };
    wait_until(&op, "the status to name the stored daily backup", || {
        last_daily().is_some_and(|k| stored(&dav, "c/daily").iter().max() == Some(&k))
    })
    .await;
    let newest = last_daily().unwrap();
    op.remove("daily.yaml");
    op.remove("counted.yaml");

    // Lose the data (`/dav/…` and `/dav-more/…`), then restore in place from
    // the newest backup on the WebDAV server: both come back.
    let mut client = crate::harness::client(&s).await;
    client
        .delete(
            "/dav",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(read_prefix(&s, "/dav").await.is_empty());
    op.apply(
        "r.yaml",
        &format!(
            "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata:\n  name: r\nspec:\n  \
             etcdCluster:\n    name: c\n  backupStorageType: webdav\n{}",
            webdav_block(&dav, &newest)
        ),
    );
    let r = op
        .wait_object::<EtcdRestoreStatus>("EtcdRestore", "r", "Completed", |s| {
            s.phase.as_deref() == Some("Completed")
        })
        .await;
    assert!(r.succeeded, "{r:?}");
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/dav/").await, written, "every key is back");
    assert_eq!(read_prefix(&s, "/dav-more").await.len(), 1);
}

/// Plugins compile after the operator starts: a cluster does not wait for a
/// cold compile of the JavaScript engine, and a backup naming the plugin is
/// told it is being compiled, retries, and succeeds once it is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_starts_while_its_plugins_compile_and_a_backup_waits_for_them() {
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        crate::common::example_path("webdav"),
        plugins.path().join("webdav.wasm"),
    )
    .unwrap();
    // An empty compile cache: the component is compiled from cold (about
    // 20 s on two cores), as on an operator's first start.
    let cache = tempfile::tempdir().unwrap();
    let dav = WebDav::start();
    let op = Operator::start_compiling(
        plugins.path(),
        &[
            "--allow-network",
            "127.0.0.1/32",
            "--plugin-cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    op.apply("secret.yaml", &webdav::secret_yaml());
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    assert!(
        !op.plugins_loaded(),
        "the cluster was ready only after the plugins were compiled:\n{}",
        op.log_tail()
    );
    write_keys(&s, "/early", 10).await;
    op.apply("b.yaml", &backup_yaml("b", "", &dav, "c/early"));

    wait_until(&op, "a retry while the plugin compiles", || {
        !events_of(&op, "b", "BackupRetrying").is_empty()
    })
    .await;
    let retrying = events_of(&op, "b", "BackupRetrying");
    let message = retrying[0]["message"].as_str().unwrap();
    assert!(
        message.contains("`webdav` is bundled with the operator and still being compiled"),
        "{message}"
    );
    let start = Instant::now();
    while !op.plugins_loaded() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(&op, "the backup once the plugin is loaded", || {
        !events_of(&op, "b", "BackupSucceeded").is_empty()
    })
    .await;
    assert!(
        events_of(&op, "b", "BackupFailed").is_empty(),
        "{:?}",
        op.events()
    );
    assert_eq!(stored(&dav, "c/early").len(), 1, "{:?}", dav.keys());
}
