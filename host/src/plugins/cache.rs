//! Compiled components on disk.
//!
//! Compiling a component takes from tens of milliseconds to seconds (an
//! opendal guest: ~3 s); loading a precompiled one takes under a millisecond.
//! Artifacts are keyed by the sha256 of the component bytes and the engine's
//! compatibility hash, so a new operator version or `Config` never loads a
//! stale artifact, it just compiles again.
//!
//! Besides the writable directory, read-only directories of artifacts
//! compiled ahead of time can be added ([`CompileCache::add_precompiled`]):
//! the image ships its bundled plugins precompiled (`plugins/.compiled`,
//! written by `etcd-operator plugin precompile`), so an operator whose root
//! filesystem is read-only does not compile them at every start. Artifacts
//! are native code loaded unsandboxed: only directories of the operator's
//! own installation are added (`etcd-operator run`'s image directory, not
//! a local mode's plugin directory).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The default cache directory: `$ETCD_OPERATOR_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/etcd-operator/wasm`, else `$HOME/.cache/etcd-operator/wasm`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ETCD_OPERATOR_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("etcd-operator").join("wasm"))
}

/// Where a component's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// A read-only directory compiled ahead of time (the image's).
    Precompiled,
    /// The writable cache, from an earlier start.
    Cache,
    /// Compiled now.
    Compiled,
}

impl LoadedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedFrom::Precompiled => "precompiled",
            LoadedFrom::Cache => "cache",
            LoadedFrom::Compiled => "compiled",
        }
    }
}

/// Hit/miss counters, for tests, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// A directory of precompiled components (or none: compile every time).
pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Read-only directories of artifacts compiled ahead of time.
    precompiled: std::sync::RwLock<Vec<PathBuf>>,
    pub stats: CacheStats,
}

/// Where a plugin directory's ahead-of-time artifacts live.
pub fn precompiled_dir(plugin_dir: &Path) -> PathBuf {
    plugin_dir.join(".compiled")
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache {
            dir,
            precompiled: Default::default(),
            stats: CacheStats::default(),
        }
    }

    /// Also look for artifacts in `dir` (never written to).
    pub fn add_precompiled(&self, dir: PathBuf) {
        self.precompiled
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn artifact_name(engine: &Engine, digest: &str) -> String {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("{digest}-{:016x}.cwasm", h.finish())
    }

    fn artifact(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(Self::artifact_name(engine, digest)))
    }

    /// The component from a precompiled directory, if one has it.
    fn precompiled(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let name = Self::artifact_name(engine, digest);
        let dirs = self.precompiled.read().unwrap_or_else(|e| e.into_inner());
        dirs.iter()
            .map(|d| d.join(&name))
            .filter(|p| p.is_file())
            .find_map(|path| {
                // SAFETY: precompiled directories are part of the operator's
                // own installation (the image's plugin directory, written by
                // `plugin precompile` of this same build); the engine's
                // compatibility hash is in the name, and a file that does not
                // deserialize is skipped.
                match unsafe { Component::deserialize_file(engine, &path) } {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable precompiled plugin");
                        None
                    }
                }
            })
    }

    /// Load the component for `bytes` (whose sha256 is `digest`) from the
    /// cache, or compile it and store the artifact. A corrupt artifact is
    /// replaced; an unwritable cache directory only costs speed.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, LoadedFrom)> {
        if let Some(component) = self.precompiled(engine, digest) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((component, LoadedFrom::Precompiled));
        }
        let Some(path) = self.artifact(engine, digest) else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok((Component::from_binary(engine, bytes)?, LoadedFrom::Compiled));
        };
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (the compatibility hash is in its
            // name) into a directory owned by the operator; a file that does
            // not deserialize is treated as a miss and rewritten.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, LoadedFrom::Cache));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled plugin")
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = Self::store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write plugin compile cache; plugins will be compiled at every start");
        }
        Ok((component, LoadedFrom::Compiled))
    }

    fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
        let dir = path.parent().expect("artifact path has a parent");
        std::fs::create_dir_all(dir)?;
        let bytes = component.serialize()?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
