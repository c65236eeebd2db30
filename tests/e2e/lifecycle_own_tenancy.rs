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
use kube::{Api, api::ListParams};

use crate::{
    env::{SERIAL, env},
    fixtures::STEP,
    lifecycle_own_support::{Kind, condition_with},
    lifecycle_own_vault::{
        Bao, OtherCluster, PREFIXES, create_paired_destination, create_paired_source,
        grant_prefixes, start_with_vault,
    },
    support::{Options, TestNamespace, wait},
};

/// Creates a source naming `pair`, pointed at an address that is never reached.
async fn create_rs(ns: &TestNamespace, name: &str, pair: &str) {
    create_paired_source(ns, name, pair, "Direct", "destination.invalid").await;
}

/// Waits until `name`'s Synchronizing condition says its pair is not authorised.
async fn refused<K: Kind>(ns: &TestNamespace, name: &str) -> String {
    condition_with::<K>(ns, name, "is not authorised").await
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
    let _controller = start_with_vault(&env, &config, &[]).await;
    let a = env.cp.namespace("tenant-a").await;
    let b_dst = env.cp.namespace("tenant-b-dst").await;
    let b_src = env.cp.namespace("tenant-b-src").await;
    grant_prefixes(env.cp, &a.name, "team-a-").await;
    grant_prefixes(env.cp, &b_dst.name, "team-b-").await;
    grant_prefixes(env.cp, &b_src.name, "team-b-").await;
    let pair = format!("team-b-db-{}", b_dst.name);

    // A claims B's pair first, as a destination: refused, and nothing is stored.
    create_paired_destination(&a, "claim", &pair).await;
    let why = refused::<ReplicationDestination>(&a, "claim").await;
    assert!(why.contains(PREFIXES) && why.contains("team-a-"), "{why}");
    assert_eq!(bao.key(&pair).await, None, "A claimed the pair");

    // B's destination stores its key; B's source in another namespace receives it.
    create_paired_destination(&b_dst, "db", &pair).await;
    let b_key = key_in(&b_dst, "volsync-rsync-tls-db").await;
    assert_eq!(bao.key(&pair).await.as_deref(), Some(b_key.as_str()));
    create_rs(&b_src, "db", &pair).await;
    assert_eq!(key_in(&b_src, "ferrosync-source-key-db").await, b_key);

    // A asks for it as a source (receive) and again as a destination (overwrite).
    create_rs(&a, "steal", &pair).await;
    refused::<ReplicationSource>(&a, "steal").await;
    create_paired_destination(&a, "overwrite", &pair).await;
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
    let _one = start_with_vault(&env, &config, &[]).await;
    let other = OtherCluster::start(Options::default(), |cp| {
        bao.controller_config(cp, "cluster-two")
    })
    .await;

    let dst = env.cp.namespace("geo-dst").await;
    let src = other.cp.namespace("geo-src").await;
    grant_prefixes(env.cp, &dst.name, "geo-").await;
    grant_prefixes(&other.cp, &src.name, "geo-").await;
    let pair = format!("geo-db-{}", dst.name);

    // The source in the second cluster first: it waits for the key.
    create_rs(&src, "db", &pair).await;
    create_paired_destination(&dst, "db", &pair).await;
    let key = key_in(&dst, "volsync-rsync-tls-db").await;
    assert_eq!(key_in(&src, "ferrosync-source-key-db").await, key);
    assert_eq!(bao.key(&pair).await.as_deref(), Some(key.as_str()));
}
