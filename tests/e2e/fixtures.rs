//! Builders for the objects the end-to-end tests create, and the waits they share.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{TestNamespace, sim::Cluster, wait};

/// How long a test waits for the cluster to converge on one step.
pub const STEP: Duration = Duration::from_secs(60);

/// A pod with one container named `main`.
pub struct PodBuilder(Value);

/// A pod named `name` running `image` with `command`, never restarted.
pub fn pod(name: &str, image: &str, command: &[&str]) -> PodBuilder {
    PodBuilder(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "command": command}],
        },
    }))
}

impl PodBuilder {
    /// Pod-level runAsUser/runAsGroup/fsGroup.
    pub fn run_as(mut self, uid: i64, gid: i64, fs_group: i64) -> Self {
        self.0["spec"]["securityContext"] =
            json!({"runAsUser": uid, "runAsGroup": gid, "fsGroup": fs_group});
        self
    }

    /// Container securityContext.
    pub fn container_security(mut self, ctx: Value) -> Self {
        self.0["spec"]["containers"][0]["securityContext"] = ctx;
        self
    }

    /// Adds an environment variable with a downward-API field.
    pub fn env_field(mut self, name: &str, path: &str) -> Self {
        let env = self.0["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut env = env;
        env.push(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}));
        self.0["spec"]["containers"][0]["env"] = json!(env);
        self
    }

    /// Mounts PVC `claim` at `path`.
    pub fn pvc(self, claim: &str, path: &str) -> Self {
        self.volume(
            json!({"name": claim, "persistentVolumeClaim": {"claimName": claim}}),
            path,
        )
    }

    /// Mounts Secret `secret` at `path` with `mode`.
    pub fn secret(self, secret: &str, path: &str, mode: i32) -> Self {
        self.volume(
            json!({"name": secret, "secret": {"secretName": secret, "defaultMode": mode}}),
            path,
        )
    }

    /// Mounts a memory emptyDir at `path`.
    pub fn memory_dir(self, name: &str, path: &str) -> Self {
        self.volume(
            json!({"name": name, "emptyDir": {"medium": "Memory"}}),
            path,
        )
    }

    fn volume(mut self, volume: Value, path: &str) -> Self {
        let name = volume["name"].clone();
        let mut volumes = self.0["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        volumes.push(volume);
        self.0["spec"]["volumes"] = json!(volumes);
        let c = &mut self.0["spec"]["containers"][0];
        let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
        mounts.push(json!({"name": name, "mountPath": path}));
        c["volumeMounts"] = json!(mounts);
        self
    }

    /// Creates it in `ns`.
    pub async fn create(self, ns: &TestNamespace) -> Pod {
        let pod: Pod = serde_json::from_value(self.0).expect("pod fixture");
        ns.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .expect("creating pod")
    }
}

/// A PVC.
pub struct PvcBuilder(Value);

/// A ReadWriteOnce PVC named `name` of 1Gi in the default class.
pub fn pvc(name: &str) -> PvcBuilder {
    PvcBuilder(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
}

impl PvcBuilder {
    /// With these access modes.
    pub fn access_modes(mut self, modes: &[&str]) -> Self {
        self.0["spec"]["accessModes"] = json!(modes);
        self
    }

    /// In StorageClass `class`.
    pub fn class(mut self, class: &str) -> Self {
        self.0["spec"]["storageClassName"] = json!(class);
        self
    }

    /// A clone of PVC `source`.
    pub fn clone_of(mut self, source: &str) -> Self {
        self.0["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": source});
        self
    }

    /// Restored from VolumeSnapshot `snapshot`.
    pub fn restore_of(mut self, snapshot: &str) -> Self {
        self.0["spec"]["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
        self
    }

    /// Creates it in `ns`.
    pub async fn create(self, ns: &TestNamespace) -> PersistentVolumeClaim {
        let pvc: PersistentVolumeClaim = serde_json::from_value(self.0).expect("pvc fixture");
        ns.api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &pvc)
            .await
            .expect("creating pvc")
    }
}

/// Waits until `claim` is Bound and returns its volume's directory on this machine.
pub async fn bound_dir(ns: &TestNamespace, claim: &str) -> PathBuf {
    let claims = ns.api::<PersistentVolumeClaim>();
    let pvs: Api<PersistentVolume> = Api::all(ns.client.clone());
    wait::until(&format!("PVC {claim} to be bound"), STEP, || async {
        let pvc = claims.get(claim).await.map_err(|e| e.to_string())?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(pv) = pvc.spec.and_then(|s| s.volume_name).filter(|_| bound) else {
            return Ok(None);
        };
        let pv = pvs.get(&pv).await.map_err(|e| e.to_string())?;
        Ok(Cluster::volume_dir(&pv))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until pod `name` has terminated; returns it.
pub async fn terminated(ns: &TestNamespace, name: &str) -> Pod {
    let pods = ns.api::<Pod>();
    wait::until(&format!("pod {name} to terminate"), STEP, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(pod))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for an Event with `reason` on the object called `involved` in `ns`; returns its
/// message.
pub async fn event(client: &Client, ns: &str, involved: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait::until(&format!("a {reason} event on {involved}"), STEP, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(involved)
            })
            .map(|e| e.message.unwrap_or_default()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every Event in `ns`.
pub async fn events(client: &Client, ns: &str) -> Result<Vec<Event>, String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items)
}
