//! `EtcdRestore`: seed a cluster from a backup.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::backup::ClusterRef;
use super::cluster::EtcdClusterSpec;
use super::source::{AbsSource, BackupSource, GcsSource, OssSource, PluginSource, S3Source};

/// A restore request.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "etcd.database.coreos.com",
    version = "v1beta2",
    kind = "EtcdRestore",
    plural = "etcdrestores",
    shortname = "etcdrs",
    namespaced,
    status = "EtcdRestoreStatus",
    derive = "PartialEq",
    doc = "Restore an etcd cluster from a verified backup.",
    printcolumn = r#"{"name": "Cluster", "type": "string", "jsonPath": ".spec.etcdCluster.name"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreSpec {
    /// The cluster to restore. CoreOS semantics: the EtcdRestore has the same
    /// name, and the cluster of that name is replaced by one seeded from the
    /// backup (after the backup is verified).
    pub etcd_cluster: ClusterRef,
    /// `S3`, `ABS`, `GCS`, `OSS`, or the name of an installed storage plugin.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    )]
    pub backup_storage_type: String,
    /// `path` is the full key of the backup object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs: Option<AbsSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oss: Option<OssSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSource>,
    /// Restore into a new cluster named `etcdCluster.name` with this spec,
    /// instead of replacing an existing one (extension). An existing cluster
    /// of that name is never touched: the restore fails instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cluster: Option<EtcdClusterSpec>,
    /// Restore a backup whose metadata says it was written for another
    /// EtcdCluster (extension). Without it such a restore fails before the
    /// cluster is touched, naming the cluster the backup came from: a backup
    /// of the wrong cluster is refused, not reported verified. Not needed
    /// with `newCluster` (a new cluster is seeded from another's backup by
    /// definition; the status names the backup's cluster).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_other_cluster_backup: bool,
    /// Time the download and verification may take in all, retries included
    /// (extension; default: the operator's `--restore-timeout`, 1 hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_in_second: Option<i64>,
}

impl EtcdRestoreSpec {
    /// The source blocks, for resolving the backup object.
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

/// Observed restore. CoreOS fields first, then additions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Pending, Verifying, Restoring, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How far the download of the backup has come (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RestoreProgress>,
}

impl EtcdRestoreStatus {
    /// Enter `phase` and set one condition (`type_` True or False), stamped
    /// now: what every runtime's restore controller records at each step.
    pub fn set(&mut self, phase: &str, type_: &str, ok: bool, reason: &str, message: String) {
        self.phase = Some(phase.into());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        super::condition::set_condition(
            &mut self.conditions,
            Condition {
                type_: type_.into(),
                status: if ok { "True" } else { "False" }.into(),
                reason: Some(reason.into()),
                message: Some(message),
                ..Default::default()
            },
            &now,
        );
    }
}

/// The download of a backup, as last reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    pub bytes_read: i64,
    /// The backup's size, when its metadata or the storage plugin gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Average rate since the download began.
    pub bytes_per_second: i64,
}
