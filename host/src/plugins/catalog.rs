//! The operator's plugin catalog: plugins the operator's admin declares by
//! source and digest, with their own limits. A resource names a catalog
//! plugin by its catalog name, as it names a bundled one.
//!
//! ```yaml
//! plugins:
//!   webdav:
//!     source: oci://registry.example.com/etcd-plugins/webdav@sha256:4f…
//!     memoryMiB: 128          # default: the operator's --plugin-memory-mib
//!     callTimeout: 2m         # default: the operator's --plugin-call-timeout
//!   cloud-x:
//!     source: https://downloads.example.com/cloud-x-1.2.wasm
//!     sha256: 9a…             # required for https:// and for oci://…:TAG
//! ```
//!
//! Only the admin writes it (`--plugin-catalog FILE`; on Kubernetes the
//! chart renders Helm values into a ConfigMap mounted into the operator), so
//! its entries are trusted as much as bundled plugins — but they still may
//! not replace a bundled name unless `--allow-plugin-override` says so.
//! The catalog is read at start; a mistake in it stops the operator with an
//! error naming the entry and the field, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::fetch::{FetchConfig, FetchError, Fetcher};
use super::limits::PluginLimits;
use super::oci::OciError;
use super::registry::{Component, Pending, PluginRegistry};
use super::source::{PinnedSource, Sha256Digest, Source};

/// A mistake in the catalog file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the plugin catalog {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the plugin catalog {path} is not valid: {detail}")]
    Invalid { path: String, detail: String },
    #[error("the plugin catalog {path}, plugin `{name}`: {detail}")]
    Entry {
        path: String,
        name: String,
        detail: String,
    },
    #[error("cannot set up fetching the plugin catalog's sources: {0}")]
    Fetcher(#[source] OciError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugins: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEntry {
    source: String,
    sha256: Option<String>,
    #[serde(rename = "memoryMiB")]
    memory_mib: Option<usize>,
    call_timeout: Option<String>,
}

/// One declared plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub source: PinnedSource,
    pub limits: PluginLimits,
}

/// The whole catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub entries: Vec<Entry>,
}

