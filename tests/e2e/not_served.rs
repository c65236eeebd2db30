//! What ferrosync does with objects it does not serve, with the real controller:
//! - an rsyncTLS object it cannot serve (Block, a Service type it cannot expose, no
//!   address, port 0, a schedule its cron parser rejects) gets the condition and a Warning
//!   Event saying what to do, and nothing else: no key, Service, PVC or Job, ever;
//! - another mover's object (restic, rclone, rsync, syncthing, external) gets one Event and
//!   one log line, once, and is never written: not its status, not anything else.

use std::time::Duration;

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{PersistentVolumeClaim, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::{STEP, event, events},
    support::{TestNamespace, wait},
};

/// Creates an object from JSON in `ns` (its kind decides the API).
async fn create(ns: &TestNamespace, obj: Value) {
    match obj["kind"].as_str() {
        Some("ReplicationSource") => {
            let rs: ReplicationSource = serde_json::from_value(obj).expect("a source");
            ns.api()
                .create(&PostParams::default(), &rs)
                .await
                .expect("create");
        }
        _ => {
            let rd: ReplicationDestination = serde_json::from_value(obj).expect("a destination");
            ns.api()
                .create(&PostParams::default(), &rd)
                .await
                .expect("create");
        }
    }
}

fn rd(name: &str, tls: Value) -> Value {
    let mut base =
        json!({"copyMethod": "Snapshot", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]});
    base.as_object_mut()
        .unwrap()
        .extend(tls.as_object().unwrap().clone());
    json!({"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
           "metadata": {"name": name}, "spec": {"rsyncTLS": base}})
}

fn rs(name: &str, spec: Value) -> Value {
    let mut base = json!({"sourcePVC": "data", "trigger": {"manual": "once"},
                          "rsyncTLS": {"address": "192.0.2.1", "keySecret": "k"}});
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
           "metadata": {"name": name}, "spec": base})
}

/// The Synchronizing condition of `kind`/`name`, once it reflects generation `generation`.
async fn condition(ns: &TestNamespace, kind: &str, name: &str, generation: i64) -> Condition {
    wait::until(&format!("{kind} {name} to be reported"), STEP, || async {
        let conditions = if kind == "ReplicationSource" {
            let rs: ReplicationSource = ns.api().get(name).await.map_err(|e| e.to_string())?;
            rs.status.and_then(|s| s.sync.conditions)
        } else {
            let rd: ReplicationDestination = ns.api().get(name).await.map_err(|e| e.to_string())?;
            rd.status.and_then(|s| s.sync.conditions)
        };
        Ok(conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Synchronizing" && c.observed_generation == Some(generation)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// Names of the Services, Secrets, PVCs and Jobs in `ns`.
async fn made_objects(ns: &TestNamespace) -> Vec<String> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    out.extend(
        ns.api::<Service>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| format!("Service/{}", o.name_any())),
    );
    out.extend(
        ns.api::<Secret>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| format!("Secret/{}", o.name_any())),
    );
    out.extend(
        ns.api::<PersistentVolumeClaim>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| format!("PVC/{}", o.name_any())),
    );
    out.extend(
        ns.api::<Job>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| format!("Job/{}", o.name_any())),
    );
    out
}

#[tokio::test]
async fn rsync_tls_objects_ferrosync_cannot_serve_get_a_condition_and_nothing_else() {
    let env = env();
    let ns = env.cp.namespace("cannot-serve").await;
    // (object, condition reason, Event reason, what the message must say)
    let rows = [
        (
            rd("block", json!({"volumeMode": "Block"})),
            "Unsupported",
            "Unsupported",
            &["volumeMode Block", "use Filesystem"][..],
        ),
        (
            rd("external-name", json!({"serviceType": "ExternalName"})),
            "Unsupported",
            "Unsupported",
            &["serviceType ExternalName", "ClusterIP or LoadBalancer"][..],
        ),
        (
            rd("tunnel", json!({"serviceType": "Tunnel"})),
            "Error",
            "InvalidSpec",
            &[
                "\"Tunnel\" is not a Service type",
                "ClusterIP or LoadBalancer",
            ][..],
        ),
        (
            rs("no-address", json!({"rsyncTLS": {"keySecret": "k"}})),
            "Error",
            "InvalidSpec",
            &[
                "spec.rsyncTLS.address is not set",
                "status.rsyncTLS.address",
            ][..],
        ),
        (
            rs(
                "port-zero",
                json!({"rsyncTLS": {"address": "192.0.2.1", "port": 0}}),
            ),
            "Error",
            "InvalidSpec",
            &["spec.rsyncTLS.port 0", "1 to 65535"][..],
        ),
        (
            rs(
                "bad-schedule",
                json!({"trigger": {"schedule": "@hourly or so"}}),
            ),
            "Error",
            "InvalidSpec",
            &["spec.trigger.schedule", "@hourly"][..],
        ),
        (
            rs(
                "six-fields",
                json!({"trigger": {"schedule": "0 */5 * * * *"}}),
            ),
            "Error",
            "InvalidSpec",
            &["spec.trigger.schedule", "5 fields"][..],
        ),
    ];
    for (obj, ..) in &rows {
        create(&ns, obj.clone()).await;
    }
    for (obj, reason, event_reason, says) in &rows {
        let (kind, name) = (
            obj["kind"].as_str().unwrap(),
            obj["metadata"]["name"].as_str().unwrap(),
        );
        let c = condition(&ns, kind, name, 1).await;
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", *reason),
            "{name}: {c:?}"
        );
        for s in *says {
            assert!(
                c.message.contains(s),
                "{name}: {:?} does not say {s:?}",
                c.message
            );
        }
        let note = event(&ns.client, &ns.name, name, event_reason).await;
        assert_eq!(
            note, c.message,
            "{name}: the Event says what the condition says"
        );
    }
    // A second pass (a spec change) still does nothing but report.
    for (obj, ..) in &rows {
        let (kind, name) = (
            obj["kind"].as_str().unwrap(),
            obj["metadata"]["name"].as_str().unwrap(),
        );
        let body = json!({"spec": {"paused": false}});
        if kind == "ReplicationSource" {
            ns.api::<ReplicationSource>()
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .unwrap();
        } else {
            ns.api::<ReplicationDestination>()
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .unwrap();
        }
        condition(&ns, kind, name, 2).await;
    }
    let made = made_objects(&ns).await;
    assert!(
        made.is_empty(),
        "ferrosync made {made:?} for objects it cannot serve"
    );
    // The Warning Events are one per object: a repeated pass does not repeat them.
    let warnings: Vec<_> = events(&ns.client, &ns.name)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    assert_eq!(warnings.len(), rows.len(), "{warnings:#?}");
}

