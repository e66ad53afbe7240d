//! `etcd-operator local --dir DIR`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use etcd_operator::controller::Tuning;
use etcd_operator::local::{self, Options};
use etcd_operator::plugins::Limits;

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Directory of EtcdCluster/EtcdBackup/EtcdRestore YAML (desired state).
    /// Status goes to DIR/.status, member data to DIR/.data.
    #[arg(long)]
    pub dir: PathBuf,
    /// Leave members running at exit; the next run re-adopts them.
    #[arg(long)]
    pub keep_members: bool,
    /// Directory with etcd binaries (`etcd` or `<version>/etcd`), repeatable; PATH is searched last.
    #[arg(
        long = "etcd-dir",
        env = "ETCD_OPERATOR_ETCD_DIR",
        value_delimiter = ':'
    )]
    pub etcd_dirs: Vec<PathBuf>,
    /// Replace a member that stays unhealthy this long (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub member_failure_grace: Duration,
    /// Recover from the surviving member with the most data after a majority
    /// has been unhealthy this long.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub quorum_loss_timeout: Duration,
    /// How often DIR is re-read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Directory of storage and backup-policy plugins (`<name>.wasm`),
    /// rescanned while running. Without it backups and restores cannot run.
    #[arg(long, env = "ETCD_OPERATOR_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// The one directory the `local` storage plugin may use [default: DIR/.backups].
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// A private network (CIDR or address) storage plugins may reach, e.g.
    /// 127.0.0.1/32 for a test server; repeatable. Public endpoints need none.
    #[arg(long = "allow-network")]
    pub allow_networks: Vec<String>,
    /// Memory limit of one plugin instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub plugin_memory_mib: usize,
    /// Time limit of one plugin call (e.g. one chunk upload).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub plugin_call_timeout: Duration,
}

fn default_etcd_dirs() -> Vec<PathBuf> {
    let tools = std::env::var_os("ETCD_OPERATOR_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/etcd-operator/tools"))
        });
    tools.map(|t| vec![t.join("etcd")]).unwrap_or_default()
}

pub async fn run(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let mut etcd_dirs = args.etcd_dirs;
    etcd_dirs.extend(default_etcd_dirs());
    let opts = Options {
        dir: args.dir,
        keep_members: args.keep_members,
        etcd_dirs,
        tuning: Tuning {
            member_failure_grace: args.member_failure_grace,
            quorum_loss_timeout: args.quorum_loss_timeout,
        },
        poll_interval: args.poll_interval,
        plugin_dir: args.plugin_dir,
        backup_dir: args.backup_dir,
        allow_networks: args.allow_networks,
        plugin_limits: Limits {
            memory_bytes: args.plugin_memory_mib << 20,
            call_timeout: args.plugin_call_timeout,
            ..Limits::default()
        },
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
    local::run(opts, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
