//! The reconciler's conversation with its runtime and with etcd, over the
//! fakes in `fakes`: on partial, stale and contradictory observations, what
//! it calls, in order, and what it does not.

use std::sync::Arc;
use std::time::Duration;

use super::fakes::{FakeEtcd, FakeRuntime, Log, gone, running};
use super::{Action, ClusterKey, Reconciler, Tuning};
use crate::api::{EtcdClusterSpec, EtcdClusterStatus};

fn key() -> ClusterKey {
    ClusterKey {
        namespace: "default".into(),
        name: "c".into(),
    }
}

fn spec(size: i32) -> EtcdClusterSpec {
    EtcdClusterSpec {
        size,
        version: Some("3.5.1".into()),
        ..Default::default()
    }
}

/// A status from a cluster that has served.
fn served() -> EtcdClusterStatus {
    EtcdClusterStatus {
        first_served_time: Some("2026-12-01T00:00:00Z".into()),
        phase: Some("Running".into()),
        ..Default::default()
    }
}

/// Thresholds at zero: anything the core would ever do, it does at once.
fn impatient() -> Tuning {
    Tuning {
        member_failure_grace: Duration::ZERO,
        quorum_loss_timeout: Duration::ZERO,
    }
}

struct Stage {
    log: Log,
    etcd: Arc<FakeEtcd>,
    reconciler: Reconciler<FakeRuntime, FakeEtcd>,
}

fn stage(members: Vec<crate::controller::RuntimeMember>) -> Stage {
    let log = Log::default();
    let runtime = Arc::new(FakeRuntime::new(log.clone(), members));
    let etcd = Arc::new(FakeEtcd::new(log.clone()));
    let reconciler = Reconciler::with_etcd(runtime, etcd.clone(), impatient());
    Stage {
        log,
        etcd,
        reconciler,
    }
}

impl Stage {
    fn calls(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn an_operator_cut_off_from_running_members_calls_nothing_however_long() {
    let s = stage(vec![running("a"), running("b"), running("c")]);
    for m in ["a", "b", "c"] {
        s.etcd.times_out(m);
    }
    let mut status = served();
    for _ in 0..20 {
        let out = s
            .reconciler
            .reconcile(&key(), &spec(3), Some(&status))
            .await;
        status = out.status;
        assert!(
            matches!(&out.action, Action::Wait { reason } if reason.contains("a (timed out)")),
            "{:?}",
            out.action
        );
    }
    assert_eq!(s.calls(), Vec::<String>::new(), "not a single step taken");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.first_served_time.is_some());
}

#[tokio::test]
async fn a_member_whose_runtime_object_is_gone_is_removed_from_the_membership_only() {
    let s = stage(vec![running("a"), running("b")]);
    s.etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    s.etcd.answers("a", 1, 1, 100);
    s.etcd.answers("b", 2, 1, 100);
    let out = s
        .reconciler
        .reconcile(&key(), &spec(3), Some(&served()))
        .await;
    assert!(
        matches!(out.action, Action::Replace { id: 3, .. }),
        "{:?}",
        out.action
    );
    assert_eq!(
        s.calls(),
        vec!["etcd remove 3 via http://a:2379,http://b:2379".to_string()]
    );
    assert!(out.events.iter().any(|e| e.reason == "MemberReplaced"));
}

#[tokio::test]
async fn a_lost_lease_stops_the_step_before_etcd_is_asked() {
    let log = Log::default();
    let runtime = Arc::new(FakeRuntime::new(
        log.clone(),
        vec![running("a"), running("b")],
    ));
    let etcd = Arc::new(FakeEtcd::new(log.clone()));
    etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    etcd.answers("a", 1, 1, 100);
    etcd.answers("b", 2, 1, 100);
    let reconciler =
        Reconciler::with_etcd(runtime, etcd, impatient()).with_guard(Arc::new(|| false));
    let out = reconciler
        .reconcile(&key(), &spec(3), Some(&served()))
        .await;
    assert!(matches!(out.action, Action::Replace { .. }));
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    assert!(
        out.status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("leader Lease")),
        "{:?}",
        out.status.reason
    );
}

