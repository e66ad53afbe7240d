//! Host bindings generated from `wit/plugin.wit`.

/// The `storage-backend` world.
pub mod storage {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "storage-backend",
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `backup-policy` world. It shares the `types` and `log` interfaces
/// with the storage bindings.
pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "backup-policy",
        exports: { default: async },
        with: {
            "etcd-operator:plugin/types": super::storage::etcd_operator::plugin::types,
            "etcd-operator:plugin/log": super::storage::etcd_operator::plugin::log,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use storage::etcd_operator::plugin::types::{
    ObjectInfo as WitObjectInfo, PluginError as WitPluginError,
};
