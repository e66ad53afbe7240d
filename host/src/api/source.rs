//! Where backups live: the CoreOS source blocks (`s3`, `abs`, `gcs`, `oss`)
//! and the `plugin` block for any other installed storage plugin.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `s3`: Amazon S3 or an S3-compatible store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    /// `<bucket>/<key or prefix>`.
    #[serde(default)]
    pub path: Option<String>,
    /// Secret with the files `credentials` and `config`, as in `~/.aws`.
    #[serde(default)]
    pub aws_secret: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. `http://minio.minio:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
}

/// `abs`: Azure Blob Storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbsSource {
    /// `<container>/<key or prefix>`.
    #[serde(default)]
    pub path: Option<String>,
    /// Secret with `storage-account`, `storage-key` and optionally `cloud`.
    #[serde(default)]
    pub abs_secret: Option<String>,
}

/// `gcs`: Google Cloud Storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsSource {
    /// `<bucket>/<key or prefix>`.
    #[serde(default)]
    pub path: Option<String>,
    /// Optional Secret with `access-token` or `credentials.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_secret: Option<String>,
}

/// `oss`: Alibaba Cloud Object Storage Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OssSource {
    /// `<bucket>/<key or prefix>`.
    #[serde(default)]
    pub path: Option<String>,
    /// Secret with `accessKeyID` and `accessKeySecret`.
    #[serde(default)]
    pub oss_secret: Option<String>,
    /// Default `http://oss-cn-hangzhou.aliyuncs.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// `plugin`: any installed storage plugin (an extension of this operator).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginSource {
    /// Plugin name; defaults to `storageType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `<key or prefix>` inside the plugin's storage.
    #[serde(default)]
    pub path: Option<String>,
    /// Plain settings handed to the plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Secret whose keys are added to `config` (secrets never travel in spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// Endpoints (`scheme://host:port`) the plugin may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_endpoints: Vec<String>,
}

/// The kind of storage a `storageType` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    S3,
    Abs,
    Gcs,
    Oss,
    /// Any other name: an installed storage plugin.
    Plugin(String),
}

impl StorageKind {
    /// CoreOS values are exact (`S3`, `ABS`, `GCS`, `OSS`); anything else
    /// names a plugin.
    pub fn parse(storage_type: &str) -> Self {
        match storage_type {
            "S3" => StorageKind::S3,
            "ABS" => StorageKind::Abs,
            "GCS" => StorageKind::Gcs,
            "OSS" => StorageKind::Oss,
            other => StorageKind::Plugin(other.to_string()),
        }
    }

    /// The name of the bundled plugin serving this kind.
    pub fn plugin_name(&self) -> &str {
        match self {
            StorageKind::S3 => "s3",
            StorageKind::Abs => "abs",
            StorageKind::Gcs => "gcs",
            StorageKind::Oss => "oss",
            StorageKind::Plugin(name) => name,
        }
    }

    /// The spec field of this kind's source block.
    pub fn block(&self) -> &'static str {
        match self {
            StorageKind::S3 => "s3",
            StorageKind::Abs => "abs",
            StorageKind::Gcs => "gcs",
            StorageKind::Oss => "oss",
            StorageKind::Plugin(_) => "plugin",
        }
    }
}

/// The source blocks of a backup or restore spec, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupSource<'a> {
    pub s3: Option<&'a S3Source>,
    pub abs: Option<&'a AbsSource>,
    pub gcs: Option<&'a GcsSource>,
    pub oss: Option<&'a OssSource>,
    pub plugin: Option<&'a PluginSource>,
}

