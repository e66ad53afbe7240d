//! What the operator did, for Kubernetes Events (or log lines locally).

/// One event about a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Warning events report trouble; normal ones report progress.
    pub warning: bool,
    /// CamelCase, e.g. MemberAdded.
    pub reason: String,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Event {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Event {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
}
