//! `etcd-operator local --dir DIR`, and `local get` to read what it made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::shared::{PluginLimitArgs, PluginSourceArgs, TuningArgs};
use clap::{Args, Subcommand, ValueEnum};
use etcd_operator::local::view::{self, Kind};
use etcd_operator::local::{self, Options};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LocalArgs {
    #[command(subcommand)]
    pub command: Option<LocalCommand>,
    /// Directory of EtcdCluster/EtcdBackup/EtcdRestore YAML (desired state).
    /// Status goes to DIR/.status, member data to DIR/.data.
    #[arg(long, required = true)]
    pub dir: Option<PathBuf>,
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
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// How often DIR is re-read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Directory of storage and backup-policy plugins (`<name>.wasm`),
    /// rescanned while running [default: the first of
    /// /usr/lib/etcd-operator/plugins, <binary>/../lib/etcd-operator/plugins
    /// and ./plugins/dist that holds a plugin]. Without plugins backups and
    /// restores cannot run.
    #[arg(long, env = "ETCD_OPERATOR_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// The one directory the `local` storage plugin may use [default: DIR/.backups].
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    #[command(flatten)]
    pub plugin_limits: PluginLimitArgs,
    #[command(flatten)]
    pub plugin_sources: PluginSourceArgs,
}

#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Show the objects of a local-mode directory as `kubectl get` shows
    /// them: the CRDs' printer columns, or the objects with their status.
    Get(GetArgs),
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// etcdclusters, etcdbackups or etcdrestores (or their short names
    /// etcdc, etcdbk, etcdrs), comma-separated [default: all three].
    pub kinds: Option<String>,
    /// Only this object (needs exactly one kind).
    pub name: Option<String>,
    /// The directory `etcd-operator local --dir` runs on.
    #[arg(long)]
    pub dir: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

/// `local get`: print, and say on stderr what could not be read.
fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let kinds = Kind::parse_list(args.kinds.as_deref())?;
    let view::Listing {
        kinds: listed,
        errors,
    } = view::read(&args.dir, &kinds)?;
    for e in &errors {
        eprintln!("warning: {e} (this file's objects are not shown)");
    }
    if let Some(name) = &args.name {
        let (kind, object) = view::only(listed, name, &args.dir)?;
        match args.output {
            Output::Table => print!(
                "{}",
                view::table(kind, &[object], chrono::Utc::now(), false)
            ),
            Output::Yaml => print!("{}", serde_yaml::to_string(&object)?),
            Output::Json => println!("{}", serde_json::to_string_pretty(&object)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.output {
        Output::Table => {
            let now = chrono::Utc::now();
            let shown: Vec<_> = listed.iter().filter(|(_, o)| !o.is_empty()).collect();
            if shown.is_empty() {
                eprintln!("No resources found in {}.", args.dir.display());
            }
            let qualified = kinds.len() > 1;
            let tables: Vec<String> = shown
                .iter()
                .map(|(kind, objects)| view::table(*kind, objects, now, qualified))
                .collect();
            print!("{}", tables.join("\n"));
        }
        Output::Yaml | Output::Json => {
            let items = listed.into_iter().flat_map(|(_, o)| o).collect();
            let list = view::list_value(items);
            match args.output {
                Output::Yaml => print!("{}", serde_yaml::to_string(&list)?),
                _ => println!("{}", serde_json::to_string_pretty(&list)?),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn default_etcd_dirs() -> Vec<PathBuf> {
    let tools = std::env::var_os("ETCD_OPERATOR_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/etcd-operator/tools"))
        });
    tools.map(|t| vec![t.join("etcd")]).unwrap_or_default()
}

/// Where the bundled plugins sit when nobody says: where the image and a
/// package install them, beside a binary installed under a prefix, and in a
/// checkout where `plugins/build.sh` ran.
fn default_plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib/etcd-operator/plugins")];
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        dirs.push(bin.join("../lib/etcd-operator/plugins"));
    }
    dirs.push(PathBuf::from("plugins/dist"));
    dirs
}

pub async fn run(args: LocalArgs) -> anyhow::Result<ExitCode> {
    if let Some(LocalCommand::Get(get_args)) = args.command {
        return get(get_args);
    }
    let dir = args.dir.expect("clap requires --dir without a subcommand");
    let mut etcd_dirs = args.etcd_dirs;
    etcd_dirs.extend(default_etcd_dirs());
    let searched = default_plugin_dirs();
    let plugin_dir = args.plugin_dir.or_else(|| {
        let found = searched
            .iter()
            .find(|d| !etcd_operator::plugins::registry::dir_names(d).is_empty())?;
        tracing::info!(dir = %found.display(), "plugins found without --plugin-dir");
        Some(found.clone())
    });
    let opts = Options {
        dir,
        keep_members: args.keep_members,
        etcd_dirs,
        tuning: args.tuning.tuning(),
        poll_interval: args.poll_interval,
        plugin_dir,
        plugin_dirs_searched: searched,
        backup_dir: args.backup_dir,
        allow_networks: args.plugin_limits.allow_networks.clone(),
        plugin_limits: args.plugin_limits.limits(),
        storage_bounds: args.plugin_limits.bounds(),
        plugin_sources: args.plugin_sources.sources(),
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
