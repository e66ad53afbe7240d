//! The example plugins in other languages (plugins/examples/, built from
//! source by plugins/examples/build.sh): a JavaScript storage plugin against
//! a real WebDAV server, and backup policies in JavaScript, Python and Go. Each passes the
//! conformance kit and behaves as its configuration says.

use etcd_operator::plugins::conformance::test_policy;
use etcd_operator::plugins::{
    BackupContext, Grants, GuestErrorKind, LoadedPlugin, ObjectInfo, PolicyPlugin,
    PreBackupDecision, StoragePlugin, registry,
};

use crate::common::webdav::WebDav;
use crate::common::{self, config};

fn load(name: &str) -> LoadedPlugin {
    let bytes = std::fs::read(common::example_path(name)).unwrap();
    registry::load(&common::engine_with(Default::default()), name, &bytes).unwrap()
}

fn policy(name: &str) -> PolicyPlugin {
    match load(name) {
        LoadedPlugin::Policy(p) => p,
        _ => panic!("{name} is a policy plugin"),
    }
}

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000_000;

fn ctx(revision: i64, last_revision: Option<i64>, last_ms: Option<u64>, now: u64) -> BackupContext {
    BackupContext {
        namespace: "default".into(),
        name: "b".into(),
        path_prefix: "etcd/prod".into(),
        revision,
        etcd_version: "3.5.1".into(),
        last_backup_revision: last_revision,
        last_backup_ms: last_ms,
        now_ms: now,
    }
}

/// One backup an hour for `n` hours, newest first.
fn hourly(n: u64) -> Vec<ObjectInfo> {
    (0..n)
        .map(|i| ObjectInfo {
            key: format!("etcd/prod_v{}_{i:03}", 1000 - i),
            size: 10,
            last_modified_ms: NOW - i * HOUR,
        })
        .collect()
}

async fn invalid_config_naming(p: &PolicyPlugin, cfg: &[(&str, &str)], key: &str) {
    let err = p
        .pre_backup(&config(cfg), &ctx(2, Some(1), None, NOW))
        .await
        .unwrap_err();
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::InvalidConfig),
        "{err}"
    );
    assert!(err.to_string().contains(key), "{err}");
}

#[tokio::test]
async fn python_time_window_skips_unchanged_revisions_and_keeps_one_backup_a_day_for_a_week() {
    let p = policy("time-window");
    let report = test_policy(&p, &[]).await;
    assert!(report.passed(), "{report}");

    let unchanged = p
        .pre_backup(&[], &ctx(7, Some(7), Some(NOW - HOUR), NOW))
        .await
        .unwrap();
    assert!(
        matches!(&unchanged, PreBackupDecision::Skip(r) if r.contains("unchanged")),
        "{unchanged:?}"
    );
    let changed = p
        .pre_backup(&[], &ctx(8, Some(7), Some(NOW - HOUR), NOW))
        .await
        .unwrap();
    assert_eq!(changed, PreBackupDecision::Proceed);
    let first = p.pre_backup(&[], &ctx(8, None, None, NOW)).await.unwrap();
    assert_eq!(first, PreBackupDecision::Proceed);
    // NOW is 22:13 UTC.
    let outside = p
        .pre_backup(
            &config(&[("window", "01:00-05:00")]),
            &ctx(8, Some(7), None, NOW),
        )
        .await
        .unwrap();
    assert!(
        matches!(&outside, PreBackupDecision::Skip(r) if r.contains("01:00-05:00")),
        "{outside:?}"
    );
    let wrapping = p
        .pre_backup(
            &config(&[("window", "22:00-04:00")]),
            &ctx(8, Some(7), None, NOW),
        )
        .await
        .unwrap();
    assert_eq!(wrapping, PreBackupDecision::Proceed);
    assert_eq!(
        p.backup_name(&[], &ctx(8, None, None, NOW)).await.unwrap(),
        None
    );

    // Ten days of hourly backups: the newest of each of the last 7 UTC days stays.
    let backups = hourly(240);
    let deleted = p.retention(&[], &backups, NOW).await.unwrap();
    let kept: Vec<&ObjectInfo> = backups
        .iter()
        .filter(|b| !deleted.contains(&b.key))
        .collect();
    assert_eq!(kept.len(), 7, "{kept:?}");
    assert_eq!(kept[0].key, backups[0].key, "the newest is kept");
    let days: std::collections::BTreeSet<u64> =
        kept.iter().map(|b| b.last_modified_ms / DAY).collect();
    assert_eq!(days.len(), 7, "one per day");
    assert!(
        kept.iter()
            .all(|b| NOW / DAY - b.last_modified_ms / DAY < 7)
    );
    let three = p
        .retention(&config(&[("days", "3")]), &backups, NOW)
        .await
        .unwrap();
    assert_eq!(backups.len() - three.len(), 3);
    // A backend that does not know a backup's age: never deleted.
    let undated = [ObjectInfo {
        key: "old".into(),
        size: 1,
        last_modified_ms: 0,
    }];
    assert!(p.retention(&[], &undated, NOW).await.unwrap().is_empty());

    invalid_config_naming(&p, &[("days", "0")], "`days`").await;
    invalid_config_naming(&p, &[("window", "morning")], "`window`").await;
    invalid_config_naming(&p, &[("keep-daily", "7")], "`keep-daily`").await;
}

