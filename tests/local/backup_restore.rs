//! EtcdBackup and EtcdRestore in `etcd-operator local`, against real etcd
//! clusters and the real `local` storage plugin (plus the test-only `faults`
//! plugin where a backend must misbehave).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_operator::api::{EtcdBackupStatus, EtcdRestoreStatus};
use sha2::{Digest, Sha256};

use crate::harness::{Operator, cluster_yaml, read_prefix, write_keys};

/// An EtcdBackup of cluster `cluster` through storage plugin `storage`.
/// `policy` is the body of `backupPolicy` (indented four spaces), `config`
/// of `plugin.config`.
pub(crate) fn backup_yaml(
    name: &str,
    cluster: &str,
    storage: &str,
    path: &str,
    policy: &str,
    config: &str,
) -> String {
    format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  \
         etcdCluster:\n    name: {cluster}\n  storageType: {storage}\n  backupPolicy:\n{policy}  plugin:\n    \
         path: {path}\n    config:\n{config}"
    )
}

fn one_shot(name: &str, cluster: &str, path: &str) -> String {
    backup_yaml(
        name,
        cluster,
        "local",
        path,
        "    timeoutInSecond: 120\n",
        "      {}\n",
    )
}

fn restore_yaml(name: &str, cluster: &str, path: &str, new_cluster: &str) -> String {
    restore_from(name, cluster, "local", path, new_cluster)
}

/// An EtcdRestore of `cluster` from `storage` at `path`; `extra` is appended
/// to its spec (indented).
pub(crate) fn restore_from(
    name: &str,
    cluster: &str,
    storage: &str,
    path: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata:\n  name: {name}\nspec:\n  \
         etcdCluster:\n    name: {cluster}\n  backupStorageType: {storage}\n  plugin:\n    path: {path}\n{extra}"
    )
}

pub(crate) fn cond<'a>(
    conds: &'a [etcd_operator::api::Condition],
    t: &str,
) -> Option<&'a etcd_operator::api::Condition> {
    conds.iter().find(|c| c.type_ == t)
}

async fn wait_backup_ok(op: &Operator, name: &str) -> EtcdBackupStatus {
    op.wait_object::<EtcdBackupStatus>("EtcdBackup", name, "succeeded", |s| s.succeeded)
        .await
}

async fn wait_restore(op: &Operator, name: &str, phase: &str) -> EtcdRestoreStatus {
    op.wait_object::<EtcdRestoreStatus>("EtcdRestore", name, phase, |s| {
        s.phase.as_deref() == Some(phase)
    })
    .await
}

pub(crate) fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Backup files (not metadata) in `dir` whose names start with `stem`.
fn backup_files(dir: &Path, stem: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(stem) && !n.ends_with(".meta.json"))
        .collect()
}

