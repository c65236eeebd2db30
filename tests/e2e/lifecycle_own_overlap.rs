//! A late overlap of policy bindings on the real apiserver: a namespace listed by binding
//! `listed` that later gains the label binding `labelled` selects. The controller's
//! Namespace watch brings the change to the namespace's objects at once (the idle requeue
//! here is an hour, so nothing else could), which then carry the `PolicyBindingOverlap`
//! condition with a Warning Event; when the label goes, so does the condition, with a
//! Normal Event. The source is paused: no decision is made, the condition is checked on
//! every pass regardless.

use std::time::{Duration, Instant};

use ferrosync::api::ReplicationSource;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::{events, pvc},
    lifecycle_support::create_rs,
    support::wait::until,
};

const LABEL: &str = "ferrosync.test/late";
const STEP: Duration = Duration::from_secs(60);

fn overlap(
    rs: &ReplicationSource,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    rs.status
        .as_ref()?
        .sync
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PolicyBindingOverlap")
        .cloned()
}

#[tokio::test]
async fn a_late_overlap_of_bindings_is_a_condition_while_it_lasts() {
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let env = env();
    let ns = env.cp.namespace("late-overlap").await;
    let bundle = crate::support::bins::repo_root().join("policies/aws-ebs");
    let pin = ferrosync::policy::plugin::sha256_hex(
        &std::fs::read(bundle.join("copy-method-by-driver.wasm")).expect("component"),
    );
    let point = format!(
        "bundle = {:?}\nsha256 = {pin:?}\n",
        bundle.to_string_lossy()
    );
    let config = env.cp.dir.join("lifecycle-late-overlap.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy.bindings]]\nname = \"listed\"\nnamespaces = [{:?}]\n\
             [policy.bindings.copy_method]\n{point}\
             [[policy.bindings]]\nname = \"labelled\"\n\
             namespace_selector = {{ match_labels = {{ {LABEL:?} = \"yes\" }} }}\n\
             [policy.bindings.copy_method]\n{point}",
            ns.name
        ),
    )
    .expect("config");
    let controller = env.controller(&[
        ("FERROSYNC_CONFIG", &config.to_string_lossy()),
        ("FERROSYNC_REQUEUE__IDLE", "1h"),
    ]);
    pvc("data").create(&ns).await;
    create_rs(
        &ns,
        "late",
        json!({"sourcePVC": "data", "paused": true,
               "rsyncTLS": {"address": "192.0.2.1"}}),
    )
    .await;
    let rs_api: Api<ReplicationSource> = ns.api();
    let get = || async {
        rs_api
            .get("late")
            .await
            .map_err(|e| format!("{e}{}", env.controller_tail()))
    };
    // Idle and paused, with no overlap.
    let rs = until("the paused source's first pass", STEP, || async {
        let rs = get().await?;
        let paused = rs
            .status
            .as_ref()
            .and_then(|s| s.sync.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.reason == "Paused"));
        Ok(paused.then_some(rs))
    })
    .await
    .expect("the source idles, paused");
    assert_eq!(overlap(&rs), None);

    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    let label = |value: Option<&str>| {
        let patch = json!({"metadata": {"labels": {LABEL: value}}});
        let namespaces = namespaces.clone();
        let name = ns.name.clone();
        async move {
            namespaces
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("labelling the namespace");
        }
    };
    label(Some("yes")).await;
    let condition = until("the overlap condition", STEP, || async {
        Ok(overlap(&get().await?))
    })
    .await
    .expect("the overlap shown");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "DecidedByPrecedence")
    );
    assert!(
        condition
            .message
            .contains("selected by binding listed by name and by binding(s) labelled by label"),
        "{}",
        condition.message
    );
    let warned = until("the overlap Warning", STEP, || async {
        let all = events(&ns.client, &ns.name).await?;
        Ok(all
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("PolicyBindingOverlap")))
    })
    .await
    .expect("a Warning Event");
    assert_eq!(warned.type_.as_deref(), Some("Warning"));

    label(None).await;
    until("the overlap condition to go", STEP, || async {
        let rs = get().await?;
        let synchronizing = rs
            .status
            .as_ref()
            .and_then(|s| s.sync.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Synchronizing"));
        Ok((overlap(&rs).is_none() && synchronizing).then_some(()))
    })
    .await
    .expect("the overlap cleared, Synchronizing kept");
    let resolved = until("the resolution Event", STEP, || async {
        let all = events(&ns.client, &ns.name).await?;
        Ok(all
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("PolicyBindingOverlapResolved")))
    })
    .await
    .expect("a Normal Event");
    assert_eq!(resolved.type_.as_deref(), Some("Normal"));
    // All of it without a copy-method decision: the paused source never made one.
    let rs = get().await.expect("source");
    let decided = rs.status.as_ref().and_then(|s| s.sync.policy.as_ref());
    assert!(
        decided.is_none_or(|p| p.iter().all(|d| d.decision != "copy-method")),
        "{decided:?}"
    );
    drop(controller);
    eprintln!("late overlap: {:.1}s", started.elapsed().as_secs_f64());
}
