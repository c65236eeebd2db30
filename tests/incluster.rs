//! The controller inside the test cluster, installed from `deploy/overlays/test-cluster`
//! with `kubectl apply --server-side`: two replicas under leader election, in-cluster
//! configuration from the projected ServiceAccount token, the configuration and the
//! aws-ebs bundle from mounted ConfigMaps, read-only root (`support::incluster`); the
//! controller and its movers run from the images `scripts/build-images.sh` built, pulled
//! from the test registry with a pull secret.
//!
//! Its own binary: the end-to-end binary runs a host controller that would reconcile the
//! same objects, and this one turns on the ServiceAccount admission plugin. The tests share
//! the one Deployment, so they run one at a time; each installs the variant it needs.

mod support;

#[path = "e2e/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
#[path = "e2e/tree.rs"]
#[allow(dead_code)]
mod tree;
#[path = "e2e/volsync.rs"]
#[allow(dead_code)]
mod volsync;

#[path = "incluster/node_volumes.rs"]
mod node_volumes;

use std::{path::Path, time::Duration};

use ferrosync::api::ReplicationSource;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    fixtures::{bound_dir, pvc},
    support::{
        ControlPlane, TestNamespace, control_plane_with, deploy,
        incluster::{self, Images, OVERLAY},
        registry,
        sim::Cluster,
        wait,
    },
    volsync::{claim_dir, copy_secret, destination, privileged_movers, published, source, synced},
};

/// One Deployment, one Lease: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bundle the overlay mounts, as kustomize reads it.
const BUNDLE: &str = "policies/aws-ebs";
const BUNDLE_FILES: [&str; 3] = ["policy.toml", "tests.json", "copy-method-by-driver.wasm"];
/// The bundle's ConfigMap (before kustomize's hash suffix) and its volume in the pod.
const BUNDLE_CONFIG_MAP: &str = "ferrosync-policy-aws-ebs";
const BUNDLE_VOLUME: &str = "policy-aws-ebs";

fn cluster() -> &'static ControlPlane {
    let cp = control_plane_with(incluster::options());
    incluster::register_images();
    Cluster::start(cp);
    cp
}

