//! Flags both `local` and `run` take.

use std::time::Duration;

use clap::Args;
use etcd_operator::controller::Tuning;
use etcd_operator::plugins::Limits;

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
}

impl PluginLimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.plugin_memory_mib << 20,
            call_timeout: self.plugin_call_timeout,
            ..Limits::default()
        }
    }
}
