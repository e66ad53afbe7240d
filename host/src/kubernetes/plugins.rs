//! Storage and policy plugins from ConfigMaps. A ConfigMap labelled
//! `etcd.database.coreos.com/plugin` carries components in `binaryData`:
//! key `<name>.wasm`, or `<name>.wasm.gz` gzipped (a ConfigMap holds at most
//! 1 MiB, which most compressed plugins fit). The registry is made to hold
//! the bundled plugins (the image's plugin directory) overlaid with every
//! labelled ConfigMap, again on each change: an edit hot-reloads, a deletion
//! unloads (or falls back to the bundled plugin of that name), and a broken
//! component is reported (log + Event on its ConfigMap) while every other
//! plugin — and the previous good version of the broken one — keeps working.
//!
//! Write access to labelled ConfigMaps in the operator's namespace is write
//! access to the code that receives storage credentials and snapshots. So a
//! ConfigMap may add plugins but not replace a bundled one (`s3`, `local`,
//! ...) unless the admin names it in `--allow-plugin-override`; a refused
//! override gets an Event on its ConfigMap and the bundled plugin keeps
//! serving. Nor may it take a name the operator's plugin catalog declares.
//! All ConfigMaps together decompress to at most
//! [`MAX_CONFIGMAP_BYTES_TOTAL`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Resource, ResourceExt};

use super::events;
use crate::controller::Event;
use crate::plugins::{PluginRegistry, registry::read_dir_source};

/// The label that marks a plugin ConfigMap (any value).
pub const PLUGIN_LABEL: &str = "etcd.database.coreos.com/plugin";
/// A decompressed component larger than this is refused (a gzip bomb must
/// not exhaust the operator's memory).
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// All ConfigMap components together, decompressed: past this, the rest
/// (in ConfigMap name order) is refused.
pub const MAX_CONFIGMAP_BYTES_TOTAL: u64 = 256 << 20;

/// What one ConfigMap carries.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Components by plugin name.
    pub plugins: BTreeMap<String, Vec<u8>>,
    /// Keys that were refused, and why.
    pub refused: Vec<(String, String)>,
}

/// The registry's source and where each entry came from.
struct Overlay {
    source: BTreeMap<String, Vec<u8>>,
    /// Plugin name → the ConfigMap that provided it (absent: bundled).
    origin: BTreeMap<String, String>,
    /// ConfigMap, key, Event reason, why it was refused.
    refused: Vec<(String, String, &'static str, String)>,
}

/// The components of one ConfigMap.
pub fn decode(cm: &ConfigMap) -> Decoded {
    let mut plugins = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, value) in cm.binary_data.iter().flatten() {
        if let Some(name) = key.strip_suffix(".wasm.gz") {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(value.0.as_slice())
                .take(MAX_PLUGIN_BYTES + 1)
                .read_to_end(&mut out);
            match read {
                Ok(n) if n as u64 > MAX_PLUGIN_BYTES => errors.push((
                    key.clone(),
                    format!("decompresses to more than {} MiB", MAX_PLUGIN_BYTES >> 20),
                )),
                Ok(_) => {
                    plugins.insert(name.to_string(), out);
                }
                Err(e) => errors.push((key.clone(), format!("is not valid gzip: {e}"))),
            }
        } else if let Some(name) = key.strip_suffix(".wasm") {
            plugins.insert(name.to_string(), value.0.clone());
        } else {
            errors.push((
                key.clone(),
                "is neither <name>.wasm nor <name>.wasm.gz; it is ignored".to_string(),
            ));
        }
    }
    for key in cm.data.iter().flatten().map(|(k, _)| k) {
        if key.ends_with(".wasm") || key.ends_with(".wasm.gz") {
            errors.push((
                key.clone(),
                "is under `data`; components are binary and belong under `binaryData` \
                 (kubectl create configmap --from-file does this)"
                    .to_string(),
            ));
        }
    }
    Decoded {
        plugins,
        refused: errors,
    }
}

