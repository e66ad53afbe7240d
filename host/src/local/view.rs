//! What `etcd-operator local get` shows: the objects of a local-mode
//! directory as `kubectl get` shows them on Kubernetes.
//!
//! Each object is its manifest with its status (`DIR/.status`) put back in,
//! so `-o yaml` reads like the API server's copy. The table's columns are the
//! CRDs' own `additionalPrinterColumns`, read from [`crate::api::crd`], so
//! the two views cannot drift apart.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use serde_json::Value;

use super::manifests::{Manifests, Object};
use crate::api::crd;

/// One of the three kinds `local get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Backup,
    Restore,
}

/// Why `local get` cannot show what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(
        "the server doesn't have a resource type `{0}`: name one of etcdclusters (etcdc), \
         etcdbackups (etcdbk) or etcdrestores (etcdrs), or leave it out for all three"
    )]
    UnknownKind(String),
    #[error("{resource} \"{name}\" not found in {dir}")]
    NotFound {
        /// `etcdclusters.etcd.database.coreos.com`, as kubectl names it.
        resource: String,
        name: String,
        dir: String,
    },
    #[error("a name needs exactly one kind: `local get etcdclusters NAME`")]
    NameWithManyKinds,
    #[error("cannot read {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot print the objects: {0}")]
    Print(String),
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Cluster, Kind::Backup, Kind::Restore];

    fn of(o: &Object) -> Option<Kind> {
        match o {
            Object::Cluster(_) => Some(Kind::Cluster),
            Object::Backup(_) => Some(Kind::Backup),
            Object::Restore(_) => Some(Kind::Restore),
            Object::Secret(_) => None,
        }
    }

    pub fn crd(self) -> CustomResourceDefinition {
        match self {
            Kind::Cluster => crd::etcd_cluster(),
            Kind::Backup => crd::etcd_backup(),
            Kind::Restore => crd::etcd_restore(),
        }
    }

    /// The kind as `kubectl get` accepts it: plural, singular, short name or
    /// kind, any case, with or without the group.
    pub fn parse(text: &str) -> Result<Kind, ViewError> {
        let lower = text.to_ascii_lowercase();
        for kind in Kind::ALL {
            let crd = kind.crd();
            let names = &crd.spec.names;
            let group = &crd.spec.group;
            let mut accepted = vec![
                names.plural.clone(),
                names.kind.to_ascii_lowercase(),
                names.singular.clone().unwrap_or_default(),
            ];
            accepted.extend(names.short_names.iter().flatten().cloned());
            if accepted
                .iter()
                .filter(|a| !a.is_empty())
                .any(|a| lower == *a || lower == format!("{a}.{group}"))
            {
                return Ok(kind);
            }
        }
        Err(ViewError::UnknownKind(text.to_string()))
    }

    /// `etcdclusters,etcdbackups` (kubectl's list form); empty means all.
    pub fn parse_list(text: Option<&str>) -> Result<Vec<Kind>, ViewError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Kind::ALL.to_vec());
        };
        let mut kinds = Vec::new();
        for part in text.split(',') {
            let kind = Kind::parse(part.trim())?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    fn status_kind(self) -> &'static str {
        match self {
            Kind::Cluster => "EtcdCluster",
            Kind::Backup => "EtcdBackup",
            Kind::Restore => "EtcdRestore",
        }
    }
}

/// What [`read`] found.
#[derive(Debug)]
pub struct Listing {
    /// Each kind asked for, in order, with its objects by name.
    pub kinds: Vec<(Kind, Vec<Value>)>,
    /// Manifest files that did not parse (their objects are missing).
    pub errors: Vec<String>,
}

