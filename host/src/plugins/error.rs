//! The plugin layer's one error type.

use std::time::Duration;

/// The case of the WIT `plugin-error` variant a plugin returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestErrorKind {
    NotFound,
    Unauthorized,
    InvalidConfig,
    Transient,
    Other,
}

impl std::fmt::Display for GuestErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestErrorKind::NotFound => "not found",
            GuestErrorKind::Unauthorized => "unauthorized",
            GuestErrorKind::InvalidConfig => "invalid config",
            GuestErrorKind::Transient => "transient error",
            GuestErrorKind::Other => "error",
        })
    }
}

/// Everything that can go wrong loading or calling a plugin.
///
/// Messages are written for the person reading an EtcdBackup's status: they
/// name the plugin and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin ran and returned one of its own typed errors.
    #[error("plugin `{plugin}` {operation}: {kind}: {message}")]
    Guest {
        plugin: String,
        operation: &'static str,
        kind: GuestErrorKind,
        message: String,
    },

    /// The call ran past its CPU-time deadline and was stopped.
    #[error(
        "plugin `{plugin}` {operation}: stopped after exceeding its time limit of {limit:?}; \
         raise the plugin call timeout if the backend is just slow"
    )]
    Timeout {
        plugin: String,
        operation: &'static str,
        limit: Duration,
    },

    /// The plugin tried to grow its memory past the limit.
    #[error(
        "plugin `{plugin}` {operation}: stopped after exceeding its memory limit of {limit_mib} MiB"
    )]
    OutOfMemory {
        plugin: String,
        operation: &'static str,
        limit_mib: usize,
    },

    /// The plugin trapped (a panic, an unreachable, a stack overflow...).
    #[error("plugin `{plugin}` {operation}: crashed: {message}")]
    Trap {
        plugin: String,
        operation: &'static str,
        message: String,
    },

    /// The plugin tried to reach an endpoint it is not allowed to.
    #[error("plugin `{plugin}` {operation}: outbound request to {url} was refused: {reason}")]
    EgressDenied {
        plugin: String,
        operation: &'static str,
        url: String,
        reason: String,
    },

    /// The plugin returned something the contract forbids (a read longer
    /// than asked for, a size that is not what was sent): its answer is
    /// refused like bad user input, and the call fails.
    #[error("plugin `{plugin}` {operation}: broke the plugin contract: {message}")]
    Contract {
        plugin: String,
        operation: &'static str,
        message: String,
    },

    /// Every sandbox slot of its kind stayed taken for a whole call timeout.
    #[error(
        "plugin `{plugin}`: all {slots} plugin sandboxes were busy for {waited:?}; the operation is retried \
         (raise --max-plugin-sandboxes if many backups run at once)"
    )]
    Busy {
        plugin: String,
        slots: usize,
        waited: Duration,
    },

    /// The session was discarded after an earlier fault; open a new one.
    #[error("plugin `{plugin}`: this session was discarded after an earlier failure")]
    Discarded { plugin: String },

    /// A `.wasm` file could not be loaded as a plugin.
    #[error("cannot load plugin {source_name}: {message}")]
    Load {
        source_name: String,
        message: String,
    },

    /// No plugin of that name (and world) is installed.
    #[error("no {world} plugin named `{name}` is installed{installed}")]
    Missing {
        name: String,
        world: &'static str,
        installed: String,
    },

    /// A catalog plugin whose source has not been fetched yet.
    #[error(
        "plugin `{name}` is declared in the operator's plugin catalog but not loaded yet: {message}"
    )]
    NotReady { name: String, message: String },

    /// A plugin from the operator's own plugin directory that is still being
    /// compiled: the operator compiles them after it starts, so clusters come
    /// up without waiting, and a cold compile of a JavaScript or Python
    /// component takes a minute on a small machine.
    #[error(
        "plugin `{name}` is bundled with the operator and still being compiled (a minute or so for a large \
         component on its first start; `etcd-operator plugin precompile DIR` does it ahead of time); the operator retries"
    )]
    Loading { name: String },

    /// A catalog plugin whose source answered with something that cannot
    /// run (a moved tag, a wrong digest, refused credentials).
    #[error("plugin `{name}` of the operator's plugin catalog cannot be loaded: {message}")]
    NotLoadable { name: String, message: String },

    /// Bad host-side configuration (limits, egress entries, grants).
    #[error("{0}")]
    Config(String),

    /// An unexpected failure inside the host runtime.
    #[error("plugin `{plugin}` {operation}: host error: {message}")]
    Host {
        plugin: String,
        operation: &'static str,
        message: String,
    },
}

impl PluginError {
    /// The guest error kind, if the plugin returned a typed error.
    pub fn guest_kind(&self) -> Option<GuestErrorKind> {
        match self {
            PluginError::Guest { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether trying again later may succeed. Credentials, configuration and
    /// sandbox violations never fix themselves, so they are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            PluginError::Guest { kind, .. } => *kind == GuestErrorKind::Transient,
            PluginError::Timeout { .. }
            | PluginError::Host { .. }
            | PluginError::Busy { .. }
            | PluginError::NotReady { .. }
            | PluginError::Loading { .. } => true,
            _ => false,
        }
    }
}