#[tokio::test]
async fn go_count_age_keeps_the_newest_by_count_and_age_and_names_backups_by_date() {
    let p = policy("count-age");
    let report = test_policy(&p, &[]).await;
    assert!(report.passed(), "{report}");

    let backups = hourly(240);
    let deleted = p
        .retention(&config(&[("keep", "3"), ("max-age", "0s")]), &backups, NOW)
        .await
        .unwrap();
    let mut expected: Vec<String> = backups[3..].iter().map(|b| b.key.clone()).collect();
    let mut got = deleted.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Default keep 10; max-age 5h leaves the 6 youngest (ages 0..=5 h).
    let deleted = p
        .retention(&config(&[("max-age", "5h")]), &backups, NOW)
        .await
        .unwrap();
    assert_eq!(backups.len() - deleted.len(), 6);

    let cfg = config(&[("min-interval", "2h")]);
    let soon = p
        .pre_backup(&cfg, &ctx(9, Some(8), Some(NOW - HOUR), NOW))
        .await
        .unwrap();
    assert!(
        matches!(&soon, PreBackupDecision::Skip(r) if r.contains("min-interval 2h")),
        "{soon:?}"
    );
    let later = p
        .pre_backup(&cfg, &ctx(9, Some(8), Some(NOW - 3 * HOUR), NOW))
        .await
        .unwrap();
    assert_eq!(later, PreBackupDecision::Proceed);

    let named = p
        .backup_name(
            &config(&[("dated-names", "true")]),
            &ctx(42, None, None, NOW),
        )
        .await
        .unwrap();
    assert_eq!(named.as_deref(), Some("etcd/prod.20231114T221320Z.r42.db"));
    assert_eq!(
        p.backup_name(&[], &ctx(42, None, None, NOW)).await.unwrap(),
        None
    );

    invalid_config_naming(&p, &[("keep", "none")], "`keep`").await;
    invalid_config_naming(&p, &[("max-age", "a week")], "`max-age`").await;
    invalid_config_naming(&p, &[("colour", "red")], "`colour`").await;
}

#[tokio::test]
async fn javascript_revision_gate_waits_for_enough_writes_and_keeps_the_newest() {
    let p = policy("revision-gate");
    let report = test_policy(&p, &[]).await;
    assert!(report.passed(), "{report}");
    let cfg = config(&[("min-revisions", "100"), ("keep", "4")]);
    let few = p
        .pre_backup(&cfg, &ctx(150, Some(100), None, NOW))
        .await
        .unwrap();
    assert!(
        matches!(&few, PreBackupDecision::Skip(r) if r.contains("50 revisions")),
        "{few:?}"
    );
    let enough = p
        .pre_backup(&cfg, &ctx(200, Some(100), None, NOW))
        .await
        .unwrap();
    assert_eq!(enough, PreBackupDecision::Proceed);
    let backups = hourly(10);
    let mut deleted = p.retention(&cfg, &backups, NOW).await.unwrap();
    deleted.sort();
    let mut expected: Vec<String> = backups[4..].iter().map(|b| b.key.clone()).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    invalid_config_naming(&p, &[("keep", "0")], "`keep`").await;
}

#[test]
fn every_example_policy_passes_plugin_test_on_the_command_line() {
    for name in ["time-window", "count-age", "revision-gate"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .args(["plugin", "test"])
            .arg(common::example_path(name))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {report}");
        assert!(report.contains("4 passed, 0 failed"), "{name}: {report}");
    }
}