impl BackupSource<'_> {
    /// The `path` of the block `kind` selects, or an error naming the field
    /// to fill in. `field` is the spec field holding the storage type, for
    /// the message (`storageType` or `backupStorageType`).
    pub fn path(&self, kind: &StorageKind, field: &str) -> Result<String, String> {
        let block = kind.block();
        let (present, path) = match kind {
            StorageKind::S3 => (self.s3.is_some(), self.s3.and_then(|b| b.path.clone())),
            StorageKind::Abs => (self.abs.is_some(), self.abs.and_then(|b| b.path.clone())),
            StorageKind::Gcs => (self.gcs.is_some(), self.gcs.and_then(|b| b.path.clone())),
            StorageKind::Oss => (self.oss.is_some(), self.oss.and_then(|b| b.path.clone())),
            StorageKind::Plugin(_) => (
                self.plugin.is_some(),
                self.plugin.and_then(|b| b.path.clone()),
            ),
        };
        if !present {
            return Err(format!(
                "spec.{field} is {} but spec.{block} is missing: add a spec.{block} block",
                storage_label(kind)
            ));
        }
        match path.map(|p| p.trim().to_string()).filter(|p| !p.is_empty()) {
            Some(p) => Ok(p),
            None => Err(format!(
                "spec.{block}.path is empty: set it to {}",
                match kind {
                    StorageKind::Plugin(_) =>
                        "the key (or key prefix) of backups in the plugin's storage",
                    StorageKind::Abs => "<container>/<key or prefix>",
                    _ => "<bucket>/<key or prefix>",
                }
            )),
        }
    }

    /// The Secret the selected block references, or an error for the
    /// kinds that require one.
    pub fn secret(&self, kind: &StorageKind) -> Result<Option<String>, String> {
        let required = |v: Option<&Option<String>>, field: &str, keys: &str| {
            v.and_then(|s| s.clone())
                .filter(|s| !s.trim().is_empty())
                .map(Some)
                .ok_or_else(|| format!("spec.{field} is empty: name the Secret holding {keys}"))
        };
        match kind {
            StorageKind::S3 => required(
                self.s3.map(|b| &b.aws_secret),
                "s3.awsSecret",
                "the files `credentials` and `config`",
            ),
            StorageKind::Abs => required(
                self.abs.map(|b| &b.abs_secret),
                "abs.absSecret",
                "`storage-account` and `storage-key`",
            ),
            StorageKind::Oss => required(
                self.oss.map(|b| &b.oss_secret),
                "oss.ossSecret",
                "`accessKeyID` and `accessKeySecret`",
            ),
            StorageKind::Gcs => Ok(self
                .gcs
                .and_then(|b| b.gcp_secret.clone())
                .filter(|s| !s.is_empty())),
            StorageKind::Plugin(_) => Ok(self
                .plugin
                .and_then(|b| b.secret_ref.clone())
                .filter(|s| !s.is_empty())),
        }
    }
}

fn storage_label(kind: &StorageKind) -> String {
    match kind {
        StorageKind::Plugin(name) => format!("`{name}` (a storage plugin)"),
        other => format!("`{}`", other.block().to_ascii_uppercase()),
    }
}

/// CEL rules shared by the backup and restore specs: the source block must
/// match the storage type. `field` is `storageType` or `backupStorageType`.
pub fn source_rules(field: &str) -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = [
        ("S3", "s3", "path and awsSecret"),
        ("ABS", "abs", "path and absSecret"),
        ("GCS", "gcs", "path"),
        ("OSS", "oss", "path, ossSecret and endpoint"),
    ]
    .iter()
    .map(|(t, b, what)| {
        (
            format!("self.{field} != '{t}' || has(self.{b})"),
            format!("spec.{field} is {t}, so spec.{b} is required: add spec.{b} with {what}"),
        )
    })
    .collect();
    rules.push((
        format!("self.{field} in ['S3', 'ABS', 'GCS', 'OSS'] || has(self.plugin)"),
        format!("spec.{field} names a storage plugin (it is not S3, ABS, GCS or OSS), so spec.plugin is required: add spec.plugin with path and config"),
    ));
    rules.push((
        "(has(self.s3) ? 1 : 0) + (has(self.abs) ? 1 : 0) + (has(self.gcs) ? 1 : 0) + (has(self.oss) ? 1 : 0) + (has(self.plugin) ? 1 : 0) <= 1".into(),
        format!("give exactly one source block (s3, abs, gcs, oss or plugin): the one spec.{field} names; remove the others"),
    ));
    rules
}
