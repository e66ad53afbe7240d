//! The `abs` plugin against Azurite (which verifies SharedKey signatures),
//! through the operator's sandbox and `wasi:http`.

use etcd_operator::plugins::{GuestErrorKind, LoadedPlugin};

use crate::common::{self, AZURITE_ACCOUNT, AZURITE_KEY, Azurite};

fn config(azurite: &Azurite, container: &str, key: &str) -> Vec<(String, String)> {
    common::config(&[
        ("container", container),
        ("storage-account", AZURITE_ACCOUNT),
        ("storage-key", key),
        ("endpoint", &azurite.endpoint),
    ])
}

fn origin(azurite: &Azurite) -> String {
    azurite
        .endpoint
        .trim_end_matches(&format!("/{AZURITE_ACCOUNT}"))
        .to_string()
}

#[test]
fn abs_passes_plugin_test_against_azurite_with_a_64_mib_round_trip() {
    let azurite = Azurite::start();
    azurite.create_container("conformance");
    common::plugin_test(
        "abs",
        &config(&azurite, "conformance", AZURITE_KEY),
        &origin(&azurite),
    );
}

#[tokio::test]
async fn abs_maps_a_wrong_key_to_unauthorized_and_a_missing_container_to_not_found() {
    let azurite = Azurite::start();
    azurite.create_container("present");
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "abs") else {
        panic!("abs is a storage plugin")
    };
    let grants = common::loopback_grants(&origin(&azurite));

    // A valid base64 key that is not the account's: Azurite rejects the signature.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let Ok(mut session) = plugin
        .open(&config(&azurite, "present", wrong), &grants)
        .await
    else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.list("").await else {
        panic!("listing with a wrong key succeeded")
    };
    assert_eq!(
        err.guest_kind(),
        Some(GuestErrorKind::Unauthorized),
        "{err}"
    );

    let Ok(mut session) = plugin
        .open(&config(&azurite, "absent", AZURITE_KEY), &grants)
        .await
    else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.open_download("k").await else {
        panic!("download from a missing container succeeded")
    };
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("`absent`"), "{err}");
}