/// The objects of `kinds` in `dir` (in that order, each by name), each with
/// its status. An object without `metadata.creationTimestamp` gets its
/// manifest file's modification time: local mode has no API server to stamp
/// it, and that is when the object was last applied. Files that do not parse
/// are returned as errors beside the objects, as the operator reports them.
pub fn read(dir: &Path, kinds: &[Kind]) -> Result<Listing, ViewError> {
    std::fs::metadata(dir).map_err(|source| ViewError::Dir {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut manifests = Manifests::default();
    let errors = manifests.refresh(dir);
    let mut out: Vec<(Kind, Vec<Value>)> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for (file, objects) in manifests.files() {
        let applied = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .map(|t| DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true));
        for o in objects {
            let Some(kind) = Kind::of(o) else { continue };
            let Some((_, list)) = out.iter_mut().find(|(k, _)| *k == kind) else {
                continue;
            };
            let name = o.name();
            // The first of a duplicated name wins, as in the operator.
            if list.iter().any(|v| v["metadata"]["name"] == name.as_str()) {
                continue;
            }
            let mut value = to_value(o)?;
            if value["metadata"].get("creationTimestamp").is_none()
                && let Some(t) = &applied
            {
                value["metadata"]["creationTimestamp"] = Value::String(t.clone());
            }
            let status = super::status_path(dir, kind.status_kind(), &name);
            if let Some(status) = super::read_yaml::<Value>(&status) {
                value["status"] = status;
            }
            list.push(value);
        }
    }
    for (_, list) in &mut out {
        list.sort_by(|a, b| {
            let name = |v: &Value| {
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            name(a).cmp(&name(b))
        });
    }
    Ok(Listing { kinds: out, errors })
}

fn to_value(o: &Object) -> Result<Value, ViewError> {
    let value = match o {
        Object::Cluster(c) => serde_json::to_value(c),
        Object::Backup(b) => serde_json::to_value(b),
        Object::Restore(r) => serde_json::to_value(r),
        Object::Secret(s) => serde_json::to_value(s),
    };
    let mut value = value.map_err(|e| ViewError::Print(e.to_string()))?;
    // The typed objects carry `status: null` when there is none.
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    Ok(value)
}

/// Only the object named `name`, or an error that says where it looked.
pub fn only(
    listed: Vec<(Kind, Vec<Value>)>,
    name: &str,
    dir: &Path,
) -> Result<(Kind, Value), ViewError> {
    let [(kind, objects)] = <[_; 1]>::try_from(listed).map_err(|_| ViewError::NameWithManyKinds)?;
    objects
        .into_iter()
        .find(|v| v["metadata"]["name"] == name)
        .map(|v| (kind, v))
        .ok_or_else(|| {
            let crd = kind.crd();
            ViewError::NotFound {
                resource: format!("{}.{}", crd.spec.names.plural, crd.spec.group),
                name: name.to_string(),
                dir: dir.display().to_string(),
            }
        })
}

/// `kubectl get`'s List of several objects.
pub fn list_value(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": "" },
        "items": items,
    })
}

/// The columns `kubectl get` shows by default (priority 0).
fn columns(kind: Kind) -> Vec<CustomResourceColumnDefinition> {
    kind.crd()
        .spec
        .versions
        .into_iter()
        .next()
        .and_then(|v| v.additional_printer_columns)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .collect()
}

/// The value at a printer column's JSONPath. The CRDs' columns use plain
/// field paths (`.status.ready`); anything else is reported, not guessed.
pub fn at_path<'a>(value: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let Some(fields) = path.strip_prefix('.') else {
        return Err(format!("JSONPath `{path}` does not start with `.`"));
    };
    let mut at = value;
    for field in fields.split('.') {
        if field.is_empty() || field.contains(['[', ']', '*', '@', '?', '(']) {
            return Err(format!("JSONPath `{path}` is not a plain field path"));
        }
        match at.get(field) {
            Some(v) => at = v,
            None => return Ok(None),
        }
    }
    Ok(Some(at).filter(|v| !v.is_null()))
}

