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
