//! `s3`: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto...) through
//! opendal, over the operator's `wasi:http`. Request signing (SigV4) is
//! opendal's (reqsign).
//!
//! Config keys (the operator maps the CoreOS `s3` block and its `awsSecret`
//! onto them; see README.md):
//! - `bucket` (required);
//! - `credentials`: the text of an AWS `credentials` file; the `profile`
//!   section (default `default`) gives `aws_access_key_id`,
//!   `aws_secret_access_key` and optionally `aws_session_token`;
//! - `config`: the text of an AWS `config` file, for `region`;
//! - `region`: overrides the file (default `us-east-1`);
//! - `endpoint`: e.g. `http://minio:9000` (default: AWS for the region);
//! - `force-path-style`: `true` addresses `endpoint/bucket`, `false` (the
//!   default, as in the CoreOS operator) `bucket.endpoint`;
//! - `profile`: the section of both files to read.

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::objectstore::{Connect, ObjectBackend, ObjectDownload, ObjectUpload};
use etcd_plugin_sdk::storage::Guest;
use etcd_plugin_sdk::types::PluginError;
use ini::Ini;
use opendal::Operator;
use opendal::services::S3;

struct S3Plugin;

impl Guest for S3Plugin {
    type Backend = ObjectBackend<S3Plugin>;
    type Upload = ObjectUpload;
    type Download = ObjectDownload;
}

/// `key` of section `profile` in an AWS INI file given as config `file`.
/// The config file names sections `profile NAME` except for `default`.
fn ini_value(
    config: &Config,
    file: &str,
    profile: &str,
    key: &str,
) -> Result<Option<String>, PluginError> {
    let Some(text) = config.get(file) else {
        return Ok(None);
    };
    let ini = Ini::load_from_str(text).map_err(|e| {
        PluginError::InvalidConfig(format!(
            "the `{file}` file is not a valid AWS {file} file: {e}"
        ))
    })?;
    let sections = [profile.to_string(), format!("profile {profile}")];
    Ok(sections
        .iter()
        .find_map(|s| ini.section(Some(s.as_str())).and_then(|sec| sec.get(key)))
        .map(|v| v.trim().to_string()))
}

impl Connect for S3Plugin {
    const SIGNED_QUERY: bool = true;

    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let bucket = config.required("bucket")?;
        let profile = config.get("profile").unwrap_or("default");
        let access_key = ini_value(config, "credentials", profile, "aws_access_key_id")?;
        let secret_key = ini_value(config, "credentials", profile, "aws_secret_access_key")?;
        let token = ini_value(config, "credentials", profile, "aws_session_token")?;
        let region = match config.get("region") {
            Some(r) => r.to_string(),
            None => ini_value(config, "config", profile, "region")?
                .unwrap_or_else(|| "us-east-1".to_string()),
        };
        let mut b = S3::default()
            .bucket(bucket)
            .region(&region)
            .root("/")
            .disable_config_load()
            .disable_ec2_metadata();
        match (access_key, secret_key) {
            (Some(a), Some(s)) => {
                b = b.access_key_id(&a).secret_access_key(&s);
                if let Some(t) = token {
                    b = b.session_token(&t);
                }
            }
            (None, None) => {
                return Err(PluginError::InvalidConfig(format!(
                    "no credentials: the `credentials` file needs a [{profile}] section with \
                     aws_access_key_id and aws_secret_access_key"
                )));
            }
            _ => {
                return Err(PluginError::InvalidConfig(format!(
                    "the [{profile}] section of `credentials` needs both aws_access_key_id and aws_secret_access_key"
                )));
            }
        }
        let endpoint = match config.get("endpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        b = b.endpoint(&endpoint);
        if !config.bool_or("force-path-style", false)? {
            b = b.enable_virtual_host_style();
        }
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("S3 bucket `{bucket}` at {endpoint}")))
    }
}

etcd_plugin_sdk::export_storage_backend!(S3Plugin);
