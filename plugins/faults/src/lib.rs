//! Test-only storage plugin. `open` misbehaves as the `fault` config key says:
//!
//! - `loop`: spin forever (the host's CPU deadline must stop it);
//! - `memory`: allocate until memory runs out (the host's memory limit must stop it);
//! - `panic`: panic (a trap);
//! - `egress`: send a GET to the `url` config key through wasi:http and report
//!   the outcome as `other("egress: ...")`;
//! - `read-file`: read the `path` config key (default `/etc/passwd`); returns
//!   `not-found` if the sandbox hides it, `other("leaked ...")` if it could read it;
//! - `env`: look for any environment variable; `not-found` if there are none,
//!   `other("leaked ...")` otherwise;
//! - `unauthorized` / `invalid-config` / `transient`: fail `open` with that
//!   error kind (the host must classify permanent and retryable errors);
//! - `write-fails`: open, then fail every upload `write` with a transient
//!   error (the host must abort the upload);
//! - `write-traps`: open, then panic in the first upload `write` (the host
//!   loses the sandbox and must have `abandon-uploads` clean up in a fresh one);
//! - `wrong-size`: accept uploads but report 0 bytes stored at `complete`;
//! - `unlisted`: report every upload stored in full, but never list it (as a
//!   backend that dropped it would);
//! - `log-flood`: log `lines` messages (default 1,000,000) from `open`, half
//!   through the `log` import and half on stderr, then behave;
//! - `long-read`: every download `read` returns `read-factor` (default 16)
//!   times the bytes asked for;
//! - `endless`: every download is an endless stream of zeros of unknown size;
//! - `slow-read`: every download is endless, one KiB per `read` after
//!   `read-ms` (default 500) milliseconds;
//! - `many-objects`: `list-objects` returns `count` (default 200,000)
//!   periodic-backup keys under the prefix, and `delete` succeeds;
//! - `abandon-uploads` (the `upload-cleanup` export) logs the key it was
//!   given and reports one upload discarded (this plugin keeps nothing);
//! - anything else or no `fault`: behave (every operation succeeds trivially,
//!   and what a session uploaded it lists, with its size), so the host can be
//!   shown to serve calls after a fault.

use etcd_plugin_sdk::config::Config;
use etcd_plugin_sdk::storage::{Download, Guest, GuestBackend, GuestDownload, GuestUpload, Upload};
use etcd_plugin_sdk::types::{ObjectInfo, PluginError};
use etcd_plugin_sdk::wasi::http::{outgoing_handler, types as http};

struct Faults;

impl Guest for Faults {
    type Backend = Backend;
    type Upload = Nothing;
    type Download = Nothing;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Behave,
    WriteFails,
    WriteTraps,
    WrongSize,
    Unlisted,
    LongRead { factor: u64 },
    Endless,
    SlowRead { ms: u64 },
    ManyObjects { count: u64 },
}

/// Keys this session completed, with the bytes each was sent.
type Stored = std::rc::Rc<std::cell::RefCell<Vec<(String, u64)>>>;

struct Backend {
    mode: Mode,
    stored: Stored,
}

/// An upload (counting what it was sent) or a download.
struct Nothing {
    mode: Mode,
    key: String,
    written: std::cell::Cell<u64>,
    stored: Stored,
}

impl Nothing {
    fn new(mode: Mode) -> Self {
        Nothing {
            mode,
            key: String::new(),
            written: std::cell::Cell::new(0),
            stored: Stored::default(),
        }
    }
}

fn backend(mode: Mode) -> Result<etcd_plugin_sdk::storage::Backend, PluginError> {
    Ok(etcd_plugin_sdk::storage::Backend::new(Backend {
        mode,
        stored: Stored::default(),
    }))
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1;
        hoard.push(std::hint::black_box(block));
    }
}

fn egress(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", r)) => (http::Scheme::Https, r),
        Some((_, r)) => (http::Scheme::Http, r),
        None => (http::Scheme::Http, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = http::OutgoingRequest::new(http::Fields::new());
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    match outgoing_handler::handle(request, None) {
        Err(e) => format!("egress refused: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => format!("egress succeeded with status {}", resp.status()),
                Some(Ok(Err(e))) => format!("egress refused: {e:?}"),
                other => format!("egress failed: {other:?}"),
            }
        }
    }
}

