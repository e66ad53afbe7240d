//! Flags both `local` and `run` take.

use std::time::Duration;

use clap::Args;
use etcd_operator::backup::Bounds;
use etcd_operator::controller::Tuning;
use etcd_operator::plugins::fetch::FetchConfig;
use etcd_operator::plugins::{Limits, PluginSources, cache};
use std::path::PathBuf;

/// When the reconcile core gives up on a member or on quorum.
#[derive(Args, Debug)]
pub struct TuningArgs {
    /// Replace a member that stays unhealthy this long (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub member_failure_grace: Duration,
    /// Recover from the surviving member with the most data after a majority
    /// has been unhealthy this long.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub quorum_loss_timeout: Duration,
}

impl TuningArgs {
    pub fn tuning(&self) -> Tuning {
        Tuning {
            member_failure_grace: self.member_failure_grace,
            quorum_loss_timeout: self.quorum_loss_timeout,
        }
    }
}

/// Plugins the admin declares by source and digest, and how they are fetched.
#[derive(Args, Debug)]
pub struct PluginSourceArgs {
    /// The plugin catalog: YAML naming plugins by `oci://` or `https://`
    /// source pinned by sha256, with their own `memoryMiB` and
    /// `callTimeout` (docs/plugin-authoring.md). Read at start.
    #[arg(long, env = "ETCD_OPERATOR_PLUGIN_CATALOG")]
    pub plugin_catalog: Option<PathBuf>,
    /// Registry credentials for catalog sources: a Docker config.json (the
    /// `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret).
    #[arg(long)]
    pub plugin_registry_auth: Option<PathBuf>,
    /// PEM certificates to trust, besides the system's, for catalog sources
    /// (a private registry's CA).
    #[arg(long)]
    pub plugin_source_ca: Option<PathBuf>,
    /// Where fetched plugins and compiled plugin code are kept [default:
    /// $ETCD_OPERATOR_CACHE_DIR, else ~/.cache/etcd-operator/wasm].
    #[arg(long)]
    pub plugin_cache_dir: Option<PathBuf>,
    /// A bundled plugin (or, in local mode, one of --plugin-dir) that a
    /// catalog entry or a labelled ConfigMap may replace (repeat, or
    /// comma-separate). Without it such an entry is refused: whoever writes
    /// it would receive that plugin's credentials and snapshots.
    #[arg(long, value_delimiter = ',')]
    pub allow_plugin_override: Vec<String>,
}

impl PluginSourceArgs {
    pub fn sources(&self) -> PluginSources {
        let cache_dir = self.plugin_cache_dir.clone().or_else(cache::default_dir);
        PluginSources {
            catalog: self.plugin_catalog.clone(),
            fetch: FetchConfig {
                store_dir: cache_dir
                    .as_ref()
                    .map(|d| d.join("fetched"))
                    .unwrap_or_else(|| std::env::temp_dir().join("etcd-operator-plugins")),
                registry_auth: self.plugin_registry_auth.clone(),
                extra_ca: self.plugin_source_ca.clone(),
            },
            cache_dir,
            allow_override: self.allow_plugin_override.iter().cloned().collect(),
        }
    }
}

/// What storage plugins may use.
#[derive(Args, Debug)]
pub struct PluginLimitArgs {
    /// A private network (CIDR or address) storage plugins may reach, e.g.
    /// 127.0.0.1/32 for a test server or 10.0.0.0/8 for an in-cluster MinIO;
    /// repeatable. Public endpoints need none.
    #[arg(long = "allow-network")]
    pub allow_networks: Vec<String>,
    /// Memory limit of one plugin instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub plugin_memory_mib: usize,
    /// Time limit of one plugin call (e.g. one chunk upload).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub plugin_call_timeout: Duration,
    /// Most storage sessions, and most policy calls, in their sandboxes at
    /// once (each may use up to the memory limit); more wait for a slot.
    #[arg(long, default_value_t = 16)]
    pub max_plugin_sandboxes: usize,
    /// Largest backup a restore or a recovery downloads (e.g. 64GiB, 512MiB):
    /// a backup whose metadata gives a larger size is refused before the
    /// download, and a stream past it (or past the size its metadata gives)
    /// is stopped.
    #[arg(long, default_value = "64GiB", value_parser = parse_size)]
    pub max_backup_size: u64,
    /// Most old backups one retention pass deletes; the rest wait for the next backup.
    #[arg(long, default_value_t = 100)]
    pub retention_max_deletes: usize,
    /// Time an EtcdRestore's download and verification may take, retries
    /// included, unless it sets spec.timeoutInSecond; also bounds a
    /// quorum-loss recovery's search for a usable backup.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub restore_timeout: Duration,
    /// After each backup upload, list its key and fail the backup unless the
    /// backend shows it with the size sent (turn off only for a backend
    /// whose listings lag behind its writes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub list_after_upload: bool,
}

impl PluginLimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.plugin_memory_mib << 20,
            call_timeout: self.plugin_call_timeout,
            max_sandboxes: self.max_plugin_sandboxes,
            ..Limits::default()
        }
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_backup_bytes: self.max_backup_size,
            retention_max_deletes: self.retention_max_deletes,
            restore_timeout: self.restore_timeout,
            list_after_upload: self.list_after_upload,
            ..Bounds::default()
        }
    }
}

/// A size in bytes, with an optional binary unit: `1048576`, `512KiB`,
/// `64MiB`, `8GiB`, `1TiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a size: write e.g. 64GiB, 512MiB or a number of bytes")
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert!(parse_size("8MB").unwrap_err().contains("unknown unit `MB`"));
        assert!(parse_size("GiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
