//! The plugin host, exercised with real components built from plugins/.

#[path = "../common/mod.rs"]
mod common;

mod abs;
mod cli;
mod examples;
mod gcs;
mod local;
mod oci;
mod oss;
mod policy;
mod registry;
mod s3;
mod sandbox;
