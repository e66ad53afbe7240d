//! etcd-operator: creates, heals, scales, upgrades, backs up and restores
//! etcd clusters. Storage backends and backup policies are WebAssembly
//! components loaded at runtime ([`plugins`]); the resources are the CoreOS
//! `etcd.database.coreos.com/v1beta2` kinds ([`api`]).

pub mod api;
pub mod backup;
pub mod controller;
pub mod etcd;
pub mod failpoints;
pub mod kubernetes;
pub mod local;
pub mod metrics;
pub mod plugins;
pub mod runtime;
pub mod supervise;
