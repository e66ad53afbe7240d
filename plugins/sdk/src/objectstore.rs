//! A complete storage plugin over an opendal [`Operator`]: a cloud plugin
//! only says how its configuration becomes an operator ([`Connect`]).
//!
//! - uploads stream through an opendal writer in parts of [`PART_SIZE`]
//!   (multipart where the service has it), so memory stays at about one part
//!   whatever the object size; `abort` (or dropping the upload) aborts the
//!   multipart upload so no partial object appears, and after a lost
//!   sandbox [`Connect::abandon_uploads`] does;
//! - downloads stream the object's body and hand it out in the sizes the
//!   host asks for;
//! - errors are mapped onto the WIT variant: missing objects and buckets →
//!   `not-found`, refused credentials → `unauthorized`, bad configuration →
//!   `invalid-config`, network trouble, throttling and 5xx → `transient`.

use std::cell::RefCell;
use std::marker::PhantomData;

use bytes::Bytes;
use futures::StreamExt;
use opendal::{
    Buffer, ErrorKind, FuturesBytesStream, HttpTransporter, OperationContext, Operator, Writer,
};

use crate::config::Config;
use crate::http::{WasiHttp, block_on};
use crate::storage::{Download, GuestBackend, GuestDownload, GuestUpload, Upload};
use crate::types::{ObjectInfo, PluginError};

/// Size of one uploaded part (S3 needs at least 5 MiB for all but the last).
pub const PART_SIZE: usize = 8 << 20;

/// How a plugin turns its configuration into an operator.
pub trait Connect: 'static {
    /// Build the operator (without a transport: [`ObjectBackend`] installs
    /// the `wasi:http` one) and a description of the location for messages,
    /// e.g. `bucket etcd-backups`.
    fn connect(config: &Config) -> Result<(Operator, String), PluginError>;

    /// Create new objects with a create-only (`if-not-exists`) write. For
    /// GCS this selects resumable uploads, Google's method for large
    /// objects; existing keys are still overwritten with a plain write.
    const CREATE_ONLY_FOR_NEW: bool = false;

    /// The service signs requests with SigV4 over the query as decoded and
    /// re-encoded: send the query in exactly that encoding (S3).
    const SIGNED_QUERY: bool = false;

    /// Discard what unfinished uploads of exactly `key` left at the service
    /// (WIT `upload-cleanup`): the operator calls it after losing an
    /// upload's sandbox. Return how many were discarded.
    fn abandon_uploads(config: &Config, key: &str) -> Result<u32, PluginError>;
}

/// Every opendal plugin cleans up through its [`Connect`].
impl<C: Connect> crate::upload_cleanup::Guest for C {
    fn abandon_uploads(config: Vec<(String, String)>, key: String) -> Result<u32, PluginError> {
        <C as Connect>::abandon_uploads(&Config::new(config), &key)
    }
}

/// Map an opendal error onto the WIT variant, naming `location`.
pub fn map_error(e: opendal::Error, location: &str) -> PluginError {
    let message = format!("{location}: {e}");
    match e.kind() {
        ErrorKind::NotFound => PluginError::NotFound(message),
        ErrorKind::PermissionDenied => PluginError::Unauthorized(message),
        ErrorKind::ConfigInvalid => PluginError::InvalidConfig(message),
        ErrorKind::RateLimited => PluginError::Transient(message),
        _ if e.is_temporary() => PluginError::Transient(message),
        _ => PluginError::Other(message),
    }
}

/// The backend of a storage plugin built on opendal.
pub struct ObjectBackend<C> {
    op: Operator,
    location: String,
    _connect: PhantomData<C>,
}

impl<C: Connect> ObjectBackend<C> {
    fn err(&self, key: &str) -> impl Fn(opendal::Error) -> PluginError + '_ {
        let location = format!("{} key `{key}`", self.location);
        move |e| map_error(e, &location)
    }
}

impl<C: Connect> GuestBackend for ObjectBackend<C> {
    fn open(config: Vec<(String, String)>) -> Result<crate::storage::Backend, PluginError> {
        let config = Config::new(config);
        let (op, location) = C::connect(&config)?;
        let op = op.with_context(OperationContext::new().with_http_transport(
            HttpTransporter::new(WasiHttp {
                signed_query: C::SIGNED_QUERY,
            }),
        ));
        Ok(crate::storage::Backend::new(ObjectBackend::<C> {
            op,
            location,
            _connect: PhantomData,
        }))
    }

