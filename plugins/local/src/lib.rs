//! `local`: keeps backups as files in the one directory the operator grants.
//!
//! The host preopens the granted directory at [`ROOT`]; this plugin can see
//! nothing else. Keys map to paths below it (`a/b` → `ROOT/a/b`). An upload is
//! written to a hidden part file in [`PARTS`] and renamed into place on
//! `complete`, so a crashed or aborted upload never leaves a partial object
//! under its key. Part files are named after their key's hash, so
//! `abandon-uploads` finds the ones an upload the operator lost left behind.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use etcd_plugin_sdk::storage::{Download, Guest, GuestBackend, GuestDownload, GuestUpload, Upload};
use etcd_plugin_sdk::types::{ObjectInfo, PluginError};
use etcd_plugin_sdk::upload_cleanup;

/// Where the host mounts the granted directory inside the sandbox.
pub const ROOT: &str = "/data";
/// Directory (below [`ROOT`]) for uploads in progress; never listed.
const PARTS: &str = ".parts";

static NEXT_PART: AtomicU64 = AtomicU64::new(0);

struct Local;

impl Guest for Local {
    type Backend = Backend;
    type Upload = PartFile;
    type Download = Reader;
}

struct Backend {
    root: PathBuf,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> PluginError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        ErrorKind::NotFound => PluginError::NotFound(msg),
        ErrorKind::PermissionDenied => PluginError::Unauthorized(msg),
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            PluginError::Transient(msg)
        }
        _ => PluginError::Other(msg),
    }
}

/// How often [`dir_names`] starts a directory over before it gives up.
const DIR_READ_ATTEMPTS: usize = 20;

/// The names in `dir`, or `None` if it does not exist.
///
/// Why not iterate `read_dir` directly: in the sandbox, an entry deleted
/// while the directory is being read (another EtcdBackup's retention, an
/// upload renaming its part file) ends the iteration with `NotFound`, and
/// every entry after it is lost. Skipping that error made a listing silently
/// short. So a read that meets it starts over; one that keeps meeting it is
/// a transient error, never a short list.
fn dir_names(dir: &Path) -> Result<Option<Vec<String>>, PluginError> {
    'attempt: for _ in 0..DIR_READ_ATTEMPTS {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("cannot list", dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name().to_string_lossy().into_owned()),
                Err(e) if e.kind() == ErrorKind::NotFound => continue 'attempt,
                Err(e) => return Err(io_error("cannot list", dir, e)),
            }
        }
        return Ok(Some(names));
    }
    Err(PluginError::Transient(format!(
        "cannot list {}: its entries kept changing during {DIR_READ_ATTEMPTS} reads in a row",
        dir.display()
    )))
}

impl Backend {
    /// Map a key to a path below the root, refusing anything that could
    /// escape it or collide with the part-file directory.
    fn path_of(&self, key: &str) -> Result<PathBuf, PluginError> {
        let bad = |why: &str| PluginError::Other(format!("invalid object key `{key}`: {why}"));
        if key.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut path = self.root.clone();
        for (i, part) in key.split('/').enumerate() {
            match part {
                "" => {
                    return Err(bad(
                        "it has an empty path segment (leading, trailing or double `/`)",
                    ));
                }
                "." | ".." => return Err(bad("`.` and `..` segments are not allowed")),
                PARTS if i == 0 => return Err(bad("the `.parts` prefix is reserved")),
                _ => path.push(part),
            }
        }
        Ok(path)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        prefix: &str,
        out: &mut Vec<ObjectInfo>,
    ) -> Result<(), PluginError> {
        let Some(names) = dir_names(dir)? else {
            return Ok(());
        };
        for name in names {
            if rel.is_empty() && name == PARTS {
                continue;
            }
            let path = dir.join(&name);
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Prune directories that cannot contain a match.
            if !(key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"))) {
                continue;
            }
            // Another writer may delete a file between the directory read
            // and this stat (two EtcdBackups sharing a directory): it is
            // simply no longer there.
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("cannot stat", &path, e)),
            };
            if meta.is_dir() {
                self.walk(&path, &key, prefix, out)?;
            } else if key.starts_with(prefix) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                    last_modified_ms: modified,
                });
            }
        }
        Ok(())
    }
}

impl Backend {
    /// The granted directory. The operator mounts it at ROOT; the guest
    /// only checks that the grant is there. No config keys.
    fn granted() -> Result<Backend, PluginError> {
        let root = PathBuf::from(ROOT);
        fs::metadata(&root).map_err(|e| {
            PluginError::InvalidConfig(format!(
                "no directory is granted to this plugin (nothing at {}: {e}); the operator grants one per backup location (CLI: `plugin test --dir DIR`)",
                root.display()
            ))
        })?;
        Ok(Backend { root })
    }
}

/// The start of the names of `key`'s part files: its FNV-1a hash (stable
/// across builds, unlike std's hasher), so no key text reaches a file name.
fn part_prefix(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}-")
}

impl upload_cleanup::Guest for Local {
    /// Remove the part files of `key`'s unfinished uploads.
    fn abandon_uploads(_config: Vec<(String, String)>, key: String) -> Result<u32, PluginError> {
        let backend = Backend::granted()?;
        backend.path_of(&key)?;
        let parts = backend.root.join(PARTS);
        let Some(names) = dir_names(&parts)? else {
            return Ok(0);
        };
        let prefix = part_prefix(&key);
        let mut removed = 0;
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            let path = parts.join(name);
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                // Its upload completed or was aborted meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("cannot remove", &path, e)),
            }
        }
        Ok(removed)
    }
}