/// Watches plugin ConfigMaps and keeps the registry in step with them.
pub struct ConfigMapPlugins {
    pub registry: Arc<PluginRegistry>,
    /// The bundled plugins, read again on every apply.
    pub bundled: Option<PathBuf>,
    /// Bundled plugins a ConfigMap may replace (`--allow-plugin-override`).
    pub allow_override: BTreeSet<String>,
    pub recorder: Recorder,
}

/// The registry's source: `bundled`, then the components of `maps` in
/// ConfigMap name order. A ConfigMap adds plugins; it replaces a bundled one
/// only when `allow_override` names it, and the first ConfigMap providing a
/// name wins.
fn overlay(
    mut source: BTreeMap<String, Vec<u8>>,
    maps: &BTreeMap<String, ConfigMap>,
    allow_override: &BTreeSet<String>,
    catalog: &BTreeSet<String>,
) -> Overlay {
    let bundled: BTreeSet<String> = source.keys().cloned().collect();
    let mut origin = BTreeMap::new();
    let mut refused = Vec::new();
    let mut total = 0u64;
    for (cm_name, cm) in maps {
        let Decoded {
            plugins,
            refused: errors,
        } = decode(cm);
        for (key, why) in errors {
            refused.push((cm_name.clone(), key, "PluginRejected", why));
        }
        for (name, bytes) in plugins {
            if let Some(other) = origin.get(&name) {
                refused.push((
                    cm_name.clone(),
                    name.clone(),
                    "PluginRejected",
                    format!("plugin `{name}` is already provided by ConfigMap {other}; this copy is ignored"),
                ));
                continue;
            }
            if catalog.contains(&name) {
                refused.push((
                    cm_name.clone(),
                    name.clone(),
                    "PluginOverrideRefused",
                    format!(
                        "plugin `{name}` is declared in the operator's plugin catalog and a ConfigMap may not \
                         replace it; the catalog's `{name}` keeps serving. Name this plugin differently"
                    ),
                ));
                continue;
            }
            if bundled.contains(&name) && !allow_override.contains(&name) {
                refused.push((
                    cm_name.clone(),
                    name.clone(),
                    "PluginOverrideRefused",
                    format!(
                        "plugin `{name}` is bundled with the operator and a ConfigMap may not replace it; the \
                         bundled `{name}` keeps serving. To replace it on purpose, the operator's admin adds \
                         `--allow-plugin-override={name}` (Helm `plugins.allowOverride`), or name this plugin \
                         differently"
                    ),
                ));
                continue;
            }
            total += bytes.len() as u64;
            if total > MAX_CONFIGMAP_BYTES_TOTAL {
                refused.push((
                    cm_name.clone(),
                    name.clone(),
                    "PluginRejected",
                    format!(
                        "plugin `{name}` is not loaded: the plugin ConfigMaps together decompress to more than \
                         {} MiB; remove plugins that are not used",
                        MAX_CONFIGMAP_BYTES_TOTAL >> 20
                    ),
                ));
                total -= bytes.len() as u64;
                continue;
            }
            origin.insert(name.clone(), cm_name.clone());
            source.insert(name, bytes);
        }
    }
    Overlay {
        source,
        origin,
        refused,
    }
}

