//! Quorum-loss recovery's last resort on Kubernetes: when every member lost
//! its data, the newest backup that downloads and verifies, among those of
//! the EtcdBackups naming the cluster, is restored into new member Pods.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::Api;

use super::secrets::KubeSecrets;
use crate::api::EtcdBackup;
use crate::backup::Storage;
use crate::backup::restore::recovery_snapshot;
use crate::controller::{BackupPin, ClusterKey, RecoveryFuture, RecoverySource};
use crate::runtime::binaries::EtcdBinaries;

pub fn source(
    client: kube::Client,
    storage: Arc<Storage<KubeSecrets>>,
    binaries: Arc<EtcdBinaries>,
    staging: PathBuf,
) -> RecoverySource {
    // Backups that failed verification are not downloaded again each step.
    let rejected = Arc::new(Mutex::new(HashSet::new()));
    Arc::new(
        move |key: ClusterKey, pin: Option<BackupPin>| -> RecoveryFuture {
            let (client, storage, binaries, staging, rejected) = (
                client.clone(),
                storage.clone(),
                binaries.clone(),
                staging.clone(),
                rejected.clone(),
            );
            Box::pin(async move {
                let api: Api<EtcdBackup> = Api::namespaced(client, &key.namespace);
                let backups = api
                    .list(&Default::default())
                    .await
                    .map_err(|e| format!("cannot list EtcdBackups: {e}"))?;
                let backups: Vec<EtcdBackup> = backups
                    .items
                    .into_iter()
                    .filter(|b| {
                        b.spec.etcd_cluster.as_ref().map(|r| r.name.as_str()) == Some(&key.name)
                    })
                    .collect();
                recovery_snapshot(
                    &storage,
                    &key,
                    &backups,
                    &staging,
                    &binaries,
                    &rejected,
                    pin.as_ref(),
                )
                .await
            })
        },
    )
}
