//! Where a backup goes: from an EtcdBackup/EtcdRestore source block (and the
//! Secret it names) to a storage plugin, its configuration, the capabilities
//! it is granted and the object key or prefix.
//!
//! The CoreOS blocks map onto the bundled plugins (`s3`, `abs`, `gcs`,
//! `oss`): `path` is `<bucket>/<key>`, the bucket goes into the plugin's
//! configuration and the rest is the key. The `plugin` block hands `config`
//! and the Secret's keys to the named plugin as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::source::{BackupSource, StorageKind};
use crate::plugins::egress::EgressPolicy;
use crate::plugins::storage::Grants;

/// Reads Secrets: the API server on Kubernetes, `kind: Secret` manifests in local mode.
/// The future is `Send`, so code generic over the store (recovery's backup
/// search) can run on any worker thread.
pub trait SecretStore: Send + Sync {
    /// The data of Secret `name` in `namespace`, or why it cannot be read.
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl std::future::Future<Output = Result<BTreeMap<String, Vec<u8>>, String>> + Send;
}

/// What the operator (not the resource) decides about plugin capabilities.
#[derive(Debug, Clone, Default)]
pub struct HostGrants {
    /// Plugin name → the one directory it may use (the `local` plugin's
    /// backup directory). No other plugin gets a filesystem.
    pub dirs: BTreeMap<String, PathBuf>,
    /// Give each namespace its own subdirectory `<dir>/<namespace>` of those
    /// directories (cluster-wide mode), so that one tenant cannot list,
    /// delete or restore another's backups.
    pub dir_per_namespace: bool,
    /// Private networks plugins may reach (for an in-cluster MinIO or a test
    /// server on loopback); public endpoints need no entry.
    pub private_networks: Vec<String>,
    /// More private networks, for resources of one namespace only.
    pub namespace_networks: BTreeMap<String, Vec<String>>,
}

impl HostGrants {
    /// The directory `plugin` may use for resources of `namespace`, created
    /// if it does not exist yet.
    fn dir_for(&self, plugin: &str, namespace: &str) -> Result<Option<PathBuf>, LocationError> {
        let Some(dir) = self.dirs.get(plugin) else {
            return Ok(None);
        };
        if !self.dir_per_namespace {
            return Ok(Some(dir.clone()));
        }
        let dir = dir.join(namespace);
        std::fs::create_dir_all(&dir).map_err(|e| {
            LocationError::Secret(format!(
                "cannot create the `{plugin}` plugin's directory {} for namespace {namespace}: {e}",
                dir.display()
            ))
        })?;
        Ok(Some(dir))
    }

    /// The private networks resources of `namespace` may reach.
    fn networks_for(&self, namespace: &str) -> Vec<String> {
        let mut all = self.private_networks.clone();
        all.extend(
            self.namespace_networks
                .get(namespace)
                .into_iter()
                .flatten()
                .cloned(),
        );
        all
    }
}

/// A resolved storage location.
#[derive(Debug, Clone)]
pub struct Target {
    /// The storage plugin to run.
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub grants: Grants,
    /// The object key (one-shot backups, restores) or key prefix (periodic
    /// backups) inside the plugin's storage.
    pub path: String,
    /// For messages and status: e.g. `S3 my-bucket/etcd/backup`.
    pub display: String,
}

/// Why a location cannot be resolved. Every message names the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0}")]
    Spec(String),
    /// The Secret is missing or lacks a key. It may appear later, so the
    /// caller retries (slowly) rather than giving up.
    #[error("{0}")]
    Secret(String),
}

