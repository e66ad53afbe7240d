//! What plugins return is checked like user input: a broken or hostile
//! storage or policy plugin (the test-only `faults` and `faults-policy`)
//! cannot write over another cluster's backup, escape its path, report a
//! backup it did not keep, leave a crashed upload behind, flood the log,
//! make retention unbounded, or keep a restore busy for ever — and the operator's other EtcdBackups keep
//! succeeding meanwhile.

use etcd_operator::api::{Condition, EtcdBackupStatus, EtcdRestoreStatus};

use crate::backup_restore::{backup_yaml, cond, restore_from, sha256_of};
use crate::harness::{Operator, cluster_yaml, read_prefix, wait_ready_all, write_keys};

/// An EtcdBackup of `cluster` to `storage` at `path`, with a 60 s time limit;
/// `policy` is the rest of `backupPolicy`, `config` the storage plugin's
/// config (both indented).
fn backup(
    name: &str,
    cluster: &str,
    storage: &str,
    path: &str,
    policy: &str,
    config: &str,
) -> String {
    let policy = format!("    timeoutInSecond: 60\n{policy}");
    backup_yaml(name, cluster, storage, path, &policy, config)
}

/// A periodic backup of c1 through the `local` plugin whose next name the
/// `faults-policy` plugin returns.
fn named(name: &str, path: &str, key: &str, extra: &str) -> String {
    backup(
        name,
        "c1",
        "local",
        path,
        &format!(
            "    backupIntervalInSecond: 3600\n    plugin:\n      name: faults-policy\n      config:\n        \
             name: \"{key}\"\n{extra}"
        ),
        "      {}\n",
    )
}

/// A backup of c1 to the `faults` storage plugin misbehaving as `fault`.
fn faulty(name: &str, fault: &str, policy: &str, config: &str) -> String {
    backup(
        name,
        "c1",
        "faults",
        &format!("x/{name}"),
        policy,
        &format!("      fault: {fault}\n{config}"),
    )
}

async fn failed_for_good(op: &Operator, name: &str) -> Condition {
    let s = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", name, "a permanent failure", |s| {
            cond(&s.conditions, "Failed").is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(!s.succeeded);
    cond(&s.conditions, "Failed").unwrap().clone()
}

fn event_message(op: &Operator, reason: &str, name: &str) -> Option<String> {
    op.events_of(reason)
        .into_iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["message"].as_str().map(str::to_string))
}

