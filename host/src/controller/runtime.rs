//! The runtime contract: where members run. The reconcile core decides what
//! should happen; a runtime (local processes, Kubernetes Pods) makes it so.

use std::fmt;

/// Identity of one cluster, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a member reaches its peers and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberUrls {
    pub peer: String,
    pub client: String,
}

/// A member as the runtime knows it (a process and its data directory, a Pod
/// and its volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeMember {
    pub name: String,
    pub urls: MemberUrls,
    /// The etcd process is running (or the Pod is running).
    pub running: bool,
    /// The member's data directory holds etcd data.
    pub has_data: bool,
    /// It was started at least once (reserved members have not been).
    pub ever_started: bool,
    /// The etcd version it runs (or last ran).
    pub version: String,
    /// The extra etcd flags it was started with ([`MemberPlan::flags`]);
    /// empty for a member started before the operator passed any.
    pub flags: Vec<String>,
}

/// How a member starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// The first member of a new cluster.
    Seed,
    /// Join an existing cluster (a fresh learner, or a restart with data).
    Join,
    /// Restart from its own data as a one-member cluster (disaster recovery).
    ForceNewCluster,
    /// Start a new cluster from a verified snapshot ([`MemberPlan::snapshot`]):
    /// the member's data is replaced by `etcdutl snapshot restore` with the
    /// plan's membership, then it starts as part of a new cluster.
    Restore,
}

/// Everything a runtime needs to start (or restart) a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlan {
    pub name: String,
    /// The etcd version to run.
    pub version: String,
    /// `name=peer-url` of every member, this one included.
    pub initial_cluster: Vec<(String, String)>,
    pub mode: StartMode,
    /// Unique per cluster incarnation, so members of different clusters never join each other.
    pub cluster_token: String,
    /// For [`StartMode::Restore`]: the verified snapshot file on the
    /// operator's filesystem. A runtime that runs members elsewhere hands
    /// the file to them (the Kubernetes runtime serves it to an init container).
    pub snapshot: Option<std::path::PathBuf>,
    /// Extra etcd flags from the spec (`--quota-backend-bytes=…`), checked
    /// by [`crate::etcd::flags::member_flags`]; the runtime appends them to
    /// the command line and remembers them ([`RuntimeMember::flags`]).
    pub flags: Vec<String>,
}

/// The runtime layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("etcd {requested} is not available: {message}")]
    VersionUnavailable { requested: String, message: String },
    #[error("member {member}: {message}")]
    Member { member: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// Where members run. Every method is idempotent: the reconcile loop may
/// call it again after a crash of the operator.
#[allow(async_fn_in_trait)]
pub trait Runtime: Send + Sync {
    /// The URLs member `name` has or will have (allocated and remembered on
    /// the first call, before the member exists in etcd).
    async fn reserve(&self, cluster: &ClusterKey, name: &str) -> Result<MemberUrls, RuntimeError>;

    /// Every member the runtime holds for this cluster, reserved ones included.
    async fn list(&self, cluster: &ClusterKey) -> Result<Vec<RuntimeMember>, RuntimeError>;

    /// Start the member (create it, or restart it keeping its data).
    async fn start(&self, cluster: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError>;

    /// Stop the member, keeping its data.
    async fn stop(&self, cluster: &ClusterKey, name: &str) -> Result<(), RuntimeError>;

    /// Stop the member and remove its data.
    async fn delete(&self, cluster: &ClusterKey, name: &str) -> Result<(), RuntimeError>;

    /// Before a restore deletes the running members: can a member be
    /// started from `plan` (its snapshot, the restore tool, what the
    /// runtime needs to hand the snapshot over, the member's own object)?
    /// Creates nothing. The default has nothing to check.
    async fn check_restore(
        &self,
        _cluster: &ClusterKey,
        _plan: &MemberPlan,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The version that would actually run for a requested one, or why none can.
    async fn resolve_version(&self, requested: &str) -> Result<String, RuntimeError>;

    /// Whether a member stopped and started again keeps its data, so it can
    /// be restarted with new flags. When it cannot (Kubernetes members on
    /// emptyDir: a new Pod is a new volume), a flag change replaces members
    /// one at a time instead. The default keeps it.
    async fn restart_keeps_data(&self, _cluster: &ClusterKey) -> bool {
        true
    }

    /// The client certificates the operator presents to this cluster's
    /// members, when they require client TLS.
    async fn client_tls(
        &self,
        _cluster: &ClusterKey,
    ) -> Result<Option<crate::etcd::ClientTls>, RuntimeError> {
        Ok(None)
    }
}