impl GuestBackend for Backend {
    fn open(
        _config: Vec<(String, String)>,
    ) -> Result<etcd_plugin_sdk::storage::Backend, PluginError> {
        let backend = Backend::granted()?;
        sweep_stale_parts(&backend.root.join(PARTS));
        Ok(etcd_plugin_sdk::storage::Backend::new(backend))
    }

    fn start_upload(&self, key: String) -> Result<Upload, PluginError> {
        let target = self.path_of(&key)?;
        let parts = self.root.join(PARTS);
        fs::create_dir_all(&parts).map_err(|e| io_error("cannot create", &parts, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let part = parts.join(format!(
            "{}{nanos}-{}",
            part_prefix(&key),
            NEXT_PART.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&part).map_err(|e| io_error("cannot create", &part, e))?;
        Ok(Upload::new(PartFile {
            state: RefCell::new(Some((file, 0))),
            part,
            target,
        }))
    }

    fn open_download(&self, key: String) -> Result<Download, PluginError> {
        let path = self.path_of(&key)?;
        let file = File::open(&path).map_err(|e| io_error("cannot open", &path, e))?;
        let size = file.metadata().ok().map(|m| m.len());
        Ok(Download::new(Reader {
            file: RefCell::new(file),
            size,
        }))
    }

    fn list_objects(&self, prefix: String) -> Result<Vec<ObjectInfo>, PluginError> {
        let mut out = Vec::new();
        self.walk(&self.root, "", &prefix, &mut out)?;
        Ok(out)
    }

    fn delete(&self, key: String) -> Result<(), PluginError> {
        let path = self.path_of(&key)?;
        fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))
    }
}

/// A part file untouched this long belongs to an upload whose sandbox was
/// discarded (a timeout or a trap runs no destructor): every live upload
/// writes at least once per plugin call timeout.
const STALE_PART: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove part files of uploads that died without `abort`.
fn sweep_stale_parts(parts: &Path) {
    let Ok(Some(names)) = dir_names(parts) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for name in names {
        let path = parts.join(name);
        let stale = fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_PART);
        if stale {
            let _ = fs::remove_file(&path);
        }
    }
}

/// An upload in progress: the open part file and the bytes written so far.
/// `None` once completed or aborted.
struct PartFile {
    state: RefCell<Option<(File, u64)>>,
    part: PathBuf,
    target: PathBuf,
}

impl PartFile {
    fn finished() -> PluginError {
        PluginError::Other("the upload was already completed or aborted".into())
    }
}

impl GuestUpload for PartFile {
    fn write(&self, chunk: Vec<u8>) -> Result<(), PluginError> {
        let mut state = self.state.borrow_mut();
        let (file, written) = state.as_mut().ok_or_else(Self::finished)?;
        write_all_at(file, &chunk, *written)
            .map_err(|e| io_error("cannot write", &self.part, e))?;
        *written += chunk.len() as u64;
        Ok(())
    }

    /// On failure the part file is removed: a failed `complete` leaves
    /// nothing behind, as an abort would.
    fn complete(&self) -> Result<u64, PluginError> {
        let (file, written) = self.state.borrow_mut().take().ok_or_else(Self::finished)?;
        let placed = (|| {
            file.sync_all()
                .map_err(|e| io_error("cannot sync", &self.part, e))?;
            drop(file);
            if let Some(parent) = self.target.parent() {
                fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
            }
            fs::rename(&self.part, &self.target)
                .map_err(|e| io_error("cannot move into place", &self.target, e))
        })();
        if placed.is_err() {
            let _ = fs::remove_file(&self.part);
        }
        placed.map(|()| written)
    }

    fn abort(&self) -> Result<(), PluginError> {
        if self.state.borrow_mut().take().is_some() {
            fs::remove_file(&self.part).map_err(|e| io_error("cannot remove", &self.part, e))?;
        }
        Ok(())
    }
}

/// Write all of `buf` at `offset`, each call one `wasi:filesystem`
/// `descriptor.write` of the whole rest (wasi-libc's `pwrite`). `std`'s
/// `write` goes through WASI's file output stream instead, which takes
/// 64 KiB per call, each a hop to a host thread: 16 per 1 MiB chunk.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        /// wasi-libc's, which every `wasm32-wasip2` program links.
        fn pwrite(fd: i32, buf: *const u8, len: usize, offset: i64) -> isize;
    }
    while !buf.is_empty() {
        let at =
            i64::try_from(offset).map_err(|_| std::io::Error::from(ErrorKind::FileTooLarge))?;
        // SAFETY: `buf` is a live slice of `buf.len()` bytes, and the
        // descriptor is `file`'s, open for the whole call.
        let n = unsafe { pwrite(file.as_raw_fd(), buf.as_ptr(), buf.len(), at) };
        match usize::try_from(n) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

impl Drop for PartFile {
    /// An upload dropped without `complete` is an abort.
    fn drop(&mut self) {
        if self.state.get_mut().take().is_some() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

struct Reader {
    file: RefCell<File>,
    size: Option<u64>,
}

impl GuestDownload for Reader {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read(&self, max: u32) -> Result<Vec<u8>, PluginError> {
        let mut buf = vec![0u8; max as usize];
        let n = self
            .file
            .borrow_mut()
            .read(&mut buf)
            .map_err(|e| PluginError::Transient(format!("read failed: {e}")))?;
        buf.truncate(n);
        Ok(buf)
    }
}

etcd_plugin_sdk::export_storage_backend!(Local);
