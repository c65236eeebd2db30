//! The controller inside the test cluster, installed from `deploy/` the way users install
//! it: `kubectl kustomize` of an overlay, server-side applied; the Deployment controller
//! and the scheduler place its replicas on the simulated node. With [`Images::Registry`]
//! (the in-cluster tier, the two-cluster tests' `west`) the node pulls the controller and
//! mover images that `scripts/build-images.sh` built from the test registry, with a pull
//! secret, and runs them in their own root filesystems; with [`Images::Host`] (the
//! one-cluster demo's `cluster --in-cluster`) it runs the built `ferrosync` binary as the
//! image's entrypoint. Either way with the projected ServiceAccount token, the mounted
//! configuration and bundle ConfigMaps and a read-only root. The controller
//! finds the apiserver through KUBERNETES_SERVICE_HOST, the `kubernetes` Service's
//! ClusterIP, which the routing simulator forwards.
//!
//! Needs a control plane started with [`options`]: the ServiceAccount admission plugin
//! gives each pod its token volume.
//!
//! Differences from a real node that matter here: the simulated node does not restart
//! containers, so a replica that exits (as one does when it loses the Lease) leaves a
//! Failed pod that the ReplicaSet replaces, where a kubelet would restart the container in
//! place; probes are not run (a started container is ready).

use std::{path::Path, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, LogParams},
};

use super::{
    ControlPlane, Options, bins, components,
    controller::ferrosync_binary,
    deploy,
    registry::{self, Registry},
    sim::node::images::{self, Image},
    wait,
};

/// The controller image of `deploy/overlays/test-cluster`.
pub const CONTROLLER_IMAGE: &str = "ferrosync.test/controller:e2e";
/// Where the controller image has its binary (as in deploy/images/controller.Dockerfile).
pub const CONTROLLER_BINARY: &str = "/usr/local/bin/ferrosync";
/// The mover image the overlay configures.
pub const MOVER_IMAGE: &str = "ferrosync.test/mover:e2e";
/// The overlay for the test cluster, relative to the repository.
pub const OVERLAY: &str = "deploy/overlays/test-cluster";
/// The Deployment (and the Lease its replicas campaign for).
pub const DEPLOYMENT: &str = "ferrosync-controller";
/// The Deployment's pod selector.
pub const SELECTOR: &str = "app.kubernetes.io/name=ferrosync-controller";
/// How long a rollout may take: two pods started, one after the other is ready.
pub const ROLLOUT: Duration = Duration::from_secs(180);

/// An end-to-end control plane with the ServiceAccount admission plugin on.
pub fn options() -> Options {
    Options {
        apiserver_args: vec![components::SERVICE_ACCOUNT_ADMISSION.into()],
        ..Options::end_to_end()
    }
}

/// Makes the controller and mover images pullable on the simulated node: both are the
/// `ferrosync` binary this test was built with, at the images' paths.
pub fn register_images() {
    images::register(
        CONTROLLER_IMAGE,
        Image::binary(ferrosync_binary(), CONTROLLER_BINARY),
    );
    images::register(
        MOVER_IMAGE,
        Image::binary(ferrosync_binary(), ferrosync::resources::job::MOVER_BINARY),
    );
}

/// Where the controller's and the movers' images come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Images {
    /// The overlay's names, registered with [`register_images`]: the host's binary.
    Host,
    /// The images `scripts/build-images.sh` built, pulled from the test registry with
    /// [`PULL_SECRET`] (Debian's root, the image's user and paths: what users run).
    Registry,
}

/// The registry login in the controller's namespace, named by the Deployment and by the
/// controller's `mover.image_pull_secrets`.
pub const PULL_SECRET: &str = "ferrosync-registry";

/// `kubectl kustomize <dir> | kubectl apply --server-side -f -` (`dir` absolute, or
/// relative to the repository), with the host's images, then waits for the rollout.
pub async fn install(cp: &ControlPlane, dir: &Path) {
    install_with(cp, dir, Images::Host).await;
}