/// Resolve the location of a backup or restore. `field` is the spec field
/// holding the storage type (`storageType` or `backupStorageType`).
pub async fn resolve<S: SecretStore>(
    storage_type: &str,
    field: &str,
    source: BackupSource<'_>,
    namespace: &str,
    secrets: &S,
    host: &HostGrants,
) -> Result<Target, LocationError> {
    let kind = StorageKind::parse(storage_type);
    let path = source.path(&kind, field).map_err(LocationError::Spec)?;
    let secret_name = source.secret(&kind).map_err(LocationError::Spec)?;
    let secret = match &secret_name {
        Some(name) => Some(secrets.get(namespace, name).await.map_err(|e| {
            LocationError::Secret(format!(
                "Secret {namespace}/{name} (spec.{}): {e}",
                secret_field(&kind)
            ))
        })?),
        None => None,
    };
    let secret_name = secret_name.unwrap_or_default();
    let text = |key: &str| -> Result<Option<String>, LocationError> {
        let Some(data) = secret.as_ref() else {
            return Ok(None);
        };
        data.get(key)
            .map(|v| {
                String::from_utf8(v.clone()).map_err(|_| {
                    LocationError::Secret(format!(
                        "Secret {namespace}/{secret_name} key `{key}` is not UTF-8 text"
                    ))
                })
            })
            .transpose()
    };
    let required = |key: &str| -> Result<String, LocationError> {
        text(key)?.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            LocationError::Secret(format!(
                "Secret {namespace}/{secret_name} has no key `{key}`: add it (spec.{})",
                secret_field(&kind)
            ))
        })
    };

    let mut config: Vec<(String, String)> = Vec::new();
    let mut endpoints: Vec<String> = Vec::new();
    let (bucket, key) = match kind {
        StorageKind::Plugin(_) => (None, path.clone()),
        _ => {
            let (bucket, key) = split_bucket(&path, &kind)?;
            (Some(bucket), key)
        }
    };
    let plugin = match &kind {
        StorageKind::Plugin(name) => source
            .plugin
            .and_then(|p| p.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| name.clone()),
        other => other.plugin_name().to_string(),
    };
    match &kind {
        StorageKind::Plugin(_) => {
            let block = source.plugin.expect("path() checked the block");
            config.extend(block.config.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(data) = &secret {
                for k in data.keys() {
                    config.push((k.clone(), text(k)?.unwrap_or_default()));
                }
            }
            endpoints.extend(block.allowed_endpoints.iter().cloned());
        }
        StorageKind::S3 => {
            let block = source.s3.expect("path() checked the block");
            config.push(("bucket".into(), bucket.clone().unwrap_or_default()));
            config.push(("credentials".into(), required("credentials")?));
            if let Some(c) = text("config")? {
                config.push(("config".into(), c));
            }
            if let Some(fps) = block.force_path_style {
                config.push(("force-path-style".into(), fps.to_string()));
            }
            match block.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
                Some(e) => {
                    config.push(("endpoint".into(), e.trim().to_string()));
                    endpoints.push(origin(e, "spec.s3.endpoint")?);
                }
                None => {
                    // AWS itself: the regional endpoint, path and virtual-host style.
                    let region = aws_region(config.iter().find(|(k, _)| k == "config"))?;
                    let b = bucket.clone().unwrap_or_default();
                    endpoints.push(format!("https://s3.{region}.amazonaws.com"));
                    endpoints.push(format!("https://{b}.s3.{region}.amazonaws.com"));
                }
            }
        }
        StorageKind::Abs => {
            let account = required("storage-account")?;
            config.push(("container".into(), bucket.clone().unwrap_or_default()));
            config.push(("storage-account".into(), account.clone()));
            config.push(("storage-key".into(), required("storage-key")?));
            let cloud = text("cloud")?.unwrap_or_default();
            let suffix = abs_suffix(cloud.trim()).ok_or_else(|| {
                LocationError::Secret(format!(
                    "Secret {namespace}/{secret_name} key `cloud` is `{cloud}`: use AzurePublicCloud, \
                     AzureUSGovernmentCloud, AzureChinaCloud or AzureGermanCloud, or give `endpoint`"
                ))
            })?;
            let endpoint = text("endpoint")?
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| format!("https://{account}.blob.{suffix}"));
            endpoints.push(origin(&endpoint, "the Secret's `endpoint`")?);
            config.push(("endpoint".into(), endpoint));
        }
        StorageKind::Gcs => {
            config.push(("bucket".into(), bucket.clone().unwrap_or_default()));
            if let Some(t) = text("access-token")? {
                config.push(("access-token".into(), t));
            }
            if let Some(c) = text("credentials.json")? {
                config.push(("credentials-json".into(), c));
            }
            match text("endpoint")?.filter(|e| !e.trim().is_empty()) {
                Some(e) => {
                    endpoints.push(origin(&e, "the Secret's `endpoint`")?);
                    config.push(("endpoint".into(), e.trim().to_string()));
                }
                None => {
                    endpoints.push("https://storage.googleapis.com".into());
                    endpoints.push("https://oauth2.googleapis.com".into());
                }
            }
        }
        StorageKind::Oss => {
            let block = source.oss.expect("path() checked the block");
            config.push(("bucket".into(), bucket.clone().unwrap_or_default()));
            config.push(("access-key-id".into(), required("accessKeyID")?));
            config.push(("access-key-secret".into(), required("accessKeySecret")?));
            let endpoint = block
                .endpoint
                .clone()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "http://oss-cn-hangzhou.aliyuncs.com".into());
            let base = origin(&endpoint, "spec.oss.endpoint")?;
            // OSS addresses buckets as virtual hosts: <bucket>.<endpoint host>.
            if let Some((scheme, host)) = base.split_once("://") {
                endpoints.push(format!(
                    "{scheme}://{}.{host}",
                    bucket.clone().unwrap_or_default()
                ));
            }
            // An IP address has no virtual hosts: address the bucket in
            // the path (an OSS-compatible server on a private address).
            let host = base.split_once("://").map(|(_, h)| h).unwrap_or(&base);
            let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
            if host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
            {
                config.push(("addressing-style".into(), "path".into()));
            }
            endpoints.push(base);
            config.push(("endpoint".into(), endpoint.trim().to_string()));
        }
    }
    let egress = EgressPolicy::from_entries(&endpoints, &host.networks_for(namespace))
        .map_err(|e| LocationError::Spec(format!("allowed endpoints: {e}")))?;
    Ok(Target {
        grants: Grants {
            egress: Arc::new(egress),
            dir: host.dir_for(&plugin, namespace)?,
        },
        display: format!("{storage_type} {path}"),
        plugin,
        config,
        path: key,
    })
}

