//! EtcdBackup objects in local mode: one worker per object drives the
//! backup controller and persists its status, which carries the schedule
//! across operator restarts.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Context, read_yaml, status_path, write_status};
use crate::api::{EtcdBackup, EtcdBackupStatus, EtcdClusterStatus};
use crate::backup::controller::{self, BackupMemory};

/// Back up one EtcdBackup until it is deleted or the operator stops.
pub(super) async fn worker(
    ctx: Arc<Context>,
    name: String,
    mut desired: watch::Receiver<Option<EtcdBackup>>,
    mut stop: watch::Receiver<bool>,
) {
    let path = status_path(&ctx.dir, "EtcdBackup", &name);
    let mut status: EtcdBackupStatus = read_yaml(&path).unwrap_or_default();
    let mut memory = BackupMemory::default();
    loop {
        let Some(backup) = desired.borrow_and_update().clone() else {
            let _ = std::fs::remove_file(&path);
            return;
        };
        let cluster: Option<EtcdClusterStatus> = backup
            .spec
            .etcd_cluster
            .as_ref()
            .filter(|r| ctx.has_cluster(&r.name))
            .and_then(|r| read_yaml(&status_path(&ctx.dir, "EtcdCluster", &r.name)));
        let endpoints = controller::endpoints_of(&backup.spec, cluster.as_ref());
        // A shutdown abandons a running backup: the plugin session is
        // dropped with its upload, which never becomes a visible object.
        let outcome = tokio::select! {
            o = controller::reconcile(&ctx.storage, &backup, endpoints, &status, &mut memory) => o,
            _ = stop.changed() => return,
        };
        // Status first: whoever acts on an Event finds the status it reports.
        if outcome.status != status {
            write_status(&path, &outcome.status);
            status = outcome.status;
        }
        for e in &outcome.events {
            ctx.events.emit("EtcdBackup", &name, e);
        }
        tokio::select! {
            _ = desired.changed() => {}
            _ = tokio::time::sleep(outcome.requeue) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
