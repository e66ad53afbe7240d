//! Plugins as OCI artifacts, in the CNCF Wasm layout: a manifest whose
//! config has media type `application/vnd.wasm.config.v0+json` and whose one
//! layer is the component, `application/wasm`. Any OCI registry holds them;
//! `etcd-operator plugin push` writes them, and artifacts other tools wrote
//! in this layout (`wkg oci push`) are read the same way. The layout is
//! written here on `oci-client` directly rather than through `oci-wasm`,
//! which would bring a second `wit-component` and `oci-client` with its own
//! TLS provider into the operator for a config struct and two media types.
//!
//! Pulls stream the layer to disk with its digest checked ([`ArtifactStore`]);
//! registry credentials come from a Docker `config.json` (the content of a
//! `kubernetes.io/dockerconfigjson` Secret). Registries are spoken to over
//! https only; a private CA is added with [`OciClient::new`]'s `extra_roots`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use super::artifacts::{ArtifactStore, StoreError};
use super::inspect::PluginInfo;
use super::source::{OciSource, Sha256Digest};

/// Media type of a Wasm artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of a Wasm component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Why an OCI operation failed, in words for whoever configured the source.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "registry {registry} refused the credentials for {reference} ({detail}); check the registry \
         credentials given to the operator (--plugin-registry-auth, Helm plugins.registrySecret)"
    )]
    Unauthorized {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("{reference} does not exist in registry {registry}: {detail}")]
    NotFound {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("cannot reach registry {registry} for {reference}: {detail}")]
    Unreachable {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error(
        "{reference} is not a Wasm component artifact: {detail}; push components with \
         `etcd-operator plugin push` (or any tool writing the CNCF Wasm OCI layout)"
    )]
    NotWasm { reference: String, detail: String },
    #[error(
        "{reference} now holds the component {actual}, not the pinned {expected}: the tag moved; \
         the operator runs only the pinned digest (update `sha256` in the catalog to take the new one)"
    )]
    Moved {
        reference: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("{reference}: the component is {size} bytes, more than the {max} a plugin may be")]
    TooLarge {
        reference: String,
        size: u64,
        max: u64,
    },
    #[error("{reference}: {source}")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
    #[error("registry {registry} answered {reference} with an error: {detail}")]
    Registry {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("the registry credentials file {path}: {detail}")]
    Credentials { path: String, detail: String },
    #[error("the registry CA file {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("cannot set up an https client for plugin sources: {0}")]
    Client(String),
}

impl OciError {
    /// Whether trying again later may succeed: the network and the
    /// registry's own failures may pass; wrong credentials, a missing
    /// artifact or wrong content do not until someone changes something.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            OciError::Unreachable { .. } | OciError::Registry { .. }
        )
    }
}

/// Registry credentials by registry host, from a Docker `config.json`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    auths: BTreeMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `https://host:port/v1/` or `host:port` → `host:port`.
fn registry_key(entry: &str) -> String {
    let host = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
        .unwrap_or(entry);
    host.split('/').next().unwrap_or(host).to_string()
}

impl Credentials {
    /// Parse a Docker `config.json` (`{"auths": {"HOST": {"auth": base64(user:password)}}}`
    /// or with `username`/`password`). `path` names the file in errors.
    pub fn from_docker_config(path: &str, bytes: &[u8]) -> Result<Self, OciError> {
        let err = |detail: String| OciError::Credentials {
            path: path.to_string(),
            detail,
        };
        let config: DockerConfig = serde_json::from_slice(bytes).map_err(|e| {
            err(format!(
                "is not a Docker config.json ({e}); use the `.dockerconfigjson` of a \
                 kubernetes.io/dockerconfigjson Secret"
            ))
        })?;
        let mut auths = BTreeMap::new();
        for (host, a) in config.auths {
            let pair = match (a.username, a.password, a.auth) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| err(format!("auths.{host}.auth is not base64: {e}")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| err(format!("auths.{host}.auth is not UTF-8")))?;
                    let (u, p) = text.split_once(':').ok_or_else(|| {
                        err(format!("auths.{host}.auth is not base64 of USER:PASSWORD"))
                    })?;
                    (u.to_string(), p.to_string())
                }
                _ => {
                    return Err(err(format!(
                        "auths.{host} has neither `auth` nor `username` and `password`"
                    )));
                }
            };
            auths.insert(registry_key(&host), pair);
        }
        Ok(Credentials { auths })
    }

    /// What to present to `registry` (anonymous when nothing is configured).
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.auths.get(registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// The config blob of a Wasm artifact (the fields this operator writes;
/// readers ignore unknown ones).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ComponentInfo {
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a registry holds under a reference.
#[derive(Debug)]
pub struct Described {
    /// The manifest digest (what `@sha256:` pins).
    pub manifest_digest: Sha256Digest,
    /// The component layer.
    pub layer: OciDescriptor,
    pub config: Option<WasmConfig>,
}

/// An OCI client with the operator's credentials and trust roots.
pub struct OciClient {
    client: Client,
    credentials: Credentials,
}

impl std::fmt::Debug for OciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciClient").finish_non_exhaustive()
    }
}