/// Plugin names as ConfigMap keys and file stems allow them.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: shown.clone(),
            source,
        })?;
        Catalog::parse(&shown, &text)
    }

    /// Parse catalog YAML; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, CatalogError> {
        let file: File = serde_yaml::from_str(text).map_err(|e| CatalogError::Invalid {
            path: path.to_string(),
            detail: format!(
                "{e} (expected `plugins:` mapping names to `source`, and optionally `sha256`, \
                 `memoryMiB`, `callTimeout`)"
            ),
        })?;
        let mut entries = Vec::new();
        for (name, raw) in file.plugins {
            let entry_err = |detail: String| CatalogError::Entry {
                path: path.to_string(),
                name: name.clone(),
                detail,
            };
            if !valid_name(&name) {
                return Err(entry_err(
                    "a plugin name is 1-63 lower-case letters, digits, `-` or `_`".into(),
                ));
            }
            let source: Source = raw
                .source
                .parse()
                .map_err(|e: String| entry_err(format!("source: {e}")))?;
            let sha256 = raw
                .sha256
                .as_deref()
                .map(str::parse::<Sha256Digest>)
                .transpose()
                .map_err(|e| entry_err(format!("sha256: {e}")))?;
            let source = PinnedSource::new(source, sha256).map_err(entry_err)?;
            let call_timeout = raw
                .call_timeout
                .as_deref()
                .map(humantime::parse_duration)
                .transpose()
                .map_err(|e| entry_err(format!("callTimeout: {e} (write e.g. 90s or 2m)")))?;
            let limits = PluginLimits {
                memory_mib: raw.memory_mib,
                call_timeout,
            };
            limits.validate().map_err(|e| entry_err(e.to_string()))?;
            entries.push(Entry {
                name,
                source,
                limits,
            });
        }
        Ok(Catalog { entries })
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Refuse entries that would replace a bundled plugin without the admin's
    /// `--allow-plugin-override`.
    pub fn check_overrides(
        &self,
        path: &str,
        bundled: &BTreeSet<String>,
        allow_override: &BTreeSet<String>,
    ) -> Result<(), CatalogError> {
        for e in &self.entries {
            if bundled.contains(&e.name) && !allow_override.contains(&e.name) {
                return Err(CatalogError::Entry {
                    path: path.to_string(),
                    name: e.name.clone(),
                    detail: format!(
                        "`{0}` is a bundled plugin and the catalog may not replace it; rename the entry, \
                         or add --allow-plugin-override={0} (Helm plugins.allowOverride) to replace it on purpose",
                        e.name
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Where the operator's plugins come from besides its plugin directory, as
/// both runtimes take it from their flags.
#[derive(Debug, Clone, Default)]
pub struct PluginSources {
    /// The catalog file, if any.
    pub catalog: Option<PathBuf>,
    pub fetch: FetchConfig,
    /// The compile cache's directory.
    pub cache_dir: Option<PathBuf>,
    /// Plugin-directory (bundled) names a catalog entry or a ConfigMap may replace.
    pub allow_override: BTreeSet<String>,
}

impl PluginSources {
    /// Start the catalog, if one is configured (see [`CatalogPlugins::start`]).
    pub async fn start_catalog(
        &self,
        registry: &Arc<PluginRegistry>,
        bundled: &BTreeSet<String>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, CatalogError> {
        match &self.catalog {
            Some(path) => Ok(Some(
                CatalogPlugins::start(
                    registry.clone(),
                    path,
                    &self.fetch,
                    bundled,
                    &self.allow_override,
                )
                .await?,
            )),
            None => Ok(None),
        }
    }
}

/// Fetches the catalog's plugins and keeps the registry's catalog layer
/// filled: cached ones at once, the others as soon as their source answers.
pub struct CatalogPlugins {
    pub catalog: Catalog,
    /// Read again each round, so that renewed credentials (an updated
    /// Secret's mounted file) are used without a restart.
    pub fetch: FetchConfig,
    pub registry: Arc<PluginRegistry>,
}

/// Retry delays for sources that failed: 5 s doubling to 5 min.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

impl CatalogPlugins {
    /// Fetch what is missing once; give the registry every entry fetched so
    /// far and the errors of the others. Returns how many are still missing.
    pub async fn fetch_round(&self, have: &mut BTreeMap<String, Component>) -> usize {
        let mut pending = BTreeMap::new();
        let fetcher = Fetcher::new(&self.fetch);
        for entry in &self.catalog.entries {
            if have.contains_key(&entry.name) {
                continue;
            }
            let fetcher = match &fetcher {
                Ok(f) => f,
                Err(e) => {
                    pending.insert(
                        entry.name.clone(),
                        Pending {
                            message: e.to_string(),
                            retryable: false,
                        },
                    );
                    continue;
                }
            };
            match fetcher.fetch(&entry.source).await {
                Ok((digest, bytes)) => {
                    tracing::info!(plugin = %entry.name, source = %entry.source, %digest, "catalog plugin fetched");
                    have.insert(
                        entry.name.clone(),
                        Component {
                            bytes,
                            limits: entry.limits.clone(),
                        },
                    );
                }
                Err(e) => {
                    let retry = e.is_retryable();
                    crate::metrics::plugin_fetch_failed(&entry.name);
                    tracing::error!(plugin = %entry.name, source = %entry.source, error = %e, retry, "catalog plugin not fetched");
                    pending.insert(
                        entry.name.clone(),
                        Pending {
                            message: pending_message(&e),
                            retryable: retry,
                        },
                    );
                }
            }
        }
        let missing = pending.len();
        let registry = self.registry.clone();
        let components = have.clone();
        let _ =
            tokio::task::spawn_blocking(move || registry.set_catalog(components, pending)).await;
        missing
    }

    /// Read the catalog at `path`, check it against the `bundled` plugin
    /// names, and fetch what it declares in the background (from the cache
    /// if there), again with backoff for what is still missing. A mistake in
    /// the catalog is an error; a source that does not answer is not (its
    /// plugin reports why it is not loaded until it is). Clusters are not
    /// kept waiting: until its first fetch ends, a catalog plugin is "not
    /// loaded yet", which is retried.
    pub async fn start(
        registry: Arc<PluginRegistry>,
        path: &Path,
        fetch: &FetchConfig,
        bundled: &BTreeSet<String>,
        allow_override: &BTreeSet<String>,
    ) -> Result<tokio::task::JoinHandle<()>, CatalogError> {
        let catalog = Catalog::load(path)?;
        catalog.check_overrides(&path.display().to_string(), bundled, allow_override)?;
        // Unreadable credentials or CA files are a mistake to stop at.
        Fetcher::new(fetch).map_err(CatalogError::Fetcher)?;
        registry.declare_catalog(catalog.names(), allow_override.clone());
        let fetching = catalog
            .entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    Pending {
                        message: format!("it is being fetched from {}", e.source),
                        retryable: true,
                    },
                )
            })
            .collect();
        let r = registry.clone();
        let _ = tokio::task::spawn_blocking(move || r.set_catalog(BTreeMap::new(), fetching)).await;
        tracing::info!(path = %path.display(), plugins = catalog.entries.len(), "plugin catalog read; fetching its plugins");
        let this = CatalogPlugins {
            catalog,
            fetch: fetch.clone(),
            registry,
        };
        Ok(tokio::spawn(async move {
            let mut have = BTreeMap::new();
            let missing = this.fetch_round(&mut have).await;
            tracing::info!(fetched = have.len(), missing, "plugin catalog fetched");
            if missing > 0 {
                let _ = this.spawn(have).await;
            }
        }))
    }

    /// Fetch until every entry is in, backing off between rounds.
    pub fn spawn(self, mut have: BTreeMap<String, Component>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut delay = FIRST_RETRY;
            loop {
                if self.catalog.entries.len() == have.len() {
                    return;
                }
                tokio::time::sleep(delay).await;
                if self.fetch_round(&mut have).await == 0 {
                    return;
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        })
    }
}

fn pending_message(e: &FetchError) -> String {
    if e.is_retryable() {
        format!("{e}; the operator keeps trying")
    } else {
        format!(
            "{e}; the operator keeps trying, but this needs a fix to the catalog, the registry or its credentials"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_catalog_declares_pinned_sources_with_limits() {
        let text = format!(
            "plugins:\n  webdav:\n    source: oci://127.0.0.1:5000/p/webdav@sha256:{HEX}\n    memoryMiB: 128\n    callTimeout: 2m\n  \
             cloud:\n    source: https://example.com/cloud.wasm\n    sha256: {HEX}\n"
        );
        let c = Catalog::parse("catalog.yaml", &text).unwrap();
        assert_eq!(c.names(), BTreeSet::from(["cloud".into(), "webdav".into()]));
        let webdav = c.entries.iter().find(|e| e.name == "webdav").unwrap();
        assert_eq!(webdav.limits.memory_mib, Some(128));
        assert_eq!(webdav.limits.call_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn mistakes_name_the_entry_and_the_field() {
        let err = |text: &str| Catalog::parse("c.yaml", text).unwrap_err().to_string();
        let e = err("plugins:\n  js:\n    source: oci://r.example.com/p/js:1.0\n");
        assert!(e.contains("plugin `js`") && e.contains("not pinned"), "{e}");
        let e = err(&format!(
            "plugins:\n  js:\n    source: oci://r.example.com/p/js@sha256:{HEX}\n    memoryMib: 128\n"
        ));
        assert!(e.contains("memoryMib"), "{e}");
        let e = err(&format!(
            "plugins:\n  js:\n    source: https://e.com/js.wasm\n    sha256: {HEX}\n    callTimeout: soon\n"
        ));
        assert!(e.contains("callTimeout"), "{e}");
        let e = err(&format!(
            "plugins:\n  Js:\n    source: https://e.com/js.wasm\n    sha256: {HEX}\n"
        ));
        assert!(e.contains("lower-case"), "{e}");
        let e = err(&format!(
            "plugins:\n  js:\n    source: https://e.com/js.wasm\n    sha256: {HEX}\n    memoryMiB: 0\n"
        ));
        assert!(e.contains("plugin `js`") && e.contains("1 MiB"), "{e}");
    }

    #[test]
    fn a_catalog_entry_replaces_a_bundled_plugin_only_when_allowed() {
        let c = Catalog::parse(
            "c.yaml",
            &format!("plugins:\n  s3:\n    source: https://e.com/s3.wasm\n    sha256: {HEX}\n"),
        )
        .unwrap();
        let bundled = BTreeSet::from(["s3".to_string(), "local".to_string()]);
        let e = c
            .check_overrides("c.yaml", &bundled, &BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--allow-plugin-override=s3"), "{e}");
        assert!(
            c.check_overrides("c.yaml", &bundled, &BTreeSet::from(["s3".to_string()]))
                .is_ok()
        );
    }
}
