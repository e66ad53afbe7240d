//! Test-only backup-policy plugin. It returns whatever its config says, so
//! tests can show the operator checks what a policy returns:
//!
//! - `name`: returned by `backup-name` as the next backup's key, verbatim
//!   (`{revision}` is replaced by the etcd revision); `name-repeat: N` repeats
//!   it N times (a huge name). Without `name`, the operator's default;
//! - `delete`: comma-separated keys `retention` returns, whatever it was shown;
//!   `delete-shown: true` returns every key it was shown instead;
//! - `log-lines: N`: `pre-backup` logs N lines first;
//! - `retention-ms: N`: `retention` takes N milliseconds before it answers.

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::policy::{BackupContext, Guest, PreBackupDecision};
use etcd_plugin_sdk::types::{ObjectInfo, PluginError};

struct FaultsPolicy;

impl Guest for FaultsPolicy {
    fn pre_backup(
        config: Vec<(String, String)>,
        _ctx: BackupContext,
    ) -> Result<PreBackupDecision, PluginError> {
        let config = Config::new(config);
        for i in 0..config.u64_or("log-lines", 0)? {
            etcd_plugin_sdk::info(&format!("faults-policy log line {i}"));
        }
        Ok(PreBackupDecision::Proceed)
    }

    fn backup_name(
        config: Vec<(String, String)>,
        ctx: BackupContext,
    ) -> Result<Option<String>, PluginError> {
        let config = Config::new(config);
        let Some(name) = config.get("name") else {
            return Ok(None);
        };
        let name = name.replace("{revision}", &ctx.revision.to_string());
        let repeat = config.u64_or("name-repeat", 1)? as usize;
        Ok(Some(name.repeat(repeat)))
    }

    fn retention(
        config: Vec<(String, String)>,
        backups: Vec<ObjectInfo>,
        _now_ms: u64,
    ) -> Result<Vec<String>, PluginError> {
        let config = Config::new(config);
        let ms = config.u64_or("retention-ms", 0)?;
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if config.bool_or("delete-shown", false)? {
            return Ok(backups.into_iter().map(|b| b.key).collect());
        }
        Ok(config
            .get("delete")
            .map(|d| d.split(',').map(str::to_string).collect())
            .unwrap_or_default())
    }
}

etcd_plugin_sdk::export_backup_policy!(FaultsPolicy);
