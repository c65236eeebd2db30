//! Bindings and shadow mode on the real apiserver with the real copy-method component:
//! a namespace listed by binding `team-a` and one selected by label for `team-b` decide
//! differently, `status.policy` names the binding, and `team-b`'s shadow candidate (which
//! would choose Snapshot) is announced by an Event and logged but never changes the
//! object: it keeps its Clone, and no snapshot is taken in its namespace.

use std::time::Instant;

use ferrosync::api::ReplicationSource;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::{bound_dir, events, pvc},
    lifecycle_own_support::{aws_ebs_bundle, copy_method_entry, create_ebs_classes},
    lifecycle_support::{
        OWNER, assert_image_equals, create_rs, manual_synced, new_image, snapshot_destination,
        source_spec,
    },
    support::sim::storage::snapshot,
    tree,
};

/// A StorageClass whose driver cannot clone, like EBS.
const EBS_LIKE: &str = "pb-ebs-gp2";
/// The label that puts a namespace under `team-b`.
const TEAM_LABEL: &str = "ferrosync.test/team";

/// A copy of the shipped aws-ebs bundle for this test: see [`aws_ebs_bundle`].
fn bundle(name: &str, simulator_is_ebs: bool) -> std::path::PathBuf {
    let to = env()
        .cp
        .dir
        .join(format!("bindings-{name}-{}", std::process::id()));
    aws_ebs_bundle(&to, simulator_is_ebs)
}

#[tokio::test]
async fn two_namespaces_bound_to_different_bundles_decide_differently_and_a_shadow_acts_on_nothing()
{
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let env = env();
    let snapshots = bundle("snapshot", true);
    let clones = bundle("clone", false);
    let pin = ferrosync::policy::plugin::sha256_hex(
        &std::fs::read(snapshots.join("copy-method-by-driver.wasm")).expect("component"),
    );
    let dst = env.cp.namespace("pb-dst").await;
    let team_a = env.cp.namespace("pb-team-a").await;
    let team_b = env.cp.namespace("pb-team-b").await;
    Api::<Namespace>::all(team_b.client.clone())
        .patch(
            &team_b.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {TEAM_LABEL: "b"}}})),
        )
        .await
        .expect("labelling team-b's namespace");

    let config = env.cp.dir.join("lifecycle-bindings.toml");
    let point = |dir: &std::path::Path| {
        format!(
            "bundle = {:?}\nsha256 = {pin:?}\non_failure = \"fail\"\n",
            dir.to_string_lossy()
        )
    };
    std::fs::write(
        &config,
        format!(
            "[[policy.bindings]]\nname = \"team-a\"\nnamespaces = [{:?}]\n\
             [policy.bindings.copy_method]\n{}\
             [[policy.bindings]]\nname = \"team-b\"\n\
             namespace_selector = {{ match_labels = {{ {TEAM_LABEL:?} = \"b\" }} }}\n\
             [policy.bindings.copy_method]\n{}\
             [policy.bindings.shadow.copy_method]\n{}",
            team_a.name,
            point(&snapshots),
            point(&clones),
            point(&snapshots),
        ),
    )
    .expect("config");
    let controller = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    create_ebs_classes(&team_a.client, EBS_LIKE).await;
    for ns in [&dst, &team_a, &team_b] {
        crate::volsync::privileged_movers(ns).await;
    }
    snapshot_destination(&dst, "bound", 2, json!({})).await;
    let (address, key) = crate::volsync::published(&dst, "bound").await;
    for ns in [&team_a, &team_b] {
        crate::volsync::copy_secret(&dst, &key, ns, "bound-key").await;
    }

    // Both ask for a Clone of a volume of the simulator's driver (team-a's class cannot
    // clone, as on EBS).
    pvc("data").class(EBS_LIKE).create(&team_a).await;
    pvc("data").create(&team_b).await;
    for ns in [&team_a, &team_b] {
        tree::write_sample(&bound_dir(ns, "data").await, OWNER);
    }
    for ns in [&team_a, &team_b] {
        create_rs(
            ns,
            "bound",
            source_spec(
                "bound",
                "data",
                &address,
                json!({"manual": "one"}),
                json!({"copyMethod": "Clone"}),
            ),
        )
        .await;
    }
    let a = manual_synced(&team_a, "bound", "one").await;
    let decided = copy_method_entry(&a);
    assert_eq!(decided.value, "Snapshot", "{decided:?}");
    assert_eq!(
        decided.decided_by, "copy-method-by-driver (binding team-a)",
        "{decided:?}"
    );
    let image = new_image(&dst, "bound", None).await;
    assert_image_equals(
        &dst,
        &image,
        "restored-a",
        &bound_dir(&team_a, "data").await,
    )
    .await;

    // team-b's source: its own binding keeps the Clone; the candidate would not.
    let rs_b: Api<ReplicationSource> = team_b.api();
    let b = crate::support::wait::until("team-b's copy-method decision", STEP_B, || async {
        let rs = rs_b.get("bound").await.map_err(|e| e.to_string())?;
        let decided = rs
            .status
            .as_ref()
            .and_then(|s| s.sync.policy.as_ref())
            .is_some_and(|p| p.iter().any(|d| d.decision == "copy-method"));
        Ok(decided.then_some(rs))
    })
    .await
    .expect("team-b decided");
    let decided = copy_method_entry(&b);
    assert_eq!(
        decided.value, "Clone",
        "the shadow acts on nothing: {decided:?}"
    );
    assert_eq!(
        decided.decided_by, "copy-method-by-driver (binding team-b)",
        "{decided:?}"
    );
    let announced = crate::support::wait::until("the shadow difference Event", STEP_B, || async {
        let all = events(&team_b.client, &team_b.name).await?;
        let shadow: Vec<_> = all
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PolicyShadowDifference"))
            .collect();
        Ok((!shadow.is_empty()).then_some(shadow))
    })
    .await
    .expect("the shadow difference announced");
    let note = announced[0].message.clone().unwrap_or_default();
    assert!(
        note.contains("Snapshot") && note.contains("binding team-b"),
        "{note}"
    );
    // Once per object: however often team-b's source is decided, one Event series.
    assert_eq!(announced.len(), 1, "{announced:?}");
    // Nothing of the candidate's choice happened: no snapshot in team-b's namespace.
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(team_b.client.clone(), &team_b.name, &snapshot::snapshots());
    let taken = snaps.list(&ListParams::default()).await.expect("snapshots");
    assert!(taken.items.is_empty(), "{:?}", taken.items);
    // Counted: the controller logged each different answer.
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(
        log.contains("shadow plugin answered differently"),
        "{}",
        env.controller_tail()
    );
    // The team-a namespace never had a candidate.
    let all_a = events(&team_a.client, &team_a.name).await.expect("events");
    assert!(
        !all_a
            .iter()
            .any(|e| e.reason.as_deref() == Some("PolicyShadowDifference"))
    );
    drop(controller);
    eprintln!(
        "bindings and shadow: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

const STEP_B: std::time::Duration = std::time::Duration::from_secs(120);
