//! Helpers of the issue-12 behaviour tests: finding a side's running mover Pod, and
//! looking inside it as `kubectl exec` would (through the node simulator).

use std::path::PathBuf;

use ferrosync::resources::{Side, job::CONTAINER, names};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::STEP,
    support::{TestNamespace, sim::node::exec, wait},
};

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The pods of the mover Job of `side`/`name`.
pub async fn mover_pods(ns: &TestNamespace, side: Side, name: &str) -> Result<Vec<Pod>, String> {
    let job = names::job(side, name);
    Ok(ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
        .await
        .map_err(|e| e.to_string())?
        .items)
}

/// Waits for a running mover Pod of `side`/`name` whose container the node has started;
/// returns the Pod and the container's root as the container sees it.
pub async fn running_mover(ns: &TestNamespace, side: Side, name: &str) -> (Pod, PathBuf) {
    wait::until(
        &format!("a running {} mover of {name}", side.as_str()),
        STEP * 2,
        || async {
            for pod in mover_pods(ns, side, name).await? {
                let running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                if let Some(root) = exec::root(&ns.name, &pod_name, CONTAINER).filter(|_| running) {
                    return Ok(Some((pod, root)));
                }
            }
            Ok(None)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", env().controller_tail(), ns.dump()))
}

/// Whether `path` is a read-only mount inside the container of `pod`.
pub fn mounted_read_only(ns: &TestNamespace, pod: &Pod, path: &str) -> Option<bool> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    exec::mounts(&ns.name, &name, CONTAINER)?
        .into_iter()
        .rev()
        .find(|m| m.path == path)
        .map(|m| m.read_only)
}

/// Creates an Opaque Secret `name` with string `data`.
pub async fn secret(ns: &TestNamespace, name: &str, data: Value) {
    let secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
        .expect("secret fixture");
    ns.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating secret");
}

/// The node a pod was bound to.
pub fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}
