//! `etcd-operator local` as a new user starts it: without `--plugin-dir`, it
//! finds the plugins where `plugins/build.sh` puts them in a checkout, and
//! when it finds none it says where it looked; `local get` shows what it
//! made as `kubectl get` would.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start `etcd-operator local` in `cwd` with no plugin directory given, its
/// log in `cwd/operator.log`.
fn start_in(cwd: &Path) -> Child {
    std::fs::create_dir_all(cwd.join("state")).unwrap();
    let log = std::fs::File::create(cwd.join("operator.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .current_dir(cwd)
        .args(["local", "--dir", "state"])
        .env_remove("ETCD_OPERATOR_PLUGIN_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Poll the log until a line holds `what`; the operator is killed either way.
fn wait_line(mut child: Child, cwd: &Path, what: &str) -> String {
    let start = Instant::now();
    let found = loop {
        let log = std::fs::read_to_string(cwd.join("operator.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(what)) {
            break Ok(line.to_string());
        }
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            break Err(log);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|log| panic!("no line with {what:?} in the log:\n{log}"))
}

#[test]
fn finds_the_checkouts_plugins_without_plugin_dir() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("plugins/dist")).unwrap();
    std::os::unix::fs::symlink(
        crate::common::plugin_path("local"),
        cwd.path().join("plugins/dist/local.wasm"),
    )
    .unwrap();
    let line = wait_line(start_in(cwd.path()), cwd.path(), "plugins loaded");
    assert!(line.contains("loaded=[\"local\"]"), "{line}");
    let log = std::fs::read_to_string(cwd.path().join("operator.log")).unwrap();
    assert!(
        log.contains("plugins found without --plugin-dir dir=plugins/dist"),
        "{log}"
    );
}

#[test]
fn says_where_it_looked_when_it_finds_no_plugins() {
    let cwd = tempfile::tempdir().unwrap();
    let line = wait_line(start_in(cwd.path()), cwd.path(), "no plugins");
    for dir in [
        "/usr/lib/etcd-operator/plugins",
        "lib/etcd-operator/plugins",
        "plugins/dist",
    ] {
        assert!(line.contains(dir), "{dir} not named: {line}");
    }
    assert!(line.contains("--plugin-dir"), "{line}");
}

/// Run `etcd-operator local get ARGS… --dir DIR`; its stdout, stderr and
/// whether it succeeded.
fn local_get(dir: &Path, args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["local", "get"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_get_shows_the_crds_columns_and_the_objects_with_their_status() {
    use crate::harness::{Operator, cluster_yaml};
    let op = Operator::start(&[]);
    let (_, stderr, ok) = local_get(op.path(), &[]);
    assert!(ok && stderr.contains("No resources found"), "{stderr}");

    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.apply(
        "b.yaml",
        &crate::backup_restore::backup_yaml(
            "b",
            "c",
            "local",
            "get/one.db",
            "    timeoutInSecond: 120\n",
            "      {}\n",
        ),
    );
    op.wait_ready("c", 3).await;
    let b = op
        .wait_object::<etcd_operator::api::EtcdBackupStatus>("EtcdBackup", "b", "succeeded", |s| {
            s.succeeded
        })
        .await;

    // One kind: its printer columns, as on Kubernetes.
    let (table, _, ok) = local_get(op.path(), &["etcdclusters"]);
    assert!(ok, "{table}");
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "SIZE", "VERSION", "READY", "PHASE", "AGE"],
        "{table}"
    );
    assert_eq!(
        lines[1][..5],
        ["c", "3", "3.5.1", "3/3", "Running"],
        "{table}"
    );
    assert!(lines[1][5].ends_with('s'), "an age in seconds: {table}");

    // All kinds: one table each, names qualified as kubectl prints them.
    let (all, _, ok) = local_get(op.path(), &[]);
    assert!(ok, "{all}");
    assert!(
        all.contains("etcdcluster.etcd.database.coreos.com/c "),
        "{all}"
    );
    let backup_row = all
        .lines()
        .find(|l| l.starts_with("etcdbackup.etcd.database.coreos.com/b "))
        .unwrap_or_else(|| panic!("no backup row: {all}"));
    let revision = b.etcd_revision.to_string();
    assert!(
        backup_row.split_whitespace().any(|c| c == revision),
        "{all}"
    );
    assert!(
        !all.contains("etcdrestore"),
        "no restore table without restores: {all}"
    );

    // -o yaml: the object as the API server would return it.
    let (yaml, _, ok) = local_get(op.path(), &["etcdc", "c", "-o", "yaml"]);
    assert!(ok, "{yaml}");
    let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v["kind"], "EtcdCluster", "{yaml}");
    assert_eq!(v["spec"]["size"], 3, "{yaml}");
    assert_eq!(v["status"]["phase"], "Running", "{yaml}");
    assert!(v["metadata"]["creationTimestamp"].is_string(), "{yaml}");
    let (list, _, ok) = local_get(op.path(), &["-o", "json"]);
    assert!(ok, "{list}");
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["kind"], "List");
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["EtcdCluster", "EtcdBackup"], "{list}");

    // Mistakes are named, with the fix.
    let (_, err, ok) = local_get(op.path(), &["etcdclustr"]);
    assert!(
        !ok && err.contains("`etcdclustr`") && err.contains("etcdclusters (etcdc)"),
        "{err}"
    );
    let (_, err, ok) = local_get(op.path(), &["etcdc", "nope"]);
    assert!(
        !ok && err.contains("etcdclusters.etcd.database.coreos.com \"nope\" not found"),
        "{err}"
    );
    // A manifest that does not parse is named, and the rest still shows.
    op.apply(
        "broken.yaml",
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\n",
    );
    let (table, err, ok) = local_get(op.path(), &["etcdc"]);
    assert!(
        ok && err.contains("broken.yaml") && table.contains("3/3"),
        "{err}\n{table}"
    );
}