impl ConfigMapPlugins {
    /// The registry's source: the bundled plugins overlaid with `maps`.
    fn source(&self, maps: &BTreeMap<String, ConfigMap>) -> Overlay {
        let bundled = match &self.bundled {
            Some(dir) => read_dir_source(dir).unwrap_or_else(|e| {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the bundled plugins");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        overlay(
            bundled,
            maps,
            &self.allow_override,
            &self.registry.catalog_names(),
        )
    }

    async fn apply(&self, maps: &BTreeMap<String, ConfigMap>) {
        let Overlay {
            source,
            origin,
            refused,
        } = self.source(maps);
        let registry = self.registry.clone();
        let report = match tokio::task::spawn_blocking(move || registry.apply(source)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "applying plugins panicked");
                return;
            }
        };
        for name in &report.loaded {
            tracing::info!(plugin = %name, from = origin.get(name).map(String::as_str).unwrap_or("bundled"), "plugin ready");
            if let Some(cm) = origin.get(name).and_then(|n| maps.get(n)) {
                let e = Event::normal("PluginLoaded", format!("plugin `{name}` loaded"));
                events::publish(&self.recorder, &cm.object_ref(&()), "LoadPlugin", &e).await;
            }
        }
        for name in &report.removed {
            tracing::info!(plugin = %name, "plugin unloaded");
        }
        for (name, error) in &report.failed {
            let e = Event::warning(
                "PluginRejected",
                format!("plugin `{name}` was not loaded (other plugins keep working): {error}"),
            );
            match origin.get(name).and_then(|n| maps.get(n)) {
                Some(cm) => {
                    events::publish(&self.recorder, &cm.object_ref(&()), "LoadPlugin", &e).await
                }
                None => tracing::error!(plugin = %name, %error, "bundled plugin not loaded"),
            }
        }
        for (cm_name, key, reason, why) in refused {
            let e = Event::warning(reason, format!("key `{key}`: {why}"));
            if let Some(cm) = maps.get(&cm_name) {
                events::publish(&self.recorder, &cm.object_ref(&()), "LoadPlugin", &e).await;
            }
        }
    }