/// A replication from a new source namespace to a new destination namespace, done by
/// whichever replica leads; returns the source's namespace once the data arrived.
async fn replicate(cp: &ControlPlane, name: &str) -> TestNamespace {
    let dst = cp.namespace(&format!("{name}-dst")).await;
    let src = cp.namespace(&format!("{name}-src")).await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    destination(&dst, name, json!({})).await;
    let (address, key) = published(&dst, name).await;
    copy_secret(&dst, &key, &src, "key").await;
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, (0, 0));
    source(
        &src,
        name,
        "data",
        json!({"keySecret": "key", "address": address}),
    )
    .await;
    synced(&src, name, Duration::from_secs(180)).await;
    // The destination publishes its image once its own mover has finished, which may be
    // a moment after the source's.
    let rds: Api<ferrosync::api::ReplicationDestination> = dst.api();
    let image = wait::until(
        "the destination to publish its image",
        Duration::from_secs(60),
        || async {
            let rd = rds.get(name).await.map_err(|e| e.to_string())?;
            Ok(rd.status.and_then(|s| s.latest_image).map(|i| i.name))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tree::assert_same(&data, &claim_dir(&dst, &image).await);
    src
}

/// Triggers sync `trigger` of source `name` by hand and waits for it to finish.
async fn sync_again(ns: &TestNamespace, name: &str, trigger: &str) {
    let api: Api<ReplicationSource> = ns.api();
    let body = json!({"spec": {"trigger": {"manual": trigger}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("triggering a sync");
    wait::until(
        &format!("sync {trigger} of {name}"),
        Duration::from_secs(180),
        || async {
            let rs = api.get(name).await.map_err(|e| e.to_string())?;
            let done = rs
                .status
                .is_some_and(|s| s.sync.last_manual_sync.as_deref() == Some(trigger));
            Ok(done.then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_in_cluster_controller_completes_a_replication() {
    let _serial = SERIAL.lock().await;
    let cp = cluster();
    incluster::install_with(cp, Path::new(OVERLAY), Images::Registry).await;
    let client = cp.client().await;
    let pods = incluster::running_pods(&client).await;
    assert_eq!(pods.len(), 2, "two replicas: {}", incluster::describe(cp));
    // Both replicas run the controller image scripts/build-images.sh built, pulled from
    // the registry with the pull secret (the node runs it in the image's own root).
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("a pod spec");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(registry::shared().controller_image.as_str()),
            "the controller's image"
        );
    }
    // As deployed: the token volume the admission plugin added, a read-only root.
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("spec");
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some()),
            "no projected token volume in {:?}",
            pod.metadata.name
        );
        let ctx = spec.containers[0].security_context.as_ref();
        assert_eq!(ctx.and_then(|c| c.read_only_root_filesystem), Some(true));
    }
    let leader = incluster::leader_among(&client, &incluster::names(&pods)).await;
    replicate(cp, "incluster").await;

    // The work was done with the pod's bound token: the apiserver names the pod that
    // the ServiceAccount's requests came from (a client certificate would carry no pod).
    let user = format!(
        "system:serviceaccount:{}:{}",
        deploy::NAMESPACE,
        deploy::SERVICE_ACCOUNT
    );
    let from_leader = cp.audit_events().into_iter().any(|e| {
        e["user"]["username"] == user.as_str()
            && e["objectRef"]["resource"] == "jobs"
            && e["verb"] == "create"
            && e["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] == leader.as_str()
    });
    assert!(
        from_leader,
        "no mover Job created with {leader}'s token in the audit log"
    );
}

#[tokio::test]
async fn when_the_leader_pod_is_killed_the_other_replica_takes_over() {
    let _serial = SERIAL.lock().await;
    let cp = cluster();
    incluster::install_with(cp, Path::new(OVERLAY), Images::Registry).await;
    let client = cp.client().await;
    let before = incluster::names(&incluster::running_pods(&client).await);
    let leader = incluster::leader_among(&client, &before).await;
    let src = replicate(cp, "takeover").await;

    // No grace: the process is killed, so the Lease is not released; the standby waits
    // for it to expire.
    let pods: Api<Pod> = Api::namespaced(client.clone(), deploy::NAMESPACE);
    let killed = std::time::Instant::now();
    pods.delete(
        &leader,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("deleting the leader pod");
    let new_leader = incluster::leader_other_than(&client, &leader).await;
    eprintln!(
        "in-cluster takeover: {new_leader} leads {:.1}s after {leader} was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_ne!(new_leader, leader);

    sync_again(&src, "takeover", "after-takeover").await;
    // The new leader did it, with its own pod's token.
    let jobs_by = |pod: &str| {
        cp.audit_events().into_iter().any(|e| {
            e["objectRef"]["namespace"] == src.name.as_str()
                && e["objectRef"]["resource"] == "jobs"
                && e["verb"] == "create"
                && e["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] == pod
        })
    };
    assert!(jobs_by(&new_leader), "no mover Job created by {new_leader}");
    // The ReplicaSet replaced the killed pod: two replicas again.
    let after = incluster::names(&incluster::rolled_out(cp).await);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains(&leader), "{after:?}");
}

/// A kustomization over the test overlay whose bundle ConfigMap is generated from a copy of
/// the bundle with `edit` applied to its policy.toml, with a hashed or a stable name.
fn bundle_variant(dir: &Path, hashed: bool, edit: &str) {
    let files = dir.join("bundle");
    std::fs::create_dir_all(&files).expect("bundle dir");
    let bundle = support::bins::repo_root().join(BUNDLE);
    for file in BUNDLE_FILES {
        std::fs::copy(bundle.join(file), files.join(file)).expect("copying the bundle");
    }
    let policy = std::fs::read_to_string(bundle.join("policy.toml")).expect("policy.toml");
    std::fs::write(files.join("policy.toml"), format!("{policy}{edit}")).expect("policy.toml");
    let overlay = relative_to(dir, &support::bins::repo_root().join(OVERLAY));
    let options = if hashed {
        ""
    } else {
        "  options:\n    disableNameSuffixHash: true\n"
    };
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n- {overlay}\n\
         configMapGenerator:\n- name: {BUNDLE_CONFIG_MAP}\n  namespace: {ns}\n  behavior: replace\n{options}  files:\n{list}",
        overlay = overlay.display(),
        ns = deploy::NAMESPACE,
        list = BUNDLE_FILES
            .iter()
            .map(|f| format!("  - bundle/{f}\n"))
            .collect::<String>(),
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("kustomization");
}

/// `target` as a path relative to `dir` (kustomize refuses absolute resource paths); both
/// absolute.
fn relative_to(dir: &Path, target: &Path) -> std::path::PathBuf {
    let dir = dir.canonicalize().expect("canonical dir");
    let target = target.canonicalize().expect("canonical target");
    let common = dir
        .components()
        .zip(target.components())
        .take_while(|(a, b)| a == b)
        .count();
    let up = dir.components().count() - common;
    let mut out: std::path::PathBuf = std::iter::repeat_n("..", up).collect();
    out.extend(target.components().skip(common));
    out
}

/// The ConfigMap the Deployment's pod template mounts as the bundle.
async fn mounted_bundle(client: &kube::Client) -> (String, i64) {
    let deployment: Deployment = Api::namespaced(client.clone(), deploy::NAMESPACE)
        .get(incluster::DEPLOYMENT)
        .await
        .expect("deployment");
    let generation = deployment.metadata.generation.unwrap_or_default();
    let name = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .into_iter()
        .flatten()
        .find(|v| v.name == BUNDLE_VOLUME)
        .and_then(|v| v.config_map)
        .map(|c| c.name)
        .expect("the bundle volume");
    (name, generation)
}

/// The `pod-template-hash` label of each pod: which ReplicaSet (template) it belongs to.
fn template_hashes(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash").cloned())
                .unwrap_or_default()
        })
        .collect()
}

/// The bundle's policy.toml as the pod's container sees it (through the `..data` link).
fn mounted_policy(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().expect("uid");
    let cluster = Cluster::start(cluster());
    let path = cluster
        .dir
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(BUNDLE_VOLUME)
        .join("policy.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_changed_bundle_with_a_hashed_name_rolls_the_deployment() {
    let _serial = SERIAL.lock().await;
    let cp = cluster();
    let client = cp.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    bundle_variant(dir.path(), true, "\n# rolled: first\n");
    incluster::install_with(cp, dir.path(), Images::Registry).await;
    let (first, _) = mounted_bundle(&client).await;
    let old_pods = incluster::names(&incluster::running_pods(&client).await);

    bundle_variant(dir.path(), true, "\n# rolled: second\n");
    incluster::install_with(cp, dir.path(), Images::Registry).await;
    let (second, _) = mounted_bundle(&client).await;
    assert!(
        second.starts_with(&format!("{BUNDLE_CONFIG_MAP}-")) && second != first,
        "a changed bundle is a new ConfigMap: {first} then {second}"
    );
    // Every replica was replaced, and the new ones mount the new bundle and elect a leader.
    let pods = incluster::running_pods(&client).await;
    let names = incluster::names(&pods);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|n| !old_pods.contains(n)),
        "old {old_pods:?}, now {names:?}"
    );
    for pod in &pods {
        assert!(mounted_policy(pod).contains("# rolled: second"));
    }
    let leader = incluster::leader_among(&client, &names).await;
    let log = incluster::log(&client, &leader).await;
    assert!(
        !log.contains("policy reload refused"),
        "the new bundle failed to load: {log}"
    );
}

#[tokio::test]
async fn a_changed_bundle_with_a_stable_name_is_reloaded_in_place() {
    let _serial = SERIAL.lock().await;
    let cp = cluster();
    let client = cp.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    bundle_variant(dir.path(), false, "\n# reloaded: first\n");
    incluster::install_with(cp, dir.path(), Images::Registry).await;
    let (name, generation) = mounted_bundle(&client).await;
    assert_eq!(name, BUNDLE_CONFIG_MAP, "the stable name is mounted");
    let running = incluster::running_pods(&client).await;
    let template = template_hashes(&running)[0].clone();
    let pods = incluster::names(&running);
    let leader = incluster::leader_among(&client, &pods).await;
    let reloads_before = incluster::log(&client, &leader)
        .await
        .matches("policy plugins reloaded")
        .count();

    bundle_variant(dir.path(), false, "\n# reloaded: second\n");
    deploy::apply(cp, &incluster::render(cp, dir.path(), Images::Registry));
    // Same ConfigMap, same pod template: nothing rolls...
    assert_eq!(mounted_bundle(&client).await, (name, generation));
    // ...the node swaps the mounted files, and the running leader reloads them.
    wait::until(
        "the leader to reload the changed bundle",
        Duration::from_secs(60),
        || async {
            let reloads = incluster::log(&client, &leader)
                .await
                .matches("policy plugins reloaded")
                .count();
            Ok((reloads > reloads_before).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Still the same template: no new ReplicaSet (a replica the ReplicaSet replaced, say
    // after a lost lease under load, is no rollout).
    let now = incluster::running_pods(&client).await;
    assert_eq!(template_hashes(&now), vec![template.clone(); now.len()]);
    // Every replica's mount follows (the node updates each pod's volume on its own beat).
    wait::until(
        "every replica to mount the changed bundle",
        Duration::from_secs(30),
        || async {
            let pods = incluster::running_pods(&client).await;
            let all = pods
                .iter()
                .all(|p| mounted_policy(p).contains("# reloaded: second"));
            Ok(all.then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