async fn wait_event(op: &Operator, reason: &str, name: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(m) = event_message(op, reason, name) {
            return m;
        }
        assert!(
            start.elapsed() < crate::harness::DEADLINE,
            "no {reason} event for {name}: {:?}\n{}",
            op.events(),
            op.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_plugins_return_from_backups_is_checked_and_other_backups_keep_succeeding() {
    let op = Operator::start(&["--retention-max-deletes", "20"]);
    op.apply("c1.yaml", &cluster_yaml("c1", 1, "3.5.1", ""));
    op.apply("c2.yaml", &cluster_yaml("c2", 1, "3.5.1", ""));
    wait_ready_all(&op, &[("c1", 1), ("c2", 1)]).await;

    // Cluster c2's own backup, at a key c1's policy will name.
    op.apply(
        "c2b.yaml",
        &backup("c2-b", "c2", "local", "shared/c_2", "", "      {}\n"),
    );
    op.wait_object::<EtcdBackupStatus>("EtcdBackup", "c2-b", "succeeded", |s| s.succeeded)
        .await;
    let c2_key = op.backups().join("shared/c_2");
    let (c2_sha, c2_meta) = (
        sha256_of(&c2_key),
        std::fs::read(op.backups().join("shared/c_2.meta.json")).unwrap(),
    );

    op.apply("steal.yaml", &named("steal", "shared/c", "shared/c_2", ""));
    op.apply(
        "escape.yaml",
        &named("escape", "shared/e", "../../escape", ""),
    );
    op.apply(
        "huge.yaml",
        &named(
            "huge",
            "shared/h",
            "shared/h_x",
            "        name-repeat: \"10000\"\n",
        ),
    );
    op.apply(
        "ok.yaml",
        &named("ok", "shared/ok", "shared/ok_{revision}", ""),
    );
    op.apply("short.yaml", &faulty("short", "wrong-size", "", ""));
    op.apply("unlisted.yaml", &faulty("unlisted", "unlisted", "", ""));
    op.apply("traps.yaml", &faulty("traps", "write-traps", "", ""));
    op.apply(
        "flood.yaml",
        // 200,000 `log` calls in one `open`, 2000 times the per-call budget
        // (a million neared the backup's 60 s limit on a loaded 2-core machine).
        &faulty("flood", "log-flood", "", "      lines: \"200000\"\n"),
    );
    let periodic = "    backupIntervalInSecond: 3600\n    maxBackups: 1\n";
    op.apply(
        "many.yaml",
        &faulty(
            "many",
            "many-objects",
            periodic,
            "      count: \"200000\"\n",
        ),
    );
    op.apply(
        "some.yaml",
        &faulty("some", "many-objects", periodic, "      count: \"150\"\n"),
    );

    // 1. Another cluster's key: refused, c2's backup and metadata untouched.
    let f = failed_for_good(&op, "steal").await;
    assert_eq!(f.reason.as_deref(), Some("KeyOwnedElsewhere"), "{f:?}");
    let m = f.message.unwrap();
    assert!(
        m.contains("shared/c_2") && m.contains("EtcdBackup default/c2-b of EtcdCluster default/c2"),
        "{m}"
    );
    assert_eq!(sha256_of(&c2_key), c2_sha, "c2's backup was not replaced");
    assert_eq!(
        std::fs::read(op.backups().join("shared/c_2.meta.json")).unwrap(),
        c2_meta
    );

    // 2. Names outside the path, or huge: refused naming the policy.
    let f = failed_for_good(&op, "escape").await;
    assert_eq!(f.reason.as_deref(), Some("BackupNameRefused"), "{f:?}");
    let m = f.message.unwrap();
    assert!(
        m.contains("faults-policy") && m.contains("`../../escape`"),
        "{m}"
    );
    assert!(!op.path().join("escape").exists() && !op.backups().join("../../escape").exists());
    let f = failed_for_good(&op, "huge").await;
    assert_eq!(f.reason.as_deref(), Some("BackupNameRefused"), "{f:?}");
    let m = f.message.unwrap();
    assert!(
        m.contains("too long") && m.len() < 1000,
        "{} bytes: {m}",
        m.len()
    );

    // 3. A good custom name under the path is kept.
    let ok = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "ok", "succeeded", |s| s.succeeded)
        .await;
    let key = ok.last_backup_key.unwrap();
    assert!(key.starts_with("shared/ok_"), "{key}");
    assert!(op.backups().join(&key).exists());

    // 4. A plugin that keeps less than it was sent: the backup fails.
    let short = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "short", "a retried failure", |s| {
            cond(&s.conditions, "Retrying").is_some_and(|c| c.status == "True")
        })
        .await;
    let reason = short.reason.unwrap();
    assert!(
        reason.contains("reports 0 bytes stored") && reason.contains("was deleted"),
        "{reason}"
    );
    assert!(!short.succeeded && short.last_backup_key.is_none());
    // One that says it kept everything, but whose listing does not show it.
    let unlisted = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "unlisted", "a retried failure", |s| {
            cond(&s.conditions, "Retrying").is_some_and(|c| c.status == "True")
        })
        .await;
    let reason = unlisted.reason.unwrap();
    assert!(
        reason.contains("its listing does not show it") && reason.contains("--list-after-upload"),
        "{reason}"
    );
    assert!(!unlisted.succeeded && unlisted.last_backup_key.is_none());

    // An upload whose sandbox traps: the backup fails naming the crash, and
    // the plugin's `abandon-uploads` runs in a fresh sandbox for that key.
    let f = failed_for_good(&op, "traps").await;
    let m = f.message.unwrap();
    assert!(m.contains("crashed") && m.contains("write"), "{m}");
    let log = std::fs::read_to_string(op.path().join("operator.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("faults plugin: abandon-uploads of `x/traps")),
        "the plugin was not asked to clean up:\n{}",
        op.log_tail()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("x/traps")
                && l.contains("discarded 1 unfinished upload(s) of the key")),
        "the operator did not report the clean-up:\n{}",
        op.log_tail()
    );

    // 5. A million log lines from one call: a bounded log, and one line
    //    saying how many were dropped.
    op.wait_object::<EtcdBackupStatus>("EtcdBackup", "flood", "succeeded", |s| s.succeeded)
        .await;
    let log = std::fs::read_to_string(op.path().join("operator.log")).unwrap();
    let flood_lines = log.lines().filter(|l| l.contains("faults plugin")).count();
    eprintln!(
        "log flood: {flood_lines} of 200000 plugin lines logged, operator log {} bytes",
        log.len()
    );
    assert!(
        flood_lines <= 1000,
        "{flood_lines} plugin lines reached the log"
    );
    assert!(
        log.len() < 4 << 20,
        "the operator log is {} bytes",
        log.len()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("suppressed") && l.contains("log messages")),
        "no line says what was suppressed"
    );

    // 6. Retention: a huge listing is refused, a long one deletes at most
    //    --retention-max-deletes per pass; events stay small.
    let m = wait_event(&op, "RetentionFailed", "many").await;
    // The generated keys, the new backup and its metadata.
    assert!(m.contains("200002 objects") && m.len() < 1000, "{m}");
    let m = wait_event(&op, "BackupsPruned", "some").await;
    assert!(
        m.starts_with("retention deleted 20: ") && m.contains(" and 15 more"),
        "{m}"
    );
    assert!(m.len() < 1000, "{} bytes", m.len());

    // The well-behaved backups kept working through all of it.
    assert!(
        op.object_status::<EtcdBackupStatus>("EtcdBackup", "c2-b")
            .unwrap()
            .succeeded
    );
    assert!(
        op.object_status::<EtcdBackupStatus>("EtcdBackup", "ok")
            .unwrap()
            .succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_that_outlasts_the_backup_time_limit_is_stopped_and_deletes_nothing() {
    let op = Operator::start(&[]);
    op.apply("c1.yaml", &cluster_yaml("c1", 1, "3.5.1", ""));
    wait_ready_all(&op, &[("c1", 1)]).await;
    // Every 2 s a backup; its policy would delete every older one, but
    // takes 20 s to say so: past the run's 3 s limit.
    op.apply(
        "slow.yaml",
        &backup_yaml(
            "slow",
            "c1",
            "local",
            "slow/b",
            "    timeoutInSecond: 3
    backupIntervalInSecond: 2
    plugin:
      name: faults-policy
      \
             config:\n        delete-shown: \"true\"\n        retention-ms: \"20000\"\n",
            "      {}\n",
        ),
    );
    op.apply(
        "fine.yaml",
        &backup("fine", "c1", "local", "fine/b", "", "      {}\n"),
    );
    let start = std::time::Instant::now();
    let stopped = loop {
        let stopped: Vec<String> = op
            .events_of("RetentionFailed")
            .into_iter()
            .filter(|e| e["name"] == "slow")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect();
        if stopped.len() >= 2 {
            break stopped;
        }
        assert!(
            start.elapsed() < crate::harness::DEADLINE,
            "retention was not stopped twice: {:?}",
            op.events()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        stopped[0].contains("retention stopped at the backup's time limit of 3s"),
        "{stopped:?}"
    );
    // The backups themselves succeeded, and none was deleted.
    let s = op
        .object_status::<EtcdBackupStatus>("EtcdBackup", "slow")
        .unwrap();
    assert!(s.succeeded, "{s:?}");
    let kept = std::fs::read_dir(op.backups().join("slow"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".meta.json"))
        .count();
    assert!(kept >= 2, "{kept} backups left");
    op.wait_object::<EtcdBackupStatus>("EtcdBackup", "fine", "succeeded", |s| s.succeeded)
        .await;
}

fn faulty_restore(name: &str, fault: &str, extra: &str) -> String {
    restore_from(
        name,
        "c1",
        "faults",
        "x/any",
        &format!("    config:\n      fault: {fault}\n      read-ms: \"100\"\n{extra}"),
    )
}

async fn restore_failed(op: &Operator, name: &str) -> Condition {
    let s = op
        .wait_object::<EtcdRestoreStatus>("EtcdRestore", name, "Failed", |s| {
            s.phase.as_deref() == Some("Failed")
        })
        .await;
    cond(&s.conditions, "Failed").unwrap().clone()
}

async fn verifying_with_progress(op: &Operator, name: &str) -> EtcdRestoreStatus {
    op.wait_object::<EtcdRestoreStatus>("EtcdRestore", name, "download progress", |s| {
        s.phase.as_deref() == Some("Verifying")
            && s.progress.as_ref().is_some_and(|p| p.bytes_read > 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_refuse_another_clusters_backup_and_bound_what_a_plugin_sends() {
    let op = Operator::start(&["--max-backup-size", "8MiB"]);
    op.apply("c1.yaml", &cluster_yaml("c1", 1, "3.5.1", ""));
    op.apply("c2.yaml", &cluster_yaml("c2", 1, "3.5.1", ""));
    wait_ready_all(&op, &[("c1", 1), ("c2", 1)]).await;
    let c1 = op.status("c1").unwrap();
    let mine = write_keys(&c1, "/mine", 5).await;
    let c2 = op.status("c2").unwrap();
    let theirs = write_keys(&c2, "/theirs", 5).await;
    op.apply(
        "c2b.yaml",
        &backup("c2-b", "c2", "local", "r/c2.db", "", "      {}\n"),
    );
    op.wait_object::<EtcdBackupStatus>("EtcdBackup", "c2-b", "succeeded", |s| s.succeeded)
        .await;
    let pids = op.pids("c1");

    // 1. c2's backup into c1: refused before anything is touched...
    op.apply(
        "wrong.yaml",
        &restore_from("wrong", "c1", "local", "r/c2.db", ""),
    );
    let f = restore_failed(&op, "wrong").await;
    assert_eq!(f.reason.as_deref(), Some("BackupOfAnotherCluster"), "{f:?}");
    let m = f.message.unwrap();
    assert!(
        m.contains("EtcdBackup default/c2-b of EtcdCluster default/c2")
            && m.contains("spec.allowOtherClusterBackup"),
        "{m}"
    );
    assert_eq!(op.pids("c1"), pids, "c1 untouched");
    assert_eq!(read_prefix(&op.status("c1").unwrap(), "/mine").await, mine);

    // ...and restored when the EtcdRestore says so.
    op.apply(
        "allowed.yaml",
        &restore_from(
            "allowed",
            "c1",
            "local",
            "r/c2.db",
            "  allowOtherClusterBackup: true\n",
        ),
    );
    let done = op
        .wait_object::<EtcdRestoreStatus>("EtcdRestore", "allowed", "Completed", |s| {
            matches!(s.phase.as_deref(), Some("Completed" | "Failed"))
        })
        .await;
    assert_eq!(done.phase.as_deref(), Some("Completed"), "{done:#?}");
    let before = c1.members.ready.clone();
    let c1 = op
        .wait("c1", "the restored member serving", |s| {
            s.members.ready.len() == 1 && s.members.ready != before
        })
        .await;
    assert_eq!(read_prefix(&c1, "/theirs").await, theirs);

    // 2. A read longer than asked for breaks the contract.
    op.apply("long.yaml", &faulty_restore("long", "long-read", ""));
    let m = restore_failed(&op, "long").await.message.unwrap();
    assert!(
        m.contains("broke the plugin contract") && m.contains("for a read of at most 1048576"),
        "{m}"
    );

    // 3. An endless stream stops at --max-backup-size.
    op.apply("endless.yaml", &faulty_restore("endless", "endless", ""));
    let f = restore_failed(&op, "endless").await;
    assert_eq!(f.reason.as_deref(), Some("BackupTooLarge"), "{f:?}");
    assert!(f.message.unwrap().contains("--max-backup-size"));

    // 4. A slow stream: progress in status, then the restore's deadline.
    op.apply(
        "slow.yaml",
        &faulty_restore("slow", "slow-read", "  timeoutInSecond: 5\n"),
    );
    let s = verifying_with_progress(&op, "slow").await;
    let p = s.progress.unwrap();
    assert!(p.total_bytes.is_none() && p.bytes_per_second > 0, "{p:?}");
    let f = restore_failed(&op, "slow").await;
    assert_eq!(f.reason.as_deref(), Some("TimedOut"), "{f:?}");
    let m = f.message.unwrap();
    assert!(m.contains("5s") && m.contains("MiB downloaded at"), "{m}");

    // 5. Deleting an EtcdRestore stops its download.
    op.apply("cancel.yaml", &faulty_restore("cancel", "slow-read", ""));
    verifying_with_progress(&op, "cancel").await;
    op.remove("cancel.yaml");
    let m = wait_event(&op, "RestoreFailed", "cancel").await;
    assert!(m.contains("deleted or changed"), "{m}");

    // Nothing staged is left behind by any of the failures.
    let staging = op.path().join(".data/.staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in staging: {left:?}");
    assert_eq!(
        read_prefix(&c1, "/theirs").await,
        theirs,
        "c1 kept its restored data"
    );
}