/// The region of the `default` profile of an AWS `config` file (the S3
/// plugin reads the same file), `us-east-1` when it names none.
fn aws_region(config: Option<&(String, String)>) -> Result<String, LocationError> {
    let Some((_, text)) = config else {
        return Ok("us-east-1".into());
    };
    let ini = ini::Ini::load_from_str(text).map_err(|e| {
        LocationError::Secret(format!(
            "the `config` file of spec.s3.awsSecret is not a valid AWS config file: {e}"
        ))
    })?;
    Ok(["default", "profile default"]
        .iter()
        .find_map(|s| ini.section(Some(*s)).and_then(|sec| sec.get("region")))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".into()))
}

fn secret_field(kind: &StorageKind) -> &'static str {
    match kind {
        StorageKind::S3 => "s3.awsSecret",
        StorageKind::Abs => "abs.absSecret",
        StorageKind::Gcs => "gcs.gcpSecret",
        StorageKind::Oss => "oss.ossSecret",
        StorageKind::Plugin(_) => "plugin.secretRef",
    }
}

/// `bucket/key` → (`bucket`, `key`); both parts must be non-empty.
fn split_bucket(path: &str, kind: &StorageKind) -> Result<(String, String), LocationError> {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.trim_matches('/').is_empty() => {
            Ok((b.to_string(), k.to_string()))
        }
        _ => Err(LocationError::Spec(format!(
            "spec.{}.path is `{path}`: it must be <{}>/<key>, e.g. my-bucket/etcd/cluster-a",
            kind.block(),
            if *kind == StorageKind::Abs {
                "container"
            } else {
                "bucket"
            }
        ))),
    }
}

