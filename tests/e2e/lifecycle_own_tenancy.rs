//! Keys across tenants (issue 14), on the real apiserver with a real OpenBao and the
//! shipped vault bundle.
//!
//! Before the fix the vault path came only from the `ferrosync.io/psk-pair` annotation,
//! which any tenant writes: tenant A naming team B's pair received B's key in a Secret of
//! its own namespace, or, first to claim the name, made B use a key A knew. Now the
//! Namespace's admin-set `ferrosync.io/psk-pair-prefixes` authorises pair names, and the
//! host sends the vault token only to the authorised pair's path. Normal pairing across
//! namespaces, and across two clusters sharing only the vault, still works.

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource,
    api::{ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::STEP,
    lifecycle_own_vault::{Bao, PAIR, PREFIXES, grant_prefixes, token_secret},
    lifecycle_support::create_rd,
    support::{
        ControlPlane, Options, TestNamespace, controller::RunningController, deploy,
        sim::storage::snapshot, wait,
    },
};

/// A destination spec the simulated storage serves.
fn destination_spec() -> serde_json::Value {
    json!({"rsyncTLS": {"copyMethod": "Snapshot", "capacity": "1Gi",
        "accessModes": ["ReadWriteOnce"],
        "volumeSnapshotClassName": snapshot::SNAPSHOT_CLASS}})
}

/// Creates a source naming `pair`, pointed at an address that is never reached.
async fn create_rs(ns: &TestNamespace, name: &str, pair: &str) {
    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": name, "annotations": {PAIR: pair}},
        "spec": {"sourcePVC": "data", "trigger": {"manual": "one"},
                 "rsyncTLS": {"copyMethod": "Direct", "address": "destination.invalid"}},
    }))
    .expect("source");
    ns.api::<ReplicationSource>()
        .create(&PostParams::default(), &rs)
        .await
        .expect("creating source");
}

/// Waits until `name`'s Synchronizing condition says its pair is not authorised.
async fn refused<K>(ns: &TestNamespace, name: &str) -> String
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    let api: Api<K> = ns.api();
    wait::until(&format!("{name} to be refused its pair"), STEP, || async {
        let obj = api.get(name).await.map_err(|e| e.to_string())?;
        let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
        let conditions = value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(conditions
            .iter()
            .filter_map(|c| c["message"].as_str())
            .find(|m| m.contains("is not authorised"))
            .map(str::to_owned))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// The contents of `psk.txt` in Secret `name`, once it exists.
async fn key_in(ns: &TestNamespace, name: &str) -> String {
    let api: Api<Secret> = ns.api();
    wait::until(&format!("key Secret {name}"), STEP, || async {
        let secret = api.get_opt(name).await.map_err(|e| e.to_string())?;
        Ok(secret
            .and_then(|s| s.data)
            .and_then(|d| d.get("psk.txt").cloned())
            .map(|b| String::from_utf8(b.0).expect("utf-8")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// Every `psk.txt` held in `ns`.
async fn keys_held(ns: &TestNamespace) -> Vec<String> {
    ns.api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
        .into_iter()
        .filter_map(|s| s.data?.get("psk.txt").cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_cannot_receive_claim_or_overwrite_another_tenants_key() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config(env.cp, "tenancy");
    let _controller = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    token_secret(env.cp).await;
    let a = env.cp.namespace("tenant-a").await;
    let b_dst = env.cp.namespace("tenant-b-dst").await;
    let b_src = env.cp.namespace("tenant-b-src").await;
    grant_prefixes(env.cp, &a.name, "team-a-").await;
    grant_prefixes(env.cp, &b_dst.name, "team-b-").await;
    grant_prefixes(env.cp, &b_src.name, "team-b-").await;
    let pair = format!("team-b-db-{}", b_dst.name);

    // A claims B's pair first, as a destination: refused, and nothing is stored.
    create_rd(&a, "claim", json!({PAIR: pair}), destination_spec()).await;
    let why = refused::<ReplicationDestination>(&a, "claim").await;
    assert!(why.contains(PREFIXES) && why.contains("team-a-"), "{why}");
    assert_eq!(bao.key(&pair).await, None, "A claimed the pair");

    // B's destination stores its key; B's source in another namespace receives it.
    create_rd(&b_dst, "db", json!({PAIR: pair}), destination_spec()).await;
    let b_key = key_in(&b_dst, "volsync-rsync-tls-db").await;
    assert_eq!(bao.key(&pair).await.as_deref(), Some(b_key.as_str()));
    create_rs(&b_src, "db", &pair).await;
    assert_eq!(key_in(&b_src, "ferrosync-source-key-db").await, b_key);

    // A asks for it as a source (receive) and again as a destination (overwrite).
    create_rs(&a, "steal", &pair).await;
    refused::<ReplicationSource>(&a, "steal").await;
    create_rd(&a, "overwrite", json!({PAIR: pair}), destination_spec()).await;
    refused::<ReplicationDestination>(&a, "overwrite").await;
    let held = keys_held(&a).await;
    assert!(held.is_empty(), "A holds keys: {} of them", held.len());
    assert_eq!(
        bao.key(&pair).await.as_deref(),
        Some(b_key.as_str()),
        "B's key in vault is unchanged"
    );
    assert_eq!(key_in(&b_dst, "volsync-rsync-tls-db").await, b_key);
}

/// Two clusters, each with its own controller, share only the vault: the destination's
/// key reaches the other cluster's source without anyone copying a Secret.
#[tokio::test]
async fn two_clusters_pair_through_the_vault() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config(env.cp, "cluster-one");
    let _one = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    token_secret(env.cp).await;

    let other = ControlPlane::start(Options::default()).expect("a second cluster");
    let other_config = bao.controller_config(&other, "cluster-two");
    let _two = RunningController::start(
        &other,
        &deploy::controller_identity(&other),
        &[
            ("POD_NAMESPACE", deploy::NAMESPACE),
            ("FERROSYNC_CONFIG", &other_config.to_string_lossy()),
            ("FERROSYNC_REQUEUE__POLL", "500ms"),
        ],
    );
    token_secret(&other).await;

    let dst = env.cp.namespace("geo-dst").await;
    let src = other.namespace("geo-src").await;
    grant_prefixes(env.cp, &dst.name, "geo-").await;
    grant_prefixes(&other, &src.name, "geo-").await;
    let pair = format!("geo-db-{}", dst.name);

    // The source in the second cluster first: it waits for the key.
    create_rs(&src, "db", &pair).await;
    create_rd(&dst, "db", json!({PAIR: pair}), destination_spec()).await;
    let key = key_in(&dst, "volsync-rsync-tls-db").await;
    assert_eq!(key_in(&src, "ferrosync-source-key-db").await, key);
    assert_eq!(bao.key(&pair).await.as_deref(), Some(key.as_str()));
}
