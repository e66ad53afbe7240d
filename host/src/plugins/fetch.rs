//! Fetching a pinned plugin source: from the on-disk store when the pinned
//! digest is there (no network at all, so a registry that is down does not
//! stop a cached plugin), else from its registry or URL, streamed to disk
//! with the digest checked.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::artifacts::{ArtifactStore, StoreError};
use super::oci::{Credentials, OciClient, OciError, error_chain, trust_roots};
use super::source::{PinnedSource, Sha256Digest, Source};

/// The largest component a catalog source may deliver (the JavaScript and
/// Python engines are 12–18 MB).
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Why a source could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("cannot fetch {url}: {detail}")]
    Https {
        url: String,
        detail: String,
        retryable: bool,
    },
    #[error("{source_name}: {source}")]
    Store {
        source_name: String,
        #[source]
        source: StoreError,
    },
}

impl FetchError {
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Oci(e) => e.is_retryable(),
            FetchError::Https { retryable, .. } => *retryable,
            FetchError::Store { source, .. } => matches!(source, StoreError::Io { .. }),
        }
    }
}

/// Where fetched plugins are kept and how registries are reached.
#[derive(Debug, Clone, Default)]
pub struct FetchConfig {
    /// The store's directory.
    pub store_dir: PathBuf,
    /// A Docker `config.json` with registry credentials.
    pub registry_auth: Option<PathBuf>,
    /// PEM certificates to trust besides the system's (a private registry's CA).
    pub extra_ca: Option<PathBuf>,
}

/// Fetches pinned sources into an [`ArtifactStore`].
#[derive(Debug)]
pub struct Fetcher {
    store: ArtifactStore,
    oci: OciClient,
    http: reqwest::Client,
}

impl Fetcher {
    /// Read the credentials and CA files (errors name the file).
    pub fn new(config: &FetchConfig) -> Result<Self, OciError> {
        let credentials = match &config.registry_auth {
            Some(path) => {
                let shown = path.display().to_string();
                let bytes = std::fs::read(path).map_err(|e| OciError::Credentials {
                    path: shown.clone(),
                    detail: format!("cannot be read: {e}"),
                })?;
                Credentials::from_docker_config(&shown, &bytes)?
            }
            None => Credentials::default(),
        };
        let roots = trust_roots(config.extra_ca.as_deref())?;
        let oci = OciClient::new(credentials, &roots)?;
        let http_roots = reqwest::Certificate::from_pem_bundle(&roots)
            .map_err(|e| OciError::Client(format!("the trusted certificates: {e}")))?;
        let http = reqwest::Client::builder()
            .https_only(true)
            .tls_certs_only(http_roots)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| OciError::Client(e.to_string()))?;
        Ok(Fetcher {
            store: ArtifactStore::new(config.store_dir.clone()),
            oci,
            http,
        })
    }

    pub fn oci(&self) -> &OciClient {
        &self.oci
    }

    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    /// The digest `pinned` stands for, if known without the network.
    fn known_digest(&self, pinned: &PinnedSource) -> Option<Sha256Digest> {
        if let Some(d) = &pinned.sha256 {
            return Some(d.clone());
        }
        match &pinned.source {
            Source::Oci(o) => self.store.manifest_layer(&o.manifest_digest()?),
            Source::Https(_) => None,
        }
    }

    /// The cached component for `pinned`, if there is one.
    pub fn cached(&self, pinned: &PinnedSource) -> Option<(Sha256Digest, Vec<u8>)> {
        let digest = self.known_digest(pinned)?;
        match self.store.get(&digest) {
            Ok(Some(bytes)) => Some((digest, bytes)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(source = %pinned, error = %e, "cannot read the plugin cache");
                None
            }
        }
    }

    /// The component's bytes: cached, else fetched.
    pub async fn fetch(
        &self,
        pinned: &PinnedSource,
    ) -> Result<(Sha256Digest, Vec<u8>), FetchError> {
        if let Some(hit) = self.cached(pinned) {
            return Ok(hit);
        }
        let digest = match &pinned.source {
            Source::Oci(o) => {
                self.oci
                    .pull(o, pinned.sha256.as_ref(), &self.store, MAX_COMPONENT_BYTES)
                    .await?
            }
            Source::Https(url) => self.fetch_https(url, pinned).await?,
        };
        let store_err = |source| FetchError::Store {
            source_name: pinned.to_string(),
            source,
        };
        let bytes = self.store.get(&digest).map_err(store_err)?.ok_or_else(|| {
            store_err(StoreError::Io {
                path: self.store.dir().display().to_string(),
                source: std::io::Error::other("the download vanished from the cache"),
            })
        })?;
        Ok((digest, bytes))
    }

    async fn fetch_https(
        &self,
        url: &reqwest::Url,
        pinned: &PinnedSource,
    ) -> Result<Sha256Digest, FetchError> {
        let https = |detail: String, retryable: bool| FetchError::Https {
            url: url.to_string(),
            detail,
            retryable,
        };
        let response = self.http.get(url.clone()).send().await.map_err(|e| {
            https(
                format!("{e}: {}", error_chain(&e)),
                e.is_connect() || e.is_timeout(),
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(https(
                format!("the server answered {status}"),
                status.is_server_error() || status.as_u16() == 429,
            ));
        }
        if let Some(len) = response.content_length()
            && len > MAX_COMPONENT_BYTES
        {
            return Err(https(
                format!("it is {len} bytes, more than the {MAX_COMPONENT_BYTES} a plugin may be"),
                false,
            ));
        }
        let store_err = |source| FetchError::Store {
            source_name: url.to_string(),
            source,
        };
        let mut staged = self
            .store
            .stage(MAX_COMPONENT_BYTES)
            .await
            .map_err(store_err)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| https(format!("the download broke off: {e}"), true))?;
            staged.write_all(&chunk).await.map_err(|e| {
                if staged.size() > MAX_COMPONENT_BYTES {
                    https(
                        format!("it is more than the {MAX_COMPONENT_BYTES} bytes a plugin may be"),
                        false,
                    )
                } else {
                    store_err(StoreError::Io {
                        path: self.store.dir().display().to_string(),
                        source: e,
                    })
                }
            })?;
        }
        self.store
            .commit(staged, pinned.sha256.as_ref())
            .await
            .map_err(store_err)
    }
}