#[test]
fn javascript_webdav_passes_plugin_test_against_nginx_with_a_64_mib_streamed_round_trip() {
    let dav = WebDav::start();
    // SpiderMonkey frees the chunks it was handed only at a major garbage
    // collection, which its heuristics start past the default 64 MiB; 128 MiB
    // holds any size (docs/plugin-authoring.md).
    let report = common::plugin_test_file(
        &common::example_path("webdav"),
        &dav.config(),
        &dav.endpoint,
        &["--memory-mib", "128"],
    );
    assert!(report.contains("large round-trip"), "{report}");
    // A plugin of the plain storage-backend world still passes; the kit says
    // what it lacks.
    assert!(
        report.contains("not exported (world storage-backend)"),
        "{report}"
    );
    // Nothing is left behind but empty collections.
    assert!(dav.keys().is_empty(), "{:?}", dav.keys());
}

#[tokio::test]
async fn javascript_webdav_keys_errors_and_atomic_uploads() {
    let dav = WebDav::start();
    let LoadedPlugin::Storage(webdav) = load("webdav") else {
        panic!("webdav is a storage plugin")
    };
    let webdav: StoragePlugin = webdav;
    let grants = common::loopback_grants(&dav.endpoint);

    let open_err = |cfg: Vec<(String, String)>| {
        let (webdav, grants) = (&webdav, &grants);
        async move {
            webdav
                .open(&cfg, grants)
                .await
                .err()
                .expect("open must fail")
        }
    };
    let e = open_err(config(&[])).await;
    assert_eq!(e.guest_kind(), Some(GuestErrorKind::InvalidConfig), "{e}");
    assert!(e.to_string().contains("`url`"), "{e}");
    let mut wrong = dav.config();
    wrong.retain(|(k, _)| k != "password");
    wrong.push(("password".into(), "wrong".into()));
    let e = open_err(wrong).await;
    assert_eq!(e.guest_kind(), Some(GuestErrorKind::Unauthorized), "{e}");
    let missing = config(&[
        ("url", &format!("{}/nowhere/", dav.endpoint)),
        ("username", common::webdav::USER),
        ("password", common::webdav::PASSWORD),
    ]);
    let e = open_err(missing).await;
    assert_eq!(e.guest_kind(), Some(GuestErrorKind::InvalidConfig), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Egress is still the operator's: a server not allowed is refused.
    let e = webdav
        .open(&dav.config(), &Grants::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("127.0.0.1"), "{e}");

    let mut s = webdav.open(&dav.config(), &grants).await.unwrap();
    let key = "prod/with space/ünïcode_v7.db";
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let up = s.upload_from(key, &mut data.as_slice()).await.unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(
        dav.keys(),
        [key],
        "stored under its key, temporary object gone"
    );
    let listed = s.list("prod/with").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        (key, data.len() as u64)
    );
    assert!(listed[0].last_modified_ms > 1_700_000_000_000, "{listed:?}");
    assert!(s.list("prod/other").await.unwrap().is_empty());
    let mut back = Vec::new();
    s.download_to(key, &mut back).await.unwrap();
    assert!(back == data, "downloaded bytes differ");

    // A download dropped half-way releases its HTTP resources in order; the
    // session goes on.
    let d = s.open_download(key).await.unwrap();
    assert_eq!(s.size(&d).await.unwrap(), Some(data.len() as u64));
    let first = s.read(&d, 1000).await.unwrap();
    assert!(!first.is_empty() && first.len() <= 1000 && first[..] == data[..first.len()]);
    s.close_download(d).await;
    assert_eq!(s.list("prod/").await.unwrap().len(), 1);

    // An upload in progress is invisible under its key and the old object
    // stays readable; abort leaves the old object alone.
    let up = s.start_upload(key).await.unwrap();
    s.write(&up, &[1u8; 1000]).await.unwrap();
    assert_eq!(s.list("prod/").await.unwrap().len(), 1);
    s.abort(up).await.unwrap();
    let mut again = Vec::new();
    s.download_to(key, &mut again).await.unwrap();
    assert!(again == data, "the aborted upload replaced the object");
    assert_eq!(dav.keys(), [key]);

    s.delete(key).await.unwrap();
    let e = s.delete(key).await.unwrap_err();
    assert_eq!(e.guest_kind(), Some(GuestErrorKind::NotFound), "{e}");
    assert!(dav.keys().is_empty());
}
