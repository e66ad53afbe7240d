//! `gcs`: Google Cloud Storage through opendal, over the operator's
//! `wasi:http`.
//!
//! Config keys (the operator maps the CoreOS `gcs` block and its `gcpSecret`
//! onto them; see README.md):
//! - `bucket` (required);
//! - `access-token`: an OAuth 2 access token, used as it is; or
//! - `credentials-json`: a service-account `credentials.json`; opendal
//!   (reqsign) signs an RS256 JWT with its private key inside the sandbox and
//!   exchanges it for an access token at the file's `token_uri`;
//! - `endpoint` (default `https://storage.googleapis.com`).

use base64::Engine;
use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::objectstore::{Connect, ObjectBackend, ObjectDownload, ObjectUpload};
use etcd_plugin_sdk::storage::Guest;
use etcd_plugin_sdk::types::PluginError;
use opendal::Operator;
use opendal::services::Gcs;

struct GcsPlugin;

impl Guest for GcsPlugin {
    type Backend = ObjectBackend<GcsPlugin>;
    type Upload = ObjectUpload;
    type Download = ObjectDownload;
}

impl Connect for GcsPlugin {
    const CREATE_ONLY_FOR_NEW: bool = true;

    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let bucket = config.required("bucket")?;
        let endpoint = config
            .get("endpoint")
            .unwrap_or("https://storage.googleapis.com")
            .trim_end_matches('/');
        let mut b = Gcs::default()
            .bucket(bucket)
            .endpoint(endpoint)
            .root("/")
            .disable_vm_metadata()
            .disable_config_load();
        match (config.get("access-token"), config.get("credentials-json")) {
            (Some(token), _) if !token.trim().is_empty() => b = b.token(token.trim().to_string()),
            (_, Some(json)) if !json.trim().is_empty() => {
                if !json.contains("\"private_key\"") {
                    return Err(PluginError::InvalidConfig(
                        "credentials-json is not a service-account key file (it has no private_key)"
                            .into(),
                    ));
                }
                b = b.credential(&base64::engine::general_purpose::STANDARD.encode(json));
            }
            _ => {
                return Err(PluginError::InvalidConfig(
                    "no credentials: give access-token (an OAuth 2 access token) or credentials-json \
                     (a service-account key file) — the gcpSecret keys `access-token` or `credentials.json`"
                        .into(),
                ));
            }
        }
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("GCS bucket `{bucket}` at {endpoint}")))
    }

    /// Nothing to discard that a client can reach: a backup writes a new
    /// key, which uploads resumably ([`Connect::CREATE_ONLY_FOR_NEW`]), and an
    /// unfinished resumable upload is a session whose URI died with the
    /// sandbox; it stores no object and Google expires it after a week.
    fn abandon_uploads(_config: &Config, _key: &str) -> Result<u32, PluginError> {
        Ok(0)
    }
}

etcd_plugin_sdk::export_storage_backend!(GcsPlugin);
