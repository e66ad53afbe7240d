//! `etcd-operator plugin inspect|test`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use etcd_operator::plugins::conformance::{self, StorageOptions};
use etcd_operator::plugins::{
    EgressPolicy, Grants, Limits, PluginEngine, cache, inspect, registry,
};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Show a plugin's world, WIT version, imports, exports, size and sha256.
    Inspect {
        /// The component file (.wasm).
        file: PathBuf,
    },
    /// Run the conformance kit against a plugin (exit code 1 on any failure).
    Test(TestArgs),
    /// Compile every `*.wasm` of a plugin directory ahead of time into its
    /// `.compiled/` subdirectory, which `etcd-operator run` reads (and never
    /// writes) for its `--plugin-dir`: an image with a read-only root
    /// filesystem then starts without compiling its bundled plugins.
    /// Artifacts are tied to this build of the operator and this CPU; an
    /// operator that cannot use them compiles as before. Local mode does
    /// not read them: its plugin directory is not part of a trusted image.
    Precompile {
        /// The plugin directory.
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The component file (.wasm).
    pub file: PathBuf,
    /// Plugin configuration, repeatable: --config bucket=backups --config region=eu-west-1
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Endpoint the plugin may reach over HTTP, repeatable: --allow-endpoint http://127.0.0.1:9000
    #[arg(long = "allow-endpoint", value_name = "URL")]
    pub allow_endpoint: Vec<String>,
    /// Private or loopback network the plugin may reach, repeatable: --allow-network 127.0.0.1/32
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub allow_network: Vec<String>,
    /// Directory granted to the plugin (the local plugin stores backups here).
    #[arg(long = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Size of the large (multipart) round-trip in MiB.
    #[arg(long = "large-mib", default_value_t = 24)]
    pub large_mib: u64,
    /// Memory limit of the plugin in MiB.
    #[arg(long = "memory-mib", default_value_t = 64)]
    pub memory_mib: usize,
    /// Time limit of one plugin call in seconds.
    #[arg(long = "call-timeout", default_value_t = 60)]
    pub call_timeout_secs: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn read(file: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the file name is not valid UTF-8")?
        .to_string();
    Ok((name, bytes))
}

pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect { file } => {
            let (name, bytes) = read(&file)?;
            let info = inspect::inspect(&name, &bytes)?;
            print!("{info}");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Precompile { dir } => {
            let out = cache::precompiled_dir(&dir);
            let engine = PluginEngine::new(Limits::default(), Some(out.clone()))?;
            let source = registry::read_dir_source(&dir)?;
            anyhow::ensure!(!source.is_empty(), "no *.wasm file in {}", dir.display());
            for (name, bytes) in source {
                let engine = engine.clone();
                let started = std::time::Instant::now();
                tokio::task::spawn_blocking(move || {
                    registry::load(&engine, &name, &bytes).map(|_| name)
                })
                .await?
                .map(|name| {
                    println!(
                        "{name}: compiled in {:.1}s",
                        started.elapsed().as_secs_f64()
                    )
                })?;
            }
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test(args) => {
            let (name, bytes) = read(&args.file)?;
            let limits = Limits {
                memory_bytes: args.memory_mib << 20,
                call_timeout: Duration::from_secs(args.call_timeout_secs),
                ..Limits::default()
            };
            let engine = PluginEngine::new(limits, cache::default_dir())?;
            let plugin =
                tokio::task::spawn_blocking(move || registry::load(&engine, &name, &bytes))
                    .await??;
            let grants = Grants {
                egress: Arc::new(EgressPolicy::from_entries(
                    &args.allow_endpoint,
                    &args.allow_network,
                )?),
                dir: args.dir,
            };
            let mut opts = StorageOptions::new(args.config, grants);
            opts.large_bytes = args.large_mib << 20;
            let report = conformance::test_plugin(&plugin, &opts).await;
            print!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
