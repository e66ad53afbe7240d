//! The reconcile core: keeps an etcd cluster at its declared size and
//! version and brings it back from failures, whatever runs the members.
//!
//! - [`runtime`]: the contract a member runtime fulfils;
//! - [`decide`]: the pure decision of the next step;
//! - [`defrag`]: which member to defragment next, when the cluster is steady;
//! - [`version`]: versions and upgrade rules;
//! - [`reconciler`]: observe → decide → act, and the resulting status;
//! - [`status`]: the EtcdCluster status from an observation.
//!
//! This module imports neither kube's client nor wasmtime.

#[cfg(test)]
mod conversations;
pub mod decide;
pub mod defrag;
pub mod events;
#[cfg(test)]
mod fakes;
pub mod nospace;
pub mod reconciler;
pub mod runtime;
pub mod status;
pub mod version;

pub use decide::{Action, Desired, Tuning};
pub use events::Event;
pub use reconciler::{
    ActGuard, BackupPin, Outcome, Reconciler, RecoveryFuture, RecoverySnapshot, RecoverySource,
};
pub use runtime::{
    ClusterKey, MemberPlan, MemberUrls, Runtime, RuntimeError, RuntimeMember, StartMode,
};
pub use version::{Version, check_supported};