#[tokio::test]
async fn recovery_waits_for_the_raft_indexes_then_touches_only_the_survivor() {
    // Five voters: two run without a leader (one not answering yet), three
    // are gone with their data, by the runtime's word.
    let s = stage(vec![
        running("a"),
        running("b"),
        gone("c"),
        gone("d"),
        gone("e"),
    ]);
    s.etcd.answers("a", 1, 0, 90);
    s.etcd.times_out("b");
    let out = s
        .reconciler
        .reconcile(&key(), &spec(5), Some(&served()))
        .await;
    assert!(
        matches!(&out.action, Action::Wait { reason } if reason.contains("raft index of running member b")),
        "{:?}",
        out.action
    );
    assert!(s.calls().is_empty());
    // b answers, further ahead: it is the survivor, and the only member touched.
    s.etcd.answers("b", 2, 0, 120);
    let out = s
        .reconciler
        .reconcile(&key(), &spec(5), Some(&out.status))
        .await;
    assert_eq!(
        out.action,
        Action::Recover {
            survivor: "b".into()
        }
    );
    assert_eq!(
        s.calls(),
        vec![
            "runtime stop b".to_string(),
            "runtime start b ForceNewCluster".to_string()
        ]
    );
}

#[tokio::test]
async fn a_restore_whose_members_cannot_start_deletes_only_what_it_reserved() {
    let log = Log::default();
    let runtime = Arc::new(FakeRuntime::new(
        log.clone(),
        vec![running("a"), running("b"), running("c")],
    ));
    *runtime.restore_check.lock().unwrap() = Err("no etcdctl beside etcd".into());
    let etcd = Arc::new(FakeEtcd::new(log.clone()));
    let reconciler = Reconciler::with_etcd(runtime.clone(), etcd, impatient());
    let snapshot = tempfile::NamedTempFile::new().unwrap();
    let err = reconciler
        .restore(&key(), &spec(3), snapshot.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("left untouched"), "{err}");
    let calls = log.lock().unwrap().clone();
    assert!(
        !calls.iter().any(
            |c| ["runtime delete a", "runtime delete b", "runtime delete c"].contains(&c.as_str())
        ),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("runtime start")),
        "{calls:?}"
    );
    let names: Vec<String> = runtime
        .members
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "only the running members remain");
}

/// A recovery source over one snapshot file: logs each fetch (`pinned` or
/// `newest`) and hands out a fresh copy of the file.
fn recovery_of(dir: &std::path::Path, log: Log) -> super::RecoverySource {
    let dir = dir.to_path_buf();
    Arc::new(move |_key, pin: Option<super::BackupPin>| {
        let (dir, log) = (dir.clone(), log.clone());
        Box::pin(async move {
            log.lock().unwrap().push(match &pin {
                Some(p) => format!("recovery fetch {} {}", p.key, p.sha256),
                None => "recovery fetch newest".to_string(),
            });
            let path = dir.join(format!("staged-{}.db", log.lock().unwrap().len()));
            std::fs::write(&path, b"snapshot").unwrap();
            Ok(Some(super::RecoverySnapshot {
                path,
                description: "`c/snap`".into(),
                pin: super::BackupPin {
                    key: "c/snap".into(),
                    sha256: "abc".into(),
                },
            }))
        })
    })
}

#[tokio::test]
async fn a_recovery_from_backup_is_recorded_before_anything_is_deleted_and_finished_after_a_crash()
{
    let log = Log::default();
    let runtime = Arc::new(FakeRuntime::new(
        log.clone(),
        vec![gone("a"), gone("b"), gone("c")],
    ));
    let etcd = Arc::new(FakeEtcd::new(log.clone()));
    let dir = tempfile::tempdir().unwrap();
    let first = Reconciler::with_etcd(runtime.clone(), etcd.clone(), impatient())
        .with_recovery(recovery_of(dir.path(), log.clone()));
    let out = first.reconcile(&key(), &spec(3), Some(&served())).await;
    let record = out
        .status
        .restoring
        .clone()
        .expect("the restore is recorded");
    assert_eq!(
        (record.backup.as_str(), record.sha256.as_str()),
        ("c/snap", "abc")
    );
    assert!(out.events.iter().any(|e| e.reason == "RestoringFromBackup"));
    let calls = log.lock().unwrap().clone();
    assert_eq!(calls[0], "recovery fetch newest");
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(" delete ") || c.contains(" start ")),
        "nothing deleted or started before the record is written: {calls:?}"
    );
    // The operator dies with the record written; the next one clears its
    // staging directory at start, has nothing in memory, fetches exactly
    // that backup, deletes the old members and starts the recorded ones.
    drop(first);
    crate::backup::restore::clear_staging(dir.path());
    log.lock().unwrap().clear();
    let next = Reconciler::with_etcd(runtime.clone(), etcd, impatient())
        .with_recovery(recovery_of(dir.path(), log.clone()));
    let out = next.reconcile(&key(), &spec(3), Some(&out.status)).await;
    assert_eq!(out.action, Action::FinishRestore);
    let calls = log.lock().unwrap().clone();
    assert_eq!(calls[0], "recovery fetch c/snap abc", "{calls:?}");
    for old in ["a", "b", "c"] {
        assert!(
            calls.contains(&format!("runtime delete {old}")),
            "{calls:?}"
        );
    }
    for new in &record.members {
        assert!(
            calls.contains(&format!("runtime start {new} Restore")),
            "{calls:?}"
        );
    }
    assert!(
        out.events
            .iter()
            .any(|e| e.reason == "QuorumRecoveredFromBackup")
    );
    assert_eq!(
        out.status.restoring.as_ref(),
        Some(&record),
        "kept until a quorum serves"
    );
    // Every recorded member runs: the next step only waits.
    log.lock().unwrap().clear();
    let out = next.reconcile(&key(), &spec(3), Some(&out.status)).await;
    assert_eq!(out.action, Action::FinishRestore);
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no staged snapshot is left behind"
    );
}

