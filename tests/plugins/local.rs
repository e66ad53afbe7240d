//! The `local` reference plugin: conformance and its own guarantees.

use std::sync::Arc;

use etcd_operator::plugins::conformance::{StorageOptions, test_storage};
use etcd_operator::plugins::storage::UploadError;
use etcd_operator::plugins::{EgressPolicy, Grants, GuestErrorKind, LoadedPlugin, StoragePlugin};

use crate::common;

fn local() -> StoragePlugin {
    match common::load(&common::engine(), "local") {
        LoadedPlugin::Storage(p) => p,
        _ => panic!("local is a storage plugin"),
    }
}

fn grant(dir: &std::path::Path) -> Grants {
    Grants {
        egress: Arc::new(EgressPolicy::deny_all()),
        dir: Some(dir.to_path_buf()),
    }
}

#[tokio::test]
async fn passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StorageOptions::new(Vec::new(), grant(dir.path()));
    opts.large_bytes = 12 << 20;
    let report = test_storage(&local(), &opts).await;
    assert!(report.passed(), "{report}");
    assert_eq!(report.checks.len(), 9, "{report}");
    assert!(
        report
            .to_string()
            .contains("discarded 1 unfinished upload(s)"),
        "{report}"
    );
}

/// The part file of an upload whose sandbox was lost (no `abort`, no
/// destructor) is removed by `abandon-uploads` of its key; another key's
/// upload in progress keeps its part file and completes.
#[tokio::test]
async fn abandon_uploads_removes_only_the_lost_uploads_part_files() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join(".parts");
    let count = || std::fs::read_dir(&parts).map(|d| d.count()).unwrap_or(0);
    let plugin = local();
    let grants = grant(dir.path());
    let mut lost = plugin.open(&[], &grants).await.unwrap();
    let up = lost.start_upload("etcd/lost.db").await.unwrap();
    lost.write(&up, b"half a snapshot").await.unwrap();
    let mut live = plugin.open(&[], &grants).await.unwrap();
    let other = live.start_upload("etcd/other.db").await.unwrap();
    live.write(&other, b"in progress").await.unwrap();
    drop(lost);
    assert_eq!(count(), 2);

    let n = plugin
        .abandon_uploads(&[], &grants, "etcd/lost.db")
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    assert_eq!(count(), 1, "only the lost upload's part file went");
    assert_eq!(live.complete(other).await.unwrap(), 11);
    assert_eq!(
        std::fs::read(dir.path().join("etcd/other.db")).unwrap(),
        b"in progress"
    );
    assert!(!dir.path().join("etcd/lost.db").exists());
    assert_eq!(
        plugin
            .abandon_uploads(&[], &grants, "etcd/lost.db")
            .await
            .unwrap(),
        Some(0),
        "nothing left to discard is not an error"
    );
}

#[tokio::test]
async fn refuses_to_open_without_a_granted_directory() {
    let err = match local().open(&[], &Grants::default()).await {
        Ok(_) => panic!("open without a grant must fail"),
        Err(e) => e,
    };
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::InvalidConfig),
        "{err}"
    );
    assert!(err.to_string().contains("no directory is granted"), "{err}");
}

#[tokio::test]
async fn objects_are_files_under_their_keys_and_keys_cannot_escape() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = local().open(&[], &grant(dir.path())).await.unwrap();
    let t = s
        .upload_from("etcd/backup_v1", &b"snapshot"[..])
        .await
        .unwrap();
    assert_eq!(t.size, 8);
    assert_eq!(
        std::fs::read(dir.path().join("etcd/backup_v1")).unwrap(),
        b"snapshot"
    );
    for bad in ["../escape", "a/../../b", "/abs", "a//b", ".parts/x", ""] {
        let err = match s.start_upload(bad).await {
            Ok(_) => panic!("key {bad:?} must be refused"),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains("invalid object key"),
            "{bad:?}: {err}"
        );
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

/// A reader that yields some bytes and then fails, like a snapshot stream
/// cut off mid-way.
struct Failing(usize);
impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("snapshot stream broke")));
        }
        let n = self.0.min(buf.remaining()).min(300_000);
        buf.put_slice(&vec![1u8; n]);
        self.0 -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_upload_leaves_the_previous_object_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = local().open(&[], &grant(dir.path())).await.unwrap();
    s.upload_from("db", &b"good old backup"[..]).await.unwrap();
    let err = s.upload_from("db", Failing(3 << 20)).await.unwrap_err();
    assert!(matches!(err, UploadError::Source(_)), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("db")).unwrap(),
        b"good old backup"
    );
    let listed = s.list("").await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "no partial object may be listed: {listed:?}"
    );
    let parts: Vec<_> = std::fs::read_dir(dir.path().join(".parts"))
        .unwrap()
        .collect();
    assert!(parts.is_empty(), "aborted part files are removed");
}

/// A `complete` that cannot move the object into place leaves no part file;
/// part files of uploads that died without `abort` (a discarded sandbox runs
/// no destructor) are swept when they are an hour old.
#[tokio::test]
async fn failed_completes_and_dead_uploads_leave_no_part_files() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join(".parts");
    let count = || std::fs::read_dir(&parts).map(|d| d.count()).unwrap_or(0);
    let mut s = local().open(&[], &grant(dir.path())).await.unwrap();
    s.upload_from("a/b", &b"inner"[..]).await.unwrap();
    // `a` is now a non-empty directory: moving a file onto it fails.
    let up = s.start_upload("a").await.unwrap();
    s.write(&up, b"outer").await.unwrap();
    assert!(s.complete(up).await.is_err());
    assert_eq!(count(), 0, "the failed complete removed its part file");

    std::fs::create_dir_all(&parts).unwrap();
    let old = parts.join("1-dead");
    let young = parts.join("2-live");
    std::fs::write(&old, b"left by a trapped session").unwrap();
    std::fs::write(&young, b"an upload in progress").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    drop(local().open(&[], &grant(dir.path())).await.unwrap());
    assert!(!old.exists(), "the dead upload's part was swept");
    assert!(young.exists(), "a recent part is left alone");
}

/// Two EtcdBackups may share a directory, and one's retention deletes while
/// the other lists. A deleted entry once ended the sandbox's directory read
/// early, so the listing came back short without an error (and retention
/// kept backups it should have pruned). Every round here deletes 40 files
/// while listing; the 40 that stay must always all be listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_is_never_short_while_another_writer_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let stays: Vec<String> = (0..40).map(|i| format!("shared/prod_v{i}")).collect();
    for k in &stays {
        std::fs::write(dir.path().join(k), b"x").unwrap();
    }
    let mut s = local().open(&[], &grant(dir.path())).await.unwrap();
    for round in 0..200 {
        let doomed: Vec<_> = (0..40)
            .map(|i| shared.join(format!("prod-eu_v{round}_{i}")))
            .collect();
        for d in &doomed {
            std::fs::write(d, b"x").unwrap();
        }
        let deleter = std::thread::spawn(move || {
            for d in doomed {
                std::fs::remove_file(d).unwrap();
            }
        });
        let listed = s.list("shared/prod").await.unwrap();
        deleter.join().unwrap();
        let keys: std::collections::HashSet<String> = listed.into_iter().map(|o| o.key).collect();
        let missing: Vec<_> = stays.iter().filter(|k| !keys.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: the listing lacks {missing:?}"
        );
    }
}