fn member_names(op: &Operator, cluster: &str) -> BTreeSet<String> {
    op.pids(cluster).into_iter().map(|(n, _)| n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_brings_every_key_back_in_place_and_into_a_new_cluster() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/r", 300).await;

    op.apply("b.yaml", &one_shot("b", "c", "c/one.db"));
    let b = wait_backup_ok(&op, "b").await;
    let file = op.backups().join("c/one.db");
    assert_eq!(b.last_backup_key.as_deref(), Some("c/one.db"));
    assert_eq!(
        b.last_backup_sha256.as_deref(),
        Some(sha256_of(&file).as_str())
    );
    assert!(
        b.etcd_revision > 300 && b.etcd_version.as_deref() == Some("3.5.1"),
        "{b:?}"
    );
    assert!(op.backups().join("c/one.db.meta.json").is_file());
    assert_eq!(
        cond(&b.conditions, "BackupSucceeded").map(|c| c.status.as_str()),
        Some("True")
    );

    // Wipe: delete the keys and write something the backup does not have.
    let mut client = crate::harness::client(&s).await;
    client
        .delete("/r", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    client.put("/after-backup", "x", None).await.unwrap();
    assert!(read_prefix(&s, "/r").await.is_empty());
    let before = member_names(&op, "c");

    op.apply("r.yaml", &restore_yaml("r", "c", "c/one.db", ""));
    let r = wait_restore(&op, "r", "Completed").await;
    assert!(r.succeeded, "{r:?}");
    assert_eq!(
        cond(&r.conditions, "Verified").map(|c| c.status.as_str()),
        Some("True")
    );
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/r").await, written, "every key is back");
    assert!(read_prefix(&s, "/after-backup").await.is_empty());
    let after = member_names(&op, "c");
    assert!(
        before.is_disjoint(&after),
        "every member was replaced: {before:?} -> {after:?}"
    );
    assert_eq!(
        op.events_of("ClusterRestored").len(),
        1,
        "{:?}",
        op.events()
    );

    // The additive option: the same backup into a new cluster.
    op.apply(
        "r2.yaml",
        &restore_yaml(
            "r2",
            "copy",
            "c/one.db",
            "  newCluster:\n    size: 1\n    version: \"3.5.1\"\n",
        ),
    );
    wait_restore(&op, "r2", "Completed").await;
    assert!(op.path().join("copy.restored.yaml").is_file());
    let copy = op.wait_ready("copy", 1).await;
    assert_eq!(read_prefix(&copy, "/r").await, written);
    // The original is not affected by a restore into a new cluster.
    assert_eq!(member_names(&op, "c"), after);

    // newCluster naming an existing cluster is refused; nothing changes.
    op.apply(
        "r3.yaml",
        &restore_yaml("r3", "c", "c/one.db", "  newCluster:\n    size: 1\n"),
    );
    let r3 = wait_restore(&op, "r3", "Failed").await;
    assert!(r3.reason.unwrap().contains("already exists"));
    assert_eq!(member_names(&op, "c"), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_backup_is_refused_and_the_cluster_left_untouched() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    let written = write_keys(&s, "/k", 50).await;
    op.apply("b.yaml", &one_shot("b", "c", "good.db"));
    wait_backup_ok(&op, "b").await;

    // Flip one byte in the middle: the sha256 no longer matches the metadata.
    let good = op.backups().join("good.db");
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(op.backups().join("bad.db"), &bytes).unwrap();
    std::fs::copy(
        op.backups().join("good.db.meta.json"),
        op.backups().join("bad.db.meta.json"),
    )
    .unwrap();
    // The same damage without metadata (as a backup from another tool):
    // etcd's own integrity trailer catches it.
    std::fs::write(op.backups().join("bare.db"), &bytes).unwrap();

    let pids = op.pids("c");
    for (name, path, reason, says) in [
        ("r-bad", "bad.db", "BackupCorrupt", "sha256"),
        ("r-bare", "bare.db", "BackupCorrupt", "integrity trailer"),
        ("r-none", "missing.db", "BackupNotFound", "does not exist"),
    ] {
        op.apply(&format!("{name}.yaml"), &restore_yaml(name, "c", path, ""));
        let r = wait_restore(&op, name, "Failed").await;
        let failed = cond(&r.conditions, "Failed").unwrap();
        assert_eq!(failed.reason.as_deref(), Some(reason), "{r:?}");
        let why = r.reason.unwrap();
        assert!(why.contains(says) && why.contains("untouched"), "{why}");
    }
    assert_eq!(op.pids("c"), pids, "the same member processes still run");
    let s = op.status("c").unwrap();
    assert_eq!(read_prefix(&s, "/k").await, written);
    assert!(op.events_of("ClusterRestored").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_backups_keep_the_newest_two_and_keep_their_cadence_across_restarts() {
    let mut op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    write_keys(&s, "/p", 10).await;
    op.apply(
        "b.yaml",
        &backup_yaml(
            "b",
            "c",
            "local",
            "p/snap",
            "    backupIntervalInSecond: 5\n    maxBackups: 2\n",
            "      {}\n",
        ),
    );
    // Four backups: retention has had to delete two.
    let start = Instant::now();
    while op.events_of("BackupSucceeded").len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status: EtcdBackupStatus = op.object_status("EtcdBackup", "b").unwrap();
    let dir = op.backups().join("p");
    let kept = backup_files(&dir, "snap_v");
    assert_eq!(kept.len(), 2, "exactly the newest two are kept: {kept:?}");
    let newest = status.last_backup_key.clone().unwrap();
    assert!(
        kept.contains(newest.trim_start_matches("p/")),
        "{kept:?} lacks {newest}"
    );
    for k in &kept {
        assert!(
            dir.join(format!("{k}.meta.json")).is_file(),
            "metadata kept with {k}"
        );
        assert!(
            etcd_operator::backup::schedule::is_periodic_key("p/snap", &format!("p/{k}")),
            "{k} is not named <path>_v<revision>_<YYYY-MM-DD-HH:MM:SS>"
        );
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        4,
        "pruned backups take their metadata with them"
    );
    assert!(op.events_of("BackupsPruned").len() >= 2);

    // Restart the operator: the next backup comes one interval after the
    // last success recorded in status — not at start-up, and not skipped.
    let last = |op: &Operator| {
        op.object_status::<EtcdBackupStatus>("EtcdBackup", "b")
            .and_then(|s| s.last_success_date)
            .map(|d| chrono::DateTime::parse_from_rfc3339(&d).unwrap())
    };
    let before = last(&op).unwrap();
    op.kill();
    op.restart();
    let start = Instant::now();
    let after = loop {
        if let Some(t) = last(&op)
            && t > before
        {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gap = (after - before).num_seconds();
    assert!(
        (4..=9).contains(&gap),
        "the backup after a restart came {gap}s after the previous one (interval 5s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_are_reported_permanent_or_retried_and_older_backups_survive() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    op.apply("ok.yaml", &one_shot("ok", "c", "keep/ok.db"));
    wait_backup_ok(&op, "ok").await;
    let kept = sha256_of(&op.backups().join("keep/ok.db"));

    let faults = |name: &str, fault: &str| {
        backup_yaml(
            name,
            "c",
            "faults",
            "keep/ok.db",
            "    timeoutInSecond: 10\n",
            &format!("      fault: {fault}\n"),
        )
    };
    op.apply("denied.yaml", &faults("denied", "unauthorized"));
    op.apply("flaky.yaml", &faults("flaky", "transient"));
    op.apply("drops.yaml", &faults("drops", "write-fails"));

    let denied = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "denied", "failed permanently", |s| {
            cond(&s.conditions, "Failed").is_some_and(|c| c.status == "True")
        })
        .await;
    let failed = cond(&denied.conditions, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("Unauthorized"));
    assert!(
        failed.message.as_deref().unwrap().contains("not retrying"),
        "{failed:?}"
    );
    assert!(!denied.succeeded);

    for name in ["flaky", "drops"] {
        let s = op
            .wait_object::<EtcdBackupStatus>("EtcdBackup", name, "retrying", |s| {
                cond(&s.conditions, "Retrying").is_some_and(|c| c.status == "True")
            })
            .await;
        assert!(s.reason.unwrap().contains("transient"));
    }
    // Transient failures are retried (5 s backoff); the permanent one is not.
    let start = Instant::now();
    let retries = |op: &Operator, name: &str| {
        op.events_of("BackupRetrying")
            .iter()
            .filter(|e| e["name"] == name)
            .count()
    };
    while retries(&op, "flaky") < 2 || retries(&op, "drops") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            op.events()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let denied_failures = op
        .events_of("BackupFailed")
        .iter()
        .filter(|e| e["name"] == "denied")
        .count();
    assert_eq!(
        denied_failures, 1,
        "a permanent error is reported once, not retried"
    );
    assert_eq!(
        sha256_of(&op.backups().join("keep/ok.db")),
        kept,
        "the older backup is intact"
    );
}

/// Cluster `c` of three with 100 keys under `/q`, backed up by the periodic
/// EtcdBackup `b`, then every member killed with its data: the keys written.
async fn back_up_then_lose_every_member(op: &Operator) -> Vec<(String, String)> {
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/q", 100).await;
    op.apply(
        "b.yaml",
        &backup_yaml(
            "b",
            "c",
            "local",
            "q/snap",
            "    backupIntervalInSecond: 3600\n",
            "      {}\n",
        ),
    );
    wait_backup_ok(op, "b").await;
    for (member, _) in op.pids("c") {
        op.kill_member("c", &member, true);
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_every_member_and_its_data_comes_back_from_the_newest_backup() {
    let op = Operator::start(&[]);
    let written = back_up_then_lose_every_member(&op).await;
    let start = Instant::now();
    while op.events_of("QuorumRecoveredFromBackup").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/q").await, written);
}

/// Quorum-loss recovery from a backup whose operator is killed at `point`
/// (after the old members are deleted, or after the first restored member
/// starts): the next run finishes the same restore, recorded in
/// `status.restoring`, instead of seeding an empty cluster or waiting on a
/// half-restored one, and every key of the backup is back.
async fn recovery_from_backup_killed_at(point: &str) {
    let mut op = Operator::start_armed(point, &[]);
    let written = back_up_then_lose_every_member(&op).await;
    op.wait_killed_at_failpoint().await;
    let recorded = op
        .status("c")
        .and_then(|s| s.restoring)
        .expect("the restore is recorded before a member is deleted");
    assert_eq!(recorded.members.len(), 3, "{recorded:?}");
    op.restart_disarmed();
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/q").await, written, "every key is back");
    assert!(s.restoring.is_none(), "{:?}", s.restoring);
    let mut ready = s.members.ready.clone();
    ready.sort();
    let mut restored = recorded.members.clone();
    restored.sort();
    assert_eq!(ready, restored, "the recorded members, not others");
    assert_eq!(op.member_dirs("c").len(), 3);
    assert_eq!(
        op.events_of("ClusterSeeded").len(),
        1,
        "seeded once, when it was created, never again"
    );
    assert_eq!(op.events_of("QuorumRecoveredFromBackup").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_from_backup_killed_after_deleting_the_old_members_is_finished() {
    recovery_from_backup_killed_at("recovery-after-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_from_backup_killed_after_its_first_member_started_is_finished() {
    recovery_from_backup_killed_at("recovery-after-first-start").await;
}

/// Peak resident memory of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// Fill the cluster with `mib` MiB of incompressible values, 1 MiB each.
async fn load_mib(s: &etcd_operator::api::EtcdClusterStatus, mib: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut c = crate::harness::client(&s).await;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ worker as u64;
            for i in (worker..mib).step_by(4) {
                let value: Vec<u8> = (0..(1 << 20) / 8)
                    .flat_map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()
                    })
                    .collect();
                c.put(format!("/big/{i:05}"), value, None).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_1_gib_database_backs_up_in_bounded_memory_and_a_timed_out_run_leaves_nothing() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    write_keys(&s, "/small", 10).await;
    op.apply("old.yaml", &one_shot("old", "c", "old.db"));
    wait_backup_ok(&op, "old").await;
    let old = sha256_of(&op.backups().join("old.db"));

    load_mib(&s, 1100).await;

    // A 1 s limit cannot fit a 1 GiB snapshot: the upload is aborted.
    op.apply(
        "slow.yaml",
        &backup_yaml(
            "slow",
            "c",
            "local",
            "big/t.db",
            "    timeoutInSecond: 1\n",
            "      {}\n",
        ),
    );
    let slow = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "slow", "timed out", |s| {
            cond(&s.conditions, "Retrying").is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(slow.reason.unwrap().contains("timeoutInSecond"));
    op.remove("slow.yaml");
    let parts = op.backups().join(".parts");
    let start = Instant::now();
    while std::fs::read_dir(&parts).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "part files left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!op.backups().join("big/t.db").exists(), "no partial object");

    op.apply(
        "big.yaml",
        &backup_yaml(
            "big",
            "c",
            "local",
            "big/full.db",
            "    timeoutInSecond: 600\n",
            "      {}\n",
        ),
    );
    let big = wait_backup_ok(&op, "big").await;
    let size = big.last_backup_size.unwrap() as u64;
    assert!(size >= 1 << 30, "the database is {size} bytes");
    assert_eq!(
        std::fs::metadata(op.backups().join("big/full.db"))
            .unwrap()
            .len(),
        size
    );
    let peak = peak_rss_mib(op.pid().unwrap());
    eprintln!(
        "operator peak RSS {peak} MiB for a {} MiB backup",
        size >> 20
    );
    assert!(
        peak < 256,
        "operator peak RSS {peak} MiB: memory must not grow with the {} MiB snapshot",
        size >> 20
    );
    assert_eq!(
        sha256_of(&op.backups().join("old.db")),
        old,
        "older backup intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_policy_plugin_decides_retention_and_skips_unchanged_revisions() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    op.apply(
        "b.yaml",
        &backup_yaml(
            "b",
            "c",
            "local",
            "pol/snap",
            "    backupIntervalInSecond: 2\n    plugin:\n      name: retention\n      config:\n        \
             keep-last: \"1\"\n        skip-unchanged: \"true\"\n",
            "      {}\n",
        ),
    );
    let successes = |op: &Operator| op.events_of("BackupSucceeded").len();
    let wait_until = |pred: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !pred() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{:?}",
                op.events()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_until(&|| successes(&op) == 1);
    // Nothing changed: the policy skips the next runs.
    wait_until(&|| !op.events_of("BackupSkipped").is_empty());
    assert_eq!(successes(&op), 1);
    write_keys(&s, "/changed", 1).await;
    wait_until(&|| successes(&op) == 2);
    wait_until(&|| !op.events_of("BackupsPruned").is_empty());
    let kept = backup_files(&op.backups().join("pol"), "snap_v");
    assert_eq!(kept.len(), 1, "keep-last 1: {kept:?}");
    let status: EtcdBackupStatus = op.object_status("EtcdBackup", "b").unwrap();
    assert_eq!(
        status
            .last_backup_key
            .as_deref()
            .map(|k| k.trim_start_matches("pol/")),
        kept.iter().next().map(String::as_str),
        "the newest backup is the one kept"
    );
    assert_eq!(
        cond(&status.conditions, "Skipped").map(|c| c.status.as_str()),
        Some("False"),
        "a backup taken after skips clears the Skipped condition"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    crate::common::make_ca(dir, "test-ca");
    let san = "subjectAltName=IP:127.0.0.1,DNS:localhost";
    crate::common::issue_cert(
        dir,
        "server",
        "/CN=server",
        &format!("{san}\nextendedKeyUsage=serverAuth"),
    );
    crate::common::issue_cert(
        dir,
        "client",
        "/CN=client",
        &format!("{san}\nextendedKeyUsage=clientAuth"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_secret_is_used_to_back_up_a_cluster_that_requires_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (client_port, peer_port) = (crate::common::free_port(), crate::common::free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let tools = std::env::var_os("ETCD_OPERATOR_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/etcd-operator/tools")
        });
    let c = |f: &str| certs.path().join(f).display().to_string();
    let _etcd = crate::common::Process(
        std::process::Command::new(tools.join("etcd/3.5/etcd"))
            .args(["--name", "tls", "--data-dir", &c("data")])
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .args([
                "--cert-file",
                &c("server.pem"),
                "--key-file",
                &c("server-key.pem"),
            ])
            .args(["--trusted-ca-file", &c("ca.pem"), "--client-cert-auth"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let op = Operator::start(&[]);
    let read = |f: &str| std::fs::read_to_string(certs.path().join(f)).unwrap();
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "etcd-tls"},
        "stringData": {
            "etcd-client.crt": read("client.pem"),
            "etcd-client.key": read("client-key.pem"),
            "etcd-client-ca.crt": read("ca.pem"),
        },
    });
    op.apply("secret.yaml", &serde_yaml::to_string(&secret).unwrap());
    let tls_backup = |name: &str, tls: &str| {
        format!(
            "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  \
             etcdEndpoints: [\"{client_url}\"]\n{tls}  storageType: local\n  plugin:\n    path: tls/{name}.db\n"
        )
    };
    op.apply(
        "with.yaml",
        &tls_backup("with", "  clientTLSSecret: etcd-tls\n"),
    );
    op.apply("without.yaml", &tls_backup("without", ""));

    let with = wait_backup_ok(&op, "with").await;
    assert!(
        with.etcd_revision >= 1 && with.etcd_version.as_deref() == Some("3.5.1"),
        "{with:?}"
    );
    assert!(op.backups().join("tls/with.db").is_file());
    // The same endpoint without the client certificate is refused by etcd.
    let without = op
        .wait_object::<EtcdBackupStatus>("EtcdBackup", "without", "failing", |s| {
            cond(&s.conditions, "Retrying").is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(!without.succeeded);
    assert!(!op.backups().join("tls/without.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_s3_and_restore_from_it_with_the_coreos_s3_block() {
    let moto = crate::common::Moto::start();
    moto.create_bucket("etcd-backups");
    let op = Operator::start(&["--allow-network", "127.0.0.1/32"]);
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "aws"},
        "stringData": {
            "credentials": moto.credentials(),
            "config": "[default]\nregion = us-east-1\n",
        },
    });
    op.apply("secret.yaml", &serde_yaml::to_string(&secret).unwrap());
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/s3", 200).await;
    let s3 = |path: &str| {
        format!(
            "  s3:\n    path: etcd-backups/{path}\n    awsSecret: aws\n    endpoint: {}\n    forcePathStyle: true\n",
            moto.endpoint
        )
    };
    // CoreOS YAML, unchanged but for the cluster reference.
    op.apply(
        "b.yaml",
        &format!(
            "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: b\nspec:\n  \
             etcdCluster:\n    name: c\n  storageType: S3\n  backupPolicy:\n    timeoutInSecond: 120\n{}",
            s3("cluster-c/one.db")
        ),
    );
    let b = wait_backup_ok(&op, "b").await;
    assert_eq!(b.last_backup_key.as_deref(), Some("cluster-c/one.db"));
    let keys = moto.keys("etcd-backups");
    assert_eq!(
        keys,
        ["cluster-c/one.db", "cluster-c/one.db.meta.json"],
        "{keys:?}"
    );

    let mut client = crate::harness::client(&s).await;
    client
        .delete("/s3", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    op.apply(
        "r.yaml",
        &format!(
            "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata:\n  name: r\nspec:\n  \
             etcdCluster:\n    name: c\n  backupStorageType: S3\n{}",
            s3("cluster-c/one.db")
        ),
    );
    wait_restore(&op, "r", "Completed").await;
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/s3").await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_only_touches_what_its_own_etcdbackup_wrote() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    // Two EtcdBackups whose paths share a string prefix, on one storage:
    // `prod` keeps one backup (policy plugin), `prod-eu` five (maxBackups).
    op.apply(
        "prod.yaml",
        &backup_yaml(
            "prod-b",
            "c",
            "local",
            "shared/prod",
            "    backupIntervalInSecond: 2\n    plugin:\n      name: retention\n      config:\n        \
             keep-last: \"1\"\n",
            "      {}\n",
        ),
    );
    op.apply(
        "prodeu.yaml",
        &backup_yaml(
            "prodeu-b",
            "c",
            "local",
            "shared/prod-eu",
            "    backupIntervalInSecond: 2\n    maxBackups: 5\n",
            "      {}\n",
        ),
    );
    let successes = |name: &str| {
        op.events_of("BackupSucceeded")
            .iter()
            .filter(|e| e["name"] == name)
            .count()
    };
    let start = Instant::now();
    let mut i = 0;
    while successes("prodeu-b") < 7 || successes("prod-b") < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{:?}",
            op.events()
        );
        // A new revision each round, so each backup has its own name.
        write_keys(&s, &format!("/r{i}"), 1).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Stop both, and count once each has finished its last run (a run's
    // retention comes after its upload; a worker ends after its run).
    op.remove("prod.yaml");
    op.remove("prodeu.yaml");
    let start = Instant::now();
    while ["prod-b", "prodeu-b"].iter().any(|n| {
        op.object_status::<EtcdBackupStatus>("EtcdBackup", n)
            .is_some()
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "backups still running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dir = op.backups().join("shared");
    let eu = backup_files(&dir, "prod-eu_v");
    let prod: BTreeSet<String> = backup_files(&dir, "prod_v");
    assert_eq!(eu.len(), 5, "prod-eu keeps its five: {eu:?}");
    assert_eq!(prod.len(), 1, "prod keeps its one: {prod:?}");
    assert!(
        op.events_of("RetentionFailed").is_empty(),
        "{:?}",
        op.events_of("RetentionFailed")
    );
    // Metadata names the EtcdBackup that wrote each backup.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{}.meta.json", eu.iter().next().unwrap()))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["owner"]["backup"], "prodeu-b", "{meta}");
    assert_eq!(meta["owner"]["cluster"], "c", "{meta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_naming_the_field_and_others_keep_running() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    for (name, policy, field) in [
        (
            "huge-interval",
            "    backupIntervalInSecond: 9223372036854775807\n",
            "backupIntervalInSecond",
        ),
        (
            "huge-timeout",
            "    timeoutInSecond: 9223372036854775807\n",
            "timeoutInSecond",
        ),
    ] {
        op.apply(
            &format!("{name}.yaml"),
            &backup_yaml(name, "c", "local", name, policy, "      {}\n"),
        );
        let s = op
            .wait_object::<EtcdBackupStatus>("EtcdBackup", name, "a refusal", |s| {
                cond(&s.conditions, "Failed").is_some_and(|c| c.status == "True")
            })
            .await;
        let failed = cond(&s.conditions, "Failed").unwrap();
        let message = failed.message.as_deref().unwrap_or_default();
        assert_eq!(failed.reason.as_deref(), Some("InvalidSpec"));
        assert!(
            message.contains(&format!("spec.backupPolicy.{field} is 9223372036854775807"))
                && message.contains("between 0 and"),
            "{message}"
        );
    }
    // The operator and its other workers are still running.
    op.apply("ok.yaml", &one_shot("ok", "c", "ok/snap"));
    wait_backup_ok(&op, "ok").await;
    assert!(op.events_of("InternalError").is_empty());
}

/// An in-place restore whose operator is killed at `point`: the next run
/// restores again from the start and every key of the backup is back.
async fn restore_killed_at(point: &str) {
    let mut op = Operator::start_armed(point, &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/r", 100).await;
    op.apply("b.yaml", &one_shot("b", "c", "c/one.db"));
    wait_backup_ok(&op, "b").await;
    op.apply("r.yaml", &restore_yaml("r", "c", "c/one.db", ""));
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    let r = wait_restore(&op, "r", "Completed").await;
    assert!(r.succeeded, "{r:?}");
    let s = op.wait_ready("c", 3).await;
    assert_eq!(read_prefix(&s, "/r").await, written, "every key is back");
    assert_eq!(op.member_dirs("c").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_after_deleting_the_old_members_is_run_again() {
    restore_killed_at("restore-after-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_after_starting_its_first_member_is_run_again() {
    restore_killed_at("restore-after-first-start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_members_cannot_start_leaves_the_cluster_untouched() {
    // etcd 3.4 without its etcdctl: the backup verifies (with 3.5's
    // etcdutl), but no member of this 3.4 cluster could be restored.
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fake.path().join("3.4")).unwrap();
    let etcd = fake.path().join("3.4/etcd");
    std::fs::write(&etcd, "#!/bin/sh\nexec /usr/bin/etcd \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let op = Operator::start(&["--etcd-dir", &fake.path().display().to_string()]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.4.23", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/keep", 20).await;
    op.apply("b.yaml", &one_shot("b", "c", "c/one.db"));
    wait_backup_ok(&op, "b").await;
    let before = member_names(&op, "c");

    op.apply("r.yaml", &restore_yaml("r", "c", "c/one.db", ""));
    let r = wait_restore(&op, "r", "Failed").await;
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("left untouched") && reason.contains("etcdctl"),
        "{reason}"
    );
    let s = op.wait_ready("c", 3).await;
    assert_eq!(member_names(&op, "c"), before, "the same members still run");
    assert_eq!(
        op.member_dirs("c").len(),
        3,
        "the reserved members are gone"
    );
    assert_eq!(read_prefix(&s, "/keep").await, written);
    assert!(op.events_of("ClusterRestored").is_empty());
}

/// The ABS, GCS and OSS blocks of CoreOS YAML, end to end: a one-shot backup
/// of a real cluster to each service's real server (Azurite, checking
/// SharedKey signatures; gcp-storage-emulator; the OSS test server, checking
/// signatures, since no OSS emulator exists) through the bundled plugin, the
/// data lost, and an EtcdRestore from that backup brings every key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_through_the_coreos_abs_gcs_and_oss_blocks() {
    use crate::common::oss_server::OssServer;
    use crate::common::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, GcsEmulator};
    let azurite = Azurite::start();
    azurite.create_container("etcd-backups");
    let gcs = GcsEmulator::start("etcd-backups");
    let oss = OssServer::start("oss-id", "oss-secret");
    oss.create_bucket("etcd-backups");
    let op = Operator::start(&["--allow-network", "127.0.0.1/32"]);
    let secret = |name: &str, data: serde_json::Value| {
        let s = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": name}, "stringData": data});
        op.apply(&format!("{name}.yaml"), &serde_yaml::to_string(&s).unwrap());
    };
    secret(
        "abs",
        serde_json::json!({"storage-account": AZURITE_ACCOUNT, "storage-key": AZURITE_KEY,
                           "endpoint": azurite.endpoint}),
    );
    secret(
        "gcp",
        serde_json::json!({"access-token": "emulator", "endpoint": gcs.endpoint}),
    );
    secret(
        "oss",
        serde_json::json!({"accessKeyID": "oss-id", "accessKeySecret": "oss-secret"}),
    );
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let mut s = op.wait_ready("c", 1).await;
    let written = write_keys(&s, "/coreos", 100).await;

    let blocks = [
        (
            "ABS",
            "abs:\n    path: etcd-backups/c/abs.db\n    absSecret: abs\n".to_string(),
        ),
        (
            "GCS",
            "gcs:\n    path: etcd-backups/c/gcs.db\n    gcpSecret: gcp\n".to_string(),
        ),
        (
            "OSS",
            format!(
                "oss:\n    path: etcd-backups/c/oss.db\n    ossSecret: oss\n    endpoint: {}\n",
                oss.endpoint
            ),
        ),
    ];
    for (kind, block) in &blocks {
        let name = kind.to_lowercase();
        op.apply(
            &format!("b-{name}.yaml"),
            &format!(
                "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdBackup\nmetadata:\n  name: b-{name}\nspec:\n  \
                 etcdCluster:\n    name: c\n  storageType: {kind}\n  backupPolicy:\n    timeoutInSecond: 120\n  {block}"
            ),
        );
        let b = wait_backup_ok(&op, &format!("b-{name}")).await;
        assert_eq!(
            b.last_backup_key.as_deref(),
            Some(format!("c/{name}.db").as_str()),
            "{kind}: {b:?}"
        );
    }
    let (oss_keys, open_uploads) = oss.keys("etcd-backups");
    assert!(
        oss_keys.contains(&"c/oss.db".to_string()) && open_uploads == 0,
        "{oss_keys:?}"
    );

    for (kind, block) in &blocks {
        let name = kind.to_lowercase();
        let mut client = crate::harness::client(&s).await;
        client
            .delete(
                "/coreos",
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        op.apply(
            &format!("r-{name}.yaml"),
            &format!(
                "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdRestore\nmetadata:\n  name: r-{name}\nspec:\n  \
                 etcdCluster:\n    name: c\n  backupStorageType: {kind}\n  {block}"
            ),
        );
        wait_restore(&op, &format!("r-{name}"), "Completed").await;
        let before = s.client_urls.clone();
        let restored = op
            .wait("c", "the restored member", |st| {
                st.members.ready.len() == 1 && st.client_urls != before
            })
            .await;
        assert_eq!(
            read_prefix(&restored, "/coreos").await,
            written,
            "{kind}: every key is back"
        );
        op.remove(&format!("r-{name}.yaml"));
        s = restored;
    }
}
