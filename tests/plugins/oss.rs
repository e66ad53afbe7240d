//! The `oss` plugin against the signature-checking OSS test server in
//! `tests/common/oss_server.rs` (no OSS emulator exists in any reachable
//! registry; that server verifies every request's signature with the
//! algorithm from Alibaba's documentation, independently of reqsign).

use std::sync::atomic::Ordering;

use etcd_operator::plugins::{GuestErrorKind, LoadedPlugin};

use crate::common::{self, oss_server::OssServer};

const ID: &str = "LTAI-test-key-id";
const SECRET: &str = "test-secret-0123456789";

fn config(server: &OssServer, bucket: &str, secret: &str) -> Vec<(String, String)> {
    common::config(&[
        ("bucket", bucket),
        ("endpoint", &server.endpoint),
        ("addressing-style", "path"),
        ("access-key-id", ID),
        ("access-key-secret", secret),
    ])
}

#[test]
fn oss_passes_plugin_test_with_verified_signatures_and_a_64_mib_multipart_round_trip() {
    let server = OssServer::start(ID, SECRET);
    server.create_bucket("conformance");
    common::plugin_test(
        "oss",
        &config(&server, "conformance", SECRET),
        &server.endpoint,
    );
    assert!(server.counters.verified.load(Ordering::Relaxed) > 10);
    assert_eq!(server.counters.rejected.load(Ordering::Relaxed), 0);
    let (keys, open_uploads) = server.keys("conformance");
    assert!(
        keys.is_empty() && open_uploads == 0,
        "{keys:?}, {open_uploads} uploads open"
    );
}

#[tokio::test]
async fn oss_maps_a_wrong_secret_to_unauthorized_and_a_missing_bucket_to_not_found() {
    let server = OssServer::start(ID, SECRET);
    server.create_bucket("present");
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "oss") else {
        panic!("oss is a storage plugin")
    };
    let grants = common::loopback_grants(&server.endpoint);
    let Ok(mut session) = plugin
        .open(&config(&server, "present", "not-the-secret"), &grants)
        .await
    else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.list("").await else {
        panic!("listing with a wrong secret succeeded")
    };
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::Unauthorized),
        "{err}"
    );
    assert!(server.counters.rejected.load(Ordering::Relaxed) >= 1);

    let Ok(mut session) = plugin
        .open(&config(&server, "absent", SECRET), &grants)
        .await
    else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.open_download("k").await else {
        panic!("download from a missing bucket succeeded")
    };
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("`absent`"), "{err}");
}
