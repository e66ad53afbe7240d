//! `abs`: Azure Blob Storage through opendal, over the operator's
//! `wasi:http`. Requests are signed with SharedKey by opendal (reqsign).
//!
//! Config keys (the operator maps the CoreOS `abs` block and its `absSecret`
//! onto them; see README.md):
//! - `container` (required);
//! - `storage-account`, `storage-key` (required): the account and its key;
//! - `endpoint`: the blob service URL (default
//!   `https://<account>.blob.core.windows.net`; the operator derives it from
//!   the Secret's `cloud`), e.g. `http://127.0.0.1:10000/devstoreaccount1`
//!   for Azurite.

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::objectstore::{Connect, ObjectBackend, ObjectDownload, ObjectUpload};
use etcd_plugin_sdk::storage::Guest;
use etcd_plugin_sdk::types::PluginError;
use opendal::Operator;
use opendal::services::Azblob;

struct AbsPlugin;

impl Guest for AbsPlugin {
    type Backend = ObjectBackend<AbsPlugin>;
    type Upload = ObjectUpload;
    type Download = ObjectDownload;
}

impl Connect for AbsPlugin {
    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let container = config.required("container")?;
        let account = config.required("storage-account")?;
        let key = config.required("storage-key")?;
        let endpoint = match config.get("endpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{account}.blob.core.windows.net"),
        };
        let b = Azblob::default()
            .container(container)
            .endpoint(&endpoint)
            .account_name(account)
            .account_key(key)
            .root("/");
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("Azure container `{container}` at {endpoint}")))
    }

    /// Nothing to discard that a client can reach: an unfinished upload is
    /// uncommitted blocks, which no listing shows, no call deletes without
    /// creating the blob, and Azure drops after a week.
    fn abandon_uploads(_config: &Config, _key: &str) -> Result<u32, PluginError> {
        Ok(0)
    }
}

etcd_plugin_sdk::export_storage_backend!(AbsPlugin);
