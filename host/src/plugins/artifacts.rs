//! Fetched plugin components on disk, by sha256.
//!
//! `DIR/sha256/<hex>` holds a component whose bytes hash to `<hex>`; a file
//! that does not (a torn write, a disk error, a hand edit) is removed when
//! read and fetched again. `DIR/manifests/<hex>` records which component an
//! OCI manifest digest points to, so a source pinned by manifest digest
//! serves from disk while its registry is down.
//!
//! Downloads stream into a temporary file next to their final place, hashed
//! and counted as they arrive, and are renamed into place only once the
//! digest matches: memory does not grow with the component, and a partial or
//! wrong download is never seen as cached.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::Digest as _;
use tokio::io::AsyncWrite;

use super::source::Sha256Digest;

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

/// A failure of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the plugin cache {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the download is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error(
        "the download has sha256 {actual}, not the pinned {expected}: the source serves other bytes than \
         the catalog's `sha256` names; pin the digest the publisher gives (`etcd-operator plugin inspect` \
         prints it)"
    )]
    Mismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ArtifactStore {
    pub fn new(dir: PathBuf) -> Self {
        ArtifactStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    fn manifest_path(&self, manifest: &Sha256Digest) -> PathBuf {
        self.dir.join("manifests").join(manifest.hex())
    }

    /// The component `digest`, if stored and intact.
    pub fn get(&self, digest: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if &Sha256Digest::of(&bytes) != digest {
            tracing::warn!(path = %path.display(), "cached plugin does not match its digest; fetching it again");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Which component the OCI manifest `manifest` pointed to when it was pulled.
    pub fn manifest_layer(&self, manifest: &Sha256Digest) -> Option<Sha256Digest> {
        std::fs::read_to_string(self.manifest_path(manifest))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Remember that `manifest` points to the component `layer`.
    pub fn set_manifest_layer(
        &self,
        manifest: &Sha256Digest,
        layer: &Sha256Digest,
    ) -> Result<(), StoreError> {
        let path = self.manifest_path(manifest);
        write_atomically(&path, layer.hex().as_bytes())
    }

    /// A temporary file to stream a download of at most `max` bytes into.
    pub async fn stage(&self, max: u64) -> Result<Staged, StoreError> {
        let dir = self.dir.join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        let path = dir.join(format!(
            ".download-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_err(&path))?;
        Ok(Staged {
            file: Some(file),
            path,
            hasher: sha2::Sha256::new(),
            size: 0,
            max,
            committed: false,
        })
    }

    /// Move a finished download into place if it hashes to `expected` (when
    /// given); returns its digest.
    pub async fn commit(
        &self,
        mut staged: Staged,
        expected: Option<&Sha256Digest>,
    ) -> Result<Sha256Digest, StoreError> {
        if staged.size > staged.max {
            return Err(StoreError::TooLarge { max: staged.max });
        }
        let file = staged.file.take().expect("a staged download has its file");
        file.sync_all().await.map_err(io_err(&staged.path))?;
        drop(file);
        let actual = Sha256Digest::from_hasher(std::mem::take(&mut staged.hasher));
        if let Some(expected) = expected
            && expected != &actual
        {
            return Err(StoreError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blob_path(&actual);
        tokio::fs::rename(&staged.path, &target)
            .await
            .map_err(io_err(&target))?;
        staged.committed = true;
        Ok(actual)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store paths have a parent");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A download in progress: an `AsyncWrite` that hashes, counts and refuses
/// to grow past its limit. Removed on drop unless committed.
pub struct Staged {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
    max: u64,
    committed: bool,
}

impl Staged {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncWrite for Staged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.size + buf.len() as u64 > this.max {
            this.size += buf.len() as u64;
            return Poll::Ready(Err(io::Error::other(format!(
                "the download is larger than {} bytes",
                this.max
            ))));
        }
        let file = this.file.as_mut().expect("a staged download has its file");
        match Pin::new(file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.size += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let file = self.file.as_mut().expect("a staged download has its file");
        Pin::new(file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let file = self.file.as_mut().expect("a staged download has its file");
        Pin::new(file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_download_is_kept_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path().to_path_buf());
        let bytes = b"\0asm component bytes".to_vec();
        let digest = Sha256Digest::of(&bytes);

        let mut staged = store.stage(1 << 20).await.unwrap();
        staged.write_all(&bytes).await.unwrap();
        let wrong = Sha256Digest::of(b"other");
        let err = store.commit(staged, Some(&wrong)).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert_eq!(store.get(&digest).unwrap(), None);

        let mut staged = store.stage(1 << 20).await.unwrap();
        staged.write_all(&bytes).await.unwrap();
        assert_eq!(store.commit(staged, Some(&digest)).await.unwrap(), digest);
        assert_eq!(store.get(&digest).unwrap(), Some(bytes));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(digest.hex())]);

        // A corrupted file is not served.
        std::fs::write(dir.path().join("sha256").join(digest.hex()), b"torn").unwrap();
        assert_eq!(store.get(&digest).unwrap(), None);
    }

    #[tokio::test]
    async fn a_download_past_its_limit_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path().to_path_buf());
        let mut staged = store.stage(10).await.unwrap();
        assert!(staged.write_all(&[0u8; 11]).await.is_err());
        drop(staged);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}
