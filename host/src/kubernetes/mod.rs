//! `etcd-operator run`: the operator on Kubernetes. kube-rs controllers
//! watch EtcdCluster, EtcdBackup and EtcdRestore resources; the reconcile
//! core drives member Pods through [`runtime::KubeRuntime`]; storage plugins
//! come from the image and from labelled ConfigMaps ([`plugins`]).
//!
//! - [`members`]: the Pods, PVCs, Services and budget of a cluster (pure);
//! - [`runtime`]: the member runtime on the Kubernetes API;
//! - [`clusters`], [`backups`], [`restores`]: the controllers;
//! - [`snapshots`]: verified snapshots served to restoring Pods;
//! - [`status`]: status written with server-side apply (a cleared field goes);
//! - [`scope`]: namespaced vs `--cluster-wide`, as CoreOS;
//! - [`plugins`]: plugin ConfigMaps, hot-reloaded;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - leader election on a Lease (kube-lease-manager) so two replicas are safe.

pub mod backups;
pub mod clusters;
pub mod events;
pub mod http;
pub mod members;
pub mod plugins;
pub mod recovery;
pub mod restores;
pub mod runtime;
pub mod scope;
pub mod secrets;
pub mod snapshots;
pub mod status;
pub mod tenancy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::backup::Storage;
use crate::backup::location::HostGrants;
use crate::controller::{Reconciler, Tuning};
use crate::plugins::catalog::CatalogError;
use crate::plugins::registry::dir_names;
use crate::plugins::{Limits, PluginEngine, PluginRegistry, PluginSources, cache};
use crate::runtime::binaries::EtcdBinaries;
use scope::Scope;

/// The Kubernetes layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error(
        "cannot set up the plugin engine: {0}; check --plugin-memory-mib and --plugin-call-timeout"
    )]
    Plugins(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "cannot serve metrics and health on {addr}: {message}; choose another --metrics-address"
    )]
    Http { addr: SocketAddr, message: String },
    /// A reconcile panicked (contained; retried after the error policy's delay).
    #[error(transparent)]
    Panicked(#[from] crate::supervise::Panicked),
    #[error("leader election on Lease {lease}: {message}")]
    Leader { lease: String, message: String },
    #[error("work directory {path}: {message}; choose another --work-dir")]
    WorkDir { path: String, message: String },
    #[error("lost the leader Lease {0}: stopping so that only one replica acts")]
    LostLeadership(String),
}

/// How `run` runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub scope: Scope,
    /// The operator's own namespace: its Lease and plugin ConfigMaps live here.
    pub namespace: String,
    /// Bundled plugins (`*.wasm`), `/usr/lib/etcd-operator/plugins` in the image.
    pub plugin_dir: Option<PathBuf>,
    /// The plugin catalog, its fetching, the compile cache, and the bundled
    /// plugins a catalog entry or a plugin ConfigMap may replace.
    pub plugin_sources: PluginSources,
    /// The one directory the `local` storage plugin may use, if any.
    pub backup_dir: Option<PathBuf>,
    pub allow_networks: Vec<String>,
    /// Private networks granted to the plugins of one namespace's resources.
    pub namespace_networks: BTreeMap<String, Vec<String>>,
    /// In cluster-wide mode, let an EtcdBackup's `etcdEndpoints` name hosts
    /// outside its namespace's EtcdClusters.
    pub allow_foreign_etcd_endpoints: bool,
    pub plugin_limits: Limits,
    /// What the operator accepts from storage and policy plugins.
    pub storage_bounds: crate::backup::Bounds,
    pub metrics_addr: SocketAddr,
    /// How member Pods reach this operator's HTTP server (for restores),
    /// e.g. `http://10.0.3.7:8080`. Absent: restores are refused.
    pub advertise_url: Option<String>,
    /// Scratch space: downloaded backups and snapshots offered to Pods.
    pub work_dir: PathBuf,
    /// Directories searched for etcdutl/etcdctl (then PATH), to verify backups.
    pub etcd_dirs: Vec<PathBuf>,
    /// Take a Lease before acting (off only for a single, unreplicated operator).
    pub leader_elect: bool,
    pub lease_name: String,
    /// This replica's identity on the Lease and on Events (the Pod name).
    pub identity: String,
    pub tuning: Tuning,
}

