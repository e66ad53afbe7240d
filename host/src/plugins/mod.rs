//! The Wasm plugin host.
//!
//! Storage backends and backup-policy hooks are WebAssembly components that
//! implement the worlds of `wit/plugin.wit`. This module loads them, keeps
//! them in a sandbox and calls them:
//!
//! - [`catalog`]: plugins the admin declares by source and digest, with their limits;
//! - [`source`], [`fetch`], [`oci`], [`artifacts`]: where catalog plugins come
//!   from, fetching them pinned by digest, OCI registries, the on-disk store;
//! - [`engine`]: one wasmtime `Engine`, the epoch ticker and the linker;
//! - [`cache`]: compiled components cached on disk by content and engine;
//! - [`limits`]: memory, CPU-time and instance limits per call;
//! - [`egress`]: the outbound-HTTP allow-list;
//! - [`connect`]: sending an allowed request to the very address that was vetted;
//! - [`stdio`]: guest stdout/stderr and `log` into `tracing`;
//! - [`log_budget`]: how many of those lines one call and one operation may write;
//! - [`inspect`]: what a `.wasm` file is, without running it;
//! - [`storage`] and [`policy`]: typed handles to call each world;
//! - [`registry`]: the set of installed plugins, reloaded when it changes;
//! - [`conformance`]: the `plugin test` kit for plugin authors.
//!
//! Every operation (one backup upload, one retention pass) runs in a fresh
//! `Store`, so a trap, timeout or out-of-memory discards only that store.

pub mod artifacts;
mod bindings;
pub mod cache;
pub mod catalog;
pub mod conformance;
mod connect;
pub mod egress;
pub mod engine;
mod error;
pub mod fetch;
pub mod inspect;
pub mod limits;
pub mod log_budget;
pub mod oci;
pub mod policy;
pub mod registry;
mod sandbox;
pub mod source;
mod state;
pub mod stdio;
pub mod storage;

pub use catalog::PluginSources;
pub use egress::EgressPolicy;
pub use engine::PluginEngine;
pub use error::{GuestErrorKind, PluginError};
pub use inspect::{PluginInfo, World};
pub use limits::{Limits, PluginLimits};
pub use policy::{BackupContext, PolicyPlugin, PreBackupDecision};
pub use registry::{LoadedPlugin, PluginRegistry};
pub use storage::{Grants, ObjectInfo, StoragePlugin, StorageSession};

/// The WIT package version this operator speaks.
pub const WIT_VERSION: &str = "0.1.1";
