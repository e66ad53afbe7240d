//! Plugins from a real OCI registry (docker-registry with TLS and htpasswd
//! auth) and from a real https server (nginx): pushed with `etcd-operator
//! plugin push`, pulled pinned by digest, cached on disk, and refused when
//! the digest, the credentials or the layout is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use etcd_operator::plugins::fetch::{FetchConfig, FetchError, Fetcher};
use etcd_operator::plugins::oci::OciError;
use etcd_operator::plugins::registry::{Component, Pending};
use etcd_operator::plugins::source::{PinnedSource, Sha256Digest};
use etcd_operator::plugins::{Grants, Limits, PluginError, PluginLimits, PluginRegistry};

use crate::common::oci_registry::{HttpsFiles, Registry};
use crate::common::{self, example_path, plugin_path};

fn fetcher(store: &Path, registry: &Registry, auth: Option<PathBuf>) -> Fetcher {
    Fetcher::new(&FetchConfig {
        store_dir: store.to_path_buf(),
        registry_auth: auth.or_else(|| Some(registry.auth_file())),
        extra_ca: Some(registry.ca()),
    })
    .unwrap()
}

fn pinned(source: &str, sha256: Option<&Sha256Digest>) -> PinnedSource {
    PinnedSource::new(source.parse().unwrap(), sha256.cloned()).unwrap()
}

#[test]
fn every_plugin_is_pushed_and_inspected_back_by_digest() {
    let registry = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(common::test_plugin_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
        .collect();
    for name in ["webdav", "time-window", "count-age", "revision-gate"] {
        files.push((name.to_string(), example_path(name)));
    }
    assert!(files.len() >= 12, "{files:?}");
    for (name, file) in files {
        let digest = registry.push(&file, &format!("etcd-plugins/{name}:1.0"));
        let sha = Sha256Digest::of(&std::fs::read(&file).unwrap());
        let pinned = format!(
            "{}@{digest}",
            registry.reference(&format!("etcd-plugins/{name}"))
        );
        let out = registry.plugin_cli(cache.path(), &["inspect", &pinned]);
        assert!(
            out.contains(&format!("sha256:      {}", sha.hex())),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("manifest:    {digest}")),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("name:        {name}")),
            "{name}: {out}"
        );
    }
}

#[tokio::test]
async fn a_source_pinned_by_manifest_digest_serves_from_the_cache_while_the_registry_is_down() {
    let mut registry = Registry::start();
    let file = plugin_path("local");
    let manifest = registry.push(&file, "p/local:1");
    let bytes = std::fs::read(&file).unwrap();
    let store = tempfile::tempdir().unwrap();
    let source = pinned(
        &format!("{}@{manifest}", registry.reference("p/local")),
        None,
    );

    let f = fetcher(store.path(), &registry, None);
    let (digest, got) = f.fetch(&source).await.unwrap();
    assert_eq!(got, bytes);
    assert_eq!(digest, Sha256Digest::of(&bytes));

    registry.stop();
    // A new fetcher (an operator restarted) on the same store: no network needed.
    let f = fetcher(store.path(), &registry, None);
    let (_, again) = f.fetch(&source).await.unwrap();
    assert_eq!(again, bytes);
    // What is not cached reports the registry as unreachable, to be retried.
    let other = pinned(
        &format!("{}:2", registry.reference("p/local")),
        Some(&Sha256Digest::of(b"x")),
    );
    let err = f.fetch(&other).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Oci(OciError::Unreachable { .. })),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&registry.address()), "{err}");
}

