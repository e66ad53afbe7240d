//! The set of installed plugins.
//!
//! A registry is fed whole snapshots of its source — every `(name, bytes)`
//! a directory or a set of ConfigMaps holds — through [`PluginRegistry::apply`],
//! and the admin's catalog through [`PluginRegistry::set_catalog`].
//! It loads what is new or changed (by digest), unloads what disappeared, and
//! records a per-plugin error for what cannot be loaded, while every other
//! plugin keeps working.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::PluginError;
use super::engine::PluginEngine;
use super::inspect::{PluginInfo, World, inspect};
use super::limits::PluginLimits;
use super::policy::PolicyPlugin;
use super::storage::StoragePlugin;

/// A plugin ready to use.
#[derive(Clone)]
pub enum LoadedPlugin {
    Storage(StoragePlugin),
    Policy(PolicyPlugin),
}

impl LoadedPlugin {
    pub fn info(&self) -> &PluginInfo {
        match self {
            LoadedPlugin::Storage(p) => p.info(),
            LoadedPlugin::Policy(p) => p.info(),
        }
    }
}

/// What one `apply` changed, for logs and Events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    /// Plugin name and the error that kept it out.
    pub failed: Vec<(String, String)>,
}

/// One plugin's bytes and its own limits (catalog entries may set them;
/// directory and ConfigMap plugins run under the engine's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Component {
    pub bytes: Vec<u8>,
    pub limits: PluginLimits,
}

/// Installed plugins by name.
///
/// The registry is fed from two layers: the *base* (a plugin directory, or
/// the bundled plugins overlaid with ConfigMaps), given whole to
/// [`PluginRegistry::apply`] on every change, and the *catalog* the admin
/// declared ([`super::catalog`]), given to [`PluginRegistry::set_catalog`]
/// as its sources are fetched. A catalog entry wins over a base plugin of
/// its name only if `allow_override` names it.
pub struct PluginRegistry {
    engine: PluginEngine,
    plugins: RwLock<BTreeMap<String, Installed>>,
    errors: RwLock<BTreeMap<String, String>>,
    /// What the layers hold; locked only briefly (lookups of pending
    /// catalog entries run on async workers).
    layers: Mutex<Layers>,
    /// Serialises loading, which compiles (seconds for a JavaScript engine)
    /// outside the `layers` lock.
    applying: Mutex<()>,
}

#[derive(Default)]
struct Layers {
    base: BTreeMap<String, Component>,
    catalog: BTreeMap<String, Component>,
    /// Catalog entries not fetched yet: why, and whether a later fetch may succeed.
    pending: BTreeMap<String, Pending>,
    catalog_names: BTreeSet<String>,
    allow_override: BTreeSet<String>,
    /// Base plugins announced by [`PluginRegistry::expect_base`] and not yet
    /// through their first apply: being compiled, not missing.
    loading: BTreeSet<String>,
}

/// Why a catalog entry is not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub message: String,
    /// The source may answer later (network, registry outage); else only a
    /// change to the catalog or the registry helps.
    pub retryable: bool,
}

struct Installed {
    plugin: LoadedPlugin,
    limits: PluginLimits,
}

/// Load one plugin from its bytes: identify, compile (cached), link.
pub fn load(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
    load_with(engine, name, bytes, &PluginLimits::default())
}

/// [`load`] under the plugin's own limits.
pub fn load_with(
    engine: &PluginEngine,
    name: &str,
    bytes: &[u8],
    limits: &PluginLimits,
) -> Result<LoadedPlugin, PluginError> {
    let info = inspect(name, bytes)?;
    let component = engine.compile(bytes, name)?;
    let limits = engine.limits().with(limits);
    Ok(match info.world {
        World::StorageBackend => {
            LoadedPlugin::Storage(StoragePlugin::new(engine, &component, info)?.with_limits(limits))
        }
        World::BackupPolicy => {
            LoadedPlugin::Policy(PolicyPlugin::new(engine, &component, info)?.with_limits(limits))
        }
    })
}

