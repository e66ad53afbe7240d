//! Which resources this operator manages, exactly as the CoreOS operator
//! decided it: a namespaced operator manages the resources of its namespace
//! that carry no scope annotation; a cluster-wide one (`--cluster-wide`)
//! manages, in every namespace, only those annotated
//! `etcd.database.coreos.com/scope: clusterwide`. Two operators, one of each
//! kind, can then run side by side without fighting over a resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

use crate::api::{SCOPE_ANNOTATION, SCOPE_CLUSTERWIDE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    ClusterWide,
}

impl Scope {
    pub fn manages(&self, meta: &ObjectMeta) -> bool {
        let annotation = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SCOPE_ANNOTATION))
            .map(String::as_str);
        match self {
            Scope::Namespace(ns) => {
                annotation.is_none() && meta.namespace.as_deref() == Some(ns.as_str())
            }
            Scope::ClusterWide => annotation == Some(SCOPE_CLUSTERWIDE),
        }
    }

    /// The API to watch a namespaced resource kind in this scope.
    pub fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self {
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Scope::ClusterWide => Api::all(client.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(ns: &str, annotation: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            annotations: annotation
                .map(|v| BTreeMap::from([(SCOPE_ANNOTATION.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn namespaced_and_clusterwide_operators_split_resources_like_coreos() {
        let ns = Scope::Namespace("team".into());
        assert!(ns.manages(&meta("team", None)));
        assert!(!ns.manages(&meta("other", None)));
        assert!(!ns.manages(&meta("team", Some("clusterwide"))));
        let wide = Scope::ClusterWide;
        assert!(wide.manages(&meta("any", Some("clusterwide"))));
        assert!(!wide.manages(&meta("any", None)));
        assert!(!wide.manages(&meta("any", Some("namespaced"))));
    }
}
