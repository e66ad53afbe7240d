//! One sandboxed store and the rules that turn call outcomes into
//! [`PluginError`]s. A store that trapped or timed out is discarded: wasmtime
//! does not promise a usable instance after a trap, and a plugin that
//! misbehaved once gets a fresh start on the next operation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use super::bindings::WitPluginError;
use super::egress::{Denial, EgressPolicy};
use super::engine::{PluginEngine, Pool};
use super::limits::Limits;
use super::state::HostState;
use super::{GuestErrorKind, PluginError};

/// Extra wall-clock time granted beyond the epoch deadline before the host
/// gives up on a call that is blocked in I/O rather than running wasm.
const IO_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Sandbox {
    pub(crate) store: Store<HostState>,
    denials: Arc<Mutex<Vec<Denial>>>,
    /// The plugin's own limits (the engine's, or its catalog entry's).
    limits: Arc<Limits>,
    plugin: Arc<str>,
    /// The grants the store was made with, for [`Sandbox::renew`].
    egress: Arc<EgressPolicy>,
    preopen: Option<PathBuf>,
    discarded: bool,
    /// Its slot in the engine's pool, given back when the sandbox goes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// A call's raw outcome: the timer, the trap, the plugin's own result.
pub(crate) type RawOutcome<R> =
    Result<wasmtime::Result<Result<R, WitPluginError>>, tokio::time::error::Elapsed>;

impl Sandbox {
    /// A fresh sandbox, once `pool` has a free slot.
    pub(crate) async fn new(
        engine: &PluginEngine,
        pool: Pool,
        plugin: Arc<str>,
        limits: Arc<Limits>,
        egress: Arc<EgressPolicy>,
        preopen: Option<&Path>,
    ) -> Result<Self, PluginError> {
        let slot = engine.slot(pool, &plugin).await?;
        let (store, denials) =
            engine.new_store(plugin.clone(), &limits, egress.clone(), preopen)?;
        Ok(Sandbox {
            store,
            denials,
            limits,
            plugin,
            egress,
            preopen: preopen.map(Path::to_path_buf),
            discarded: false,
            _slot: slot,
        })
    }

    /// Replace the store with a fresh one under the same limits and grants,
    /// keeping this sandbox's slot in the pool (waiting for a second slot
    /// while holding one could wait forever on a full pool). Everything the
    /// old store held is gone: instances and resources made in it must not
    /// be used again.
    pub(crate) fn renew(&mut self, engine: &PluginEngine) -> Result<(), PluginError> {
        let (store, denials) = engine.new_store(
            self.plugin.clone(),
            &self.limits,
            self.egress.clone(),
            self.preopen.as_deref(),
        )?;
        self.store = store;
        self.denials = denials;
        self.discarded = false;
        Ok(())
    }

    /// Whether a trap, timeout or memory fault ended this store.
    pub(crate) fn is_discarded(&self) -> bool {
        self.discarded
    }

    /// Refuse every further call into this store.
    pub(crate) fn discard(&mut self) {
        self.discarded = true;
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Wall-clock budget for one call, as a timer around the future.
    pub(crate) fn timeout(&self) -> Duration {
        self.limits.call_timeout + IO_GRACE
    }

    /// Prepare for a call: refuse if discarded, reset the CPU deadline.
    pub(crate) fn arm(&mut self) -> Result<(), PluginError> {
        if self.discarded {
            return Err(PluginError::Discarded {
                plugin: self.plugin.to_string(),
            });
        }
        self.denials.lock().expect("denials lock").clear();
        self.store.data().log_budget.start_call();
        self.store.data_mut().call_deadline = Some(Instant::now() + self.limits.call_timeout);
        self.store.set_epoch_deadline(1);
        Ok(())
    }

    /// Classify a failure of wasmtime itself (trap, deadline, memory).
    pub(crate) fn fault(&mut self, operation: &'static str, error: wasmtime::Error) -> PluginError {
        self.discarded = true;
        let plugin = self.plugin.to_string();
        if self.store.data().limiter.memory_exceeded {
            return PluginError::OutOfMemory {
                plugin,
                operation,
                limit_mib: self.limits.memory_bytes >> 20,
            };
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return PluginError::Timeout {
                plugin,
                operation,
                limit: self.limits.call_timeout,
            };
        }
        if let Some(denial) = self.denials.lock().expect("denials lock").first().cloned() {
            return PluginError::EgressDenied {
                plugin,
                operation,
                url: denial.url,
                reason: denial.reason,
            };
        }
        // wasmtime's hostcall fuel: the guest tried to hand the host more
        // than one call may carry (the error type is private; its words are
        // the only handle).
        if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
            return PluginError::Contract {
                plugin,
                operation,
                message: format!(
                    "tried to pass the host more than {} MiB in one call",
                    self.limits.host_copy_bytes >> 20
                ),
            };
        }
        PluginError::Trap {
            plugin,
            operation,
            message: format!("{error:#}"),
        }
    }

    /// Turn a call's raw outcome into the plugin layer's result.
    pub(crate) fn settle<R>(
        &mut self,
        operation: &'static str,
        outcome: RawOutcome<R>,
    ) -> Result<R, PluginError> {
        self.store.data().log_budget.end_call(operation);
        match outcome {
            Err(_elapsed) => {
                self.discarded = true;
                Err(PluginError::Timeout {
                    plugin: self.plugin.to_string(),
                    operation,
                    limit: self.limits.call_timeout,
                })
            }
            Ok(Err(error)) => Err(self.fault(operation, error)),
            Ok(Ok(Err(guest))) => {
                // A refused request usually surfaces as a vague error from the
                // plugin's HTTP stack; report the refusal itself.
                if let Some(denial) = self.denials.lock().expect("denials lock").first().cloned() {
                    return Err(PluginError::EgressDenied {
                        plugin: self.plugin.to_string(),
                        operation,
                        url: denial.url,
                        reason: denial.reason,
                    });
                }
                let (kind, message) = split_guest_error(guest);
                Err(PluginError::Guest {
                    plugin: self.plugin.to_string(),
                    operation,
                    kind,
                    message,
                })
            }
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

pub(crate) fn split_guest_error(e: WitPluginError) -> (GuestErrorKind, String) {
    match e {
        WitPluginError::NotFound(m) => (GuestErrorKind::NotFound, m),
        WitPluginError::Unauthorized(m) => (GuestErrorKind::Unauthorized, m),
        WitPluginError::InvalidConfig(m) => (GuestErrorKind::InvalidConfig, m),
        WitPluginError::Transient(m) => (GuestErrorKind::Transient, m),
        WitPluginError::Other(m) => (GuestErrorKind::Other, m),
    }
}

/// Call into the guest with the deadline armed and the outcome classified:
/// `guest_call!(sandbox, "operation", future-using-sandbox.store)`.
macro_rules! guest_call {
    ($sandbox:expr, $op:literal, |$store:ident| $call:expr) => {{
        let sandbox: &mut $crate::plugins::sandbox::Sandbox = $sandbox;
        sandbox.arm()?;
        let budget = sandbox.timeout();
        let started = std::time::Instant::now();
        let outcome = {
            let $store = &mut sandbox.store;
            tokio::time::timeout(budget, $call).await
        };
        let settled = sandbox.settle($op, outcome);
        $crate::metrics::plugin_call(sandbox.plugin(), $op, started.elapsed(), settled.is_ok());
        settled
    }};
}
pub(crate) use guest_call;
