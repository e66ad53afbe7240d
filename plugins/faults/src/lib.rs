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
//! - anything else or no `fault`: behave (every operation succeeds trivially),
//!   so the host can be shown to serve calls after a fault.

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

struct Backend {
    fail_writes: bool,
}
struct Nothing {
    fail_writes: bool,
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
            "write-fails" => Ok(etcd_plugin_sdk::storage::Backend::new(Backend {
                fail_writes: true,
            })),
            _ => Ok(etcd_plugin_sdk::storage::Backend::new(Backend {
                fail_writes: false,
            })),
        }
    }

    fn start_upload(&self, _key: String) -> Result<Upload, PluginError> {
        Ok(Upload::new(Nothing {
            fail_writes: self.fail_writes,
        }))
    }

    fn open_download(&self, key: String) -> Result<Download, PluginError> {
        Err(PluginError::NotFound(format!(
            "{key} does not exist in the faults plugin"
        )))
    }

    fn list_objects(&self, _prefix: String) -> Result<Vec<ObjectInfo>, PluginError> {
        Ok(Vec::new())
    }

    fn delete(&self, key: String) -> Result<(), PluginError> {
        Err(PluginError::NotFound(format!(
            "{key} does not exist in the faults plugin"
        )))
    }
}

impl GuestUpload for Nothing {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), PluginError> {
        if self.fail_writes {
            return Err(PluginError::Transient(
                "the faults plugin drops this write".into(),
            ));
        }
        Ok(())
    }
    fn complete(&self) -> Result<u64, PluginError> {
        Ok(0)
    }
    fn abort(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

impl GuestDownload for Nothing {
    fn size(&self) -> Option<u64> {
        Some(0)
    }
    fn read(&self, _max: u32) -> Result<Vec<u8>, PluginError> {
        Ok(Vec::new())
    }
}

etcd_plugin_sdk::export_storage_backend!(Faults);