#[tokio::test]
async fn a_recovery_whose_members_fail_their_checks_deletes_nothing_and_downloads_once() {
    let log = Log::default();
    let runtime = Arc::new(FakeRuntime::new(
        log.clone(),
        vec![gone("a"), gone("b"), gone("c")],
    ));
    *runtime.restore_check.lock().unwrap() = Err("no etcdutl".into());
    let etcd = Arc::new(FakeEtcd::new(log.clone()));
    let dir = tempfile::tempdir().unwrap();
    let reconciler = Reconciler::with_etcd(runtime.clone(), etcd, impatient())
        .with_recovery(recovery_of(dir.path(), log.clone()));
    let mut status = served();
    for _ in 0..3 {
        let out = reconciler.reconcile(&key(), &spec(3), Some(&status)).await;
        assert!(
            out.status.restoring.is_none(),
            "nothing recorded while the checks fail"
        );
        status = out.status;
    }
    let calls = log.lock().unwrap().clone();
    let fetches = calls
        .iter()
        .filter(|c| c.starts_with("recovery fetch"))
        .count();
    assert_eq!(
        fetches, 1,
        "the verified snapshot is kept for the next attempt: {calls:?}"
    );
    for old in ["a", "b", "c"] {
        assert!(
            !calls.contains(&format!("runtime delete {old}")),
            "{calls:?}"
        );
    }
    // Fixed: the next attempt records the restore, still from that download.
    *runtime.restore_check.lock().unwrap() = Ok(());
    let out = reconciler.reconcile(&key(), &spec(3), Some(&status)).await;
    assert!(out.status.restoring.is_some());
    let fetches = log
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.starts_with("recovery fetch"))
        .count();
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn stale_status_naming_members_does_not_resurrect_an_empty_cluster() {
    // Contradictory: the previous status lists ready members, the runtime
    // has none, etcd answers nothing. The cluster served: never seeded.
    let s = stage(Vec::new());
    let mut previous = served();
    previous.members.ready = vec!["a".into(), "b".into()];
    let out = s
        .reconciler
        .reconcile(&key(), &spec(3), Some(&previous))
        .await;
    assert!(
        matches!(out.action, Action::Unrecoverable { .. }),
        "{:?}",
        out.action
    );
    assert!(s.calls().is_empty(), "{:?}", s.calls());
    assert_eq!(out.status.phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn a_shrink_removes_through_the_other_members_then_deletes() {
    // Sent through the member being removed, the removal is answered with
    // "server stopped" although it happened.
    let s = stage(vec![running("a"), running("b"), running("c")]);
    s.etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    for (name, id) in [("a", 1), ("b", 2), ("c", 3)] {
        s.etcd.answers(name, id, 1, 100);
    }
    let out = s
        .reconciler
        .reconcile(&key(), &spec(2), Some(&served()))
        .await;
    assert!(
        matches!(&out.action, Action::Shrink { name, id: 3 } if name == "c"),
        "{:?}",
        out.action
    );
    assert_eq!(
        s.calls(),
        vec![
            "etcd remove 3 via http://a:2379,http://b:2379".to_string(),
            "runtime delete c".to_string()
        ]
    );
}

fn defragmenting(size: i32) -> EtcdClusterSpec {
    EtcdClusterSpec {
        maintenance: Some(crate::api::MaintenancePolicy {
            defrag: Some(crate::api::DefragPolicy::default()),
            no_space: None,
        }),
        ..spec(size)
    }
}

#[tokio::test]
async fn fragmented_members_are_defragmented_one_per_step_followers_first_and_only_while_all_are_healthy()
 {
    let s = stage(vec![running("a"), running("b"), running("c")]);
    s.etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    let fragmented = |m: &str, id: u64| {
        // `a` (id 1) leads; each file is 400 MiB with 100 MiB in use.
        s.etcd.answers(m, id, 1, 100);
        s.etcd.db(m, 400 << 20, 100 << 20);
    };
    fragmented("a", 1);
    fragmented("b", 2);
    s.etcd.times_out("c");
    let status = served();
    // A member the operator cannot reach: nothing is defragmented.
    let out = s
        .reconciler
        .reconcile(&key(), &defragmenting(3), Some(&status))
        .await;
    assert!(
        !matches!(out.action, Action::Defragment { .. }),
        "{:?}",
        out.action
    );
    assert_eq!(s.calls(), Vec::<String>::new());

    fragmented("c", 3);
    let mut order = Vec::new();
    for _ in 0..4 {
        let out = s
            .reconciler
            .reconcile(&key(), &defragmenting(3), Some(&status))
            .await;
        if let Action::Defragment { name, .. } = &out.action {
            order.push(name.clone());
            assert_eq!(out.defragmented, Some(300 << 20));
            let event = out
                .events
                .iter()
                .find(|e| e.reason == "MemberDefragmented")
                .expect("an Event for each member");
            assert!(
                event
                    .message
                    .contains("from 400.0 MiB to 100.0 MiB (300.0 MiB given back"),
                "{}",
                event.message
            );
        } else {
            assert_eq!(out.action, Action::Steady, "done once all are compact");
        }
    }
    assert_eq!(order, ["b", "c", "a"], "followers by name, then the leader");
    assert_eq!(
        s.calls(),
        [
            "etcd defragment http://b:2379",
            "etcd defragment http://c:2379",
            "etcd defragment http://a:2379"
        ]
    );

    // Paused: nothing, however fragmented.
    fragmented("b", 2);
    let paused = EtcdClusterSpec {
        paused: Some(true),
        ..defragmenting(3)
    };
    let out = s.reconciler.reconcile(&key(), &paused, Some(&status)).await;
    assert!(!matches!(out.action, Action::Defragment { .. }));
    assert_eq!(s.calls().len(), 3);
}

#[tokio::test]
async fn an_out_of_range_defrag_policy_is_refused_naming_the_field() {
    let s = stage(vec![running("a")]);
    let mut spec = defragmenting(1);
    spec.maintenance
        .as_mut()
        .unwrap()
        .defrag
        .as_mut()
        .unwrap()
        .min_free_percent = Some(0);
    let out = s.reconciler.reconcile(&key(), &spec, Some(&served())).await;
    assert!(
        matches!(&out.action, Action::Refuse { reason } if reason.contains("spec.maintenance.defrag.minFreePercent is 0")),
        "{:?}",
        out.action
    );
    assert_eq!(s.calls(), Vec::<String>::new());
}

fn recovering(size: i32, quota_mib: i64) -> EtcdClusterSpec {
    EtcdClusterSpec {
        quota_backend_bytes: Some(quota_mib << 20),
        maintenance: Some(crate::api::MaintenancePolicy {
            defrag: None,
            no_space: Some(crate::api::NoSpacePolicy {
                recover: Some(true),
            }),
        }),
        ..spec(size)
    }
}

/// Every member's file at 100 MiB, running under a quota of `quota_mib`,
/// NOSPACE raised by `b`.
fn full_cluster(quota_mib: i64) -> Stage {
    let with_quota = |name| crate::controller::RuntimeMember {
        flags: vec![format!("--quota-backend-bytes={}", quota_mib << 20)],
        ..running(name)
    };
    let s = stage(vec![with_quota("a"), with_quota("b"), with_quota("c")]);
    s.etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    for (m, id) in [("a", 1), ("b", 2), ("c", 3)] {
        s.etcd.answers(m, id, 1, 100);
        s.etcd.db(m, 100 << 20, 100 << 20);
    }
    s.etcd.no_space(2);
    s
}

#[tokio::test]
async fn nospace_is_recovered_by_compacting_defragmenting_followers_first_and_disarming() {
    let s = full_cluster(100);
    // Without the policy, the alarm is reported and nothing is done.
    let reporting = EtcdClusterSpec {
        maintenance: None,
        ..recovering(3, 100)
    };
    let out = s
        .reconciler
        .reconcile(&key(), &reporting, Some(&served()))
        .await;
    assert_eq!(out.action, Action::Steady);
    assert_eq!(s.calls(), Vec::<String>::new());

    let spec = recovering(3, 100);
    let mut events = Vec::new();
    let mut status = served();
    for _ in 0..6 {
        let out = s.reconciler.reconcile(&key(), &spec, Some(&status)).await;
        events.extend(out.events.iter().map(|e| e.reason.clone()));
        status = out.status;
    }
    assert_eq!(
        s.calls(),
        [
            "etcd compact 10",
            "etcd defragment http://b:2379",
            "etcd defragment http://c:2379",
            "etcd defragment http://a:2379",
            "etcd disarm NOSPACE 2",
        ]
    );
    assert_eq!(
        events,
        [
            "AlarmRaised",
            "HistoryCompacted",
            "MemberDefragmented",
            "MemberDefragmented",
            "MemberDefragmented",
            "NoSpaceRecovered",
            "AlarmCleared",
        ]
    );
    assert!(status.alarms.is_empty(), "{:?}", status.alarms);
}

#[tokio::test]
async fn nospace_whose_data_fills_the_quota_is_reported_once_and_never_disarmed() {
    let s = full_cluster(30);
    // A quarter in use after compaction: 25 MiB, above 80 % of 30 MiB.
    let spec = recovering(3, 30);
    let mut events = Vec::new();
    let mut status = served();
    let mut last = None;
    for _ in 0..12 {
        let out = s.reconciler.reconcile(&key(), &spec, Some(&status)).await;
        events.extend(
            out.events
                .iter()
                .filter(|e| e.reason == "NoSpaceNotRecovered")
                .map(|e| e.message.clone()),
        );
        status = out.status;
        last = Some(out.action);
    }
    assert!(
        !s.calls().iter().any(|c| c.contains("disarm")),
        "{:?}",
        s.calls()
    );
    assert_eq!(
        s.calls()
            .iter()
            .filter(|c| c.contains("defragment"))
            .count(),
        6,
        "two rounds: {:?}",
        s.calls()
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]
            .contains("the data itself fills it; delete keys (the recovery then goes on) or raise"),
        "{}",
        events[0]
    );
    assert!(matches!(last, Some(Action::Wait { .. })), "{last:?}");
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("NOSPACE stays")),
        "{:?}",
        status.reason
    );
}

