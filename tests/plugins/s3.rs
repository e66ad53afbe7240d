//! The `s3` plugin against a real S3 API (moto), through the operator's
//! sandbox and `wasi:http`.

use etcd_operator::plugins::{Grants, GuestErrorKind, LoadedPlugin, PluginError};

use crate::common::{self, Moto};

fn config(moto: &Moto, bucket: &str) -> Vec<(String, String)> {
    common::config(&[
        ("bucket", bucket),
        ("endpoint", &moto.endpoint),
        ("force-path-style", "true"),
        ("credentials", &moto.credentials()),
    ])
}

fn grants(moto: &Moto) -> Grants {
    common::loopback_grants(&moto.endpoint)
}

#[test]
fn s3_passes_plugin_test_against_moto_with_a_64_mib_multipart_round_trip() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    let report = common::plugin_test("s3", &config(&moto, "conformance"), &moto.endpoint);
    assert!(report.contains("large round-trip (multipart)"), "{report}");
    // Nothing left behind: the test deletes what it wrote, aborted uploads leave no object.
    assert!(
        moto.keys("conformance").is_empty(),
        "{:?}",
        moto.keys("conformance")
    );
    assert!(
        report.contains("discarded 1 unfinished upload(s)"),
        "{report}"
    );
    assert_eq!(moto.open_uploads("conformance"), Vec::<String>::new());
}

/// An upload whose sandbox is gone (as after a trap: no `abort`, no
/// destructor) leaves a multipart upload open at S3; `abandon-uploads` in a
/// fresh sandbox aborts it, and only it: another key's upload in progress,
/// and one whose key merely starts with the same text, stay open.
#[tokio::test]
async fn a_lost_multipart_upload_is_aborted_from_a_fresh_sandbox_and_no_other() {
    let moto = Moto::start();
    moto.create_bucket("lost-uploads");
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "s3") else {
        panic!("s3 is a storage plugin")
    };
    let (config, grants) = (config(&moto, "lost-uploads"), grants(&moto));
    let chunk = vec![7u8; etcd_operator::plugins::storage::CHUNK_SIZE];
    let mut sessions = Vec::new();
    for key in ["etcd/lost.db", "etcd/lost.db.longer", "etcd/other.db"] {
        let mut session = plugin.open(&config, &grants).await.unwrap();
        let upload = session.start_upload(key).await.unwrap();
        // Past two 8 MiB parts: opendal has sent the first, so the upload exists at S3.
        for _ in 0..17 {
            session.write(&upload, &chunk).await.unwrap();
        }
        sessions.push((session, upload));
    }
    let mut open = moto.open_uploads("lost-uploads");
    open.sort();
    assert_eq!(
        open,
        ["etcd/lost.db", "etcd/lost.db.longer", "etcd/other.db"]
    );

    // The first session is lost with its upload.
    drop(sessions.remove(0));
    let n = plugin
        .abandon_uploads(&config, &grants, "etcd/lost.db")
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    let mut open = moto.open_uploads("lost-uploads");
    open.sort();
    assert_eq!(open, ["etcd/lost.db.longer", "etcd/other.db"]);

    // The others finish normally.
    for (mut session, upload) in sessions {
        session.abort(upload).await.unwrap();
    }
    assert_eq!(moto.open_uploads("lost-uploads"), Vec::<String>::new());
    assert!(moto.keys("lost-uploads").is_empty());
}

#[tokio::test]
async fn s3_errors_name_the_bucket_and_map_to_the_contract() {
    let moto = Moto::start();
    moto.create_bucket("present");
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "s3") else {
        panic!("s3 is a storage plugin")
    };

    // A bucket that does not exist: not-found, naming it.
    let Ok(mut session) = plugin.open(&config(&moto, "absent"), &grants(&moto)).await else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.open_download("k").await else {
        panic!("download from a missing bucket succeeded")
    };
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("`absent`"), "{err}");

    // No credentials: invalid-config, saying what is missing.
    let mut no_creds = config(&moto, "present");
    no_creds.retain(|(k, _)| k != "credentials");
    let Err(err) = plugin.open(&no_creds, &grants(&moto)).await else {
        panic!("opened without credentials")
    };
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::InvalidConfig),
        "{err}"
    );
    assert!(err.to_string().contains("aws_access_key_id"), "{err}");

    // A wrong secret: moto checks the signature like AWS, and the refusal
    // is `unauthorized`, a permanent error (the backup controller does not
    // retry it), naming the bucket.
    let mut wrong = config(&moto, "present");
    for (k, v) in &mut wrong {
        if k == "credentials" {
            *v = moto.wrong_credentials();
        }
    }
    let Ok(mut session) = plugin.open(&wrong, &grants(&moto)).await else {
        panic!("open does not contact the store")
    };
    let err = session.list("").await.unwrap_err();
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::Unauthorized),
        "{err}"
    );
    assert!(!err.is_retryable(), "{err}");

    // An endpoint the location does not allow is refused by the host.
    let Ok(mut session) = plugin
        .open(&config(&moto, "present"), &Grants::default())
        .await
    else {
        panic!("open does not contact the store")
    };
    let err = session.list("").await.unwrap_err();
    assert!(matches!(err, PluginError::EgressDenied { .. }), "{err}");
}
