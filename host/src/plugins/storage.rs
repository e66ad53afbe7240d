//! Calling storage plugins: one [`StorageSession`] per operation.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wasmtime::component::{Component, ComponentExportIndex, ResourceAny};

use super::bindings::WitPluginError;
use super::bindings::storage::{StorageBackend, StorageBackendPre};
use super::egress::EgressPolicy;
use super::engine::{PluginEngine, Pool};
use super::inspect::PluginInfo;
use super::inspect::{PACKAGE, UPLOAD_CLEANUP};
use super::limits::Limits;
use super::sandbox::{Sandbox, guest_call};
use super::state::HostState;
use super::{PluginError, WIT_VERSION};

/// Size of the chunks the host moves through a plugin. Memory use of a
/// transfer is bounded by a few of these, whatever the object size.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Capabilities granted to one session, decided by the operator from the
/// resource's spec: where HTTP may go, and (for the local plugin only) the
/// one directory it may use.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub egress: Arc<EgressPolicy>,
    pub dir: Option<PathBuf>,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch; 0 when the backend does not say.
    pub last_modified_ms: u64,
}

/// The result of a streamed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub size: u64,
    /// Lower-case hex sha256 of the bytes moved.
    pub sha256: String,
}

/// A loaded storage plugin, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct StoragePlugin {
    name: Arc<str>,
    engine: PluginEngine,
    pre: StorageBackendPre<HostState>,
    info: Arc<PluginInfo>,
    limits: Arc<Limits>,
    /// `upload-cleanup.abandon-uploads`, for plugins that export it.
    cleanup: Option<ComponentExportIndex>,
}

/// `abandon-uploads(config, key) -> result<u32, plugin-error>`.
type AbandonUploads =
    wasmtime::component::TypedFunc<(Vec<(String, String)>, String), (Result<u32, WitPluginError>,)>;

impl std::fmt::Debug for StoragePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoragePlugin")
            .field("name", &self.name)
            .field("sha256", &self.info.sha256)
            .finish()
    }
}

impl StoragePlugin {
    /// Link a compiled component against the host (fails if it imports
    /// anything the host does not provide).
    pub fn new(
        engine: &PluginEngine,
        component: &Component,
        info: PluginInfo,
    ) -> Result<Self, PluginError> {
        let pre = engine.link(component, &info, StorageBackendPre::new)?;
        // Looked up by the host's version; wasmtime matches any 0.1.x export.
        let cleanup = component
            .get_export_index(None, format!("{PACKAGE}/{UPLOAD_CLEANUP}@{WIT_VERSION}"))
            .and_then(|iface| component.get_export_index(Some(&iface), "abandon-uploads"));
        Ok(StoragePlugin {
            name: info.name.as_str().into(),
            engine: engine.clone(),
            pre,
            info: Arc::new(info),
            limits: Arc::new(engine.limits().clone()),
            cleanup,
        })
    }

    /// A fresh sandbox for one operation under these grants.
    async fn sandbox(&self, grants: &Grants) -> Result<Sandbox, PluginError> {
        Sandbox::new(
            &self.engine,
            Pool::Storage,
            self.name.clone(),
            self.limits.clone(),
            grants.egress.clone(),
            grants.dir.as_deref(),
        )
        .await
    }

    /// Whether the plugin can discard an upload the operator lost.
    pub fn cleans_up_uploads(&self) -> bool {
        self.cleanup.is_some()
    }

    /// Have the plugin discard what unfinished uploads of `key` left at the
    /// backend, in a sandbox of its own; `None` when the plugin does not
    /// export `upload-cleanup`. Sessions call this themselves when they lose
    /// an upload; this entry point is for the conformance kit.
    pub async fn abandon_uploads(
        &self,
        config: &[(String, String)],
        grants: &Grants,
        key: &str,
    ) -> Result<Option<u32>, PluginError> {
        let Some(export) = self.cleanup else {
            return Ok(None);
        };
        let mut sandbox = self.sandbox(grants).await?;
        abandon_in(&mut sandbox, self, export, config, key)
            .await
            .map(Some)
    }

    /// The same plugin under its own limits instead of the engine's.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Start an operation: a fresh sandbox, instantiated, `open`ed with `config`.
    pub async fn open(
        &self,
        config: &[(String, String)],
        grants: &Grants,
    ) -> Result<StorageSession, PluginError> {
        let mut sandbox = self.sandbox(grants).await?;
        let pre = &self.pre;
        let bindings: StorageBackend = guest_call!(&mut sandbox, "instantiate", |store| async {
            pre.instantiate_async(store).await.map(Ok)
        })?;
        let backend = guest_call!(&mut sandbox, "open", |store| bindings
            .etcd_operator_plugin_storage()
            .backend()
            .call_open(store, &config.to_vec()))?;
        Ok(StorageSession {
            sandbox,
            bindings,
            backend,
            plugin: self.clone(),
            config: config.to_vec(),
        })
    }
}

/// An upload in progress inside a session.
pub struct Upload {
    resource: ResourceAny,
    key: String,
}
/// A download in progress inside a session.
pub struct Download(ResourceAny);

