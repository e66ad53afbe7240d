//! Command-line interface.

mod kube;
mod local;
mod plugin;
mod shared;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "etcd-operator",
    version,
    about = "Creates, heals, scales, upgrades, backs up and restores etcd clusters"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "ETCD_OPERATOR_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and test WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run the operator without Kubernetes: members are local etcd processes,
    /// desired state is the YAML in a directory.
    Local(local::LocalArgs),
    /// Run the operator on Kubernetes: members are Pods, desired state is
    /// the EtcdCluster, EtcdBackup and EtcdRestore resources.
    Run(kube::RunArgs),
    /// Print the CustomResourceDefinitions (EtcdCluster, EtcdBackup, EtcdRestore) as YAML.
    Crd,
}

/// Logs go to stderr; `RUST_LOG` filters (default: info).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only on a terminal: log files and CI output stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd).await,
        Command::Local(args) => local::run(args).await,
        Command::Run(args) => kube::run(args).await,
        Command::Crd => {
            print!("{}", etcd_operator::api::crd::to_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
