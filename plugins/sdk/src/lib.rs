//! Guest SDK for etcd-operator plugins.
//!
//! A plugin crate enables one feature, `storage` or `policy`, implements the
//! generated traits and calls the matching export macro:
//!
//! ```ignore
//! use etcd_plugin_sdk::storage::{Guest, GuestBackend, GuestUpload, GuestDownload};
//! struct MyPlugin;
//! impl Guest for MyPlugin { type Backend = MyBackend; type Upload = MyUpload; type Download = MyDownload; }
//! impl etcd_plugin_sdk::upload_cleanup::Guest for MyPlugin {
//!     fn abandon_uploads(config: Vec<(String, String)>, key: String) -> Result<u32, PluginError> { Ok(0) }
//! }
//! etcd_plugin_sdk::export_storage_backend!(MyPlugin);
//! ```
//!
//! The helpers in [`config`] turn the key/value configuration into typed
//! values with errors that name the key, which is what users see in status.

pub mod config;
/// opendal's HTTP transport over wasi:http.
#[cfg(feature = "objectstore")]
pub mod http;
/// Aborting the open multipart uploads of a key (S3's API, and OSS's).
#[cfg(feature = "objectstore")]
pub mod multipart;
/// A storage plugin over an opendal operator.
#[cfg(feature = "objectstore")]
pub mod objectstore;

extern crate self as etcd_plugin_sdk;

#[cfg(all(feature = "storage", feature = "policy"))]
compile_error!(
    "enable exactly one of the features `storage` or `policy`: a plugin implements one world"
);

/// Bindings for the `storage-backend-with-cleanup` world: the storage
/// interface plus `upload-cleanup`, which lets the operator have a plugin
/// discard an upload whose sandbox it lost.
#[cfg(feature = "storage")]
pub mod storage_world {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "storage-backend-with-cleanup",
        with: {
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        export_macro_name: "export_storage_backend",
        default_bindings_module: "etcd_plugin_sdk::storage_world",
        runtime_path: "etcd_plugin_sdk::__rt",
    });
}

/// Bindings for the `backup-policy` world.
#[cfg(feature = "policy")]
pub mod policy_world {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "backup-policy",
        with: {
            "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
        },
        pub_export_macro: true,
        export_macro_name: "export_backup_policy",
        default_bindings_module: "etcd_plugin_sdk::policy_world",
        runtime_path: "etcd_plugin_sdk::__rt",
    });
}

/// The shared types (errors, config, object info) as seen by a storage plugin.
#[cfg(feature = "storage")]
pub use storage_world::etcd_operator::plugin::{log, types};
#[cfg(feature = "storage")]
pub use storage_world::export_storage_backend;
/// The storage interface a storage plugin implements.
#[cfg(feature = "storage")]
pub use storage_world::exports::etcd_operator::plugin::storage;
/// The clean-up a storage plugin implements for uploads the operator lost.
#[cfg(feature = "storage")]
pub use storage_world::exports::etcd_operator::plugin::upload_cleanup;

/// The shared types (errors, config, object info) as seen by a policy plugin.
#[cfg(feature = "policy")]
pub use policy_world::etcd_operator::plugin::{log, types};
#[cfg(feature = "policy")]
pub use policy_world::export_backup_policy;
/// The policy interface a backup-policy plugin implements.
#[cfg(feature = "policy")]
pub use policy_world::exports::etcd_operator::plugin::policy;

/// Raw WASI bindings (wasi:http, wasi:io, wasi:clocks, ...).
pub use wasip2 as wasi;

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

#[cfg(any(feature = "storage", feature = "policy"))]
pub use types::PluginError;

/// Log at info level through the host.
#[cfg(any(feature = "storage", feature = "policy"))]
pub fn info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Log at warn level through the host.
#[cfg(any(feature = "storage", feature = "policy"))]
pub fn warn(message: &str) {
    log::log(log::Level::Warn, message);
}

/// Log at debug level through the host.
#[cfg(any(feature = "storage", feature = "policy"))]
pub fn debug(message: &str) {
    log::log(log::Level::Debug, message);
}