    /// Load the bundled plugins, then follow the labelled ConfigMaps of
    /// `namespace` until the stream ends (it retries on its own).
    pub async fn run(self, api: Api<ConfigMap>) {
        let mut maps: BTreeMap<String, ConfigMap> = BTreeMap::new();
        self.apply(&maps).await;
        let mut initial: Option<BTreeMap<String, ConfigMap>> = None;
        let stream = watcher::watcher(api, watcher::Config::default().labels(PLUGIN_LABEL))
            .map(Some)
            .chain(futures::stream::once(async { None }));
        let mut stream = std::pin::pin!(stream);
        while let Some(Some(event)) = stream.next().await {
            match event {
                Ok(WatchEvent::Init) => initial = Some(BTreeMap::new()),
                Ok(WatchEvent::InitApply(cm)) => {
                    if let Some(i) = initial.as_mut() {
                        i.insert(cm.name_any(), cm);
                    }
                }
                Ok(WatchEvent::InitDone) => {
                    maps = initial.take().unwrap_or_default();
                    self.apply(&maps).await;
                }
                Ok(WatchEvent::Apply(cm)) => {
                    let name = cm.name_any();
                    if maps.get(&name).map(|c| (&c.binary_data, &c.data))
                        != Some((&cm.binary_data, &cm.data))
                    {
                        maps.insert(name, cm);
                        self.apply(&maps).await;
                    }
                }
                Ok(WatchEvent::Delete(cm)) => {
                    if maps.remove(&cm.name_any()).is_some() {
                        self.apply(&maps).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching plugin ConfigMaps failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::io::Write;

    fn cm(binary: &[(&str, Vec<u8>)]) -> ConfigMap {
        ConfigMap {
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_and_gzipped_components_decode_by_name() {
        let Decoded {
            plugins,
            refused: errors,
        } = decode(&cm(&[
            ("s3.wasm", b"\0asm-s3".to_vec()),
            ("gcs.wasm.gz", gzip(b"\0asm-gcs")),
            ("README.md", b"hi".to_vec()),
            ("bad.wasm.gz", b"not gzip".to_vec()),
        ]));
        assert_eq!(plugins["s3"], b"\0asm-s3");
        assert_eq!(plugins["gcs"], b"\0asm-gcs");
        assert_eq!(plugins.len(), 2);
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["README.md", "bad.wasm.gz"]);
    }

    fn named(name: &str, binary: &[(&str, Vec<u8>)]) -> (String, ConfigMap) {
        let mut c = cm(binary);
        c.metadata.name = Some(name.into());
        (name.to_string(), c)
    }

    #[test]
    fn a_configmap_adds_plugins_but_replaces_a_bundled_one_only_when_allowed() {
        let bundled = BTreeMap::from([
            ("s3".to_string(), b"bundled-s3".to_vec()),
            ("local".to_string(), b"bundled-local".to_vec()),
        ]);
        let maps = BTreeMap::from([
            named(
                "a",
                &[
                    ("s3.wasm", b"evil-s3".to_vec()),
                    ("mine.wasm", b"m".to_vec()),
                ],
            ),
            named(
                "b",
                &[
                    ("local.wasm", b"other-local".to_vec()),
                    ("mine.wasm", b"2".to_vec()),
                ],
            ),
        ]);
        let o = overlay(bundled.clone(), &maps, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(
            o.source["s3"], b"bundled-s3",
            "the bundled s3 keeps serving"
        );
        assert_eq!(o.source["local"], b"bundled-local");
        assert_eq!(
            o.source["mine"], b"m",
            "the first ConfigMap providing a name wins"
        );
        let reasons: Vec<(&str, &str, &str)> = o
            .refused
            .iter()
            .map(|(cm, key, reason, _)| (cm.as_str(), key.as_str(), *reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("a", "s3", "PluginOverrideRefused"),
                ("b", "local", "PluginOverrideRefused"),
                ("b", "mine", "PluginRejected")
            ]
        );
        assert!(
            o.refused[0].3.contains("--allow-plugin-override=s3"),
            "{}",
            o.refused[0].3
        );
        // The admin allows one override by name.
        let allowed = BTreeSet::from(["s3".to_string()]);
        let o = overlay(bundled, &maps, &allowed, &BTreeSet::new());
        assert_eq!(o.source["s3"], b"evil-s3");
        assert_eq!(o.origin["s3"], "a");
        assert_eq!(o.source["local"], b"bundled-local");
    }

    #[test]
    fn a_configmap_never_takes_a_catalog_name() {
        let maps = BTreeMap::from([named("a", &[("webdav.wasm", b"cm".to_vec())])]);
        let catalog = BTreeSet::from(["webdav".to_string()]);
        // Not even when the admin allows overriding that name's bundled plugin.
        let o = overlay(BTreeMap::new(), &maps, &catalog, &catalog);
        assert!(!o.source.contains_key("webdav"));
        assert_eq!(o.refused[0].2, "PluginOverrideRefused");
        assert!(
            o.refused[0].3.contains("plugin catalog"),
            "{}",
            o.refused[0].3
        );
    }

    #[test]
    fn configmaps_together_are_bounded() {
        let big = vec![0u8; (MAX_CONFIGMAP_BYTES_TOTAL / 2 + 1) as usize];
        let maps = BTreeMap::from([
            named("a", &[("one.wasm", big.clone())]),
            named(
                "b",
                &[("two.wasm", big.clone()), ("small.wasm", b"s".to_vec())],
            ),
        ]);
        let o = overlay(BTreeMap::new(), &maps, &BTreeSet::new(), &BTreeSet::new());
        assert!(o.source.contains_key("one") && o.source.contains_key("small"));
        assert!(!o.source.contains_key("two"));
        assert!(
            o.refused[0].3.contains("more than 256 MiB"),
            "{:?}",
            o.refused[0].3
        );
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let big = vec![0u8; (MAX_PLUGIN_BYTES + 10) as usize];
        let Decoded {
            plugins,
            refused: errors,
        } = decode(&cm(&[("bomb.wasm.gz", gzip(&big))]));
        assert!(plugins.is_empty());
        assert!(errors[0].1.contains("more than 64 MiB"), "{errors:?}");
    }
}