impl PluginRegistry {
    pub fn new(engine: PluginEngine) -> Self {
        PluginRegistry {
            engine,
            plugins: RwLock::default(),
            errors: RwLock::default(),
            layers: Mutex::default(),
            applying: Mutex::default(),
        }
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Declare the catalog's names (before any is fetched, so a resource
    /// naming one is told it is on its way) and the base plugins catalog
    /// entries may replace.
    pub fn declare_catalog(&self, names: BTreeSet<String>, allow_override: BTreeSet<String>) {
        let mut layers = self.layers.lock().expect("registry lock");
        layers.catalog_names = names;
        layers.allow_override = allow_override;
    }

    /// Names the catalog declares: a ConfigMap may not take them.
    pub fn catalog_names(&self) -> BTreeSet<String> {
        self.layers
            .lock()
            .expect("registry lock")
            .catalog_names
            .clone()
    }

    /// Announce the base plugins about to be applied (a plugin directory's
    /// names), so that until [`PluginRegistry::apply`] has compiled them a
    /// resource naming one is told it is on its way, and retries, rather
    /// than that it does not exist.
    pub fn expect_base(&self, names: BTreeSet<String>) {
        self.layers.lock().expect("registry lock").loading = names;
    }

    /// Make the base layer exactly `source` (name → component bytes).
    /// Compiles synchronously: call from a blocking context.
    pub fn apply(&self, source: BTreeMap<String, Vec<u8>>) -> ApplyReport {
        let base = source
            .into_iter()
            .map(|(n, bytes)| {
                (
                    n,
                    Component {
                        bytes,
                        limits: PluginLimits::default(),
                    },
                )
            })
            .collect();
        let _applying = self.applying.lock().expect("registry lock");
        self.layers.lock().expect("registry lock").base = base;
        let report = self.reconcile();
        self.layers.lock().expect("registry lock").loading.clear();
        report
    }

    /// Make the catalog layer `components`, with `pending` the entries not
    /// fetched yet and why. Compiles synchronously.
    pub fn set_catalog(
        &self,
        components: BTreeMap<String, Component>,
        pending: BTreeMap<String, Pending>,
    ) -> ApplyReport {
        let _applying = self.applying.lock().expect("registry lock");
        {
            let mut layers = self.layers.lock().expect("registry lock");
            layers.catalog = components;
            layers.pending = pending;
        }
        self.reconcile()
    }

    /// Load what the layers hold and the registry does not, unload the rest.
    /// The caller holds `applying`.
    fn reconcile(&self) -> ApplyReport {
        let wanted: BTreeMap<String, Component> = {
            let layers = self.layers.lock().expect("registry lock");
            let mut wanted = layers.base.clone();
            for (name, component) in &layers.catalog {
                if layers.base.contains_key(name) && !layers.allow_override.contains(name) {
                    tracing::error!(plugin = %name, "a catalog entry may not replace the bundled plugin of its name; the bundled one keeps serving (--allow-plugin-override)");
                    continue;
                }
                wanted.insert(name.clone(), component.clone());
            }
            wanted
        };
        let mut report = ApplyReport::default();
        let current: BTreeMap<String, (String, PluginLimits)> = self
            .plugins
            .read()
            .expect("registry lock")
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    (p.plugin.info().sha256.clone(), p.limits.clone()),
                )
            })
            .collect();
        let mut errors = BTreeMap::new();
        for (name, component) in &wanted {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&component.bytes));
            if current.get(name) == Some(&(digest, component.limits.clone())) {
                report.unchanged.push(name.clone());
                continue;
            }
            match load_with(&self.engine, name, &component.bytes, &component.limits) {
                Ok(plugin) => {
                    let info = plugin.info();
                    tracing::info!(plugin = %name, world = %info.world, wit = %info.wit_version, sha256 = %info.sha256, size = info.size, "plugin loaded");
                    report.loaded.push(name.clone());
                    // Served at once: a resource waiting for this plugin
                    // need not wait for the slower ones compiled after it.
                    self.plugins.write().expect("registry lock").insert(
                        name.clone(),
                        Installed {
                            plugin,
                            limits: component.limits.clone(),
                        },
                    );
                }
                Err(e) => {
                    // A broken update keeps the previous good version serving.
                    tracing::error!(plugin = %name, error = %e, "plugin not loaded");
                    report.failed.push((name.clone(), e.to_string()));
                    errors.insert(name.clone(), e.to_string());
                }
            }
        }
        let mut plugins = self.plugins.write().expect("registry lock");
        plugins.retain(|name, _| {
            let keep = wanted.contains_key(name);
            if !keep {
                tracing::info!(plugin = %name, "plugin unloaded");
                report.removed.push(name.clone());
            }
            keep
        });
        *self.errors.write().expect("registry lock") = errors;
        report
    }

    /// Read every `*.wasm` in `dir` (the file stem is the plugin name) and apply it.
    pub fn load_dir(&self, dir: &Path) -> Result<ApplyReport, PluginError> {
        match read_dir_source(dir) {
            Ok(source) => Ok(self.apply(source)),
            Err(e) => {
                // Nothing is on its way any more: say missing, not loading.
                self.layers.lock().expect("registry lock").loading.clear();
                Err(e)
            }
        }
    }

    /// Rescan `dir` every `interval` and apply changes, until the registry is dropped.
    /// Polling (rather than inotify) also sees ConfigMap volume updates, which
    /// swap a symlink.
    pub fn watch_dir(
        self: &Arc<Self>,
        dir: PathBuf,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                let dir = dir.clone();
                // Only stat the files each tick; read and apply them when a
                // name, size or modification time changed.
                let previous = last.take();
                let result = tokio::task::spawn_blocking(move || {
                    let fingerprint = dir_fingerprint(&dir)?;
                    if previous.as_ref() == Some(&fingerprint) {
                        return Ok((previous, None));
                    }
                    Ok::<_, PluginError>((Some(fingerprint), Some(read_dir_source(&dir)?)))
                })
                .await;
                match result {
                    Ok(Ok((fingerprint, source))) => {
                        last = fingerprint;
                        if let Some(source) = source {
                            let r = registry.clone();
                            let _ = tokio::task::spawn_blocking(move || r.apply(source)).await;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot rescan the plugin directory"),
                    Err(e) => tracing::warn!(error = %e, "plugin directory scan panicked"),
                }
            }
        })
    }

    pub fn get(&self, name: &str) -> Option<LoadedPlugin> {
        self.plugins
            .read()
            .expect("registry lock")
            .get(name)
            .map(|p| p.plugin.clone())
    }

    fn missing(&self, name: &str, world: World) -> PluginError {
        if let Some(err) = self.errors.read().expect("registry lock").get(name) {
            return PluginError::Config(err.clone());
        }
        {
            let layers = self.layers.lock().expect("registry lock");
            if let Some(p) = layers.pending.get(name) {
                let message = p.message.clone();
                let name = name.to_string();
                return if p.retryable {
                    PluginError::NotReady { name, message }
                } else {
                    PluginError::NotLoadable { name, message }
                };
            }
            // A base plugin announced or applied and not loaded, with no
            // error: its compile is under way.
            let loaded = self
                .plugins
                .read()
                .expect("registry lock")
                .contains_key(name);
            if !loaded && (layers.loading.contains(name) || layers.base.contains_key(name)) {
                return PluginError::Loading {
                    name: name.to_string(),
                };
            }
            // Fetched, and being compiled right now (seconds for a
            // JavaScript engine): on its way, not missing.
            if layers.catalog_names.contains(name) {
                return PluginError::NotReady {
                    name: name.to_string(),
                    message: "it is fetched and being compiled".into(),
                };
            }
        }
        let names: Vec<String> = self
            .list()
            .into_iter()
            .filter(|i| i.world == world)
            .map(|i| i.name)
            .collect();
        PluginError::Missing {
            name: name.to_string(),
            world: world.as_str(),
            installed: if names.is_empty() {
                " (none is installed)".into()
            } else {
                format!(" (installed: {})", names.join(", "))
            },
        }
    }

    /// The storage plugin `name`, or an error listing what is installed.
    pub fn storage(&self, name: &str) -> Result<StoragePlugin, PluginError> {
        match self.get(name) {
            Some(LoadedPlugin::Storage(p)) => Ok(p),
            _ => Err(self.missing(name, World::StorageBackend)),
        }
    }

    /// The backup-policy plugin `name`, or an error listing what is installed.
    pub fn policy(&self, name: &str) -> Result<PolicyPlugin, PluginError> {
        match self.get(name) {
            Some(LoadedPlugin::Policy(p)) => Ok(p),
            _ => Err(self.missing(name, World::BackupPolicy)),
        }
    }

    /// What is installed.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.plugins
            .read()
            .expect("registry lock")
            .values()
            .map(|p| p.plugin.info().clone())
            .collect()
    }

    /// Plugins that failed to load at the last apply, with their errors.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.errors.read().expect("registry lock").clone()
    }

    /// Catalog plugins not fetched yet, with why.
    pub fn pending(&self) -> BTreeMap<String, Pending> {
        self.layers.lock().expect("registry lock").pending.clone()
    }
}