/// `scheme://host:port` of an endpoint URL (the form egress entries take).
fn origin(url: &str, field: &str) -> Result<String, LocationError> {
    let bad = |why: &str| {
        LocationError::Spec(format!(
            "{field} `{url}` {why}: give a URL such as https://storage.example.com:9000"
        ))
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("is not a URL"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("has no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("is neither http nor https"));
    }
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    Ok(match uri.port_u16() {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Azure storage DNS suffix for the CoreOS `cloud` values.
fn abs_suffix(cloud: &str) -> Option<&'static str> {
    match cloud {
        "" | "AzurePublicCloud" => Some("core.windows.net"),
        "AzureUSGovernmentCloud" => Some("core.usgovcloudapi.net"),
        "AzureChinaCloud" => Some("core.chinacloudapi.cn"),
        "AzureGermanCloud" => Some("core.cloudapi.de"),
        _ => None,
    }
}

/// Secrets in a map, for local mode and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticSecrets(pub BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>);

impl SecretStore for StaticSecrets {
    async fn get(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.0
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| "not found: create it".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::source::{OssSource, PluginSource, S3Source};

    fn secrets(entries: &[(&str, &str)]) -> StaticSecrets {
        let data = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        StaticSecrets(BTreeMap::from([(("ns".into(), "creds".into()), data)]))
    }

    /// An `oss` block with `path`, its Secret complete, resolved.
    async fn resolve_oss(path: &str) -> Result<Target, LocationError> {
        let oss = OssSource {
            path: Some(path.into()),
            oss_secret: Some("creds".into()),
            endpoint: None,
        };
        let src = BackupSource {
            oss: Some(&oss),
            ..Default::default()
        };
        let s = secrets(&[("accessKeyID", "id"), ("accessKeySecret", "secret")]);
        resolve("OSS", "storageType", src, "ns", &s, &HostGrants::default()).await
    }

    fn allowed(t: &Target) -> Vec<String> {
        t.grants
            .egress
            .allowed
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn get<'a>(t: &'a Target, k: &str) -> Option<&'a str> {
        t.config
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn s3_block_maps_to_bucket_key_and_secret_files() {
        let s3 = S3Source {
            path: Some("bkt/etcd/a".into()),
            aws_secret: Some("creds".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            force_path_style: Some(true),
        };
        let src = BackupSource {
            s3: Some(&s3),
            ..Default::default()
        };
        let s = secrets(&[("credentials", "[default]\n"), ("config", "[default]\n")]);
        let t = resolve("S3", "storageType", src, "ns", &s, &HostGrants::default())
            .await
            .unwrap();
        assert_eq!(t.plugin, "s3");
        assert_eq!(t.path, "etcd/a");
        assert_eq!(get(&t, "bucket"), Some("bkt"));
        assert_eq!(get(&t, "force-path-style"), Some("true"));
        assert_eq!(get(&t, "credentials"), Some("[default]\n"));
        assert_eq!(
            t.grants.egress.allowed[0].to_string(),
            "http://127.0.0.1:9000"
        );
        assert!(t.grants.dir.is_none());

        let missing = resolve(
            "S3",
            "storageType",
            src,
            "ns",
            &StaticSecrets::default(),
            &HostGrants::default(),
        )
        .await
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("Secret ns/creds (spec.s3.awsSecret)"),
            "{missing}"
        );
        let no_key = resolve(
            "S3",
            "storageType",
            src,
            "ns",
            &secrets(&[("config", "x")]),
            &HostGrants::default(),
        )
        .await
        .unwrap_err();
        assert!(
            no_key.to_string().contains("no key `credentials`"),
            "{no_key}"
        );
    }

    #[tokio::test]
    async fn s3_without_an_endpoint_may_reach_only_its_aws_region() {
        let s3 = S3Source {
            path: Some("bkt/etcd".into()),
            aws_secret: Some("creds".into()),
            endpoint: None,
            force_path_style: None,
        };
        let src = BackupSource {
            s3: Some(&s3),
            ..Default::default()
        };
        let s = secrets(&[
            ("credentials", "[default]\n"),
            ("config", "[default]\nregion = eu-west-1\n"),
        ]);
        let t = resolve("S3", "storageType", src, "ns", &s, &HostGrants::default())
            .await
            .unwrap();
        let allowed = allowed(&t);
        assert_eq!(
            allowed,
            [
                "https://s3.eu-west-1.amazonaws.com:443",
                "https://bkt.s3.eu-west-1.amazonaws.com:443"
            ]
        );
    }

    #[tokio::test]
    async fn a_bucket_without_a_key_is_refused_by_name() {
        let err = resolve_oss("only-bucket").await.unwrap_err();
        assert!(
            err.to_string().contains("spec.oss.path is `only-bucket`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oss_defaults_to_hangzhou_with_the_virtual_host() {
        let t = resolve_oss("b/k").await.unwrap();
        let allowed = allowed(&t);
        assert_eq!(
            allowed,
            [
                "http://b.oss-cn-hangzhou.aliyuncs.com:80",
                "http://oss-cn-hangzhou.aliyuncs.com:80"
            ]
        );
        assert_eq!(get(&t, "access-key-id"), Some("id"));
        assert_eq!(get(&t, "addressing-style"), None);
    }

    #[tokio::test]
    async fn an_oss_endpoint_at_an_ip_address_is_addressed_by_path() {
        let oss = OssSource {
            path: Some("b/k".into()),
            oss_secret: Some("creds".into()),
            endpoint: Some("http://10.0.0.9:9000".into()),
        };
        let src = BackupSource {
            oss: Some(&oss),
            ..Default::default()
        };
        let s = secrets(&[("accessKeyID", "id"), ("accessKeySecret", "secret")]);
        let t = resolve("OSS", "storageType", src, "ns", &s, &HostGrants::default())
            .await
            .unwrap();
        assert_eq!(get(&t, "addressing-style"), Some("path"));
    }

    #[tokio::test]
    async fn plugin_block_passes_config_and_secret_and_only_local_gets_a_dir() {
        let p = PluginSource {
            name: None,
            path: Some("backups/a".into()),
            config: BTreeMap::from([("k".into(), "v".into())]),
            secret_ref: Some("creds".into()),
            allowed_endpoints: vec![],
        };
        let src = BackupSource {
            plugin: Some(&p),
            ..Default::default()
        };
        let host = HostGrants {
            dirs: BTreeMap::from([("local".into(), PathBuf::from("/backups"))]),
            ..Default::default()
        };
        let s = secrets(&[("token", "t")]);
        let t = resolve("local", "storageType", src, "ns", &s, &host)
            .await
            .unwrap();
        assert_eq!(t.path, "backups/a");
        assert_eq!(get(&t, "k"), Some("v"));
        assert_eq!(get(&t, "token"), Some("t"));
        assert_eq!(t.grants.dir, Some(PathBuf::from("/backups")));
        let other = resolve("webdav", "storageType", src, "ns", &s, &host)
            .await
            .unwrap();
        assert_eq!(other.plugin, "webdav");
        assert!(other.grants.dir.is_none());
    }

    #[tokio::test]
    async fn tenants_get_their_own_directory_and_networks() {
        let root = tempfile::tempdir().unwrap();
        let p = PluginSource {
            name: None,
            path: Some("backups/a".into()),
            config: BTreeMap::new(),
            secret_ref: None,
            allowed_endpoints: vec!["http://10.1.2.3:9000".into()],
        };
        let src = BackupSource {
            plugin: Some(&p),
            ..Default::default()
        };
        let host = HostGrants {
            dirs: BTreeMap::from([("local".into(), root.path().to_path_buf())]),
            dir_per_namespace: true,
            private_networks: vec![],
            namespace_networks: BTreeMap::from([("tenant-a".into(), vec!["10.1.0.0/16".into()])]),
        };
        let s = secrets(&[]);
        let a = resolve("local", "storageType", src, "tenant-a", &s, &host)
            .await
            .unwrap();
        assert_eq!(a.grants.dir, Some(root.path().join("tenant-a")));
        assert!(root.path().join("tenant-a").is_dir());
        let b = resolve("local", "storageType", src, "tenant-b", &s, &host)
            .await
            .unwrap();
        assert_eq!(b.grants.dir, Some(root.path().join("tenant-b")));
        // The private network is tenant-a's only.
        assert_eq!(a.grants.egress.private_networks.len(), 1);
        assert!(b.grants.egress.private_networks.is_empty());
    }
}
