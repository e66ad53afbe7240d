//! Quorum-loss recovery's last resort on Kubernetes: when every member lost
//! its data, the newest backup that downloads and verifies, among those of
//! the EtcdBackups naming the cluster, is restored into new member Pods.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::Api;

use super::secrets::KubeSecrets;
use crate::api::EtcdBackup;
use crate::backup::{Storage, newest_verified};
use crate::controller::{ClusterKey, RecoveryFuture, RecoverySnapshot, RecoverySource};
use crate::runtime::binaries::EtcdBinaries;

pub fn source(
    client: kube::Client,
    storage: Arc<Storage<KubeSecrets>>,
    binaries: Arc<EtcdBinaries>,
    staging: PathBuf,
) -> RecoverySource {
    // Backups that failed verification are not downloaded again each step.
    let rejected = Arc::new(Mutex::new(HashSet::new()));
    Arc::new(move |key: ClusterKey| -> RecoveryFuture {
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
            let mut targets = Vec::new();
            for b in backups.items.iter().filter(|b| {
                b.spec.etcd_cluster.as_ref().map(|r| r.name.as_str()) == Some(&key.name)
            }) {
                match storage.backup_target(&key.namespace, &b.spec).await {
                    Ok(t) => targets.push(t),
                    Err(e) => {
                        tracing::warn!(cluster = %key, error = %e, "backup location unusable for recovery")
                    }
                }
            }
            if targets.is_empty() {
                return Ok(None);
            }
            let tool = binaries.snapshot_tool(None).map_err(|e| e.to_string())?;
            Ok(
                newest_verified(&storage, &targets, &staging, &tool, &rejected)
                    .await?
                    .map(|v| RecoverySnapshot {
                        description: v.describe(),
                        path: v.path,
                    }),
            )
        })
    })
}