fn io_error(path: &Path, e: std::io::Error) -> PluginError {
    PluginError::Config(format!("cannot read {}: {e}", path.display()))
}

/// Every `*.wasm` file of `dir`, by file stem.
fn wasm_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, PluginError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
            out.push((name.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Name, size and modification time of every plugin file: enough to notice
/// a change (metadata follows symlinks, so ConfigMap swaps show) without
/// reading the files.
type Fingerprint = Vec<(String, u64, Option<std::time::SystemTime>)>;

fn dir_fingerprint(dir: &Path) -> Result<Fingerprint, PluginError> {
    wasm_files(dir)?
        .into_iter()
        .map(|(name, path)| {
            let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            Ok((name, meta.len(), meta.modified().ok()))
        })
        .collect()
}

/// The plugin names of `dir` (`*.wasm` file stems), without reading the files.
pub fn dir_names(dir: &Path) -> BTreeSet<String> {
    wasm_files(dir)
        .map(|files| files.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

/// Every `*.wasm` file of `dir` by file stem, with its bytes.
pub fn read_dir_source(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, PluginError> {
    wasm_files(dir)?
        .into_iter()
        .map(|(name, path)| Ok((name, std::fs::read(&path).map_err(|e| io_error(&path, e))?)))
        .collect()
}
