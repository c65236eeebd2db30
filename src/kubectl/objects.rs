//! Typed handles on one site's objects, and server-side apply with this tool's field
//! manager: running a command twice changes nothing.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{PersistentVolumeClaim, Secret},
};
use kube::{
    Api, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{Error, Site, keys};
use crate::api::{ReplicationDestination, ReplicationSource};

impl Site {
    pub fn sources(&self) -> Api<ReplicationSource> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn destinations(&self) -> Api<ReplicationDestination> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    /// VolumeSnapshots, untyped (no crate ships their types).
    pub fn snapshots(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::from_gvk(&gvk),
        )
    }

    /// Reads one object; a 404 is `None`.
    pub async fn get_opt<K>(&self, api: &Api<K>, name: &str) -> Result<Option<K>, Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        api.get_opt(name).await.map_err(|e| self.api(e))
    }

    /// Server-side applies `object` (its fields are the ones this tool owns).
    pub async fn apply<K, V>(&self, api: &Api<K>, name: &str, object: &V) -> Result<K, Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        V: Serialize + std::fmt::Debug,
    {
        api.patch(
            name,
            &PatchParams::apply(keys::FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| self.api(e))
    }

    /// A JSON merge patch (pause, resume, a manual trigger, fencing annotations).
    pub async fn merge<K>(
        &self,
        api: &Api<K>,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<K, Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| self.api(e))
    }

    /// "namespace/name in context" for messages.
    pub fn describe(&self, kind: &str, name: &str) -> String {
        format!(
            "{kind} {}/{name} (context {})",
            self.namespace, self.context
        )
    }
}

/// Copies the key Secret `key` from `from` to `to` (same name, labelled with `pair`),
/// unless both are one namespace of one cluster. The content is never shown.
pub async fn copy_key(from: &Site, to: &Site, key: &str, pair: &str) -> Result<(), Error> {
    if super::contexts::same_place(from, to) {
        return Ok(());
    }
    let secret = from.get_opt(&from.secrets(), key).await?.ok_or_else(|| {
        Error::NotReady(format!("{} is not there yet", from.describe("Secret", key)))
    })?;
    let copy = super::manifests::key_secret_copy(
        key,
        &to.namespace,
        pair,
        secret.data.unwrap_or_default(),
    );
    to.apply(&to.secrets(), key, &copy).await?;
    eprintln!("key copied to {} (not shown)", to.describe("Secret", key));
    Ok(())
}