/// Where the system's CA bundle usually is (Debian, Fedora, Alpine/macOS).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The PEM certificates plugin sources are verified against: the system's
/// bundle (`$SSL_CERT_FILE`, else the usual places) and `extra` (a private
/// registry's CA). Read here rather than left to the TLS stack, so that an
/// image without a bundle gets a clear error, not a failure inside a client.
pub fn trust_roots(extra: Option<&std::path::Path>) -> Result<Vec<u8>, OciError> {
    let mut pem = Vec::new();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file());
    if let Some(path) = &system
        && let Ok(bytes) = std::fs::read(path)
    {
        pem.extend(bytes);
        pem.push(b'\n');
    }
    if let Some(path) = extra {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| OciError::Ca {
            path: shown.clone(),
            detail: format!("cannot be read: {e}"),
        })?;
        parse_roots(&shown, &bytes)?;
        pem.extend(bytes);
    }
    if parse_roots("", &pem).is_err() {
        return Err(OciError::Client(format!(
            "no CA certificate to verify registries with: the system has no bundle ({}) and no \
             --plugin-source-ca was given",
            SYSTEM_BUNDLES.join(", ")
        )));
    }
    Ok(pem)
}

/// Parse PEM certificates to trust besides the system's.
pub fn parse_roots(
    path: &str,
    pem: &[u8],
) -> Result<Vec<oci_client::client::Certificate>, OciError> {
    let count = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .filter(|w| *w == b"-----BEGIN CERTIFICATE-----")
        .count();
    if count == 0 {
        return Err(OciError::Ca {
            path: path.to_string(),
            detail: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    // One PEM bundle per certificate: oci-client takes them one by one.
    let text = String::from_utf8_lossy(pem);
    Ok(text
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|part| part.contains("-----BEGIN CERTIFICATE-----"))
        .map(|part| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: part.trim().as_bytes().to_vec(),
        })
        .collect())
}

/// rustls needs a process-wide crypto provider for the clients it builds
/// for reqwest; ring is the one the rest of the operator uses.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn classify(
    registry: &str,
    reference: &str,
    e: oci_client::errors::OciDistributionError,
) -> OciError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let detail = format!("{e}");
    let (registry, reference) = (registry.to_string(), reference.to_string());
    // The error codes of a registry's error envelope, if it sent one.
    let codes: &[_] = match &e {
        E::RegistryError { envelope, .. } => &envelope.errors,
        _ => &[],
    };
    let has = |wanted: &[C]| codes.iter().any(|c| wanted.contains(&c.code));
    let unauthorized = matches!(e, E::AuthenticationFailure(_) | E::UnauthorizedError { .. })
        || matches!(
            e,
            E::ServerError {
                code: 401 | 403,
                ..
            }
        )
        || has(&[C::Unauthorized, C::Denied]);
    let not_found = matches!(e, E::ImageManifestNotFoundError(_))
        || matches!(e, E::ServerError { code: 404, .. })
        || has(&[
            C::ManifestUnknown,
            C::NameUnknown,
            C::BlobUnknown,
            C::NotFound,
        ]);
    if unauthorized {
        return OciError::Unauthorized {
            registry,
            reference,
            detail,
        };
    }
    if not_found {
        return OciError::NotFound {
            registry,
            reference,
            detail,
        };
    }
    match e {
        E::RequestError(ref r) if r.is_connect() || r.is_timeout() => OciError::Unreachable {
            registry,
            reference,
            detail: format!("{e:#}: {}", error_chain(r)),
        },
        E::DigestError(_) => OciError::NotWasm { reference, detail },
        _ => OciError::Registry {
            registry,
            reference,
            detail,
        },
    }
}

