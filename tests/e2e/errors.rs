//! Errors that cannot clear on their own: each sets the Synchronizing condition to Error
//! with a message a user understands, starts no mover, and clears once the object or the
//! Secret it names is fixed.

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    env::env,
    fixtures::STEP,
    support::{TestNamespace, wait},
    volsync::{destination, no_jobs, source},
};

/// Waits until `name`'s Synchronizing condition is an Error whose message contains `text`.
async fn error_on<K>(
    ns: &TestNamespace,
    name: &str,
    text: &str,
    conditions: impl Fn(K) -> Vec<Condition>,
) -> String
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = ns.api();
    wait::until(
        &format!("{name}: an Error naming {text:?}"),
        STEP,
        || async {
            let obj = api.get(name).await.map_err(|e| e.to_string())?;
            let cond = conditions(obj)
                .into_iter()
                .find(|c| c.type_ == "Synchronizing");
            Ok(cond
                .filter(|c| c.reason == "Error" && c.message.contains(text))
                .map(|c| c.message))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn error_on_destination(ns: &TestNamespace, name: &str, text: &str) -> String {
    error_on(ns, name, text, |rd: ReplicationDestination| {
        rd.status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
    })
    .await
}

async fn error_on_source(ns: &TestNamespace, name: &str, text: &str) -> String {
    error_on(ns, name, text, |rs: ReplicationSource| {
        rs.status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
    })
    .await
}

async fn secret(ns: &TestNamespace, name: &str, data: serde_json::Value) {
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
        .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .expect("creating secret");
}

#[tokio::test]
async fn key_secret_errors_are_named_and_clear_when_the_secret_is_fixed() {
    let env = env();
    let ns = env.cp.namespace("err-key").await;
    destination(&ns, "missing", json!({"keySecret": "nowhere"})).await;
    let msg = error_on_destination(&ns, "missing", "nowhere").await;
    assert!(msg.contains("not found"), "{msg}");

    secret(&ns, "no-field", json!({"other": "x"})).await;
    destination(&ns, "nofield", json!({"keySecret": "no-field"})).await;
    error_on_destination(&ns, "nofield", "missing field: psk.txt").await;

    secret(&ns, "short", json!({"psk.txt": "id:abcd"})).await;
    destination(&ns, "short", json!({"keySecret": "short"})).await;
    let msg = error_on_destination(&ns, "short", "at least 32").await;
    assert!(
        !msg.contains("abcd"),
        "key material never appears in a condition: {msg}"
    );
    no_jobs(&ns).await;

    // Fixing the Secret clears the error without touching the object (the Secret is watched).
    let fixed = json!({"stringData": {"psk.txt": "id:00112233445566778899aabbccddeeff"}});
    ns.api::<Secret>()
        .patch("short", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("fix");
    let api: Api<ReplicationDestination> = ns.api();
    wait::until("the error to clear", STEP, || async {
        let rd = api.get("short").await.map_err(|e| e.to_string())?;
        let reason = rd
            .status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Synchronizing")
            .map(|c| c.reason);
        Ok(reason.filter(|r| r != "Error"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn unsupported_and_invalid_specs_are_reported() {
    let env = env();
    let ns = env.cp.namespace("err-spec").await;
    // volumeMode Block and the other specs ferrosync cannot serve: not_served.rs.
    destination(&ns, "nosa", json!({"moverServiceAccount": "nobody-here"})).await;
    error_on_destination(
        &ns,
        "nosa",
        "moverServiceAccount \"nobody-here\" does not exist",
    )
    .await;

    // No mover at all: the schema accepts it; the controller says what it serves.
    let bare: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": "bare"}, "spec": {"sourcePVC": "data"},
    }))
    .expect("fixture");
    ns.api::<ReplicationSource>()
        .create(&PostParams::default(), &bare)
        .await
        .expect("create");
    error_on_source(
        &ns,
        "bare",
        "no replication method is set: set spec.rsyncTLS",
    )
    .await;

    source(
        &ns,
        "nopvc",
        "absent",
        json!({"address": "127.0.0.1", "keySecret": "k"}),
    )
    .await;
    error_on_source(&ns, "nopvc", "keySecret").await;
    no_jobs(&ns).await;
}

#[tokio::test]
async fn a_missing_source_pvc_is_a_wait_not_an_error_and_ends_when_it_appears() {
    let env = env();
    let ns = env.cp.namespace("wait-pvc").await;
    source(&ns, "early", "later", json!({"address": "127.0.0.1"})).await;
    let api: Api<ReplicationSource> = ns.api();
    let reason = |rs: ReplicationSource| {
        rs.status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Synchronizing")
    };
    let cond = wait::until("a Waiting condition", STEP, || async {
        let rs = api.get("early").await.map_err(|e| e.to_string())?;
        Ok(reason(rs).filter(|c| c.reason == "Waiting"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cond.message.contains("\"later\" does not exist"),
        "{cond:?}"
    );
    assert_eq!(cond.status, "False");
    no_jobs(&ns).await;

    crate::fixtures::pvc("later").create(&ns).await;
    wait::until("the wait to end", STEP, || async {
        let rs = api.get("early").await.map_err(|e| e.to_string())?;
        Ok(reason(rs)
            .filter(|c| c.reason == "SyncInProgress")
            .map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