/// [`install`], with the images from `images`.
pub async fn install_with(cp: &ControlPlane, dir: &Path, images: Images) {
    install_configured(cp, dir, images, &[]).await;
}

/// [`install_with`], with `settings` (name, value) in the controller container's
/// environment over the overlay's: what a site's own overlay would patch in.
pub async fn install_configured(
    cp: &ControlPlane,
    dir: &Path,
    images: Images,
    settings: &[(&str, &str)],
) {
    let started = std::time::Instant::now();
    deploy::apply(cp, &with_settings(&render(cp, dir, images), settings));
    rolled_out(cp).await;
    eprintln!(
        "in-cluster controller: {} applied and rolled out in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}

/// `kubectl kustomize <dir>` with the images from `images`: what [`install_with`] applies.
/// An apply of `dir` that bypasses it would put the overlay's image names back into the
/// Deployment and roll it.
pub fn render(cp: &ControlPlane, dir: &Path, images: Images) -> String {
    let manifests = deploy::render_dir(cp, &bins::repo_root().join(dir).to_string_lossy());
    match images {
        Images::Host => manifests,
        Images::Registry => from_registry(&manifests, registry::shared()),
    }
}

/// `manifests` with `settings` set in the environment of the controller's container.
fn with_settings(manifests: &str, settings: &[(&str, &str)]) -> String {
    use serde::Deserialize;
    if settings.is_empty() {
        return manifests.to_string();
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(manifests) {
        let mut object = serde_json::Value::deserialize(doc).expect("the rendered install parses");
        if object.is_null() {
            continue;
        }
        if object["kind"] == "Deployment" && object["metadata"]["name"] == DEPLOYMENT {
            let containers = object["spec"]["template"]["spec"]["containers"].as_array_mut();
            for container in containers.into_iter().flatten() {
                let Some(env) = container["env"].as_array_mut() else {
                    continue;
                };
                for (name, value) in settings {
                    env.retain(|var| var["name"] != *name);
                    env.push(serde_json::json!({"name": name, "value": value}));
                }
            }
        }
        out.push(object.to_string());
    }
    out.join("\n---\n")
}

/// The registry's credentials as a `kubernetes.io/dockerconfigjson` Secret in the
/// controller's namespace, as a site keeps its registry login.
fn pull_secret(registry: &Registry) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": PULL_SECRET, "namespace": deploy::NAMESPACE},
        "stringData": {".dockerconfigjson": registry.docker_config_json(&registry.password)},
    })
}

/// The rendered install with the Deployment pulling the registry's controller image with
/// [`PULL_SECRET`], and the controller configured to run movers from the registry's
/// mover image with the same secret (what a site's overlay or Helm values set).
fn from_registry(manifests: &str, registry: &Registry) -> String {
    use serde::Deserialize;
    // The Secret goes in the same apply, after the install's Namespace.
    let mut out = Vec::new();
    let mut secret = Some(pull_secret(registry).to_string());
    for doc in serde_yaml_ng::Deserializer::from_str(manifests) {
        let mut object = serde_json::Value::deserialize(doc).expect("the rendered install parses");
        if object.is_null() {
            continue;
        }
        if object["kind"] == "Deployment" && object["metadata"]["name"] == DEPLOYMENT {
            let pod = &mut object["spec"]["template"]["spec"];
            pod["imagePullSecrets"] = serde_json::json!([{"name": PULL_SECRET}]);
            for container in pod["containers"].as_array_mut().into_iter().flatten() {
                if container["image"] == CONTROLLER_IMAGE {
                    container["image"] = registry.controller_image.clone().into();
                }
                let env = container["env"].as_array_mut();
                let Some(env) = env else { continue };
                for var in env.iter_mut() {
                    if var["name"] == "FERROSYNC_MOVER__IMAGE" {
                        var["value"] = registry.mover_image.clone().into();
                    }
                }
                env.push(serde_json::json!({
                    "name": "FERROSYNC_MOVER__IMAGE_PULL_SECRETS",
                    "value": format!("[\"{PULL_SECRET}\"]"),
                }));
            }
        }
        let namespace = object["kind"] == "Namespace";
        out.push(object.to_string());
        if namespace {
            out.extend(secret.take());
        }
    }
    out.extend(secret);
    out.join("\n---\n")
}