/// The fixtures of other movers, with their status.
fn other_mover_fixtures() -> Vec<Value> {
    let dir = crate::support::bins::repo_root().join("tests/fixtures/volsync-movers");
    [
        "restic-source",
        "restic-destination",
        "rclone-destination",
        "rsync-source",
        "syncthing-source",
        "external-destination",
    ]
    .into_iter()
    .map(|f| {
        let text = std::fs::read_to_string(dir.join(format!("{f}.yaml"))).expect("fixture");
        serde_yaml_ng::from_str(&text).expect("fixture parses")
    })
    .collect()
}

fn api(ns: &TestNamespace, kind: &str) -> Api<DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("volsync.backube", "v1alpha1", kind);
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::core::ApiResource::from_gvk(&gvk),
    )
}

#[tokio::test]
async fn other_movers_objects_get_one_event_and_are_never_written() {
    let env = env();
    let ns = env.cp.namespace("other-movers").await;
    let fixtures = other_mover_fixtures();
    let mut versions = Vec::new();
    for obj in &fixtures {
        let kind = obj["kind"].as_str().unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut spec_only = obj.clone();
        let status = spec_only.as_object_mut().unwrap().remove("status").unwrap();
        let mut dynamic: DynamicObject = serde_json::from_value(spec_only).unwrap();
        dynamic.metadata.namespace = Some(ns.name.clone());
        api(&ns, kind)
            .create(&PostParams::default(), &dynamic)
            .await
            .expect("create");
        // Their own controller's status, as VolSync (or the external mover) writes it.
        let params = PatchParams {
            field_manager: Some("volsync".into()),
            ..Default::default()
        };
        api(&ns, kind)
            .patch_status(&name, &params, &Patch::Merge(&json!({"status": status})))
            .await
            .expect("status");
        versions.push((kind.to_string(), name));
    }
    for (_, name) in &versions {
        let note = event(&ns.client, &ns.name, name, "MoverNotServed").await;
        assert!(
            note.contains("ferrosync serves only spec.rsyncTLS"),
            "{note}"
        );
    }
    // Edit each (a new generation), then let a served object's pass show the controller
    // is busy in this namespace meanwhile.
    let mut after_edit = Vec::new();
    for (kind, name) in &versions {
        let edited = api(&ns, kind)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"paused": true}})),
            )
            .await
            .expect("edit");
        after_edit.push((kind.clone(), name.clone(), edited.resource_version()));
    }
    create(&ns, rd("sentinel", json!({"volumeMode": "Block"}))).await;
    condition(&ns, "ReplicationDestination", "sentinel", 1).await;
    crate::lifecycle_support::holds_for(
        "other movers' objects untouched",
        Duration::from_secs(3),
        || async {
            for ((kind, name, version), fixture) in after_edit.iter().zip(&fixtures) {
                let now = api(&ns, kind).get(name).await.map_err(|e| e.to_string())?;
                if now.resource_version() != *version {
                    return Err(format!(
                        "{kind} {name} was written: {:?}",
                        now.metadata.managed_fields
                    ));
                }
                if now.data["status"] != fixture["status"] {
                    return Err(format!(
                        "{kind} {name}: status changed to {}",
                        now.data["status"]
                    ));
                }
                let managers: Vec<_> = now
                    .metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter_map(|m| m.manager.clone())
                    .collect();
                if managers.iter().any(|m| m.contains("ferrosync")) {
                    return Err(format!(
                        "{kind} {name}: ferrosync manages fields: {managers:?}"
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
    // One Event each, once (no series), and nothing made for them.
    let all = events(&ns.client, &ns.name).await.unwrap();
    for (_, name) in &versions {
        let mine: Vec<_> = all
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("MoverNotServed")
                    && e.involved_object.name.as_deref() == Some(name)
            })
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {mine:#?}");
        assert!(
            mine[0].series.is_none() && mine[0].count.unwrap_or(1) <= 1,
            "{name}: repeated {:?}",
            mine[0]
        );
        assert_eq!(mine[0].type_.as_deref(), Some("Normal"));
    }
    let made = made_objects(&ns).await;
    assert!(made.is_empty(), "ferrosync made {made:?}");
    // And one log line each.
    let log = env.controller.log_text();
    for (_, name) in &versions {
        let lines = log
            .lines()
            .filter(|l| {
                l.contains("not served")
                    && l.contains(&ns.name)
                    && l.contains(&format!("\"{name}\""))
            })
            .count();
        assert_eq!(lines, 1, "{name}: {lines} log lines");
    }
}
