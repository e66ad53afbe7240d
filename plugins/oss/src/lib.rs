//! `oss`: Alibaba Cloud Object Storage Service through opendal, over the
//! operator's `wasi:http`. Requests are signed by opendal (reqsign, OSS
//! header signature).
//!
//! Config keys (the operator maps the CoreOS `oss` block and its `ossSecret`
//! onto them; see README.md):
//! - `bucket` (required);
//! - `access-key-id`, `access-key-secret` (required);
//! - `endpoint` (default `http://oss-cn-hangzhou.aliyuncs.com`, as in the
//!   CoreOS operator);
//! - `addressing-style`: `virtual` (default: `bucket.endpoint`), `path` or
//!   `cname`.

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::objectstore::{Connect, ObjectBackend, ObjectDownload, ObjectUpload};
use etcd_plugin_sdk::storage::Guest;
use etcd_plugin_sdk::types::PluginError;
use opendal::Operator;
use opendal::services::Oss;

struct OssPlugin;

impl Guest for OssPlugin {
    type Backend = ObjectBackend<OssPlugin>;
    type Upload = ObjectUpload;
    type Download = ObjectDownload;
}

impl Connect for OssPlugin {
    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let bucket = config.required("bucket")?;
        let endpoint = config
            .get("endpoint")
            .unwrap_or("http://oss-cn-hangzhou.aliyuncs.com")
            .trim_end_matches('/');
        let style = config.get("addressing-style").unwrap_or("virtual");
        if !["virtual", "path", "cname"].contains(&style) {
            return Err(PluginError::InvalidConfig(format!(
                "addressing-style is `{style}`: use virtual, path or cname"
            )));
        }
        let b = Oss::default()
            .bucket(bucket)
            .endpoint(endpoint)
            .addressing_style(style)
            .access_key_id(config.required("access-key-id")?)
            .access_key_secret(config.required("access-key-secret")?)
            .root("/");
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("OSS bucket `{bucket}` at {endpoint}")))
    }
}

etcd_plugin_sdk::export_storage_backend!(OssPlugin);
