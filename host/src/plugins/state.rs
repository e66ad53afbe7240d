//! What a plugin store holds, and the host side of the `log` import.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::PluginError;
use super::bindings::storage::etcd_operator::plugin::log;
use super::egress::{Denial, EgressHooks, EgressPolicy};
use super::limits::{Limiter, Limits};
use super::log_budget::LogBudget;
use super::stdio::{LogStream, Stream};

/// Where the one granted directory appears inside the sandbox.
pub const GUEST_DIR: &str = "/data";

/// The data of one plugin `Store`: WASI with no ambient authority, wasi:http
/// behind the egress hooks, and the limiter.
pub struct HostState {
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: EgressHooks,
    pub(crate) limiter: Limiter,
    /// What this session may still write to the log.
    pub(crate) log_budget: LogBudget,
    /// When the current call must stop; None outside a call (instantiation
    /// included, which is armed like a call).
    pub(crate) call_deadline: Option<Instant>,
}

impl HostState {
    /// A sandbox with no filesystem (except `preopen`), no environment, no
    /// arguments, no sockets, and stdio routed into the log.
    pub fn new(
        plugin: Arc<str>,
        limits: &Limits,
        egress: Arc<EgressPolicy>,
        preopen: Option<&Path>,
        denials: Arc<Mutex<Vec<Denial>>>,
    ) -> Result<Self, PluginError> {
        let log_budget = LogBudget::new(plugin.clone(), limits.log);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(LogStream::new(
            plugin.clone(),
            Stream::Stdout,
            log_budget.clone(),
        ))
        .stderr(LogStream::new(
            plugin.clone(),
            Stream::Stderr,
            log_budget.clone(),
        ))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
        if let Some(dir) = preopen {
            wasi.preopened_dir(dir, GUEST_DIR, FsPerms::ReadWrite).map_err(|e| {
                PluginError::Config(format!(
                    "cannot grant directory {} to plugin `{plugin}`: {e}; create it or fix its permissions",
                    dir.display()
                ))
            })?;
        }
        Ok(HostState {
            hooks: EgressHooks {
                policy: egress,
                plugin: plugin.clone(),
                denials,
            },
            plugin,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.clone()),
            log_budget,
            call_deadline: None,
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Longest log message kept from a guest.
const MAX_LOG: usize = 8192;

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG {
            let mut cut = MAX_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if !self.log_budget.admit(message.len()) {
            return;
        }
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl super::bindings::storage::etcd_operator::plugin::types::Host for HostState {}
