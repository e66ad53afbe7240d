//! The plugin registry: identification, errors, reloads, compile cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_operator::plugins::{Limits, PluginEngine, PluginError, PluginRegistry, World};

use crate::common;

fn future_plugin() -> Vec<u8> {
    wat::parse_str(
        r#"(component (instance $i) (export "etcd-operator:plugin/storage@0.2.0" (instance $i)))"#,
    )
    .unwrap()
}

#[test]
fn loads_good_plugins_and_explains_bad_ones() {
    let registry = PluginRegistry::new(common::engine());
    let mut source = BTreeMap::new();
    source.insert("local".to_string(), common::plugin_bytes("local"));
    source.insert("retention".to_string(), common::plugin_bytes("retention"));
    source.insert("core".to_string(), wat::parse_str("(module)").unwrap());
    source.insert("future".to_string(), future_plugin());
    source.insert("empty".to_string(), wat::parse_str("(component)").unwrap());
    let report = registry.apply(source);
    assert_eq!(report.loaded, ["local", "retention"]);
    let failed: BTreeMap<_, _> = report.failed.into_iter().collect();
    assert!(
        failed["core"].contains("core WebAssembly module, not a component"),
        "{}",
        failed["core"]
    );
    assert!(
        failed["future"].contains("etcd-operator:plugin@0.2.0"),
        "{}",
        failed["future"]
    );
    assert!(
        failed["empty"].contains("no known plugin world"),
        "{}",
        failed["empty"]
    );

    let infos = registry.list();
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.name.as_str(), i.world))
            .collect::<Vec<_>>(),
        [
            ("local", World::StorageBackend),
            ("retention", World::BackupPolicy)
        ]
    );
    assert!(registry.storage("local").is_ok());
    assert!(registry.policy("retention").is_ok());

    // Asking for the wrong world or a missing name lists what is installed.
    let err = registry.policy("local").unwrap_err().to_string();
    assert!(
        err.contains("no backup-policy plugin named `local`")
            && err.contains("installed: retention"),
        "{err}"
    );
    let err = registry.storage("s3").unwrap_err().to_string();
    assert!(err.contains("installed: local"), "{err}");
    // A plugin that failed to load says why when asked for.
    let err = registry.storage("core").unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module"), "{err}");
}

#[test]
fn reloads_changed_plugins_and_unloads_removed_ones() {
    let registry = PluginRegistry::new(common::engine());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.wasm"), common::plugin_bytes("local")).unwrap();
    std::fs::write(dir.path().join("README.txt"), b"not a plugin").unwrap();
    let report = registry.load_dir(dir.path()).unwrap();
    assert_eq!(report.loaded, ["local"]);
    let first = registry.list()[0].sha256.clone();

    // Unchanged bytes are not reloaded.
    let report = registry.load_dir(dir.path()).unwrap();
    assert_eq!(report.unchanged, ["local"]);
    assert!(report.loaded.is_empty());

    // A broken update keeps the previous good version serving.
    std::fs::write(dir.path().join("local.wasm"), b"garbage").unwrap();
    let report = registry.load_dir(dir.path()).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(registry.list()[0].sha256, first);
    assert!(registry.storage("local").is_ok());

    // A good update replaces it.
    std::fs::write(
        dir.path().join("local.wasm"),
        common::plugin_bytes("faults"),
    )
    .unwrap();
    let report = registry.load_dir(dir.path()).unwrap();
    assert_eq!(report.loaded, ["local"]);
    assert_ne!(registry.list()[0].sha256, first);

    std::fs::remove_file(dir.path().join("local.wasm")).unwrap();
    let report = registry.load_dir(dir.path()).unwrap();
    assert_eq!(report.removed, ["local"]);
    assert!(matches!(
        registry.storage("local"),
        Err(PluginError::Missing { .. })
    ));
}

/// Bundled plugins compile after the operator starts: until then a name the
/// plugin directory holds is on its way (retryable), not missing.
#[test]
fn an_announced_plugin_is_loading_until_applied_then_served() {
    let registry = PluginRegistry::new(common::engine());
    registry.expect_base(["local".to_string(), "retention".to_string()].into());

    let err = registry.storage("local").unwrap_err();
    assert!(matches!(err, PluginError::Loading { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("still being compiled"), "{err}");
    // A name the directory does not hold is missing at once.
    assert!(matches!(
        registry.storage("s3"),
        Err(PluginError::Missing { .. })
    ));

    let report = registry.apply(BTreeMap::from([
        ("local".to_string(), common::plugin_bytes("local")),
        ("retention".to_string(), common::plugin_bytes("retention")),
    ]));
    assert_eq!(report.loaded, ["local", "retention"]);
    assert!(registry.storage("local").is_ok());
    // Loaded as the other world: a wrong name, not a compile under way.
    assert!(matches!(
        registry.storage("retention"),
        Err(PluginError::Missing { .. })
    ));

    // A directory that cannot be read leaves nothing announced.
    registry.expect_base(["gone".to_string()].into());
    assert!(
        registry
            .load_dir(std::path::Path::new("/nonexistent/plugins"))
            .is_err()
    );
    assert!(matches!(
        registry.storage("gone"),
        Err(PluginError::Missing { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_is_picked_up_without_restart() {
    let registry = Arc::new(PluginRegistry::new(common::engine()));
    let dir = tempfile::tempdir().unwrap();
    let watcher = registry.watch_dir(dir.path().to_path_buf(), Duration::from_millis(100));
    std::fs::write(
        dir.path().join("retention.wasm"),
        common::plugin_bytes("retention"),
    )
    .unwrap();
    common::wait_for("the new plugin to load", Duration::from_secs(60), || {
        registry.policy("retention").ok()
    })
    .await;
    std::fs::remove_file(dir.path().join("retention.wasm")).unwrap();
    common::wait_for("the plugin to unload", Duration::from_secs(60), || {
        registry.policy("retention").err()
    })
    .await;
    watcher.abort();
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = common::plugin_bytes("retention");
    let first = PluginEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    first.compile(&bytes, "retention").unwrap();
    assert_eq!(first.cache().stats.misses.load(Ordering::Relaxed), 1);
    let artifacts: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(artifacts[0].to_string_lossy().ends_with(".cwasm"));

    // A new engine (a restarted operator) loads the artifact instead of compiling.
    let second = PluginEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    second.compile(&bytes, "retention").unwrap();
    assert_eq!(second.cache().stats.hits.load(Ordering::Relaxed), 1);
    assert_eq!(second.cache().stats.misses.load(Ordering::Relaxed), 0);

    // A corrupt artifact is replaced, not fatal.
    std::fs::write(&artifacts[0], b"corrupt").unwrap();
    let third = PluginEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    third.compile(&bytes, "retention").unwrap();
    assert_eq!(third.cache().stats.misses.load(Ordering::Relaxed), 1);
    let fourth = PluginEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    fourth.compile(&bytes, "retention").unwrap();
    assert_eq!(fourth.cache().stats.hits.load(Ordering::Relaxed), 1);
}
