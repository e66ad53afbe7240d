//! Tenants apart in cluster-wide mode. One operator then serves many
//! namespaces, and it holds what no tenant should share: network reach into
//! every namespace, the client certificates of TLS clusters, one backup
//! directory. So an EtcdBackup's `etcdEndpoints` may name only members of
//! EtcdClusters of its own namespace (else a tenant could have the operator
//! stream another tenant's database into its own bucket), unless the admin
//! allows more (`--allow-foreign-etcd-endpoints`). The `local` plugin's
//! directory and per-namespace networks are in [`crate::backup::HostGrants`].

use crate::api::EtcdCluster;

/// The hosts by which EtcdCluster `cluster` of `namespace` is reached: its
/// members' client URLs, their DNS names and its client Service.
fn hosts_of(cluster: &EtcdCluster, namespace: &str) -> Vec<String> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let mut hosts: Vec<String> = cluster
        .status
        .iter()
        .flat_map(|s| s.client_urls.iter())
        .filter_map(|u| host_of(u))
        .collect();
    let service = format!("{name}-client");
    hosts.push(service.clone());
    hosts.push(format!("{service}.{namespace}"));
    hosts.push(format!("{service}.{namespace}.svc"));
    hosts.push(format!("{service}.{namespace}.svc.cluster.local"));
    hosts
}

/// The lower-case host of a URL (`http://h:2379`), or of `h:2379`.
fn host_of(endpoint: &str) -> Option<String> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    url.host_str()
        .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
}

/// Whether `host` is a member DNS name of `cluster` in `namespace`
/// (`<member>.<cluster>.<namespace>.svc`, optionally `.cluster.local`). No
/// other suffix: `….svc.evil.example` is anyone's name for any address.
fn is_member_name(host: &str, cluster: &str, namespace: &str) -> bool {
    let service = format!(".{cluster}.{namespace}.svc");
    let member = host
        .strip_suffix(".cluster.local")
        .unwrap_or(host)
        .strip_suffix(&service);
    member.is_some_and(|m| !m.is_empty() && !m.contains('.'))
}

/// Refuse `endpoints` that are not members of `clusters` (the EtcdClusters of
/// `namespace`), naming the first such endpoint and the fix.
pub fn check_endpoints(
    endpoints: &[String],
    namespace: &str,
    clusters: &[EtcdCluster],
) -> Result<(), String> {
    for e in endpoints {
        let host = host_of(e).ok_or_else(|| {
            format!("spec.etcdEndpoints entry `{e}` is not a URL (write http(s)://HOST:PORT)")
        })?;
        let ours = clusters.iter().any(|c| {
            let name = c.metadata.name.as_deref().unwrap_or_default();
            hosts_of(c, namespace).contains(&host) || is_member_name(&host, name, namespace)
        });
        if !ours {
            return Err(format!(
                "spec.etcdEndpoints entry `{e}` is not a member of an EtcdCluster in namespace {namespace}: \
                 in cluster-wide mode an EtcdBackup backs up only its own namespace's clusters. Name the \
                 cluster with spec.etcdCluster, or the operator's admin allows other endpoints with \
                 --allow-foreign-etcd-endpoints (Helm allowForeignEtcdEndpoints)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, urls: &[&str]) -> EtcdCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
            "metadata": {"name": name, "namespace": "tenant-a"},
            "spec": {"size": 1},
            "status": {"clientUrls": urls},
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_must_belong_to_the_namespace_s_clusters() {
        let ours = [cluster("db", &["http://db-abc.db.tenant-a.svc:2379"])];
        for ok in [
            "http://db-abc.db.tenant-a.svc:2379",
            "http://db-xyz.db.tenant-a.svc.cluster.local:2379",
            "https://db-client.tenant-a.svc:2379",
            "db-client:2379",
        ] {
            assert!(
                check_endpoints(&[ok.to_string()], "tenant-a", &ours).is_ok(),
                "{ok}"
            );
        }
        for foreign in [
            "http://db-abc.db.tenant-b.svc:2379",
            "http://other-client.tenant-b.svc:2379",
            "http://10.0.0.7:2379",
            "http://db-abc.db.tenant-a.svc.evil.example:2379",
        ] {
            let err = check_endpoints(&[foreign.to_string()], "tenant-a", &ours).unwrap_err();
            assert!(
                err.contains(foreign) && err.contains("--allow-foreign-etcd-endpoints"),
                "{err}"
            );
        }
    }
}