/// One cell as kubectl prints it: dates as their age, missing as empty.
fn cell(value: Option<&Value>, type_: &str, now: DateTime<Utc>) -> String {
    match value {
        None => String::new(),
        Some(Value::String(s)) if type_ == "date" => DateTime::parse_from_rfc3339(s)
            .map(|t| age(now.signed_duration_since(t.with_timezone(&Utc))))
            .unwrap_or_else(|_| s.clone()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// kubectl's short age: `45s`, `5m30s`, `42m`, `5h10m`, `30h`, `3d4h`, `200d`, `3y`.
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (m, h, day) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => match h % 24 {
            0 => format!("{day}d"),
            r => format!("{day}d{r}h"),
        },
        _ if day < 365 * 2 => format!("{day}d"),
        _ => format!("{}y", day / 365),
    }
}

/// The table of one kind. With `qualified`, names read
/// `etcdcluster.etcd.database.coreos.com/NAME`, as kubectl prints several
/// kinds at once.
pub fn table(kind: Kind, objects: &[Value], now: DateTime<Utc>, qualified: bool) -> String {
    let columns = columns(kind);
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("NAME".to_string())
            .chain(columns.iter().map(|c| c.name.to_ascii_uppercase()))
            .collect(),
    ];
    let crd = kind.crd();
    let prefix = format!(
        "{}.{}/",
        crd.spec.names.singular.as_deref().unwrap_or_default(),
        crd.spec.group
    );
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let mut row = vec![if qualified {
            format!("{prefix}{name}")
        } else {
            name.to_string()
        }];
        for c in &columns {
            // A path the evaluator cannot read shows as empty, as kubectl
            // shows a column it cannot evaluate; a test keeps ours plain.
            let value = at_path(o, &c.json_path).ok().flatten();
            row.push(cell(value, &c.type_, now));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, text) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(text);
            } else {
                let _ = write!(line, "{text:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printer_column_is_a_plain_field_path() {
        for kind in Kind::ALL {
            let columns = columns(kind);
            assert!(!columns.is_empty(), "{kind:?} has printer columns");
            for c in columns {
                assert!(
                    at_path(&Value::Null, &c.json_path).is_ok(),
                    "{kind:?} column {} has a path `local get` cannot read: {}",
                    c.name,
                    c.json_path
                );
            }
        }
    }

    #[test]
    fn kinds_parse_as_kubectl_accepts_them() {
        for (text, kind) in [
            ("etcdclusters", Kind::Cluster),
            ("EtcdCluster", Kind::Cluster),
            ("etcdc", Kind::Cluster),
            ("etcdcluster.etcd.database.coreos.com", Kind::Cluster),
            ("etcdbackup", Kind::Backup),
            ("etcdbk", Kind::Backup),
            ("etcdrestores", Kind::Restore),
            ("etcdrs", Kind::Restore),
        ] {
            assert_eq!(Kind::parse(text).unwrap(), kind, "{text}");
        }
        let err = Kind::parse("etcdclustrs").unwrap_err().to_string();
        assert!(
            err.contains("`etcdclustrs`") && err.contains("etcdclusters (etcdc)"),
            "{err}"
        );
        assert_eq!(
            Kind::parse_list(Some("etcdc,etcdbk,etcdc")).unwrap(),
            [Kind::Cluster, Kind::Backup]
        );
        assert_eq!(Kind::parse_list(None).unwrap(), Kind::ALL);
    }

    #[test]
    fn ages_read_like_kubectl() {
        let secs = chrono::Duration::seconds;
        for (s, text) in [
            (0, "0s"),
            (119, "119s"),
            (330, "5m30s"),
            (600, "10m"),
            (2 * 3600 + 59 * 60, "179m"),
            (5 * 3600 + 10 * 60, "5h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (200 * 86400, "200d"),
            (3 * 365 * 86400, "3y"),
            (-5, "0s"),
        ] {
            assert_eq!(age(secs(s)), text, "{s}s");
        }
    }

    #[test]
    fn the_table_aligns_the_crds_columns_and_leaves_missing_cells_empty() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let objects = [
            serde_json::json!({
                "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"size": 3},
                "status": {"currentVersion": "3.5.1", "ready": "3/3", "phase": "Running"},
            }),
            serde_json::json!({"metadata": {"name": "longer-name"}, "spec": {"size": 1}}),
        ];
        let text = table(Kind::Cluster, &objects, now, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME          SIZE   VERSION   READY   PHASE     AGE"
        );
        assert_eq!(
            lines[1],
            "a             3      3.5.1     3/3     Running   60m"
        );
        assert_eq!(lines[2], "longer-name   1");
        let qualified = table(Kind::Cluster, &objects[..1], now, true);
        assert!(
            qualified.contains("etcdcluster.etcd.database.coreos.com/a "),
            "{qualified}"
        );
    }
}
