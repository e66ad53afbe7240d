//! `EtcdBackup`: one-shot or periodic snapshots of a cluster into storage.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::source::{AbsSource, BackupSource, GcsSource, OssSource, PluginSource, S3Source};

/// Desired backups.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "etcd.database.coreos.com",
    version = "v1beta2",
    kind = "EtcdBackup",
    plural = "etcdbackups",
    shortname = "etcdbk",
    namespaced,
    status = "EtcdBackupStatus",
    derive = "PartialEq",
    doc = "Snapshots of an etcd cluster into a storage backend, once or periodically.",
    printcolumn = r#"{"name": "Storage", "type": "string", "jsonPath": ".spec.storageType"}"#,
    printcolumn = r#"{"name": "Last Success", "type": "date", "jsonPath": ".status.lastSuccessDate"}"#,
    printcolumn = r#"{"name": "Revision", "type": "integer", "jsonPath": ".status.etcdRevision"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    /// Client URLs of the cluster; the operator backs up from the member
    /// with the highest revision. Alternatively set `etcdCluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// `S3`, `ABS`, `GCS`, `OSS`, or the name of an installed storage plugin.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    )]
    pub storage_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_policy: Option<BackupPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs: Option<AbsSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oss: Option<OssSource>,
    /// Any installed storage plugin (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSource>,
    /// Secret with `etcd-client.crt`, `etcd-client.key`, `etcd-client-ca.crt`
    /// for TLS to the cluster.
    #[serde(
        rename = "clientTLSSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_tls_secret: Option<String>,
    /// Back up this EtcdCluster (same namespace) instead of raw endpoints (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cluster: Option<ClusterRef>,
}

impl EtcdBackupSpec {
    /// The source blocks, for resolving the storage location.
    pub fn source(&self) -> BackupSource<'_> {
        BackupSource {
            s3: self.s3.as_ref(),
            abs: self.abs.as_ref(),
            gcs: self.gcs.as_ref(),
            oss: self.oss.as_ref(),
            plugin: self.plugin.as_ref(),
        }
    }
}

/// A reference to an EtcdCluster in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ClusterRef {
    /// Name of the EtcdCluster.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// When and how many backups (CoreOS `BackupPolicy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// Time limit of one backup run in seconds (default 60, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604_800))]
    pub timeout_in_second: Option<i64>,
    /// Seconds between backups (at most one year); 0 or unset takes one backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub backup_interval_in_second: Option<i64>,
    /// Keep at most this many backups (0 or unset: keep all; at most
    /// 100000). The newest backup is never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_backups: Option<i32>,
    /// A backup-policy plugin deciding retention, naming and skips (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PolicyPluginRef>,
}

/// Largest `timeoutInSecond`: 7 days (the CRD's maximum too).
pub const MAX_TIMEOUT_IN_SECOND: i64 = 604_800;
/// Largest `backupIntervalInSecond`: one year.
pub const MAX_BACKUP_INTERVAL_IN_SECOND: i64 = 31_536_000;
/// Largest `maxBackups`.
pub const MAX_MAX_BACKUPS: i32 = 100_000;

impl BackupPolicy {
    /// The bounds the CRD enforces, checked again for local mode (and
    /// for objects created before the CRD had them): the error names the
    /// field, its value and the range.
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, value: i64, max: i64| {
            if (0..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "spec.backupPolicy.{name} is {value}; it must be between 0 and {max}"
                ))
            }
        };
        if let Some(v) = self.timeout_in_second {
            field("timeoutInSecond", v, MAX_TIMEOUT_IN_SECOND)?;
        }
        if let Some(v) = self.backup_interval_in_second {
            field("backupIntervalInSecond", v, MAX_BACKUP_INTERVAL_IN_SECOND)?;
        }
        if let Some(v) = self.max_backups {
            field("maxBackups", i64::from(v), i64::from(MAX_MAX_BACKUPS))?;
        }
        Ok(())
    }
}

/// A backup-policy plugin and its configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PolicyPluginRef {
    /// Name of the installed backup-policy plugin, e.g. `retention`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Settings handed to the plugin, e.g. `keep-daily: "7"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// Observed backups. CoreOS fields first, then additions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    /// Whether the last backup run succeeded.
    #[serde(default)]
    pub succeeded: bool,
    /// Why the last run failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    #[serde(default)]
    pub etcd_revision: i64,
    /// Time of the last successful backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_date: Option<String>,

    /// BackupSucceeded, Retrying, Failed, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Key of the last successful backup object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_size: Option<i64>,
    /// sha256 of the last successful backup object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
