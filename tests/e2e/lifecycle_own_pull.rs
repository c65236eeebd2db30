//! Issue 12, mover image pull secrets as VolSync handles them: a controller configured
//! with a Secret of its own namespace copies it into the mover's namespace as
//! `volsync-pull-<hash>` and names the copy in the mover Pod, so a private mover image
//! pulls; the same image without the credential does not.

use ferrosync::resources::{Side, job::MOVER_BINARY, names};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    behaviours_support::running_mover,
    env::{SERIAL, env},
    fixtures::{STEP, pod},
    support::{
        controller::ferrosync_binary,
        deploy,
        sim::node::images::{self, Image, RegistryAuth},
        wait,
    },
    volsync::destination,
};

const REGISTRY: &str = "registry.ferrosync.test";
const PRIVATE_IMAGE: &str = "registry.ferrosync.test/ferrosync/mover:private";

#[tokio::test]
async fn a_private_mover_image_is_pulled_with_the_copied_pull_secret() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    images::register(
        PRIVATE_IMAGE,
        Image::binary(ferrosync_binary(), MOVER_BINARY).private(RegistryAuth {
            registry: REGISTRY.into(),
            username: "robot".into(),
            password: "pull-only-token".into(),
        }),
    );
    let dst = env.cp.namespace("pull-dst").await;
    let config = json!({"auths": {REGISTRY: {"username": "robot", "password": "pull-only-token"}}});
    let regcred: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .expect("secret");
    // The controller's namespace (from deploy/), where the credential lives.
    deploy::controller_identity(env.cp);
    let home: Api<Secret> = Api::namespaced(dst.client.clone(), deploy::NAMESPACE);
    let _ = home.delete("regcred", &Default::default()).await;
    home.create(&PostParams::default(), &regcred)
        .await
        .expect("creating regcred");
    let _controller = env.controller(&[
        ("FERROSYNC_MOVER__IMAGE", PRIVATE_IMAGE),
        ("FERROSYNC_MOVER__IMAGE_PULL_SECRETS", "[\"regcred\"]"),
    ]);

    destination(&dst, "pull", json!({})).await;
    let (mover, _) = running_mover(&dst, Side::Destination, "pull").await;
    let copy = names::pull_secret("regcred");
    let pulls: Vec<String> = mover
        .spec
        .and_then(|s| s.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(pulls, vec![copy.clone()]);
    let copied: Secret = dst
        .api()
        .get(&copy)
        .await
        .expect("the copy in the mover's namespace");
    let original = home.get("regcred").await.expect("original");
    assert_eq!((copied.type_, copied.data), (original.type_, original.data));

    // The kubelet really checks: without the credential the same image does not pull.
    pod("no-creds", PRIVATE_IMAGE, &[MOVER_BINARY, "--version"])
        .create(&dst)
        .await;
    let pods: Api<Pod> = dst.api();
    let why = wait::until("the image pull to be refused", STEP, || async {
        let p = pods.get("no-creds").await.map_err(|e| e.to_string())?;
        Ok(p.status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state?.waiting)
            .filter(|w| w.reason.as_deref() == Some("ErrImagePull"))
            .and_then(|w| w.message))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(why.contains("unauthorized"), "{why}");
    home.delete("regcred", &Default::default())
        .await
        .expect("cleanup");
}