/// One open connection to a storage location, in its own sandbox.
pub struct StorageSession {
    sandbox: Sandbox,
    bindings: StorageBackend,
    backend: ResourceAny,
    /// What the session was opened from, to clean up a lost upload.
    plugin: StoragePlugin,
    config: Vec<(String, String)>,
}

impl StorageSession {
    pub fn plugin(&self) -> &str {
        self.sandbox.plugin()
    }

    pub async fn start_upload(&mut self, key: &str) -> Result<Upload, PluginError> {
        let (b, backend) = (&self.bindings, self.backend);
        guest_call!(&mut self.sandbox, "start-upload", |store| b
            .etcd_operator_plugin_storage()
            .backend()
            .call_start_upload(store, backend, key))
        .map(|resource| Upload {
            resource,
            key: key.to_string(),
        })
    }

    pub async fn write(&mut self, upload: &Upload, chunk: &[u8]) -> Result<(), PluginError> {
        let b = &self.bindings;
        guest_call!(&mut self.sandbox, "write", |store| b
            .etcd_operator_plugin_storage()
            .upload()
            .call_write(store, upload.resource, chunk))
    }

    /// Make the upload visible. If the sandbox is lost on the way, the
    /// plugin is asked to discard what the upload left at the backend.
    pub async fn complete(&mut self, upload: Upload) -> Result<u64, PluginError> {
        let b = &self.bindings;
        let completed = guest_call!(&mut self.sandbox, "complete", |store| b
            .etcd_operator_plugin_storage()
            .upload()
            .call_complete(store, upload.resource));
        match completed {
            Ok(size) => {
                self.release(upload.resource).await;
                Ok(size)
            }
            Err(e) => {
                if self.sandbox.is_discarded() {
                    self.clean_up_lost_upload(&upload.key).await;
                }
                Err(e)
            }
        }
    }

    /// Discard the upload. When its sandbox was lost to a trap or a timeout
    /// (before or during this call) `abort` cannot reach it, so the plugin's
    /// `abandon-uploads` runs in a fresh sandbox instead.
    pub async fn abort(&mut self, upload: Upload) -> Result<(), PluginError> {
        if self.sandbox.is_discarded() {
            self.clean_up_lost_upload(&upload.key).await;
            return Err(PluginError::Discarded {
                plugin: self.plugin().to_string(),
            });
        }
        let b = &self.bindings;
        let aborted = guest_call!(&mut self.sandbox, "abort", |store| b
            .etcd_operator_plugin_storage()
            .upload()
            .call_abort(store, upload.resource));
        match aborted {
            Ok(()) => {
                self.release(upload.resource).await;
                Ok(())
            }
            Err(e) => {
                if self.sandbox.is_discarded() {
                    self.clean_up_lost_upload(&upload.key).await;
                }
                Err(e)
            }
        }
    }

    /// Have the plugin discard what a lost upload of `key` left at the
    /// backend: `abandon-uploads`, once, in a fresh store on this session's
    /// slot, under the plugin's call limits. The outcome is logged; the
    /// session stays unusable (its backend lived in the lost store).
    async fn clean_up_lost_upload(&mut self, key: &str) {
        let plugin = self.plugin().to_string();
        let Some(export) = self.plugin.cleanup else {
            tracing::warn!(
                plugin,
                key,
                "the plugin's sandbox was lost during an upload and the plugin does not export \
                 upload-cleanup (WIT 0.1.1), so whatever the upload sent stays at the backend until \
                 it expires there (for S3, an AbortIncompleteMultipartUpload lifecycle rule); rebuild \
                 the plugin for the storage-backend-with-cleanup world"
            );
            return;
        };
        let outcome = self.abandon_uploads(export, key).await;
        self.sandbox.discard();
        match outcome {
            Ok(n) => tracing::info!(
                plugin,
                key,
                discarded = n,
                "the plugin's sandbox was lost during an upload; the plugin discarded {n} unfinished upload(s) of the key"
            ),
            Err(e) => tracing::warn!(
                plugin,
                key,
                error = %e,
                "the plugin's sandbox was lost during an upload, and cleaning up after it failed: \
                 what the upload sent may remain at the backend"
            ),
        }
    }

    async fn abandon_uploads(
        &mut self,
        export: ComponentExportIndex,
        key: &str,
    ) -> Result<u32, PluginError> {
        self.sandbox.renew(&self.plugin.engine)?;
        abandon_in(&mut self.sandbox, &self.plugin, export, &self.config, key).await
    }

    pub async fn open_download(&mut self, key: &str) -> Result<Download, PluginError> {
        let (b, backend) = (&self.bindings, self.backend);
        guest_call!(&mut self.sandbox, "open-download", |store| b
            .etcd_operator_plugin_storage()
            .backend()
            .call_open_download(store, backend, key))
        .map(Download)
    }

    pub async fn size(&mut self, download: &Download) -> Result<Option<u64>, PluginError> {
        let b = &self.bindings;
        guest_call!(&mut self.sandbox, "size", |store| async {
            b.etcd_operator_plugin_storage()
                .download()
                .call_size(store, download.0)
                .await
                .map(Ok)
        })
    }