/// An error and its sources, for messages that must say *why* a connection failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

impl OciClient {
    /// A client that trusts exactly `roots` (see [`trust_roots`]).
    pub fn new(credentials: Credentials, roots: &[u8]) -> Result<Self, OciError> {
        install_crypto_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            tls_certs_only: parse_roots("the trusted certificates", roots)?,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| OciError::Client(e.to_string()))?;
        Ok(OciClient {
            client,
            credentials,
        })
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        self.credentials.for_registry(reference.resolve_registry())
    }

    /// The manifest of `source` and its component layer.
    pub async fn describe(&self, source: &OciSource) -> Result<Described, OciError> {
        let r = &source.reference;
        let name = format!("oci://{}", r.whole());
        let registry = r.resolve_registry().to_string();
        let auth = self.auth(r);
        let (manifest, digest) = self
            .client
            .pull_image_manifest(r, &auth)
            .await
            .map_err(|e| classify(&registry, &name, e))?;
        let manifest_digest: Sha256Digest =
            digest.parse().map_err(|e: String| OciError::NotWasm {
                reference: name.clone(),
                detail: format!("its manifest digest is not sha256: {e}"),
            })?;
        let layer = wasm_layer(&name, &manifest)?;
        // The config is small and optional to understand: a bad one is
        // reported, not fatal (the layer's digest is what is trusted).
        let mut config_bytes = Vec::new();
        let config = match self
            .client
            .pull_blob(r, &manifest.config, &mut config_bytes)
            .await
        {
            Ok(()) => serde_json::from_slice(&config_bytes).ok(),
            Err(e) => {
                tracing::debug!(reference = %name, error = %e, "cannot read the artifact's config");
                None
            }
        };
        Ok(Described {
            manifest_digest,
            layer,
            config,
        })
    }

    /// Pull `source`'s component into `store` (at most `max` bytes), checking
    /// it against `expected` when given; returns its digest.
    pub async fn pull(
        &self,
        source: &OciSource,
        expected: Option<&Sha256Digest>,
        store: &ArtifactStore,
        max: u64,
    ) -> Result<Sha256Digest, OciError> {
        let r = &source.reference;
        let name = format!("oci://{}", r.whole());
        let registry = r.resolve_registry().to_string();
        let described = self.describe(source).await?;
        let layer_digest: Sha256Digest =
            described
                .layer
                .digest
                .parse()
                .map_err(|e: String| OciError::NotWasm {
                    reference: name.clone(),
                    detail: format!("its layer digest: {e}"),
                })?;
        if let Some(expected) = expected
            && expected != &layer_digest
        {
            return Err(OciError::Moved {
                reference: name,
                expected: expected.clone(),
                actual: layer_digest,
            });
        }
        let size = u64::try_from(described.layer.size).unwrap_or(u64::MAX);
        if size > max {
            return Err(OciError::TooLarge {
                reference: name,
                size,
                max,
            });
        }
        let store_err = |source| OciError::Store {
            reference: name.clone(),
            source,
        };
        let mut staged = store.stage(max).await.map_err(store_err)?;
        // oci-client checks the layer digest as it streams.
        self.client
            .pull_blob(r, &described.layer, &mut staged)
            .await
            .map_err(|e| {
                if staged.size() > max {
                    OciError::TooLarge {
                        reference: name.clone(),
                        size: staged.size(),
                        max,
                    }
                } else {
                    classify(&registry, &name, e)
                }
            })?;
        let digest = store
            .commit(staged, Some(&layer_digest))
            .await
            .map_err(store_err)?;
        store
            .set_manifest_layer(&described.manifest_digest, &digest)
            .map_err(store_err)?;
        Ok(digest)
    }

    /// Push `bytes` (a component `info` describes) to `reference` in the
    /// Wasm layout; returns the manifest digest to pin.
    pub async fn push(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        info: &PluginInfo,
    ) -> Result<Sha256Digest, OciError> {
        let name = format!("oci://{}", reference.whole());
        let registry = reference.resolve_registry().to_string();
        let err = |e| classify(&registry, &name, e);
        let auth = self.auth(reference);
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        let layer_digest = format!("sha256:{}", info.sha256);
        let config = WasmConfig {
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer_digest.clone()],
            component: Some(ComponentInfo {
                exports: info.exports.clone(),
                imports: info.imports.clone(),
                target: Some(format!(
                    "{}/{}@{}",
                    super::inspect::PACKAGE,
                    info.world,
                    info.wit_version
                )),
            }),
        };
        let config_bytes = serde_json::to_vec(&config).expect("the config serialises");
        let config_digest = Sha256Digest::of(&config_bytes).oci();
        let size = bytes.len() as i64;
        self.client
            .push_blob(reference, bytes, &layer_digest)
            .await
            .map_err(err)?;
        self.client
            .push_blob(reference, config_bytes.clone(), &config_digest)
            .await
            .map_err(err)?;
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.into(),
                digest: config_digest,
                size: config_bytes.len() as i64,
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.into(),
                digest: layer_digest,
                size,
                ..Default::default()
            }],
            annotations: Some(BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                format!("{}.wasm", info.name),
            )])),
            ..Default::default()
        };
        let body =
            serde_json::to_vec(&OciManifest::Image(manifest)).expect("the manifest serialises");
        let digest = Sha256Digest::of(&body);
        self.client
            .push_manifest_raw(
                reference,
                body,
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(err)?;
        Ok(digest)
    }
}

