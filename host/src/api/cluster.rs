//! `EtcdCluster`: the declared shape of one etcd cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PersistentVolumeClaimSpec, PodSecurityContext, ResourceRequirements,
    Toleration,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Desired state of an etcd cluster.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "etcd.database.coreos.com",
    version = "v1beta2",
    kind = "EtcdCluster",
    plural = "etcdclusters",
    shortname = "etcdc",
    namespaced,
    status = "EtcdClusterStatus",
    derive = "PartialEq",
    doc = "An etcd cluster the operator creates, heals, scales, upgrades and recovers.",
    printcolumn = r#"{"name": "Size", "type": "integer", "jsonPath": ".spec.size", "description": "Desired number of members"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".status.currentVersion", "description": "Running etcd version"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "Ready members of desired"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    /// Number of members. An odd number (1, 3, 5, 7) gives the best fault
    /// tolerance for its size.
    #[schemars(range(min = 1, max = 7))]
    pub size: i32,

    /// Container image repository of etcd (Kubernetes runtime only).
    /// Default: `quay.io/coreos/etcd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,

    /// etcd version without the leading `v`, e.g. `3.5.17`. Changing it
    /// starts a rolling upgrade, one minor version at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        regex(pattern = r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$")
    )]
    pub version: Option<String>,

    /// Stop all changes to this cluster. Status reports `controlPaused: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// How member pods are shaped (Kubernetes runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPolicy>,

    /// Static TLS for peer, client and operator connections.
    #[serde(rename = "TLS", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPolicy>,

    /// Routine care the operator gives the cluster while every member is
    /// healthy (an addition to the CoreOS API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenancePolicy>,

    /// etcd's `--quota-backend-bytes`: the size a member's database file may
    /// reach before etcd raises NOSPACE and refuses writes (etcd's default
    /// is 2 GiB; it advises at most 8 GiB). Changing it restarts the members
    /// one at a time, followers first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub quota_backend_bytes: Option<i64>,

    /// etcd's own history compaction (`--auto-compaction-mode`,
    /// `--auto-compaction-retention`). Without it, etcd keeps every
    /// revision until something compacts them, and the database grows to
    /// its quota. Changing it restarts the members one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction: Option<AutoCompaction>,

    /// Further etcd flags, by name without the leading dashes
    /// (`snapshot-count: "10000"`). Only flags the operator knows are
    /// accepted, each value checked, so a typo is refused with its name
    /// instead of crash-looping the members; flags the operator sets itself
    /// (names, URLs, data directory, TLS files) are refused. Changing them
    /// restarts the members one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_options: Option<BTreeMap<String, String>>,
}

/// How etcd compacts its history by itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoCompaction {
    /// `periodic`: keep a time window of history; `revision`: keep a
    /// number of revisions.
    pub mode: CompactionMode,
    /// `periodic`: a duration such as `1h` or `30m` (a bare number is
    /// hours, as etcd reads it); `revision`: how many revisions to keep,
    /// such as `10000`.
    #[schemars(length(min = 1, max = 32))]
    pub retention: String,
}

/// See [`AutoCompaction::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    Periodic,
    Revision,
}

/// Routine maintenance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenancePolicy {
    /// Defragment members whose database file is mostly free space, one at a
    /// time, followers first and the leader last, only while every member
    /// is healthy. A member does not serve while it is defragmented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defrag: Option<DefragPolicy>,
    /// What the operator does when a member's database reaches its quota
    /// (etcd's NOSPACE alarm, which stops all writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_space: Option<NoSpacePolicy>,
}

/// NOSPACE handling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoSpacePolicy {
    /// Recover by itself, as etcd's documentation does by hand: compact the
    /// history to the current revision (older revisions and the watches
    /// that need them are gone), defragment every member one at a time,
    /// followers first, and disarm the alarm, but only once every member's
    /// database is below 80 % of the quota; otherwise the data itself
    /// fills the quota and the alarm stays, with an Event saying so.
    /// Default false: the alarm is reported and left to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<bool>,
}

/// When a member is defragmented: when both minimums of free space in its
/// database file (etcd's `dbSize` less `dbSizeInUse`) are met.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragPolicy {
    /// Free space as a percentage of the file, 1 to 99. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub min_free_percent: Option<i32>,
    /// Free space in bytes, so small databases are left alone. Default
    /// 67108864 (64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_free_bytes: Option<i64>,
}

