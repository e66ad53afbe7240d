//! Plugin host benchmarks (results in docs/benchmarks.md):
//! - cold load: compile from scratch vs load from the on-disk compile cache;
//! - per-call overhead: a policy hook in a fresh sandbox, and one call on an
//!   open storage session;
//! - upload throughput through the `local` plugin vs writing the same bytes
//!   to disk directly;
//! - the same policy hook in Rust, JavaScript, Python and Go: compile, cached
//!   load, instantiate, instantiate + call.
//!
//! Requires `plugins/build.sh` and `plugins/examples/build.sh` first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etcd_operator::plugins::{
    BackupContext, EgressPolicy, Grants, Limits, LoadedPlugin, PluginEngine, registry,
};
use tokio::io::AsyncWriteExt;

fn plugin(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|_| panic!("{} missing: run plugins/build.sh", path.display()))
}

const UPLOAD_BYTES: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

fn load(c: &mut Criterion) {
    let bytes = plugin("local");
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    let no_cache = PluginEngine::new(Limits::default(), None).unwrap();
    g.bench_function("compile (no cache)", |b| {
        b.iter(|| no_cache.compile(&bytes, "local").unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let cached = PluginEngine::new(Limits::default(), Some(dir.path().to_path_buf())).unwrap();
    cached.compile(&bytes, "local").unwrap();
    g.bench_function("load from compile cache", |b| {
        b.iter(|| cached.compile(&bytes, "local").unwrap())
    });
    g.finish();
}

fn calls(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = PluginEngine::new(Limits::default(), None).unwrap();
    let LoadedPlugin::Policy(policy) =
        registry::load(&engine, "retention", &plugin("retention")).unwrap()
    else {
        panic!("retention is a policy")
    };
    let LoadedPlugin::Storage(local) = registry::load(&engine, "local", &plugin("local")).unwrap()
    else {
        panic!("local is storage")
    };
    let ctx = BackupContext {
        namespace: "ns".into(),
        name: "b".into(),
        path_prefix: "p".into(),
        revision: 1,
        etcd_version: "3.5.1".into(),
        last_backup_revision: None,
        last_backup_ms: None,
        now_ms: 0,
    };
    let mut g = c.benchmark_group("call");
    g.bench_function("policy hook, fresh sandbox (instantiate + call)", |b| {
        b.to_async(&rt)
            .iter(|| async { policy.pre_backup(&[], &ctx).await.unwrap() })
    });
    let dir = tempfile::tempdir().unwrap();
    let grants = Grants {
        egress: Arc::new(EgressPolicy::deny_all()),
        dir: Some(dir.path().to_path_buf()),
    };
    let mut session = rt.block_on(local.open(&[], &grants)).unwrap();
    g.bench_function(
        "storage call on an open session (list-objects, empty)",
        |b| b.iter(|| rt.block_on(session.list("nothing/")).unwrap()),
    );
    g.finish();
}

fn upload(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = PluginEngine::new(Limits::default(), None).unwrap();
    let LoadedPlugin::Storage(local) = registry::load(&engine, "local", &plugin("local")).unwrap()
    else {
        panic!("local is storage")
    };
    let data: Vec<u8> = (0..UPLOAD_BYTES)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let grants = Grants {
        egress: Arc::new(EgressPolicy::deny_all()),
        dir: Some(dir.path().to_path_buf()),
    };
    let mut g = c.benchmark_group("upload 64 MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(UPLOAD_BYTES as u64));
    g.bench_function("direct to disk (tokio::fs, 1 MiB writes, fsync)", |b| {
        b.to_async(&rt).iter(|| async {
            let path = dir.path().join("direct.db");
            let mut f = tokio::fs::File::create(&path).await.unwrap();
            for chunk in data.chunks(CHUNK) {
                f.write_all(chunk).await.unwrap();
            }
            f.sync_all().await.unwrap();
        })
    });
    g.bench_function(
        "direct to disk + sha256 (what the operator also computes)",
        |b| {
            b.to_async(&rt).iter(|| async {
                use sha2::Digest;
                let path = dir.path().join("direct-hashed.db");
                let mut f = tokio::fs::File::create(&path).await.unwrap();
                let mut h = sha2::Sha256::new();
                for chunk in data.chunks(CHUNK) {
                    h.update(chunk);
                    f.write_all(chunk).await.unwrap();
                }
                f.sync_all().await.unwrap();
                h.finalize()
            })
        },
    );
    g.bench_function(
        "through the local plugin (1 MiB chunks, sha256, fsync)",
        |b| {
            b.to_async(&rt).iter(|| async {
                let mut s = local.open(&[], &grants).await.unwrap();
                s.upload_from("plugin.db", &data[..]).await.unwrap();
            })
        },
    );
    g.finish();
}

/// The same hook (`pre-backup` of a backup-policy plugin) in each language:
/// Rust `retention`, JavaScript `revision-gate`, Python `time-window`, Go
/// `count-age` (plugins/examples/build.sh builds the last three).
fn languages(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins: Vec<(&str, &str, Vec<u8>)> = [
        ("Rust", "retention", "plugins/dist/retention.wasm"),
        (
            "JavaScript",
            "revision-gate",
            "plugins/examples/dist/revision-gate.wasm",
        ),
        (
            "Python",
            "time-window",
            "plugins/examples/dist/time-window.wasm",
        ),
        ("Go", "count-age", "plugins/examples/dist/count-age.wasm"),
    ]
    .into_iter()
    .map(|(lang, name, path)| {
        let bytes = std::fs::read(root.join(path)).unwrap_or_else(|_| {
            panic!("{path} missing: run plugins/build.sh and plugins/examples/build.sh")
        });
        (lang, name, bytes)
    })
    .collect();
    let ctx = BackupContext {
        namespace: "ns".into(),
        name: "b".into(),
        path_prefix: "p".into(),
        revision: 2,
        etcd_version: "3.5.1".into(),
        last_backup_revision: Some(1),
        last_backup_ms: Some(1),
        now_ms: 1_700_000_000_000,
    };

    let mut g = c.benchmark_group("language: compile (no cache)");
    g.sample_size(10);
    let no_cache = PluginEngine::new(Limits::default(), None).unwrap();
    for (lang, name, bytes) in &plugins {
        g.bench_function(*lang, |b| b.iter(|| no_cache.compile(bytes, name).unwrap()));
    }
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let cached = PluginEngine::new(Limits::default(), Some(dir.path().to_path_buf())).unwrap();
    let mut g = c.benchmark_group("language: load from compile cache");
    g.sample_size(20);
    for (lang, name, bytes) in &plugins {
        cached.compile(bytes, name).unwrap();
        g.bench_function(*lang, |b| b.iter(|| cached.compile(bytes, name).unwrap()));
    }
    g.finish();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let loaded: Vec<_> = plugins
        .iter()
        .map(
            |(lang, name, bytes)| match registry::load(&cached, name, bytes).unwrap() {
                LoadedPlugin::Policy(p) => (*lang, p),
                LoadedPlugin::Storage(_) => panic!("{name} is a policy plugin"),
            },
        )
        .collect();
    let mut g = c.benchmark_group("language: instantiate");
    for (lang, p) in &loaded {
        g.bench_function(*lang, |b| {
            b.to_async(&rt)
                .iter(|| async { p.instantiate_only().await.unwrap() })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("language: instantiate + pre-backup");
    for (lang, p) in &loaded {
        g.bench_function(*lang, |b| {
            b.to_async(&rt)
                .iter(|| async { p.pre_backup(&[], &ctx).await.unwrap() })
        });
    }
    g.finish();
}

criterion_group!(benches, load, calls, upload);
criterion_group!(by_language, languages);
criterion_main!(benches, by_language);
