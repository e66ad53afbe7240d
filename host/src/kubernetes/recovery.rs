//! Quorum-loss recovery's last resort on Kubernetes: when every member lost
//! its data, the newest backup that downloads and verifies, among those of
//! the EtcdBackups naming the cluster, is restored into new member Pods.

use std::path::PathBuf;
use std::sync::Arc;

use kube::Api;

use super::secrets::KubeSecrets;
use crate::api::EtcdBackup;
use crate::backup::Storage;
use crate::backup::restore::recovery_source;
use crate::controller::{ClusterKey, RecoverySource};
use crate::runtime::binaries::EtcdBinaries;

pub fn source(
    client: kube::Client,
    storage: Arc<Storage<KubeSecrets>>,
    binaries: Arc<EtcdBinaries>,
    staging: PathBuf,
) -> RecoverySource {
    recovery_source(storage, binaries, staging, move |key: ClusterKey| {
        let api: Api<EtcdBackup> = Api::namespaced(client.clone(), &key.namespace);
        async move {
            let backups = api
                .list(&Default::default())
                .await
                .map_err(|e| format!("cannot list EtcdBackups: {e}"))?;
            Ok(backups
                .items
                .into_iter()
                .filter(|b| {
                    b.spec.etcd_cluster.as_ref().map(|r| r.name.as_str()) == Some(&key.name)
                })
                .collect())
        }
    })
}
