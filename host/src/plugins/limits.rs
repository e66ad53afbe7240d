//! Per-call resource limits and the limiter that enforces them.

use std::time::Duration;

use wasmtime::ResourceLimiter;

use super::PluginError;
use super::log_budget::LogLimits;

/// Limits applied to every plugin store. Defaults suit a storage plugin that
/// streams multi-GiB snapshots in a few MiB of memory.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum linear memory of any one memory in the component.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call into the guest (enforced by epoch
    /// interruption while the guest runs, and by a timer while it waits on I/O).
    pub call_timeout: Duration,
    /// Maximum core instances, tables and memories one component may create.
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
    /// Maximum elements of any table.
    pub table_elements: usize,
    /// How much one call and one operation may write to the operator's log.
    pub log: LogLimits,
    /// Most bytes one call may move from the guest into the host (a string,
    /// a list, a `read`'s chunk, a listing): wasmtime's "hostcall fuel",
    /// set here rather than left to its default (128 MiB). A listing of
    /// 100,000 objects is about 8 MiB; a chunk is 1 MiB.
    pub host_copy_bytes: usize,
    /// Most sandboxes alive at once, per kind: storage sessions (one per
    /// backup, restore or retention pass in progress) and policy calls each
    /// get this many. Past it, an operation waits up to one call timeout for
    /// a free slot, then fails as retryable ([`PluginError::Busy`]), so a
    /// burst of backups cannot multiply the memory limit without bound.
    pub max_sandboxes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(60),
            instances: 64,
            tables: 64,
            memories: 8,
            table_elements: 100_000,
            log: LogLimits::default(),
            host_copy_bytes: 32 << 20,
            max_sandboxes: 16,
        }
    }
}

impl Limits {
    /// Reject limits that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), PluginError> {
        if self.memory_bytes < (1 << 20) {
            return Err(PluginError::Config(format!(
                "plugin memory limit {} bytes is below 1 MiB; no component can run in that",
                self.memory_bytes
            )));
        }
        if self.max_sandboxes == 0 {
            return Err(PluginError::Config(
                "the plugin sandbox limit is 0; at least 1 is needed (--max-plugin-sandboxes)"
                    .into(),
            ));
        }
        if self.call_timeout < Duration::from_millis(10) {
            return Err(PluginError::Config(
                "plugin call timeout must be at least 10ms".into(),
            ));
        }
        Ok(())
    }
}

/// What one plugin (a catalog entry) changes of the operator's [`Limits`]:
/// the JavaScript engine, for one, needs more memory than the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginLimits {
    pub memory_mib: Option<usize>,
    pub call_timeout: Option<Duration>,
}

impl PluginLimits {
    /// Reject values no plugin can run with, naming the field.
    pub fn validate(&self) -> Result<(), PluginError> {
        if let Some(m) = self.memory_mib
            && m < 1
        {
            return Err(PluginError::Config(
                "memoryMiB is 0; a plugin needs at least 1 MiB".into(),
            ));
        }
        if let Some(t) = self.call_timeout
            && t < Duration::from_millis(10)
        {
            return Err(PluginError::Config(
                "callTimeout must be at least 10ms".into(),
            ));
        }
        Ok(())
    }
}

impl Limits {
    /// These limits with one plugin's own values in place.
    pub fn with(&self, plugin: &PluginLimits) -> Limits {
        Limits {
            memory_bytes: plugin
                .memory_mib
                .map(|m| m << 20)
                .unwrap_or(self.memory_bytes),
            call_timeout: plugin.call_timeout.unwrap_or(self.call_timeout),
            ..self.clone()
        }
    }
}

/// Enforces [`Limits`] and remembers whether the memory limit was hit, so a
/// trap can be reported as out-of-memory rather than a generic crash.
pub struct Limiter {
    limits: Limits,
    pub(crate) memory_exceeded: bool,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Limiter {
            limits,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.limits.table_elements)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}
