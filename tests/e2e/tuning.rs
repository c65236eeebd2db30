//! ferrosync-only rsync tuning through ReplicationSource annotations (admission stays
//! VolSync's): a value that does not parse is an Error condition naming the annotation
//! (the InvalidSpec Event comes with it), no mover starts, and fixing the value clears it.

use ferrosync::api::ReplicationSource;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{env::env, fixtures::STEP, support::wait, volsync::source};

const BWLIMIT: &str = "ferrosync.io/rsync-bwlimit";

/// Waits until the Synchronizing condition is an Error containing `text`.
async fn error_containing(api: &Api<ReplicationSource>, name: &str, text: &str) -> String {
    wait::until(&format!("an Error naming {text:?}"), STEP, || async {
        let rs = api.get(name).await.map_err(|e| e.to_string())?;
        let cond = rs
            .status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Synchronizing");
        Ok(cond
            .filter(|c| c.reason == "Error" && c.message.contains(text))
            .map(|c| c.message))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_bad_rsync_annotation_is_an_error_naming_it_until_fixed() {
    let env = env();
    let ns = env.cp.namespace("tuning").await;
    // Nothing else is ready (no key Secret, no PVC): the annotation is reported first.
    source(
        &ns,
        "tuned",
        "absent",
        json!({"address": "127.0.0.1", "keySecret": "k"}),
    )
    .await;
    let api: Api<ReplicationSource> = ns.api();
    let annotate =
        |value: &str| json!({"metadata": {"annotations": {"ferrosync.io/rsync-bwlimit": value}}});
    api.patch(
        "tuned",
        &PatchParams::default(),
        &Patch::Merge(&annotate("fast; rm -rf /")),
    )
    .await
    .expect("annotate");
    let msg = error_containing(&api, "tuned", BWLIMIT).await;
    assert!(msg.contains("not a bandwidth limit"), "{msg}");
    let jobs = ns
        .api::<Job>()
        .list(&Default::default())
        .await
        .expect("jobs");
    assert!(jobs.items.is_empty(), "no mover may start");

    // A valid value moves on to the next thing missing: the key Secret.
    api.patch(
        "tuned",
        &PatchParams::default(),
        &Patch::Merge(&annotate("10m")),
    )
    .await
    .expect("fix");
    let msg = error_containing(&api, "tuned", "keySecret").await;
    assert!(!msg.contains(BWLIMIT), "{msg}");
}
