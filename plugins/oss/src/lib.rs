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
use etcd_plugin_sdk::http::block_on;
use etcd_plugin_sdk::multipart::{BucketUrl, abort_open_uploads};
use etcd_plugin_sdk::objectstore::{Connect, ObjectBackend, ObjectDownload, ObjectUpload};
use etcd_plugin_sdk::storage::Guest;
use etcd_plugin_sdk::types::PluginError;
use opendal::Operator;
use opendal::services::Oss;
use reqsign_aliyun_oss::{RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

struct OssPlugin;

impl Guest for OssPlugin {
    type Backend = ObjectBackend<OssPlugin>;
    type Upload = ObjectUpload;
    type Download = ObjectDownload;
}

/// The OSS location and credentials a configuration names.
struct Settings<'a> {
    bucket: &'a str,
    /// Without a trailing slash.
    endpoint: &'a str,
    /// `virtual`, `path` or `cname`.
    style: &'a str,
    access_key_id: &'a str,
    access_key_secret: &'a str,
}

impl<'a> Settings<'a> {
    fn from_config(config: &'a Config) -> Result<Settings<'a>, PluginError> {
        let style = config.get("addressing-style").unwrap_or("virtual");
        if !["virtual", "path", "cname"].contains(&style) {
            return Err(PluginError::InvalidConfig(format!(
                "addressing-style is `{style}`: use virtual, path or cname"
            )));
        }
        Ok(Settings {
            bucket: config.required("bucket")?,
            endpoint: config
                .get("endpoint")
                .unwrap_or("http://oss-cn-hangzhou.aliyuncs.com")
                .trim_end_matches('/'),
            style,
            access_key_id: config.required("access-key-id")?,
            access_key_secret: config.required("access-key-secret")?,
        })
    }
}

impl Connect for OssPlugin {
    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let s = Settings::from_config(config)?;
        let b = Oss::default()
            .bucket(s.bucket)
            .endpoint(s.endpoint)
            .addressing_style(s.style)
            .access_key_id(s.access_key_id)
            .access_key_secret(s.access_key_secret)
            .root("/");
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("OSS bucket `{}` at {}", s.bucket, s.endpoint)))
    }

    /// OSS has S3's multipart API; requests carry OSS's header signature.
    fn abandon_uploads(config: &Config, key: &str) -> Result<u32, PluginError> {
        let s = Settings::from_config(config)?;
        let bucket = match s.style {
            // The endpoint is the bucket's own domain.
            "cname" => BucketUrl::new(s.endpoint, s.bucket, false).map(|mut b| {
                b.origin = s.endpoint.to_string();
                b
            })?,
            style => BucketUrl::new(s.endpoint, s.bucket, style == "path")?,
        };
        let signer = Signer::new(
            Context::new(),
            StaticCredentialProvider::new(s.access_key_id, s.access_key_secret),
            RequestSigner::new(s.bucket),
        );
        let sign = |parts: &mut http::request::Parts| {
            block_on(signer.sign(parts, None)).map_err(|e| {
                PluginError::Other(format!("signing a request to {} failed: {e}", parts.uri))
            })
        };
        abort_open_uploads(&bucket, key, false, &sign)
    }
}

etcd_plugin_sdk::export_storage_backend!(OssPlugin);