#[tokio::test]
async fn changed_etcd_flags_restart_members_one_per_step_followers_first_with_their_data() {
    let s = stage(vec![running("a"), running("b"), running("c")]);
    s.etcd.set_membership(&[("a", 1), ("b", 2), ("c", 3)]);
    for (m, id) in [("a", 1), ("b", 2), ("c", 3)] {
        s.etcd.answers(m, id, 1, 100);
    }
    let spec = EtcdClusterSpec {
        etcd_options: Some(
            [("snapshot-count".to_string(), "5000".to_string())]
                .into_iter()
                .collect(),
        ),
        ..spec(3)
    };
    let mut reconfigured = Vec::new();
    for _ in 0..4 {
        let out = s.reconciler.reconcile(&key(), &spec, Some(&served())).await;
        reconfigured.extend(
            out.events
                .iter()
                .filter(|e| e.reason == "MemberReconfigured")
                .map(|e| e.message.clone()),
        );
    }
    assert_eq!(
        s.calls(),
        [
            "runtime stop b",
            "runtime start b Join",
            "runtime stop c",
            "runtime start c Join",
            "runtime stop a",
            "runtime start a Join",
        ]
    );
    assert_eq!(reconfigured.len(), 3);
    assert_eq!(
        reconfigured[0],
        "restarted b with the spec's etcd flags: --snapshot-count=5000 (was: no extra flags)"
    );

    // A typo changes nothing and says which flag.
    let typo = EtcdClusterSpec {
        etcd_options: Some(
            [("snapshot-cout".to_string(), "5000".to_string())]
                .into_iter()
                .collect(),
        ),
        ..spec.clone()
    };
    let out = s.reconciler.reconcile(&key(), &typo, Some(&served())).await;
    assert!(
        matches!(&out.action, Action::Refuse { reason } if reason.contains("spec.etcdOptions.snapshot-cout is not an etcd flag the operator accepts (did you mean snapshot-count?)")),
        "{:?}",
        out.action
    );
    assert_eq!(s.calls().len(), 6);
}
