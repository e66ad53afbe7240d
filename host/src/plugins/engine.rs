//! The one wasmtime `Engine` of the process, its epoch ticker and linker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use super::PluginError;
use super::bindings::storage::etcd_operator::plugin::{log, types};
use super::cache::CompileCache;
use super::egress::{Denial, EgressPolicy};
use super::inspect::PluginInfo;
use super::limits::Limits;
use super::state::HostState;

/// How often the epoch advances: how often a running guest yields and its
/// deadline is checked.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Egress refusals of one store, shared with its HTTP hooks.
pub(crate) type Denials = Arc<Mutex<Vec<Denial>>>;

/// Shared engine, linker, compile cache and limits. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    limits: Limits,
    stop_ticker: Arc<AtomicBool>,
    /// Free sandbox slots: storage sessions, policy calls.
    slots: [Arc<tokio::sync::Semaphore>; 2],
}

/// Which pool a sandbox takes its slot from. Two pools, because a storage
/// session may call a policy (retention) while it is open: with one pool,
/// sessions waiting for a policy slot could hold every slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pool {
    Storage = 0,
    Policy = 1,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn host_err(e: impl std::fmt::Display) -> PluginError {
    PluginError::Config(format!("cannot set up the plugin runtime: {e}"))
}

impl PluginEngine {
    /// Build the engine. `cache_dir` None disables the on-disk compile cache.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        limits.validate()?;
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Our worlds are synchronous; without concurrency support a call is
        // several times cheaper.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(host_err)?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        // All of WASI p2 is linked so components from any toolchain (Python
        // and JS ones import filesystem and sockets) instantiate; the
        // `WasiCtx` of each store grants none of it.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(host_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(host_err)?;
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(host_err)?;
        types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(host_err)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(host_err)?;
        }
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache: CompileCache::new(cache_dir),
                slots: [
                    Arc::new(tokio::sync::Semaphore::new(limits.max_sandboxes)),
                    Arc::new(tokio::sync::Semaphore::new(limits.max_sandboxes)),
                ],
                limits,
                stop_ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn cache(&self) -> &CompileCache {
        &self.inner.cache
    }

    /// Compile (or load from the cache) a component. CPU-heavy: call from a
    /// blocking context.
    pub fn compile(&self, bytes: &[u8], source_name: &str) -> Result<Component, PluginError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let (component, from) = self
            .inner
            .cache
            .load_or_compile(&self.inner.engine, bytes, &digest)
            .map_err(|e| PluginError::Load {
                source_name: source_name.to_string(),
                message: format!("it does not compile as a WebAssembly component: {e:#}"),
            })?;
        crate::metrics::plugin_loaded(source_name, from.as_str(), started.elapsed());
        Ok(component)
    }

    /// Link a compiled component against the host and wrap it in the typed
    /// pre-instance of its world (`StorageBackendPre::new`, ...). Fails if the
    /// component imports something the host does not provide.
    pub(crate) fn link<P>(
        &self,
        component: &Component,
        info: &PluginInfo,
        typed: impl FnOnce(InstancePre<HostState>) -> wasmtime::Result<P>,
    ) -> Result<P, PluginError> {
        let load_err = |e: wasmtime::Error| PluginError::Load {
            source_name: info.name.clone(),
            message: format!("it does not fit the {} world: {e:#}", info.world),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(load_err)?;
        typed(pre).map_err(load_err)
    }

    /// A slot in `pool`, waiting up to one call timeout for one to free up.
    pub(crate) async fn slot(
        &self,
        pool: Pool,
        plugin: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, PluginError> {
        let waited = self.inner.limits.call_timeout;
        let slots = self.inner.slots[pool as usize].clone();
        match tokio::time::timeout(waited, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(PluginError::Busy {
                plugin: plugin.to_string(),
                slots: self.inner.limits.max_sandboxes,
                waited,
            }),
        }
    }

    /// A fresh sandboxed store for one operation.
    pub(crate) fn new_store(
        &self,
        plugin: Arc<str>,
        limits: &Limits,
        egress: Arc<EgressPolicy>,
        preopen: Option<&Path>,
    ) -> Result<(Store<HostState>, Denials), PluginError> {
        let denials = Arc::new(Mutex::new(Vec::new()));
        let state = HostState::new(plugin, limits, egress, preopen, denials.clone())?;
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(limits.host_copy_bytes);
        // At every tick a running guest yields to the async executor, so a
        // busy plugin never starves the operator's other tasks; past its
        // call deadline it is interrupted (a trap the sandbox reports as a
        // timeout).
        store.epoch_deadline_callback(|ctx| {
            let expired = ctx.data().call_deadline.is_none_or(|d| Instant::now() >= d);
            Ok(if expired {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        Ok((store, denials))
    }
}
