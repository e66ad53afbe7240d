//! `etcd-operator plugin inspect|push|test|precompile`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use etcd_operator::plugins::conformance::{self, StorageOptions};
use etcd_operator::plugins::fetch::{self, FetchConfig, Fetcher};
use etcd_operator::plugins::source::{OciSource, Sha256Digest, Source};
use etcd_operator::plugins::{
    EgressPolicy, Grants, Limits, PluginEngine, cache, inspect, registry,
};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Show a plugin's world, WIT version, imports, exports, size and sha256.
    Inspect {
        /// The component file (.wasm), or an OCI reference (oci://REGISTRY/REPO:TAG or @sha256:…).
        file: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a component to an OCI registry in the CNCF Wasm layout and print
    /// the digest-pinned reference to put in the plugin catalog.
    Push {
        /// The component file (.wasm).
        file: PathBuf,
        /// Where to push it: oci://REGISTRY/REPOSITORY:TAG.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
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

/// How to reach an OCI registry.
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Registry credentials: a Docker config.json [default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json when present].
    #[arg(long)]
    pub registry_auth: Option<PathBuf>,
    /// PEM certificates to trust besides the system's (a private registry's CA).
    #[arg(long)]
    pub registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    fn fetcher(&self) -> anyhow::Result<Fetcher> {
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"))
            .filter(|p| p.is_file());
        let config = FetchConfig {
            store_dir: cache::default_dir()
                .map(|d| d.join("fetched"))
                .unwrap_or_else(|| std::env::temp_dir().join("etcd-operator-plugins")),
            registry_auth: self.registry_auth.clone().or(docker),
            extra_ca: self.registry_ca.clone(),
        };
        Ok(Fetcher::new(&config)?)
    }
}

fn oci_source(text: &str) -> anyhow::Result<OciSource> {
    match text.parse::<Source>().map_err(anyhow::Error::msg)? {
        Source::Oci(o) => Ok(o),
        Source::Https(_) => anyhow::bail!("`{text}` is not an oci:// reference"),
    }
}

/// A component from a file or an OCI reference: its name, bytes, and the
/// manifest digest when it came from a registry.
async fn component(
    arg: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<(String, Vec<u8>, Option<Sha256Digest>)> {
    if !arg.starts_with("oci://") {
        let (name, bytes) = read(&PathBuf::from(arg))?;
        return Ok((name, bytes, None));
    }
    let source = oci_source(arg)?;
    let fetcher = registry.fetcher()?;
    let described = fetcher.oci().describe(&source).await?;
    let digest = fetcher
        .oci()
        .pull(&source, None, fetcher.store(), fetch::MAX_COMPONENT_BYTES)
        .await?;
    let bytes = fetcher
        .store()
        .get(&digest)?
        .context("the pulled component is not in the cache")?;
    let repo = source.reference.repository();
    let name = repo.rsplit('/').next().unwrap_or(repo).to_string();
    Ok((name, bytes, Some(described.manifest_digest)))
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The component file (.wasm), or an OCI reference (oci://…).
    pub file: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
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
        PluginCommand::Inspect { file, registry } => {
            let (name, bytes, manifest) = component(&file, &registry).await?;
            let info = inspect::inspect(&name, &bytes)?;
            print!("{info}");
            if let (Some(manifest), Ok(source)) = (manifest, oci_source(&file)) {
                let r = &source.reference;
                println!("manifest:    {manifest}");
                println!(
                    "pinned:      oci://{}/{}@{manifest}",
                    r.registry(),
                    r.repository()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Push {
            file,
            reference,
            registry,
        } => {
            let (name, bytes) = read(&file)?;
            let info = inspect::inspect(&name, &bytes)?;
            let source = oci_source(&reference)?;
            anyhow::ensure!(
                source.reference.digest().is_none(),
                "push to a tag (oci://REGISTRY/REPOSITORY:TAG); the registry gives the digest"
            );
            let fetcher = registry.fetcher()?;
            let manifest = fetcher.oci().push(&source.reference, bytes, &info).await?;
            let r = &source.reference;
            println!(
                "pushed {reference} ({} bytes, sha256:{})",
                info.size, info.sha256
            );
            println!("manifest {manifest}");
            println!("catalog entry:");
            println!("  {name}:");
            println!(
                "    source: oci://{}/{}@{manifest}",
                r.registry(),
                r.repository()
            );
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
            let (name, bytes, _) = component(&args.file, &args.registry).await?;
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
