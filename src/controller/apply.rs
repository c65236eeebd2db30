//! Server-side apply with ferrosync's single field manager, and status writes.

use std::fmt::Debug;

use kube::{
    Api, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::context::FIELD_MANAGER;

/// Applies `obj` (server-side apply, forced: ferrosync owns what it builds).
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Creates `obj` unless an object of that name exists; returns whichever is stored. Used
/// where an existing object must never be overwritten, such as a key Secret.
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<(K, bool), kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Ok((created, true)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok((api.get(&name).await?, false)),
        Err(err) => Err(err),
    }
}

/// Applies `status` to the status subresource of `name`.
/// Returns the stored object, whose resourceVersion the pipeline remembers.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
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
