//! Member runtimes: where etcd members actually run.

pub mod binaries;
pub mod local;

pub use local::LocalRuntime;
