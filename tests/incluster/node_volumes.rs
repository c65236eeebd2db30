//! What the simulated node gives every pod once the ServiceAccount admission plugin is on,
//! and how it updates a ConfigMap volume: the parts of a kubelet the in-cluster controller
//! relies on, checked on their own.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Pod, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    cluster,
    fixtures::{STEP, pod, terminated},
    support::{TestNamespace, sim::Cluster, wait},
};

/// The host's /bin/sh as an image.
const SHELL_IMAGE: &str = "ferrosync.test/shell:incluster";

/// A fresh namespace whose `default` ServiceAccount exists (admission refuses pods until
/// the serviceaccount controller has made it).
async fn namespace(prefix: &str) -> TestNamespace {
    let cp = cluster();
    crate::support::sim::node::images::register(
        SHELL_IMAGE,
        crate::support::sim::node::images::Image::binary("/bin/sh", "/bin/sh"),
    );
    let ns = cp.namespace(prefix).await;
    let accounts: Api<ServiceAccount> = ns.api();
    wait::eventually("the default ServiceAccount", STEP, || {
        accounts.get("default")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    ns
}

/// Where volume `volume` of `pod` is on this machine.
fn volume_dir(pod: &Pod, volume: &str) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().expect("uid");
    Cluster::start(cluster())
        .dir
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(volume)
}

#[tokio::test]
async fn a_pod_gets_a_token_bound_to_it_the_cluster_ca_and_the_apiservers_address() {
    let ns = namespace("projected").await;
    let script = "printf '%s:%s %s' \"$KUBERNETES_SERVICE_HOST\" \"$KUBERNETES_SERVICE_PORT\" \
                  \"$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)\" \
                  >/dev/termination-log";
    pod("reader", SHELL_IMAGE, &["/bin/sh", "-c", script])
        .create(&ns)
        .await;
    let done = terminated(&ns, "reader").await;
    let state = done
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.clone())
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(state.exit_code, 0, "{state:?}");
    // The kubernetes Service's ClusterIP, and the namespace from the downward API source.
    assert_eq!(
        state.message.as_deref(),
        Some(format!("127.64.0.1:443 {}", ns.name).as_str())
    );

    let volume = done
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name.starts_with("kube-api-access-")))
        .map(|v| v.name.clone())
        .expect("the admission plugin's token volume");
    let dir = volume_dir(&done, &volume);
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let cluster_ca = std::fs::read_to_string(&cluster().pki.ca_cert).expect("cluster CA");
    assert_eq!(
        ca.trim(),
        cluster_ca.trim(),
        "the kube-root-ca.crt ConfigMap"
    );
    let token = std::fs::read_to_string(dir.join("token")).expect("token");

    // The apiserver takes the token as the pod's ServiceAccount, bound to this pod.
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(ns.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("token review");
    let status = answer.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:default", ns.name).as_str())
    );
    let bound_to = user
        .extra
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name").cloned())
        .unwrap_or_default();
    assert_eq!(bound_to, vec!["reader".to_string()]);
}

#[tokio::test]
async fn a_changed_config_map_is_swapped_into_a_running_pods_volume_at_once() {
    let ns = namespace("cm-update").await;
    let maps: Api<ConfigMap> = ns.api();
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"a": "1", "b": "gone soon"},
    }))
    .expect("configmap");
    maps.create(&PostParams::default(), &map)
        .await
        .expect("creating the ConfigMap");
    // Mounted below /etc, as the controller's configuration is.
    let spec: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": SHELL_IMAGE,
                "command": ["/bin/sh", "-c", "sleep 600"],
                "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings"}]}],
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
        },
    }))
    .expect("pod");
    let pods: Api<Pod> = ns.api();
    let created = pods
        .create(&PostParams::default(), &spec)
        .await
        .expect("creating the pod");
    let running = wait::until("the pod to run", STEP, || async {
        let p = pods.get("user").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        Ok((phase.as_deref() == Some("Running")).then_some(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running.metadata.uid, created.metadata.uid);
    let dir = volume_dir(&running, "settings");
    assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
    let first = std::fs::read_link(dir.join("..data")).expect("..data");

    let body = json!({"data": {"a": "2", "b": null, "c": "new"}});
    maps.patch("settings", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("updating the ConfigMap");
    wait::until(
        "the volume to show the update",
        Duration::from_secs(30),
        || {
            let a = std::fs::read_to_string(dir.join("a")).unwrap_or_default();
            async move { Ok((a == "2").then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // One payload, switched by ..data; the removed key's link and the old payload are gone.
    assert_eq!(std::fs::read_to_string(dir.join("c")).expect("c"), "new");
    assert!(
        std::fs::symlink_metadata(dir.join("b")).is_err(),
        "b is gone"
    );
    let second = std::fs::read_link(dir.join("..data")).expect("..data");
    assert_ne!(first, second);
    assert!(!dir.join(&first).exists(), "the old payload was removed");
    let payloads = std::fs::read_dir(&dir)
        .expect("volume dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
        .count();
    assert_eq!(payloads, 1);
    assert_eq!(
        std::fs::read_link(dir.join("a")).expect("a link"),
        PathBuf::from("..data/a")
    );
    let _ = pods
        .delete(
            "user",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await;
}