/// Waits until the Deployment controller has seen the current template, every replica
/// runs it and is ready, and no other pod is left (what `kubectl rollout status` checks,
/// plus the old pods being gone). Returns the running pods.
pub async fn rolled_out(cp: &ControlPlane) -> Vec<Pod> {
    let client = cp.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), deploy::NAMESPACE);
    let result = wait::until("the controller's rollout", ROLLOUT, || async {
        let d = deployments
            .get(DEPLOYMENT)
            .await
            .map_err(|e| e.to_string())?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        let current = status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(want)
            && status.available_replicas == Some(want)
            && status.replicas == Some(want);
        if !current {
            return Ok(None);
        }
        let pods = running_pods(&client).await;
        let all: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), deploy::NAMESPACE)
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .map_err(|e| e.to_string())?
            .items;
        Ok((pods.len() == want as usize && all.len() == pods.len()).then_some(pods))
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n{}", describe(cp)))
}

/// The controller's pods that are running and not being deleted, by name.
pub async fn running_pods(client: &kube::Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), deploy::NAMESPACE);
    let mut out: Vec<Pod> = pods
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .expect("listing the controller's pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    out.sort_by_key(|p| p.metadata.name.clone());
    out
}

/// The Lease holder's identity (`<pod name>-<pid>`), if any.
pub async fn holder(client: &kube::Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), deploy::NAMESPACE)
        .get_opt(DEPLOYMENT)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// Waits until one of `pods` holds the Lease (and has said so in its log); returns its name.
pub async fn leader_among(client: &kube::Client, pods: &[String]) -> String {
    leader_of(client, format!("one of {pods:?}"), || async {
        pods.to_vec()
    })
    .await
}

/// Waits until a pod other than `killed` holds the Lease (and has said so in its log);
/// returns its name. The standby replica and the pod the ReplicaSet starts in the killed
/// one's place both wait for the Lease to expire, and either may win it.
pub async fn leader_other_than(client: &kube::Client, killed: &str) -> String {
    leader_of(client, format!("a pod other than {killed}"), || async {
        let mut pods = names(&running_pods(client).await);
        pods.retain(|p| p != killed);
        pods
    })
    .await
}

/// Waits until one of the pods `candidates` names (asked again on every poll) holds the
/// Lease and its log says it became the leader.
async fn leader_of<F, Fut>(client: &kube::Client, who: String, candidates: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    wait::until(
        &format!("{who} to lead"),
        Duration::from_secs(90),
        || async {
            let Some(holder) = holder(client).await else {
                return Ok(None);
            };
            let pods = candidates().await;
            let Some(pod) = pods.iter().find(|p| holder.starts_with(&format!("{p}-"))) else {
                return Ok(None);
            };
            Ok(log(client, pod)
                .await
                .contains("became the leader")
                .then(|| pod.clone()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The controller container's log, through the apiserver (`kubectl logs`).
pub async fn log(client: &kube::Client, pod: &str) -> String {
    Api::<Pod>::namespaced(client.clone(), deploy::NAMESPACE)
        .logs(
            pod,
            &LogParams {
                container: Some("controller".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap_or_default()
}

/// The names of `pods`.
pub fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// `kubectl get` of the controller's Deployment, ReplicaSets and pods, for failure messages.
pub fn describe(cp: &ControlPlane) -> String {
    let out = cp
        .kubectl()
        .args([
            "get",
            "deployment,replicaset,pod",
            "-o",
            "wide",
            "-n",
            deploy::NAMESPACE,
        ])
        .output()
        .expect("kubectl get");
    let pods = cp
        .kubectl()
        .args([
            "logs",
            "-l",
            SELECTOR,
            "--tail=15",
            "--prefix",
            "-n",
            deploy::NAMESPACE,
        ])
        .output()
        .expect("kubectl logs");
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&pods.stdout)
    )
}
