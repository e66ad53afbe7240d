//! Shared test harness: paths, plugin loading, small servers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_operator::plugins::{Limits, LoadedPlugin, PluginEngine, registry};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built plugin from `plugins/dist/`.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = repo().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run plugins/build.sh first",
        path.display()
    );
    path
}

pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin_path(name)).unwrap()
}

/// An engine with short call deadlines (so fault tests finish quickly) and a
/// compile cache shared across test runs.
pub fn engine() -> PluginEngine {
    engine_with(Limits {
        call_timeout: Duration::from_secs(3),
        ..Limits::default()
    })
}

pub fn engine_with(limits: Limits) -> PluginEngine {
    let cache = std::env::temp_dir().join("etcd-operator-test-wasm-cache");
    PluginEngine::new(limits, Some(cache)).unwrap()
}

pub fn load(engine: &PluginEngine, name: &str) -> LoadedPlugin {
    registry::load(engine, name, &plugin_bytes(name)).unwrap()
}

/// Poll `check` until it returns Some or `deadline` passes.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
