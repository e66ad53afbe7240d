//! The `retention` reference policy through the host.

use etcd_operator::plugins::conformance::test_policy;
use etcd_operator::plugins::{
    BackupContext, GuestErrorKind, LoadedPlugin, ObjectInfo, PolicyPlugin, PreBackupDecision,
};

use crate::common::{self, config};

fn retention() -> PolicyPlugin {
    match common::load(&common::engine(), "retention") {
        LoadedPlugin::Policy(p) => p,
        _ => panic!("retention is a policy plugin"),
    }
}

const HOUR: u64 = 3_600_000;
const NOW: u64 = 1_700_000_000_000;

/// One backup an hour, newest first.
fn hourly(n: u64) -> Vec<ObjectInfo> {
    (0..n)
        .map(|i| ObjectInfo {
            key: format!("b{i:03}"),
            size: 10,
            last_modified_ms: NOW - i * HOUR,
        })
        .collect()
}

#[tokio::test]
async fn keep_last_deletes_the_oldest() {
    let mut deleted = retention()
        .retention(&config(&[("keep-last", "2")]), &hourly(5), NOW)
        .await
        .unwrap();
    deleted.sort();
    assert_eq!(deleted, ["b002", "b003", "b004"]);
}

#[tokio::test]
async fn grandfather_father_son_keeps_one_per_period() {
    // 10 days of hourly backups; keep 3 hourly + 4 daily + 2 weekly.
    let backups = hourly(240);
    let cfg = config(&[
        ("keep-hourly", "3"),
        ("keep-daily", "4"),
        ("keep-weekly", "2"),
    ]);
    let deleted = retention().retention(&cfg, &backups, NOW).await.unwrap();
    let kept: Vec<&ObjectInfo> = backups
        .iter()
        .filter(|b| !deleted.contains(&b.key))
        .collect();
    assert!(
        kept.iter().any(|b| b.key == "b000"),
        "the newest is always kept"
    );
    let days: std::collections::BTreeSet<u64> = kept
        .iter()
        .map(|b| b.last_modified_ms / (24 * HOUR))
        .collect();
    assert!(days.len() >= 4, "one backup for each of 4 days: {kept:?}");
    assert!(
        kept.len() <= 3 + 4 + 2,
        "at most one per rule slot: {}",
        kept.len()
    );
    assert!(kept.len() >= 4);
}

#[tokio::test]
async fn missing_rules_are_an_invalid_config_naming_the_keys() {
    let err = retention()
        .retention(&[], &hourly(3), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::InvalidConfig));
    assert!(err.to_string().contains("keep-last"), "{err}");
    let err = retention()
        .retention(&config(&[("keep-last", "many")]), &hourly(3), NOW)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`keep-last` must be a non-negative whole number, got `many`"),
        "{err}"
    );
}

#[tokio::test]
async fn skip_unchanged_skips_when_the_revision_did_not_move() {
    let ctx = BackupContext {
        namespace: "ns".into(),
        name: "b".into(),
        path_prefix: "p".into(),
        revision: 7,
        etcd_version: "3.5.1".into(),
        last_backup_revision: Some(7),
        last_backup_ms: Some(NOW - HOUR),
        now_ms: NOW,
    };
    let p = retention();
    let skip = config(&[("skip-unchanged", "true")]);
    assert!(
        matches!(p.pre_backup(&skip, &ctx).await.unwrap(), PreBackupDecision::Skip(r) if r.contains("revision 7"))
    );
    let moved = BackupContext {
        revision: 8,
        ..ctx.clone()
    };
    assert_eq!(
        p.pre_backup(&skip, &moved).await.unwrap(),
        PreBackupDecision::Proceed
    );
    assert_eq!(
        p.pre_backup(&[], &ctx).await.unwrap(),
        PreBackupDecision::Proceed
    );
    assert_eq!(p.backup_name(&[], &ctx).await.unwrap(), None);
}

#[tokio::test]
async fn passes_the_conformance_kit() {
    let report = test_policy(
        &retention(),
        &config(&[("keep-last", "3"), ("keep-daily", "7")]),
    )
    .await;
    assert!(report.passed(), "{report}");
}
