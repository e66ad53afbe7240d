//! The custom resources, wire-compatible with the CoreOS etcd-operator's
//! `etcd.database.coreos.com/v1beta2` API (the archived operator's
//! `pkg/apis/etcd/v1beta2` types).
//!
//! Field names follow CoreOS exactly, including its odd casing (`TLS`,
//! `DNSTimeoutInSecond`, `ClusterDomain`). Everything this operator adds is
//! optional, so CoreOS YAML applies unchanged. Fields a CoreOS example may
//! leave empty (`path:` with no value) are nullable: the object is accepted
//! and the operator says in status what is missing.

pub mod backup;
pub mod cluster;
pub mod condition;
pub mod crd;
pub mod restore;
pub mod source;

pub use backup::{BackupPolicy, EtcdBackup, EtcdBackupSpec, EtcdBackupStatus};
pub use cluster::{
    AutoCompaction, ClusterAlarm, CompactionMode, DefragPolicy, EtcdCluster, EtcdClusterSpec,
    EtcdClusterStatus, MaintenancePolicy, MembersStatus, NoSpacePolicy, PodPolicy,
    RestoreInProgress, TlsPolicy,
};
pub use condition::Condition;
pub use restore::{EtcdRestore, EtcdRestoreSpec, EtcdRestoreStatus, RestoreProgress};
pub use source::{BackupSource, StorageKind};

/// The API group of all three resources.
pub const GROUP: &str = "etcd.database.coreos.com";
/// The API version of all three resources.
pub const VERSION: &str = "v1beta2";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "etcd.database.coreos.com/v1beta2";
/// The annotation that opts a resource into a `--cluster-wide` operator.
pub const SCOPE_ANNOTATION: &str = "etcd.database.coreos.com/scope";
/// The value of [`SCOPE_ANNOTATION`] for cluster-wide management.
pub const SCOPE_CLUSTERWIDE: &str = "clusterwide";