#[tokio::test]
async fn a_moved_tag_never_changes_a_pinned_digest() {
    let registry = Registry::start();
    let first = plugin_path("local");
    registry.push(&first, "p/moving:stable");
    let pin = Sha256Digest::of(&std::fs::read(&first).unwrap());
    let source = pinned(&registry.reference("p/moving:stable"), Some(&pin));

    let warm = tempfile::tempdir().unwrap();
    fetcher(warm.path(), &registry, None)
        .fetch(&source)
        .await
        .unwrap();

    // The tag now points at another component.
    registry.push(&plugin_path("retention"), "p/moving:stable");
    // Cached: the pinned bytes keep serving.
    let (digest, _) = fetcher(warm.path(), &registry, None)
        .fetch(&source)
        .await
        .unwrap();
    assert_eq!(digest, pin);
    // Not cached: the moved tag is refused, naming the source and both digests.
    let cold = tempfile::tempdir().unwrap();
    let err = fetcher(cold.path(), &registry, None)
        .fetch(&source)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p/moving:stable")
            && err.contains(&pin.to_string())
            && err.contains("the tag moved"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(cold.path().join("sha256"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn a_wrong_registry_password_is_a_clear_permanent_error() {
    let registry = Registry::start();
    let manifest = registry.push(&plugin_path("local"), "p/local:1");
    let store = tempfile::tempdir().unwrap();
    let f = fetcher(
        store.path(),
        &registry,
        Some(registry.auth_file_with("plugins", "wrong")),
    );
    let err = f
        .fetch(&pinned(
            &format!("{}@{manifest}", registry.reference("p/local")),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Oci(OciError::Unauthorized { .. })),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains(&registry.address()) && text.contains("refused the credentials"),
        "{text}"
    );
}

#[tokio::test]
async fn an_https_source_is_checked_against_its_sha256() {
    let files = HttpsFiles::start();
    let bytes = std::fs::read(plugin_path("retention")).unwrap();
    let url = files.put("retention.wasm", &bytes);
    let store = tempfile::tempdir().unwrap();
    let f = Fetcher::new(&FetchConfig {
        store_dir: store.path().to_path_buf(),
        registry_auth: None,
        extra_ca: Some(files.ca()),
    })
    .unwrap();
    let (_, got) = f
        .fetch(&pinned(&url, Some(&Sha256Digest::of(&bytes))))
        .await
        .unwrap();
    assert_eq!(got, bytes);
    let err = f
        .fetch(&pinned(&url, Some(&Sha256Digest::of(b"other"))))
        .await
        .unwrap_err()
        .to_string();
    // The cached copy has another digest: the wrong pin goes to the network
    // and the download is refused.
    assert!(
        err.contains(&url) && err.contains("not the pinned"),
        "{err}"
    );
    // A server whose certificate is not trusted is refused.
    let untrusting = tempfile::tempdir().unwrap();
    let f = Fetcher::new(&FetchConfig {
        store_dir: untrusting.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let err = f
        .fetch(&pinned(&url, Some(&Sha256Digest::of(&bytes))))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_catalog_plugin_runs_under_its_own_limits_and_reports_why_it_is_not_loaded() {
    // The engine's limit is 64 MiB; the catalog gives this plugin 16.
    let engine = common::engine_with(Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    });
    let registry = PluginRegistry::new(engine);
    registry.declare_catalog(
        ["small".to_string(), "later".to_string()].into(),
        Default::default(),
    );
    let report = registry.set_catalog(
        BTreeMap::from([(
            "small".to_string(),
            Component {
                bytes: common::plugin_bytes("faults"),
                limits: PluginLimits {
                    memory_mib: Some(16),
                    call_timeout: None,
                },
            },
        )]),
        BTreeMap::from([(
            "later".to_string(),
            Pending {
                message: "cannot reach registry r.example.com".to_string(),
                retryable: true,
            },
        )]),
    );
    assert_eq!(report.loaded, vec!["small".to_string()]);
    let plugin = registry.storage("small").unwrap();
    assert_eq!(plugin.limits().memory_bytes, 16 << 20);
    let err = plugin
        .open(&common::config(&[("fault", "memory")]), &Grants::default())
        .await
        .err()
        .expect("the memory bomb fails");
    match &err {
        PluginError::OutOfMemory { limit_mib, .. } => assert_eq!(*limit_mib, 16),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }

    let err = registry.storage("later").unwrap_err();
    assert!(matches!(err, PluginError::NotReady { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("r.example.com"), "{err}");
    // Declared, neither pending nor loaded (being compiled): on its way too.
    registry.declare_catalog(
        [
            "small".to_string(),
            "later".to_string(),
            "compiling".to_string(),
        ]
        .into(),
        Default::default(),
    );
    let err = registry.storage("compiling").unwrap_err();
    assert!(
        matches!(err, PluginError::NotReady { .. }) && err.is_retryable(),
        "{err:?}"
    );

    // The same bytes with other limits are loaded again.
    let report = registry.set_catalog(
        BTreeMap::from([(
            "small".to_string(),
            Component {
                bytes: common::plugin_bytes("faults"),
                limits: PluginLimits::default(),
            },
        )]),
        BTreeMap::new(),
    );
    assert_eq!(report.loaded, vec!["small".to_string()]);
    assert_eq!(
        registry.storage("small").unwrap().limits().memory_bytes,
        64 << 20
    );
}
