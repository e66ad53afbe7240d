//! `retention`: which backups to keep.
//!
//! Config keys (all optional, but at least one `keep-*` must be set):
//! - `keep-last`: keep the newest N backups.
//! - `keep-hourly`, `keep-daily`, `keep-weekly`: grandfather-father-son — keep
//!   the newest backup of each of the N most recent hours / days / ISO weeks
//!   (Monday to Sunday, UTC) that have a backup.
//! - `skip-unchanged` (`true`/`false`, default false): skip a backup when the
//!   etcd revision has not moved since the last one.
//!
//! A backup kept by any rule is kept. The newest backup is always kept.

mod gfs;

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::policy::{BackupContext, Guest, PreBackupDecision};
use etcd_plugin_sdk::types::{ObjectInfo, PluginError};

pub use gfs::{Rules, to_delete};

struct Retention;

impl Guest for Retention {
    fn pre_backup(
        config: Vec<(String, String)>,
        ctx: BackupContext,
    ) -> Result<PreBackupDecision, PluginError> {
        let config = Config::new(config);
        if config.bool_or("skip-unchanged", false)?
            && ctx.last_backup_revision == Some(ctx.revision)
        {
            return Ok(PreBackupDecision::Skip(format!(
                "etcd revision {} has not changed since the last backup (skip-unchanged is set)",
                ctx.revision
            )));
        }
        Ok(PreBackupDecision::Proceed)
    }

    fn backup_name(
        _config: Vec<(String, String)>,
        _ctx: BackupContext,
    ) -> Result<Option<String>, PluginError> {
        Ok(None)
    }

    fn retention(
        config: Vec<(String, String)>,
        backups: Vec<ObjectInfo>,
        _now_ms: u64,
    ) -> Result<Vec<String>, PluginError> {
        let rules = Rules::from_config(&Config::new(config))?;
        let items: Vec<(String, u64)> = backups
            .into_iter()
            .map(|b| (b.key, b.last_modified_ms))
            .collect();
        Ok(to_delete(&rules, &items))
    }
}

etcd_plugin_sdk::export_backup_policy!(Retention);
