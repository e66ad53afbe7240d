//! Status writes, for the three kinds, with server-side apply.
//!
//! A JSON merge patch of a struct that skips empty fields can never remove
//! one: an EtcdBackup that failed and then succeeded kept the old failure
//! `reason`. Applied as the operator's field manager, the whole status is
//! what the operator says it is: a field it no longer sets is removed.
//! (A field last written by an older operator's merge patch belongs to that
//! writer and stays until this operator has set it once.)

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::members::FIELD_MANAGER;

/// Apply `status` as the status of object `name` (forcing ownership, since
/// only the operator writes status).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}