    fn start_upload(&self, key: String) -> Result<Upload, PluginError> {
        let create_only =
            C::CREATE_ONLY_FOR_NEW && !block_on(self.op.exists(&key)).map_err(self.err(&key))?;
        // Snapshots are binary; some stores reject or mangle objects
        // without a content type.
        let writer = block_on(
            self.op
                .writer_with(&key)
                .chunk(PART_SIZE)
                .content_type("application/octet-stream")
                .if_not_exists(create_only),
        )
        .map_err(self.err(&key))?;
        Ok(Upload::new(ObjectUpload {
            state: RefCell::new(Some((writer, 0))),
            location: format!("{} key `{key}`", self.location),
        }))
    }

    fn open_download(&self, key: String) -> Result<Download, PluginError> {
        let meta = block_on(self.op.stat(&key)).map_err(self.err(&key))?;
        let size = meta.content_length();
        let stream = block_on(async {
            self.op
                .reader_with(&key)
                .chunk(PART_SIZE)
                .await?
                .into_bytes_stream(0..size)
                .await
        })
        .map_err(self.err(&key))?;
        Ok(Download::new(ObjectDownload {
            stream: RefCell::new(stream),
            pending: RefCell::new(Bytes::new()),
            size,
            location: format!("{} key `{key}`", self.location),
        }))
    }

    fn list_objects(&self, prefix: String) -> Result<Vec<ObjectInfo>, PluginError> {
        // List the directory holding the prefix, recursively, and filter:
        // object stores have no directories, only key prefixes.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let entries = block_on(self.op.list_with(dir).recursive(true))
            .map_err(|e| map_error(e, &format!("{} prefix `{prefix}`", self.location)))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && e.path().starts_with(prefix.as_str()))
            .map(|e| ObjectInfo {
                key: e.path().to_string(),
                size: e.metadata().content_length(),
                last_modified_ms: e
                    .metadata()
                    .last_modified()
                    .map(|t| t.into_inner().as_millisecond().max(0) as u64)
                    .unwrap_or(0),
            })
            .collect())
    }

    fn delete(&self, key: String) -> Result<(), PluginError> {
        // Object stores delete idempotently; the contract says a missing
        // key is `not-found`, so look first.
        block_on(self.op.stat(&key)).map_err(self.err(&key))?;
        block_on(self.op.delete(&key)).map_err(self.err(&key))
    }
}

/// An upload in progress; `None` once completed or aborted.
pub struct ObjectUpload {
    state: RefCell<Option<(Writer, u64)>>,
    location: String,
}

impl ObjectUpload {
    fn finished() -> PluginError {
        PluginError::Other("the upload was already completed or aborted".into())
    }
}

impl GuestUpload for ObjectUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), PluginError> {
        let mut state = self.state.borrow_mut();
        let (writer, written) = state.as_mut().ok_or_else(Self::finished)?;
        let n = chunk.len() as u64;
        block_on(writer.write(Buffer::from(Bytes::from(chunk))))
            .map_err(|e| map_error(e, &self.location))?;
        *written += n;
        Ok(())
    }

    fn complete(&self) -> Result<u64, PluginError> {
        let (mut writer, written) = self.state.borrow_mut().take().ok_or_else(Self::finished)?;
        if let Err(e) = block_on(writer.close()) {
            let _ = block_on(writer.abort());
            return Err(map_error(e, &self.location));
        }
        Ok(written)
    }

    fn abort(&self) -> Result<(), PluginError> {
        if let Some((mut writer, _)) = self.state.borrow_mut().take() {
            block_on(writer.abort()).map_err(|e| map_error(e, &self.location))?;
        }
        Ok(())
    }
}

impl Drop for ObjectUpload {
    /// An upload dropped without `complete` is an abort.
    fn drop(&mut self) {
        if let Some((mut writer, _)) = self.state.get_mut().take() {
            let _ = block_on(writer.abort());
        }
    }
}

/// A download in progress: the body stream, and what is left of the last
/// piece it produced.
pub struct ObjectDownload {
    stream: RefCell<FuturesBytesStream>,
    pending: RefCell<Bytes>,
    size: u64,
    location: String,
}

impl GuestDownload for ObjectDownload {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read(&self, max: u32) -> Result<Vec<u8>, PluginError> {
        let max = max.max(1) as usize;
        let mut out = Vec::with_capacity(max.min(PART_SIZE));
        let mut pending = self.pending.borrow_mut();
        while out.len() < max {
            if pending.is_empty() {
                match block_on(self.stream.borrow_mut().next()) {
                    Some(Ok(bytes)) => *pending = bytes,
                    Some(Err(e)) => {
                        return Err(PluginError::Transient(format!(
                            "{}: reading failed: {e}",
                            self.location
                        )));
                    }
                    None => break,
                }
            }
            let take = pending.len().min(max - out.len());
            out.extend_from_slice(&pending.split_to(take));
        }
        Ok(out)
    }
}