/// The one component layer of a Wasm artifact.
fn wasm_layer(name: &str, manifest: &OciImageManifest) -> Result<OciDescriptor, OciError> {
    let not_wasm = |detail: String| OciError::NotWasm {
        reference: name.to_string(),
        detail,
    };
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "its config has media type `{}`, not `{WASM_CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        )));
    }
    let layers: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
        .collect();
    match layers.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_wasm(format!(
            "it has no `{WASM_LAYER_MEDIA_TYPE}` layer (layers: {})",
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        more => Err(not_wasm(format!(
            "it has {} `{WASM_LAYER_MEDIA_TYPE}` layers; a plugin artifact has one",
            more.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials_are_found_by_registry_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(
            r#"{{"auths": {{"https://10.0.0.1:5000/v1/": {{"auth": "{auth}"}},
                           "r.example.com": {{"username": "bob", "password": "pw"}}}}}}"#
        );
        let c = Credentials::from_docker_config("cfg", json.as_bytes()).unwrap();
        assert_eq!(
            c.for_registry("10.0.0.1:5000"),
            RegistryAuth::Basic("alice".into(), "s3cret".into())
        );
        assert_eq!(
            c.for_registry("r.example.com"),
            RegistryAuth::Basic("bob".into(), "pw".into())
        );
        assert_eq!(c.for_registry("other.example.com"), RegistryAuth::Anonymous);

        let bad = Credentials::from_docker_config("cfg", br#"{"auths": {"h": {}}}"#).unwrap_err();
        assert!(bad.to_string().contains("auths.h has neither"), "{bad}");
        let not_json = Credentials::from_docker_config("cfg", b"user:pw").unwrap_err();
        assert!(
            not_json.to_string().contains("dockerconfigjson"),
            "{not_json}"
        );
    }

    #[test]
    fn only_the_wasm_layout_is_accepted() {
        let mut manifest = OciImageManifest {
            config: OciDescriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.into(),
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.into(),
                digest: "sha256:00".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(wasm_layer("x", &manifest).unwrap().digest, "sha256:00");
        manifest.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar+gzip".into();
        let e = wasm_layer("x", &manifest).unwrap_err().to_string();
        assert!(e.contains("no `application/wasm` layer"), "{e}");
        manifest.config.media_type = "application/vnd.oci.image.config.v1+json".into();
        let e = wasm_layer("x", &manifest).unwrap_err().to_string();
        assert!(e.contains("config has media type"), "{e}");
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        assert!(parse_roots("ca.pem", b"nothing").is_err());
        let two = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nAB==\n-----END CERTIFICATE-----\n";
        assert_eq!(parse_roots("ca.pem", two).unwrap().len(), 2);
    }
}