    /// Read up to `max` bytes; empty means the end of the object. A plugin
    /// returning more than `max` breaks the contract (the host sized its
    /// buffers and its bounds by `max`): the read fails.
    pub async fn read(&mut self, download: &Download, max: u32) -> Result<Vec<u8>, PluginError> {
        let b = &self.bindings;
        let chunk = guest_call!(&mut self.sandbox, "read", |store| b
            .etcd_operator_plugin_storage()
            .download()
            .call_read(store, download.0, max))?;
        if chunk.len() > max as usize {
            return Err(PluginError::Contract {
                plugin: self.plugin().to_string(),
                operation: "read",
                message: format!("returned {} bytes for a read of at most {max}", chunk.len()),
            });
        }
        Ok(chunk)
    }

    pub async fn close_download(&mut self, download: Download) {
        self.release(download.0).await;
    }

    pub async fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, PluginError> {
        let (b, backend) = (&self.bindings, self.backend);
        let items = guest_call!(&mut self.sandbox, "list-objects", |store| b
            .etcd_operator_plugin_storage()
            .backend()
            .call_list_objects(store, backend, prefix))?;
        Ok(items
            .into_iter()
            .map(|o| ObjectInfo {
                key: o.key,
                size: o.size,
                last_modified_ms: o.last_modified_ms,
            })
            .collect())
    }

    pub async fn delete(&mut self, key: &str) -> Result<(), PluginError> {
        let (b, backend) = (&self.bindings, self.backend);
        guest_call!(&mut self.sandbox, "delete", |store| b
            .etcd_operator_plugin_storage()
            .backend()
            .call_delete(store, backend, key))
    }

    /// Drop a guest resource (runs its destructor). Failures are only logged:
    /// the whole store is dropped at the end of the session anyway.
    async fn release(&mut self, resource: ResourceAny) {
        if self.sandbox.arm().is_err() {
            return;
        }
        if let Err(e) = resource.resource_drop_async(&mut self.sandbox.store).await {
            tracing::debug!(plugin = self.plugin(), error = %e, "dropping a plugin resource failed");
        }
    }

    /// Stream everything from `reader` into a new object `key` in chunks of
    /// [`CHUNK_SIZE`], hashing as it goes. On any failure, of the reader or
    /// the plugin, the upload is aborted so no partial object remains.
    pub async fn upload_from<R: AsyncRead + Unpin>(
        &mut self,
        key: &str,
        mut reader: R,
    ) -> Result<Transfer, UploadError> {
        let upload = self.start_upload(key).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let result: Result<(), UploadError> = async {
            loop {
                let n = read_full(&mut reader, &mut buf)
                    .await
                    .map_err(UploadError::Source)?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                self.write(&upload, &buf[..n]).await?;
            }
        }
        .await;
        if let Err(e) = result {
            if let Err(abort) = self.abort(upload).await {
                tracing::warn!(plugin = self.plugin(), key, error = %abort, "aborting a failed upload also failed");
            }
            return Err(e);
        }
        let stored = self.complete(upload).await?;
        if stored != size {
            return Err(UploadError::Plugin(PluginError::Contract {
                plugin: self.plugin().to_string(),
                operation: "complete",
                message: format!("reports {stored} bytes stored but {size} were written"),
            }));
        }
        Ok(Transfer {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Stream the object `key` into `writer`, hashing as it goes.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &mut self,
        key: &str,
        mut writer: W,
    ) -> Result<Transfer, UploadError> {
        let download = self.open_download(key).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let chunk = self.read(&download, CHUNK_SIZE as u32).await?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            size += chunk.len() as u64;
            writer
                .write_all(&chunk)
                .await
                .map_err(UploadError::Source)?;
        }
        writer.flush().await.map_err(UploadError::Source)?;
        self.close_download(download).await;
        Ok(Transfer {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

/// Instantiate `plugin` in `sandbox` and call its `abandon-uploads`.
async fn abandon_in(
    sandbox: &mut Sandbox,
    plugin: &StoragePlugin,
    export: ComponentExportIndex,
    config: &[(String, String)],
    key: &str,
) -> Result<u32, PluginError> {
    let pre = plugin.pre.instance_pre();
    let instance = guest_call!(sandbox, "instantiate", |store| async {
        pre.instantiate_async(store).await.map(Ok)
    })?;
    let func: AbandonUploads = instance
        .get_typed_func(&mut sandbox.store, export)
        .map_err(|e| PluginError::Contract {
            plugin: plugin.name().to_string(),
            operation: "abandon-uploads",
            message: format!("its upload-cleanup export does not match WIT {WIT_VERSION}: {e:#}"),
        })?;
    let args = (config.to_vec(), key.to_string());
    guest_call!(sandbox, "abandon-uploads", |store| async {
        func.call_async(store, args).await.map(|(r,)| r)
    })
}

/// A streamed transfer failed on the plugin side or on the local side.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("reading or writing the local side of the transfer failed: {0}")]
    Source(std::io::Error),
}

/// Fill `buf` as far as the reader allows (short reads are merged so the
/// plugin sees few, large writes).
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
