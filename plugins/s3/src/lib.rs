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

mod cleanup;

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

/// The S3 location and credentials a configuration names.
pub(crate) struct Settings {
    pub bucket: String,
    pub region: String,
    /// Without a trailing slash, e.g. `https://s3.us-east-1.amazonaws.com`.
    pub endpoint: String,
    /// `endpoint/bucket` rather than `bucket.endpoint`.
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, PluginError> {
        let bucket = config.required("bucket")?.to_string();
        let profile = config.get("profile").unwrap_or("default");
        let access_key = ini_value(config, "credentials", profile, "aws_access_key_id")?;
        let secret_key = ini_value(config, "credentials", profile, "aws_secret_access_key")?;
        let session_token = ini_value(config, "credentials", profile, "aws_session_token")?;
        let region = match config.get("region") {
            Some(r) => r.to_string(),
            None => ini_value(config, "config", profile, "region")?
                .unwrap_or_else(|| "us-east-1".to_string()),
        };
        let (access_key, secret_key) = match (access_key, secret_key) {
            (Some(a), Some(s)) => (a, s),
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
        };
        let endpoint = match config.get("endpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(Settings {
            bucket,
            region,
            endpoint,
            path_style: config.bool_or("force-path-style", false)?,
            access_key,
            secret_key,
            session_token,
        })
    }
}

impl Connect for S3Plugin {
    const SIGNED_QUERY: bool = true;

    fn connect(config: &Config) -> Result<(Operator, String), PluginError> {
        let s = Settings::from_config(config)?;
        let mut b = S3::default()
            .bucket(&s.bucket)
            .region(&s.region)
            .root("/")
            .disable_config_load()
            .disable_ec2_metadata()
            .access_key_id(&s.access_key)
            .secret_access_key(&s.secret_key)
            .endpoint(&s.endpoint);
        if let Some(t) = &s.session_token {
            b = b.session_token(t);
        }
        if !s.path_style {
            b = b.enable_virtual_host_style();
        }
        let op = Operator::new(b).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok((op, format!("S3 bucket `{}` at {}", s.bucket, s.endpoint)))
    }

    fn abandon_uploads(config: &Config, key: &str) -> Result<u32, PluginError> {
        cleanup::abandon_uploads(&Settings::from_config(config)?, key)
    }
}

etcd_plugin_sdk::export_storage_backend!(S3Plugin);
