//! Object builders for the API tests: a valid ReplicationSource or ReplicationDestination
//! as JSON, changed one field at a time, and a way to send any object to the apiserver.

use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery,
};
use serde_json::{Value, json};

/// An API object under construction, as JSON (so tests can also write wrong types).
#[derive(Clone, Debug)]
pub struct Obj(pub Value);

/// A valid ReplicationDestination that provisions its volume.
pub fn destination(name: &str) -> Obj {
    Obj(json!({
        "apiVersion": "volsync.backube/v1alpha1",
        "kind": "ReplicationDestination",
        "metadata": {"name": name},
        "spec": {"rsyncTLS": {"copyMethod": "Snapshot", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]}},
    }))
}

/// A valid ReplicationSource.
pub fn source(name: &str) -> Obj {
    Obj(json!({
        "apiVersion": "volsync.backube/v1alpha1",
        "kind": "ReplicationSource",
        "metadata": {"name": name},
        "spec": {
            "sourcePVC": "data",
            "trigger": {"schedule": "*/5 * * * *"},
            "rsyncTLS": {"address": "dest.example.com", "keySecret": "psk"},
        },
    }))
}

impl Obj {
    /// Sets the field at dotted `path` (e.g. `spec.rsyncTLS.port`), creating parents.
    pub fn set(mut self, path: &str, value: Value) -> Self {
        let mut node = &mut self.0;
        let mut keys = path.split('.').peekable();
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                node[key] = value;
                break;
            }
            node = &mut node[key];
        }
        self
    }

    /// Removes the field at dotted `path`.
    pub fn remove(mut self, path: &str) -> Self {
        let (parent, key) = path.rsplit_once('.').expect("a nested path");
        let pointer = format!("/{}", parent.replace('.', "/"));
        if let Some(Value::Object(map)) = self.0.pointer_mut(&pointer) {
            map.remove(key);
        }
        self
    }

    /// The object's kind.
    pub fn kind(&self) -> &str {
        self.0["kind"].as_str().unwrap_or_default()
    }
}

/// An `Api` for the kind of `obj` in `namespace`, found through discovery.
pub async fn api_for(client: &kube::Client, namespace: &str, obj: &Value) -> Api<DynamicObject> {
    let (group, version) = match obj["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .split_once('/')
    {
        Some((group, version)) => (group.to_string(), version.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().expect("kind"));
    let (resource, _) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovering the kind");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Creates `obj` in `namespace` (optionally as a server-side dry run).
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    obj: &Value,
    dry_run: bool,
) -> kube::Result<DynamicObject> {
    let api = api_for(client, namespace, obj).await;
    let mut obj: DynamicObject = serde_json::from_value(obj.clone()).expect("an object");
    obj.metadata.namespace = Some(namespace.to_string());
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&params, &obj).await
}