/// Pod shape of each member (CoreOS `PodPolicy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPolicy {
    /// Labels added to member pods (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Deprecated in CoreOS: spread members over nodes. Prefer `affinity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Extra environment of the etcd container (`ETCD_*` settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_env: Option<Vec<EnvVar>>,
    /// Keep member data on PersistentVolumeClaims of this spec instead of
    /// emptyDir, so a restarted member rejoins with its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_spec: Option<PersistentVolumeClaimSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Init container image (CoreOS default `busybox:1.28.0-glibc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// How long the init container waits for the member's DNS name.
    #[serde(
        rename = "DNSTimeoutInSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub dns_timeout_in_second: Option<i64>,
    /// Cluster DNS domain (default `cluster.local`).
    #[serde(
        rename = "ClusterDomain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_domain: Option<String>,
}

/// TLS settings (CoreOS `TLSPolicy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TlsPolicy {
    /// Certificates provided as Secrets.
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_tls: Option<StaticTls>,
}

/// Secrets holding static certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberSecret>,
    /// Secret with `etcd-client.crt`, `etcd-client.key`, `etcd-client-ca.crt`
    /// the operator uses to talk to members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_secret: Option<String>,
}

/// Member certificate Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberSecret {
    /// Secret with `peer.crt`, `peer.key`, `peer-ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret: Option<String>,
    /// Secret with `server.crt`, `server.key`, `server-ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret: Option<String>,
}

/// Observed state of an etcd cluster. CoreOS fields first, then additions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// Creating, Running or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the cluster is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True while `spec.paused` holds the operator back.
    #[serde(default)]
    pub control_paused: bool,
    /// Available, Progressing (Scaling/Upgrading/Recovering), Degraded, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Current number of members.
    #[serde(default)]
    pub size: i32,
    /// Service clients connect to (`<name>-client` on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<i32>,
    #[serde(default)]
    pub members: MembersStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,

    /// Ready members over desired size, e.g. `2/3` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Client URLs of ready members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When a member of this cluster was first seen serving. Set once and
    /// never cleared while the EtcdCluster exists: a cluster that has
    /// served may hold data, so the operator never seeds it again as an
    /// empty cluster (only deleting the EtcdCluster forgets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_served_time: Option<String>,
    /// A recovery from a backup under way: recorded before any member is
    /// deleted, so an operator that dies in the middle finishes the same
    /// restore (same backup, same members) on its next run instead of
    /// waiting forever on half-restored members. Cleared once the restored
    /// members hold a quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restoring: Option<RestoreInProgress>,
    /// Alarms etcd has raised and nobody has disarmed yet (the `Alarm`
    /// condition says what each means and what to do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<ClusterAlarm>,
}

/// One of etcd's alarms (`etcdctl alarm list`).
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub struct ClusterAlarm {
    /// `NOSPACE` (a database reached its quota: writes are refused) or
    /// `CORRUPT` (a member's data differs from the others').
    pub alarm: String,
    /// The member that raised it (`member-<id>` if its name is unknown).
    pub member: String,
}

/// See [`EtcdClusterStatus::restoring`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreInProgress {
    /// The backup's key in its storage.
    pub backup: String,
    /// The backup's sha256: a resumed restore uses exactly these bytes.
    pub sha256: String,
    /// The new members, all restored from that backup.
    pub members: Vec<String>,
    /// Their cluster token (a restored cluster is a new etcd cluster).
    pub token: String,
    /// When the restore was recorded.
    pub started_time: String,
}

impl EtcdClusterStatus {
    /// The cluster has served at least once. Statuses written before
    /// [`Self::first_served_time`] existed count as served when they were
    /// Running or named a ready member.
    pub fn has_served(&self) -> bool {
        self.first_served_time.is_some()
            || self.phase.as_deref() == Some("Running")
            || !self.members.ready.is_empty()
    }
}

/// Member names by readiness.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MembersStatus {
    #[serde(default)]
    pub ready: Vec<String>,
    #[serde(default)]
    pub unready: Vec<String>,
}
