//! Reading desired state from a directory of YAML files, as `kubectl apply -f DIR` would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use k8s_openapi::api::core::v1::Secret;

use crate::api::{API_VERSION, EtcdBackup, EtcdCluster, EtcdRestore};

/// One object from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Cluster(Box<EtcdCluster>),
    Backup(Box<EtcdBackup>),
    Restore(Box<EtcdRestore>),
    /// A `v1` Secret holding storage credentials (what `awsSecret`,
    /// `plugin.secretRef`... name), as `kubectl apply` would create it.
    Secret(Box<Secret>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Cluster(_) => "EtcdCluster",
            Object::Backup(_) => "EtcdBackup",
            Object::Restore(_) => "EtcdRestore",
            Object::Secret(_) => "Secret",
        }
    }

    pub fn name(&self) -> String {
        let meta = match self {
            Object::Cluster(o) => &o.metadata,
            Object::Backup(o) => &o.metadata,
            Object::Restore(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        };
        meta.name.clone().unwrap_or_default()
    }
}

/// Parse every document of one file. Errors name the file, the document
/// and the field.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Object>, String> {
    let file = path.display();
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("{file}, document {n}: not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let api = value["apiVersion"].as_str().unwrap_or_default();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let typed = |e: serde_json::Error| format!("{file}, document {n} ({kind}): {e}");
        if api == "v1" && kind == "Secret" {
            if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                return Err(format!("{file}, document {n}: metadata.name is required"));
            }
            out.push(Object::Secret(Box::new(
                serde_json::from_value(value).map_err(typed)?,
            )));
            continue;
        }
        if api != API_VERSION {
            return Err(format!(
                "{file}, document {n}: apiVersion is `{api}`; this operator reads `{API_VERSION}`"
            ));
        }
        if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{file}, document {n}: metadata.name is required"));
        }
        out.push(match kind.as_str() {
            "EtcdCluster" => Object::Cluster(Box::new(serde_json::from_value(value).map_err(typed)?)),
            "EtcdBackup" => Object::Backup(Box::new(serde_json::from_value(value).map_err(typed)?)),
            "EtcdRestore" => Object::Restore(Box::new(serde_json::from_value(value).map_err(typed)?)),
            other => {
                return Err(format!(
                    "{file}, document {n}: kind `{other}` is not one of EtcdCluster, EtcdBackup, EtcdRestore (or a v1 Secret)"
                ));
            }
        });
    }
    Ok(out)
}

/// The desired state of a directory, file by file. A file that fails to
/// parse keeps its previous objects, so a typo never deletes a cluster.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    files: BTreeMap<PathBuf, Vec<Object>>,
}

impl Manifests {
    /// Re-read `dir`; returns the errors of files that did not parse.
    pub fn refresh(&mut self, dir: &Path) -> Vec<String> {
        let mut errors = Vec::new();
        let mut files = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return vec![format!("cannot read {}: {e}", dir.display())],
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if name.starts_with('.') || !is_yaml || !path.is_file() {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| parse_file(&path, &text));
            match parsed {
                Ok(objects) => {
                    files.insert(path, objects);
                }
                Err(e) => {
                    errors.push(e);
                    if let Some(previous) = self.files.get(&path) {
                        files.insert(path, previous.clone());
                    }
                }
            }
        }
        self.files = files;
        errors
    }

    /// Each manifest file with its objects, in file-name order.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &[Object])> {
        self.files.iter().map(|(p, o)| (p.as_path(), o.as_slice()))
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.files.values().flatten()
    }

    /// Objects of one kind by name (the first of a duplicated name wins).
    fn by_name<T: Clone>(&self, pick: impl Fn(&Object) -> Option<&T>) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        for o in self.objects() {
            if let Some(t) = pick(o) {
                out.entry(o.name()).or_insert_with(|| t.clone());
            }
        }
        out
    }

    pub fn backups(&self) -> BTreeMap<String, EtcdBackup> {
        self.by_name(|o| match o {
            Object::Backup(b) => Some(&**b),
            _ => None,
        })
    }

    pub fn restores(&self) -> BTreeMap<String, EtcdRestore> {
        self.by_name(|o| match o {
            Object::Restore(r) => Some(&**r),
            _ => None,
        })
    }

    /// Secret data by (namespace, name); `stringData` wins over `data`, as
    /// the API server merges them.
    pub fn secrets(&self) -> BTreeMap<(String, String), BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for o in self.objects() {
            if let Object::Secret(s) = o {
                let ns = s
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                for (k, v) in s.string_data.iter().flatten() {
                    data.insert(k.clone(), v.clone().into_bytes());
                }
                out.entry((ns, o.name())).or_insert(data);
            }
        }
        out
    }

    /// EtcdClusters by name (a later duplicate name is reported and ignored).
    pub fn clusters(&self) -> BTreeMap<String, EtcdCluster> {
        let mut out = BTreeMap::new();
        for o in self.objects() {
            if let Object::Cluster(c) = o {
                out.entry(o.name()).or_insert_with(|| (**c).clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_document_and_field() {
        let p = Path::new("c.yaml");
        let err = parse_file(p, "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: three}\n").unwrap_err();
        assert!(
            err.contains("c.yaml, document 1 (EtcdCluster)") && err.contains("invalid type"),
            "{err}"
        );
        let err =
            parse_file(p, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap_err();
        assert!(err.contains("apiVersion is `v1`"), "{err}");
        let secret = parse_file(
            p,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGk=}\nstringData: {b: there}\n",
        )
        .unwrap();
        let mut m = Manifests::default();
        m.files.insert(p.to_path_buf(), secret);
        let data = &m.secrets()[&("default".to_string(), "s".to_string())];
        assert_eq!(data["a"], b"hi");
        assert_eq!(data["b"], b"there");
        let objs = parse_file(p, "---\napiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 1}\n---\n").unwrap();
        assert_eq!(objs.len(), 1);
    }

    #[test]
    fn the_demo_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local");
        let mut m = Manifests::default();
        assert!(m.refresh(&dir).is_empty());
        assert!(m.clusters().contains_key("example"));
        let backups = m.backups();
        let b = &backups["example-periodic"];
        assert_eq!(
            b.spec.etcd_cluster.as_ref().map(|c| c.name.as_str()),
            Some("example")
        );
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3}\n").unwrap();
        let mut m = Manifests::default();
        assert!(m.refresh(dir.path()).is_empty());
        std::fs::write(&f, "apiVersion: [oops").unwrap();
        assert_eq!(m.refresh(dir.path()).len(), 1);
        assert_eq!(m.clusters().len(), 1, "the cluster survives a typo");
        std::fs::remove_file(&f).unwrap();
        assert!(m.refresh(dir.path()).is_empty());
        assert!(
            m.clusters().is_empty(),
            "deleting the file deletes the cluster"
        );
    }
}
