//! `upload-cleanup` for S3: the open multipart uploads of a key are aborted
//! ([`etcd_plugin_sdk::multipart`]), with requests signed by SigV4.

use etcd_plugin_sdk::http::block_on;
use etcd_plugin_sdk::multipart::{BucketUrl, abort_open_uploads};
use etcd_plugin_sdk::types::PluginError;
use reqsign_aws_v4::{RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

use crate::Settings;

/// Abort every open multipart upload of exactly `key`; how many were.
pub fn abandon_uploads(s: &Settings, key: &str) -> Result<u32, PluginError> {
    let mut provider = StaticCredentialProvider::new(&s.access_key, &s.secret_key);
    if let Some(token) = &s.session_token {
        provider = provider.with_session_token(token);
    }
    let signer = Signer::new(
        Context::new(),
        provider,
        RequestSigner::new("s3", &s.region),
    );
    let bucket = BucketUrl::new(&s.endpoint, &s.bucket, s.path_style)?;
    let sign = |parts: &mut http::request::Parts| {
        parts.headers.insert(
            "x-amz-content-sha256",
            http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        block_on(signer.sign(parts, None)).map_err(|e| {
            PluginError::Other(format!("signing a request to {} failed: {e}", parts.uri))
        })
    };
    abort_open_uploads(&bucket, key, true, &sign)
}
