//! Issue 13: the images `scripts/build-images.sh` builds, pushed to a real registry that
//! wants a password, pulled by the node with the pod's imagePullSecrets, and run in their
//! own root filesystem. A mover replicates from the mover image; a wrong or missing pull
//! secret fails the pull as on a kubelet; a binary the image lacks is missing in the
//! container even though this machine has it.

use std::{path::Path, time::Duration};

use ferrosync::resources::{Side, job::MOVER_BINARY};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use serde_json::json;

use crate::{
    behaviours_support::running_mover,
    env::env,
    fixtures::{STEP, terminated},
    support::{TestNamespace, registry, wait},
    tree,
    volsync::{
        claim_dir, copy_secret, destination, privileged_movers, published, published_image,
        sample_source, synced,
    },
};

/// A data owner that is neither root nor the movers' uid.
const OWNER: (u32, u32) = (4321, 8765);

/// Creates a `kubernetes.io/dockerconfigjson` Secret for the test registry with `password`.
async fn registry_secret(ns: &TestNamespace, name: &str, password: &str) {
    let config = registry::shared().docker_config_json(password);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .expect("secret fixture");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the pull secret");
}

/// A pod of `image` running `command`, pulled with the pull secrets `secrets`.
async fn image_pod(
    ns: &TestNamespace,
    name: &str,
    image: &str,
    command: &[&str],
    secrets: &[&str],
) {
    let secrets: Vec<_> = secrets.iter().map(|s| json!({"name": s})).collect();
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "imagePullSecrets": secrets,
            "containers": [{"name": "main", "image": image, "command": command,
                            "terminationMessagePolicy": "FallbackToLogsOnError"}],
        },
    }))
    .expect("pod fixture");
    ns.api::<Pod>()
        .create(&PostParams::default(), &p)
        .await
        .expect("creating pod");
}

/// The terminated state of the only container of pod `name`: (exit code, message).
async fn exit_of(ns: &TestNamespace, name: &str) -> (i32, String) {
    let p = terminated(ns, name).await;
    let state = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state?.terminated)
        .expect("a terminated container");
    (state.exit_code, state.message.unwrap_or_default())
}

#[tokio::test]
async fn movers_replicate_from_the_registry_image_in_its_own_root() {
    let env = env();
    let image = &registry::shared().mover_image;
    // What tells the image's root from this machine's: only the image has the record.
    let record = "usr/share/ferrosync/packages.txt";
    assert!(
        !Path::new("/").join(record).exists(),
        "the host has /{record}"
    );
    let dst = env.cp.namespace("img-dst").await;
    let src = env.cp.namespace("img-src").await;
    // Privileged movers (root in the image), so that owners are compared too.
    privileged_movers(&dst).await;
    privileged_movers(&src).await;

    destination(&dst, "backup", json!({})).await;
    let (mover, root) = running_mover(&dst, Side::Destination, "backup").await;
    let spec = mover.spec.expect("spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));
    assert!(
        !spec.image_pull_secrets.unwrap_or_default().is_empty(),
        "the controller names the copied pull secret"
    );
    // The container's root is the image's: the package record, and the mover alone (the
    // image's /usr/local/bin/ferrosync is not this machine's full ferrosync binary).
    let packages = std::fs::read_to_string(root.join(record)).expect("the image's package record");
    for needed in ["rsync ", "stunnel4 ", "util-linux ", "libssl3 "] {
        assert!(
            packages.contains(needed),
            "{needed}missing from:\n{packages}"
        );
    }
    let inside =
        std::fs::metadata(root.join(MOVER_BINARY.trim_start_matches('/'))).expect("mover binary");
    let host =
        std::fs::metadata(crate::support::controller::ferrosync_binary()).expect("host binary");
    assert_ne!(
        inside.len(),
        host.len(),
        "the container runs this machine's ferrosync"
    );

    let (address, key_secret) = published(&dst, "backup").await;
    copy_secret(&dst, &key_secret, &src, "backup-key").await;
    let data = sample_source(
        &src,
        "backup",
        OWNER,
        json!({"keySecret": "backup-key", "address": address}),
    )
    .await;
    synced(&src, "backup", Duration::from_secs(120)).await;
    // The destination publishes the volume once its own mover succeeded.
    let published = published_image(&dst, "backup", STEP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    tree::assert_same(&data, &claim_dir(&dst, &published.name).await);
}

#[tokio::test]
async fn a_wrong_or_missing_pull_secret_fails_the_pull_like_a_kubelet() {
    let env = env();
    let image = registry::shared().mover_image.clone();
    let ns = env.cp.namespace("img-pull").await;
    registry_secret(&ns, "wrong", "not-the-password").await;
    registry_secret(&ns, "right", &registry::shared().password).await;
    let version = [MOVER_BINARY, "version"];
    image_pod(&ns, "wrong-secret", &image, &version, &["wrong"]).await;
    image_pod(&ns, "no-secret", &image, &version, &[]).await;
    image_pod(&ns, "right-secret", &image, &version, &["wrong", "right"]).await;

    let pods = ns.api::<Pod>();
    for name in ["wrong-secret", "no-secret"] {
        let why = wait::until(&format!("{name}'s pull to be refused"), STEP, || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            Ok(p.status
                .and_then(|s| s.container_statuses)
                .and_then(|cs| cs.into_iter().next())
                .and_then(|c| c.state?.waiting)
                .filter(|w| {
                    matches!(
                        w.reason.as_deref(),
                        Some("ErrImagePull" | "ImagePullBackOff")
                    )
                })
                .map(|w| w.message.unwrap_or_default()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            why.contains("unauthorized") || why.contains("Back-off"),
            "{name}: {why}"
        );
    }
    // Of two secrets for the registry, the one that works is used, as a kubelet tries each.
    let (code, message) = exit_of(&ns, "right-secret").await;
    assert_eq!(code, 0, "{message}");
}

#[tokio::test]
async fn an_image_without_a_binary_fails_although_the_host_has_it() {
    let env = env();
    let registry = registry::shared();
    let ns = env.cp.namespace("img-root").await;
    registry_secret(&ns, "pull", &registry.password).await;
    assert!(Path::new("/usr/bin/rsync").exists(), "the host has rsync");

    // The controller image has no rsync: a mover run from it cannot work.
    let rsync = ["/usr/bin/rsync", "--version"];
    image_pod(
        &ns,
        "controller-rsync",
        &registry.controller_image,
        &rsync,
        &["pull"],
    )
    .await;
    // The mover image has it, and runs as the image's user (nobody) when the pod says none.
    let script = "id -u > /dev/termination-log && /usr/bin/rsync --version >/dev/null";
    image_pod(
        &ns,
        "mover-rsync",
        &registry.mover_image,
        &["/bin/sh", "-c", script],
        &["pull"],
    )
    .await;

    let (code, message) = exit_of(&ns, "controller-rsync").await;
    assert_eq!(code, 127, "exec of a missing file: {message}");
    assert!(message.contains("No such file"), "{message}");
    let (code, message) = exit_of(&ns, "mover-rsync").await;
    assert_eq!((code, message.trim()), (0, "65534"));
}
