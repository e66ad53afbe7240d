//! Storage credentials from Kubernetes Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::backup::location::SecretStore;

/// Reads Secrets through the API (the operator's RBAC needs `get secrets`).
pub struct KubeSecrets(pub kube::Client);

impl SecretStore for KubeSecrets {
    async fn get(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                let mut out: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    out.entry(k).or_insert_with(|| v.into_bytes());
                }
                Ok(out)
            }
            Ok(None) => Err("not found: create it in the resource's namespace".into()),
            Err(e) => Err(format!("cannot read it: {e}")),
        }
    }
}
