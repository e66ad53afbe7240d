//! Backups: streaming etcd snapshots into storage plugins.
//!
//! This is the data path the EtcdBackup and EtcdRestore controllers build on;
//! the controllers themselves are not wired in yet (local mode reports those
//! kinds as not handled).

pub mod snapshot;

pub use snapshot::{BackupError, BackupMeta, backup_to, meta_key, pick_endpoint};