/// A reconcile of `object`, supervised: a panic in it becomes a Warning
/// Event `InternalError` on that resource and [`KubeError::Panicked`]
/// (retried by the error policy), and the controller keeps serving the
/// others. Panics inside the reconcile core also get a condition from the
/// core; this catches the Kubernetes glue around it.
async fn supervised<K>(
    object: &K,
    recorder: &kube::runtime::events::Recorder,
    step: impl std::future::Future<Output = Result<kube::runtime::controller::Action, KubeError>>,
) -> Result<kube::runtime::controller::Action, KubeError>
where
    K: kube::Resource<DynamicType = ()>,
{
    match crate::supervise::contained(step).await {
        Ok(result) => result,
        Err(panicked) => {
            let event = crate::controller::Event::warning("InternalError", panicked.to_string());
            events::publish(recorder, &object.object_ref(&()), "Reconcile", &event).await;
            Err(KubeError::Panicked(panicked))
        }
    }
}

/// Wait for the Lease; then a channel that turns false if it is lost.
async fn lead(
    client: &kube::Client,
    opts: &Options,
) -> Result<tokio::sync::watch::Receiver<bool>, KubeError> {
    let err = |e: kube_lease_manager::LeaseManagerError| KubeError::Leader {
        lease: format!("{}/{}", opts.namespace, opts.lease_name),
        message: e.to_string(),
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
        .with_namespace(&opts.namespace)
        .with_identity(&opts.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(err)?;
    let (mut channel, _task) = manager.watch().await;
    tracing::info!(lease = %opts.lease_name, identity = %opts.identity, "waiting for the leader Lease");
    channel
        .wait_for(|leader| *leader)
        .await
        .map_err(|_| KubeError::Leader {
            lease: opts.lease_name.clone(),
            message: "the lease manager stopped".into(),
        })?;
    tracing::info!(lease = %opts.lease_name, identity = %opts.identity, "leading");
    Ok(channel)
}

/// Run until `shutdown` resolves (Ok) or leadership is lost (Err).
pub async fn run(
    client: kube::Client,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KubeError> {
    let health = Arc::new(http::Health::default());
    let snapshots = match &opts.advertise_url {
        Some(url) => Some(Arc::new(
            snapshots::SnapshotServer::new(
                opts.work_dir.join("offered"),
                url.clone(),
                Duration::from_secs(30 * 60),
            )
            .map_err(|e| KubeError::WorkDir {
                path: opts.work_dir.display().to_string(),
                message: e.to_string(),
            })?,
        )),
        None => {
            tracing::warn!(
                "no --advertise-url (or MY_POD_IP): EtcdRestore and quorum recovery from backups cannot hand snapshots to Pods"
            );
            None
        }
    };
    let (addr, _server) = http::serve(opts.metrics_addr, health.clone(), snapshots.clone())
        .await
        .map_err(|e| KubeError::Http {
            addr: opts.metrics_addr,
            message: e.to_string(),
        })?;
    tracing::info!(%addr, scope = ?opts.scope, namespace = %opts.namespace, "etcd-operator starting on Kubernetes");
    let version = client.apiserver_version().await?;
    tracing::info!(kubernetes = %version.git_version, "connected to the API server");

    let engine = PluginEngine::new(
        opts.plugin_limits.clone(),
        opts.plugin_sources.cache_dir.clone(),
    )
    .map_err(|e| KubeError::Plugins(e.to_string()))?;
    if let Some(dir) = &opts.plugin_dir {
        // The image's bundled plugins, compiled when the image was built.
        engine.cache().add_precompiled(cache::precompiled_dir(dir));
    }
    let registry = Arc::new(PluginRegistry::new(engine));
    let bundled = opts
        .plugin_dir
        .as_deref()
        .map(dir_names)
        .unwrap_or_default();
    let _catalog = opts
        .plugin_sources
        .start_catalog(&registry, &bundled)
        .await?;
    let recorder = events::recorder(&client, &opts.identity);
    let plugin_source = plugins::ConfigMapPlugins {
        registry: registry.clone(),
        bundled: opts.plugin_dir.clone(),
        allow_override: opts.plugin_sources.allow_override.clone(),
        recorder: recorder.clone(),
    };
    // Loaded in the background: a resource naming a bundled plugin meanwhile
    // is told it is being compiled, and retries.
    registry.expect_base(bundled.clone());
    let plugin_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &opts.namespace);
    let _plugins = tokio::spawn(plugin_source.run(plugin_maps));
    health.ready.store(true, Ordering::Relaxed);

    tokio::pin!(shutdown);
    let mut leadership = if opts.leader_elect {
        tokio::select! {
            l = lead(&client, &opts) => Some(l?),
            _ = &mut shutdown => return Ok(()),
        }
    } else {
        None
    };
    health.leader.store(true, Ordering::Relaxed);

    let runtime = Arc::new(runtime::KubeRuntime::new(client.clone(), snapshots));
    let storage = Arc::new(Storage {
        registry,
        secrets: Arc::new(secrets::KubeSecrets(client.clone())),
        host: HostGrants {
            dirs: opts
                .backup_dir
                .iter()
                .map(|d| ("local".to_string(), d.clone()))
                .collect::<BTreeMap<_, _>>(),
            dir_per_namespace: matches!(opts.scope, Scope::ClusterWide),
            private_networks: opts.allow_networks.clone(),
            namespace_networks: opts.namespace_networks.clone(),
        },
        bounds: opts.storage_bounds.clone(),
    });
    let binaries = Arc::new(EtcdBinaries::discover(&opts.etcd_dirs));
    let staging = opts.work_dir.join("staging");
    crate::backup::restore::clear_staging(&staging);
    let mut reconciler =
        Reconciler::new(runtime.clone(), opts.tuning).with_recovery(recovery::source(
            client.clone(),
            storage.clone(),
            binaries.clone(),
            staging.clone(),
        ));
    if let Some(l) = &leadership {
        let leading = l.clone();
        reconciler = reconciler.with_guard(Arc::new(move || *leading.borrow()));
    }
    let reconciler = Arc::new(reconciler);
    let cluster_ctx = Arc::new(clusters::Context {
        client: client.clone(),
        runtime: runtime.clone(),
        reconciler: reconciler.clone(),
        recorder: recorder.clone(),
        scope: opts.scope.clone(),
    });
    let restore_ctx = Arc::new(restores::Context {
        client: client.clone(),
        runtime,
        reconciler,
        storage: storage.clone(),
        recorder: recorder.clone(),
        scope: opts.scope.clone(),
        staging,
        binaries,
        running: Default::default(),
    });
    let backup_ctx = Arc::new(backups::Context::new(
        client.clone(),
        storage,
        recorder,
        opts.scope.clone(),
        opts.allow_foreign_etcd_endpoints,
    ));
    let controllers = futures::future::join3(
        clusters::run(cluster_ctx),
        backups::run_backups(backup_ctx),
        restores::run_restores(restore_ctx),
    );
    let lost = async {
        match leadership.as_mut() {
            Some(l) => {
                let _ = l.wait_for(|leader| !*leader).await;
            }
            None => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = controllers => Ok(()),
        _ = &mut shutdown => {
            tracing::info!("shutting down; members keep running");
            Ok(())
        }
        _ = lost => Err(KubeError::LostLeadership(opts.lease_name.clone())),
    }
}
