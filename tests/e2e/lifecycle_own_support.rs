//! Helpers of the tests with a controller of their own (the `lifecycle` binary): copies of
//! the shipped policy bundles, the classes of an EBS-like driver, what `status.policy` says
//! of a decision, and waits on an object's conditions.

use std::path::{Path, PathBuf};

use ferrosync::api::{PolicyDecision, ReplicationSource};
use k8s_openapi::{NamespaceResourceScope, api::storage::v1::StorageClass};
use kube::{
    Api, Resource,
    api::{DynamicObject, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::STEP,
    support::{
        TestNamespace,
        sim::storage::{self, DRIVER, snapshot},
        wait,
    },
};

/// A copy at `to` of the shipped bundle `policies/<bundle>`, with `replace.0` replaced by
/// `replace.1` in its policy.toml: a test points a bundle at what this machine has (a
/// loopback vault, the simulator's driver) and leaves all else, the digest included, as
/// shipped. The text replaced must be there, so a shipped bundle that changed fails here
/// instead of silently testing something else.
pub fn bundle_copy(bundle: &str, to: &Path, replace: Option<(&str, &str)>) -> PathBuf {
    let from = crate::support::bins::repo_root()
        .join("policies")
        .join(bundle);
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(&from).expect("bundle").flatten() {
        let name = entry.file_name();
        match replace {
            Some((shipped, here)) if name == "policy.toml" => {
                let text = std::fs::read_to_string(entry.path()).expect("read");
                assert!(
                    text.contains(shipped),
                    "{bundle}'s policy.toml has {shipped}"
                );
                std::fs::write(to.join(&name), text.replace(shipped, here)).expect("write");
            }
            _ => {
                std::fs::copy(entry.path(), to.join(&name)).expect("copy");
            }
        }
    }
    to.to_path_buf()
}

/// A copy at `to` of the shipped aws-ebs bundle. With `simulator_is_ebs`, its entry for
/// `ebs.csi.aws.com` is applied to the simulator's driver (so it chooses Snapshot there);
/// without, the simulator's driver falls to the bundle's default (the requested Clone).
pub fn aws_ebs_bundle(to: &Path, simulator_is_ebs: bool) -> PathBuf {
    let driver = format!("{DRIVER:?}");
    let replace = simulator_is_ebs.then_some(("\"ebs.csi.aws.com\"", driver.as_str()));
    bundle_copy("aws-ebs", to, replace)
}

/// The classes the aws-ebs bundle works with, on the simulator's driver: StorageClass
/// `ebs_like`, which cannot clone (as on EBS), StorageClass `gp3` and VolumeSnapshotClass
/// `ebs-snapclass` (the bundle's choices). Those already there are kept.
pub async fn create_ebs_classes(client: &kube::Client, ebs_like: &str) {
    let classes: Api<StorageClass> = Api::all(client.clone());
    for (name, params) in [
        (ebs_like, json!({storage::PARAM_CLONE: "unsupported"})),
        ("gp3", json!({})),
    ] {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": DRIVER, "parameters": params,
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
        }))
        .expect("class");
        match classes.create(&PostParams::default(), &class).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating StorageClass {name}: {e}"),
        }
    }
    let snap_classes: Api<DynamicObject> = Api::all_with(client.clone(), &snapshot::classes());
    let class = DynamicObject::new("ebs-snapclass", &snapshot::classes())
        .data(json!({"driver": DRIVER, "deletionPolicy": "Delete"}));
    match snap_classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating VolumeSnapshotClass: {e}"),
    }
}

/// The source's copy-method decision in `status.policy`.
pub fn copy_method_entry(rs: &ReplicationSource) -> PolicyDecision {
    rs.status
        .as_ref()
        .and_then(|s| s.sync.policy.clone())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.decision == "copy-method")
        .expect("a copy-method decision in status.policy")
}

/// A namespaced kind whose objects these helpers read: sources and destinations.
pub trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + serde::Serialize
{
}
impl Kind for ReplicationSource {}
impl Kind for ferrosync::api::ReplicationDestination {}

/// The message of `name`'s first condition that contains `needle`, once there is one.
pub async fn condition_with<K: Kind>(ns: &TestNamespace, name: &str, needle: &str) -> String {
    let api: Api<K> = ns.api();
    wait::until(
        &format!("{name}'s condition to say {needle:?}"),
        STEP,
        || async {
            let obj = api.get(name).await.map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
            Ok(value
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c["message"].as_str())
                .find(|m| m.contains(needle))
                .map(str::to_owned))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// Waits for the copy-method decision in `name`'s status (up to two minutes) and returns it;
/// the controller's log tail is in the panic when none comes.
pub async fn copy_method_of(api: &Api<ReplicationSource>, name: &str) -> PolicyDecision {
    wait::until(
        &format!("{name}'s copy-method decision"),
        std::time::Duration::from_secs(120),
        || async {
            let rs = api.get(name).await.map_err(|e| e.to_string())?;
            Ok(rs
                .status
                .and_then(|s| s.sync.policy)
                .unwrap_or_default()
                .into_iter()
                .find(|d| d.decision == "copy-method"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}
