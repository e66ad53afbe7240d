//! The `gcs` plugin against gcp-storage-emulator, through the operator's
//! sandbox and `wasi:http`. The emulator does not check credentials, so the
//! access-token path is exercised end to end; the service-account path is
//! checked up to the token request the plugin signs and sends to Google.

use std::process::Command;

use etcd_operator::plugins::{LoadedPlugin, PluginError};

use crate::common::{self, GcsEmulator};

#[test]
fn gcs_passes_plugin_test_against_the_emulator_with_a_64_mib_resumable_upload() {
    let emulator = GcsEmulator::start("conformance");
    let config = common::config(&[
        ("bucket", "conformance"),
        ("access-token", "test-token"),
        ("endpoint", &emulator.endpoint),
    ]);
    common::plugin_test("gcs", &config, &emulator.endpoint);
}

#[tokio::test]
async fn gcs_service_account_credentials_sign_a_token_request_to_google_through_the_egress_policy()
{
    let emulator = GcsEmulator::start("present");
    // A fresh service-account key: the plugin signs an RS256 JWT with it.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let credentials = serde_json::json!({
        "type": "service_account",
        "client_email": "backup@example.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    let LoadedPlugin::Storage(plugin) = common::load(&common::engine(), "gcs") else {
        panic!("gcs is a storage plugin")
    };
    let config = common::config(&[
        ("bucket", "present"),
        ("endpoint", &emulator.endpoint),
        ("credentials-json", &credentials),
    ]);
    // Only the emulator is allowed: the token request to Google is refused
    // by the host, which shows it was signed and sent from the sandbox.
    let grants = common::loopback_grants(&emulator.endpoint);
    let Ok(mut session) = plugin.open(&config, &grants).await else {
        panic!("open does not contact the store")
    };
    let Err(err) = session.list("").await else {
        panic!("listing without a token succeeded")
    };
    match &err {
        PluginError::EgressDenied { url, .. } => {
            assert!(url.contains("oauth2.googleapis.com"), "{err}")
        }
        other => panic!("expected the token request to be refused by egress: {other}"),
    }

    // No credentials at all: invalid-config naming the keys.
    let Err(err) = plugin
        .open(&common::config(&[("bucket", "present")]), &grants)
        .await
    else {
        panic!("opened without credentials")
    };
    assert!(err.to_string().contains("credentials.json"), "{err}");
}
