//! Backups and restores through storage plugins.
//!
//! - [`snapshot`]: stream a snapshot from etcd into a plugin, with metadata;
//! - [`location`]: from a source block and its Secret to a plugin, config and grants;
//! - [`schedule`]: when backups are due, their names, retention choice;
//! - [`keys`] and [`bounds`]: what the operator accepts from plugins (backup
//!   names under the EtcdBackup's path; sizes, counts, time);
//! - [`controller`]: the EtcdBackup controller (one reconcile at a time);
//! - [`verify`] and [`restore`]: fetch a backup and prove it sound before
//!   anything is restored from it.

pub mod bounds;
pub mod controller;
pub mod keys;
pub mod location;
pub mod restore;
pub mod schedule;
pub mod snapshot;
pub mod verify;

pub use bounds::Bounds;
pub use controller::{BackupMemory, BackupOutcome, Storage};
pub use location::{HostGrants, LocationError, SecretStore, StaticSecrets, Target};
pub use restore::{RestoreError, Verified, fetch_verified, newest_verified};
pub use snapshot::{BackupError, BackupMeta, BackupOwner, backup_to, meta_key, pick_endpoint};