impl GuestBackend for Backend {
    fn open(
        config: Vec<(String, String)>,
    ) -> Result<etcd_plugin_sdk::storage::Backend, PluginError> {
        let config = Config::new(config);
        match config.get("fault").unwrap_or("none") {
            "loop" => spin(),
            "memory" => exhaust_memory(),
            "panic" => panic!("the faults plugin panics on request"),
            "egress" => Err(PluginError::Other(egress(config.required("url")?))),
            "read-file" => {
                let path = config.get("path").unwrap_or("/etc/passwd");
                match std::fs::read(path) {
                    Ok(bytes) => Err(PluginError::Other(format!(
                        "leaked {} bytes of {path}",
                        bytes.len()
                    ))),
                    Err(e) => Err(PluginError::NotFound(format!("cannot read {path}: {e}"))),
                }
            }
            "env" => match std::env::vars().next() {
                Some((k, _)) => Err(PluginError::Other(format!(
                    "leaked environment variable {k}"
                ))),
                None => Err(PluginError::NotFound(
                    "no environment variables are visible".into(),
                )),
            },
            "unauthorized" => Err(PluginError::Unauthorized(
                "the faults plugin refuses these credentials".into(),
            )),
            "invalid-config" => Err(PluginError::InvalidConfig(
                "the faults plugin finds this configuration invalid".into(),
            )),
            "transient" => Err(PluginError::Transient(
                "the faults plugin's backend is temporarily unavailable".into(),
            )),
            "write-fails" => backend(Mode::WriteFails),
            "write-traps" => backend(Mode::WriteTraps),
            "wrong-size" => backend(Mode::WrongSize),
            "unlisted" => backend(Mode::Unlisted),
            "log-flood" => {
                let lines = config.u64_or("lines", 1_000_000)?;
                for i in 0..lines {
                    if i % 2 == 0 {
                        etcd_plugin_sdk::info(&format!("faults plugin log line {i}"));
                    } else {
                        eprintln!("faults plugin stderr line {i}");
                    }
                }
                backend(Mode::Behave)
            }
            "long-read" => backend(Mode::LongRead {
                factor: config.u64_or("read-factor", 16)?,
            }),
            "endless" => backend(Mode::Endless),
            "slow-read" => backend(Mode::SlowRead {
                ms: config.u64_or("read-ms", 500)?,
            }),
            "many-objects" => backend(Mode::ManyObjects {
                count: config.u64_or("count", 200_000)?,
            }),
            _ => backend(Mode::Behave),
        }
    }

    fn start_upload(&self, key: String) -> Result<Upload, PluginError> {
        Ok(Upload::new(Nothing {
            key,
            stored: self.stored.clone(),
            ..Nothing::new(self.mode)
        }))
    }

    fn open_download(&self, key: String) -> Result<Download, PluginError> {
        match self.mode {
            // Metadata objects do not exist: the backups are "of another tool".
            _ if key.ends_with(".meta.json") => Err(PluginError::NotFound(format!(
                "{key} does not exist in the faults plugin"
            ))),
            Mode::LongRead { .. } | Mode::Endless | Mode::SlowRead { .. } => {
                Ok(Download::new(Nothing::new(self.mode)))
            }
            _ => Err(PluginError::NotFound(format!(
                "{key} does not exist in the faults plugin"
            ))),
        }
    }

    fn list_objects(&self, prefix: String) -> Result<Vec<ObjectInfo>, PluginError> {
        let mut objects: Vec<ObjectInfo> = self
            .stored
            .borrow()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, size)| ObjectInfo {
                key: k.clone(),
                size: *size,
                last_modified_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            })
            .collect();
        if let Mode::ManyObjects { count } = self.mode {
            objects.extend((0..count).map(|i| ObjectInfo {
                key: format!("{prefix}_v{i}_2026-01-01-00:00:00"),
                size: 1,
                last_modified_ms: i,
            }));
        }
        Ok(objects)
    }

    fn delete(&self, key: String) -> Result<(), PluginError> {
        match self.mode {
            Mode::ManyObjects { .. } | Mode::WrongSize | Mode::Unlisted => Ok(()),
            _ if self.stored.borrow().iter().any(|(k, _)| *k == key) => {
                self.stored.borrow_mut().retain(|(k, _)| *k != key);
                Ok(())
            }
            _ => Err(PluginError::NotFound(format!(
                "{key} does not exist in the faults plugin"
            ))),
        }
    }
}

impl GuestUpload for Nothing {
    fn write(&self, chunk: Vec<u8>) -> Result<(), PluginError> {
        match self.mode {
            Mode::WriteFails => {
                return Err(PluginError::Transient(
                    "the faults plugin drops this write".into(),
                ));
            }
            Mode::WriteTraps => panic!("the faults plugin panics in an upload write"),
            _ => {}
        }
        self.written.set(self.written.get() + chunk.len() as u64);
        Ok(())
    }
    fn complete(&self) -> Result<u64, PluginError> {
        let written = self.written.get();
        match self.mode {
            Mode::WrongSize => return Ok(0),
            Mode::Unlisted => {}
            _ => self.stored.borrow_mut().push((self.key.clone(), written)),
        }
        Ok(written)
    }
    fn abort(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

impl GuestDownload for Nothing {
    fn size(&self) -> Option<u64> {
        match self.mode {
            Mode::LongRead { .. } | Mode::Endless | Mode::SlowRead { .. } => None,
            _ => Some(0),
        }
    }
    fn read(&self, max: u32) -> Result<Vec<u8>, PluginError> {
        Ok(match self.mode {
            Mode::LongRead { factor } => vec![0u8; max as usize * factor as usize],
            Mode::Endless => vec![0u8; max as usize],
            Mode::SlowRead { ms } => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                vec![0u8; 1024.min(max as usize)]
            }
            _ => Vec::new(),
        })
    }
}

impl etcd_plugin_sdk::upload_cleanup::Guest for Faults {
    fn abandon_uploads(_config: Vec<(String, String)>, key: String) -> Result<u32, PluginError> {
        etcd_plugin_sdk::info(&format!("faults plugin: abandon-uploads of `{key}`"));
        Ok(1)
    }
}

etcd_plugin_sdk::export_storage_backend!(Faults);
