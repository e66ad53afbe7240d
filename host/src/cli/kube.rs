//! `etcd-operator run`: the operator on Kubernetes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::{PluginLimitArgs, PluginSourceArgs, TuningArgs};
use anyhow::Context;
use clap::{ArgAction, Args};
use etcd_operator::kubernetes::scope::Scope;
use etcd_operator::kubernetes::{self, Options};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The namespace to manage, and where the Lease and plugin ConfigMaps
    /// live [default: the Pod's own namespace, else the kubeconfig's].
    #[arg(long, env = "MY_POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Manage resources of every namespace annotated
    /// `etcd.database.coreos.com/scope: clusterwide` (and only those).
    #[arg(long)]
    pub cluster_wide: bool,
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// How member Pods reach this operator's HTTP server, to fetch verified
    /// snapshots when restoring [default: http://$MY_POD_IP:<metrics port>].
    #[arg(long, env = "ETCD_OPERATOR_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Scratch space for downloaded backups and snapshots offered to Pods.
    #[arg(long, default_value = "/tmp/etcd-operator")]
    pub work_dir: PathBuf,
    /// Directory with etcdutl/etcdctl (or `<version>/etcdutl`), to verify
    /// backups before a restore; repeatable; PATH is searched last.
    #[arg(
        long = "etcd-dir",
        env = "ETCD_OPERATOR_ETCD_DIR",
        value_delimiter = ':'
    )]
    pub etcd_dirs: Vec<PathBuf>,
    /// Take the leader Lease before acting, so replicas never act together.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader Lease in the operator's namespace.
    #[arg(long, default_value = "etcd-operator")]
    pub lease_name: String,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Bundled storage and backup-policy plugins (`<name>.wasm`); labelled
    /// ConfigMaps add to them.
    #[arg(long, env = "ETCD_OPERATOR_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// The one directory the `local` storage plugin may use (e.g. a mounted
    /// PVC). In cluster-wide mode each namespace gets its own subdirectory.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// A private network the plugins of one namespace's resources may reach,
    /// as NAMESPACE=CIDR (repeatable); --allow-network grants to every namespace.
    #[arg(long = "allow-network-for", value_name = "NAMESPACE=CIDR", value_parser = parse_namespace_network)]
    pub namespace_networks: Vec<(String, String)>,
    /// In cluster-wide mode, let an EtcdBackup's spec.etcdEndpoints name
    /// endpoints that are not members of an EtcdCluster in its own namespace.
    #[arg(long)]
    pub allow_foreign_etcd_endpoints: bool,
    #[command(flatten)]
    pub plugin_limits: PluginLimitArgs,
    #[command(flatten)]
    pub plugin_sources: PluginSourceArgs,
}

fn parse_namespace_network(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, c)| (n.trim().to_string(), c.trim().to_string()))
        .filter(|(n, c)| !n.is_empty() && !c.is_empty())
        .ok_or_else(|| format!("`{s}` is not NAMESPACE=CIDR (e.g. tenant-a=10.1.0.0/16)"))
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: run in a Pod, set KUBECONFIG or pass --kubeconfig",
        )?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn identity() -> String {
    std::env::var("MY_POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "etcd-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let opts = Options {
        scope: if args.cluster_wide {
            Scope::ClusterWide
        } else {
            Scope::Namespace(namespace.clone())
        },
        namespace,
        plugin_dir: args.plugin_dir,
        plugin_sources: args.plugin_sources.sources(),
        backup_dir: args.backup_dir,
        allow_networks: args.plugin_limits.allow_networks.clone(),
        namespace_networks: args.namespace_networks.iter().fold(
            std::collections::BTreeMap::new(),
            |mut m: std::collections::BTreeMap<String, Vec<String>>, (n, c)| {
                m.entry(n.clone()).or_default().push(c.clone());
                m
            },
        ),
        allow_foreign_etcd_endpoints: args.allow_foreign_etcd_endpoints,
        plugin_limits: args.plugin_limits.limits(),
        storage_bounds: args.plugin_limits.bounds(),
        metrics_addr: args.metrics_address,
        advertise_url: args.advertise_url.or_else(|| {
            std::env::var("MY_POD_IP")
                .ok()
                .map(|ip| format!("http://{ip}:{}", args.metrics_address.port()))
        }),
        work_dir: args.work_dir,
        etcd_dirs: args.etcd_dirs,
        leader_elect: args.leader_elect,
        lease_name: args.lease_name,
        identity: identity(),
        tuning: args.tuning.tuning(),
    };
    opts.plugin_limits.validate()?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    kubernetes::run(client, opts, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
