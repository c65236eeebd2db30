//! A pair's vault key is removed when both sides are gone (issue 14), on the real
//! apiserver with a real OpenBao and the shipped vault bundle.
//!
//! Each side of a pair carries the finalizer `ferrosync.io/psk-pair-release` from before
//! its first key decision, and is recorded in the vault as one member entry under the
//! pair's path. Deleting a side removes its entry; deleting the last removes the key. The
//! sides here live in two clusters with a controller each, sharing only the vault. A
//! tenant naming another tenant's pair never joins it and so cannot release it; a vault
//! that does not answer keeps the finalizer, with a condition saying why, until it does;
//! and an annotation lets an object go at once.

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    env::{SERIAL, env},
    fixtures::STEP,
    lifecycle_own_support::{Kind, condition_with},
    lifecycle_own_vault::{
        Bao, OtherCluster, ROOT_TOKEN, create_paired_destination, create_paired_source,
        grant_prefixes, start_with_vault,
    },
    support::{Options, TestNamespace, wait},
};

const FINALIZER: &str = "ferrosync.io/psk-pair-release";
const ABANDON: &str = "ferrosync.io/psk-release";

/// A source naming `pair`, pointed at an address that is never reached.
async fn create_rs(ns: &TestNamespace, name: &str, pair: &str) {
    create_paired_source(ns, name, pair, "Direct", "destination.invalid").await;
}

/// The Vault API with the root token: status and JSON body. Blocking.
fn vault(addr: &str, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("{addr}{path}"))
        .header("X-Vault-Token", ROOT_TOKEN)
        .call()
        .expect("vault call");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The member entries of `pair` in the vault, sorted.
async fn members(bao: &Bao, pair: &str) -> Vec<String> {
    let (addr, path) = (
        bao.addr.clone(),
        format!("/v1/secret/metadata/ferrosync/psk/{pair}/members?list=true"),
    );
    let (status, body) = tokio::task::spawn_blocking(move || vault(&addr, &path))
        .await
        .expect("vault");
    let mut keys: Vec<String> = match status {
        200 => body["data"]["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_owned())
            .collect(),
        404 => Vec::new(),
        other => panic!("vault list: HTTP {other}: {body}"),
    };
    keys.sort();
    keys
}

/// Whether the vault holds a key for `pair`.
async fn has_key(bao: &Bao, pair: &str) -> bool {
    bao.key(pair).await.is_some()
}

/// The object's finalizers, once `check` accepts them.
async fn finalizers_until<K: Kind>(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let api: Api<K> = ns.api();
    wait::until(&format!("{name}: {what}"), STEP, || async {
        let obj = api.get(name).await.map_err(|e| e.to_string())?;
        let f = obj.meta().finalizers.clone().unwrap_or_default();
        Ok(check(&f).then_some(f))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

async fn delete<K: Kind>(ns: &TestNamespace, name: &str) {
    ns.api::<K>()
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
}

async fn gone<K: Kind>(ns: &TestNamespace, name: &str) {
    let api: Api<K> = ns.api();
    wait::until(&format!("{name} to be gone"), STEP, || async {
        let obj = api.get_opt(name).await.map_err(|e| e.to_string())?;
        Ok(obj.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));
}

/// Two clusters, a controller each, sharing the vault: the key stays while one side
/// remains and goes with the second; a tenant naming the pair never joins it, and its
/// deletion releases nothing of it.
#[tokio::test]
async fn a_pairs_key_is_removed_when_both_sides_in_two_clusters_are_gone() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config_with_members(env.cp, "release-one");
    let _one = start_with_vault(&env, &config, &[]).await;
    // Audited: the source's finalizer patch happens only here, and the least-privilege check
    // must see it.
    let other = OtherCluster::start(Options::audited(), |cp| {
        bao.controller_config_with_members(cp, "release-two")
    })
    .await;

    let dst = env.cp.namespace("rel-dst").await;
    let src = other.cp.namespace("rel-src").await;
    let tenant_b = env.cp.namespace("rel-tenant-b").await;
    grant_prefixes(env.cp, &dst.name, "geo-").await;
    grant_prefixes(&other.cp, &src.name, "geo-").await;
    grant_prefixes(env.cp, &tenant_b.name, "team-b-").await;
    let pair = format!("geo-db-{}", dst.name);

    create_paired_destination(&dst, "db", &pair).await;
    create_rs(&src, "db", &pair).await;
    for (ns, name) in [(&dst, "db")] {
        finalizers_until::<ReplicationDestination>(ns, name, "the finalizer", |f| {
            f.iter().any(|x| x == FINALIZER)
        })
        .await;
    }
    finalizers_until::<ReplicationSource>(&src, "db", "the finalizer", |f| {
        f.iter().any(|x| x == FINALIZER)
    })
    .await;
    wait::until("both sides to join the pair", STEP, || async {
        Ok((members(&bao, &pair).await.len() == 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    let joined = members(&bao, &pair).await;
    assert!(
        joined[0].starts_with("destination-") && joined[1].starts_with("source-"),
        "{joined:?}"
    );
    assert!(has_key(&bao, &pair).await);

    // Tenant B names the pair: refused, never joins, no finalizer; deleting it is
    // immediate and removes nothing of the pair.
    create_paired_destination(&tenant_b, "steal", &pair).await;
    condition_with::<ReplicationDestination>(&tenant_b, "steal", "is not authorised").await;
    let b_finalizers = tenant_b
        .api::<ReplicationDestination>()
        .get("steal")
        .await
        .expect("steal")
        .metadata
        .finalizers
        .unwrap_or_default();
    assert!(b_finalizers.is_empty(), "{b_finalizers:?}");
    delete::<ReplicationDestination>(&tenant_b, "steal").await;
    gone::<ReplicationDestination>(&tenant_b, "steal").await;
    assert_eq!(members(&bao, &pair).await, joined, "B released a member");
    assert!(has_key(&bao, &pair).await, "B removed the key");

    // The destination goes: the source in the other cluster remains, and so does the key.
    delete::<ReplicationDestination>(&dst, "db").await;
    gone::<ReplicationDestination>(&dst, "db").await;
    assert_eq!(members(&bao, &pair).await, joined[1..].to_vec());
    assert!(
        has_key(&bao, &pair).await,
        "the key went while a side remained"
    );

    // The source goes too: no member, no key.
    delete::<ReplicationSource>(&src, "db").await;
    gone::<ReplicationSource>(&src, "db").await;
    assert!(members(&bao, &pair).await.is_empty());
    assert!(!has_key(&bao, &pair).await, "the key outlived both sides");
}

/// A vault that does not answer: the deleted side keeps its finalizer, its condition says
/// why and what to do, and it is released once the vault answers again; meanwhile the
/// abandon annotation lets another side go at once, leaving its membership behind.
#[tokio::test]
async fn a_frozen_vault_keeps_the_finalizer_until_it_answers() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config_with_members(env.cp, "release-frozen");
    // Short backoff, so the release is retried soon after the vault thaws.
    let _controller =
        start_with_vault(&env, &config, &[("FERROSYNC_REQUEUE__ERROR_MAX", "5s")]).await;
    let ns = env.cp.namespace("rel-frozen").await;
    grant_prefixes(env.cp, &ns.name, "frozen-").await;
    let (kept, abandoned) = (
        format!("frozen-kept-{}", ns.name),
        format!("frozen-gone-{}", ns.name),
    );
    create_paired_destination(&ns, "kept", &kept).await;
    create_paired_destination(&ns, "abandoned", &abandoned).await;
    for pair in [&kept, &abandoned] {
        wait::until(&format!("{pair} to be joined and keyed"), STEP, || async {
            Ok((members(&bao, pair).await.len() == 1 && has_key(&bao, pair).await).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    }

    // Each side's iteration has begun, and with it its key check (a join that a freeze
    // caught in flight would land after the thaw, out of order with the release).
    for name in ["kept", "abandoned"] {
        let jobs: Api<Job> = ns.api();
        let job = format!("volsync-rsync-tls-dst-{name}");
        wait::until(&format!("{name}'s first iteration"), STEP, || async {
            jobs.get_opt(&job).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    }
    bao.freeze(true);
    delete::<ReplicationDestination>(&ns, "kept").await;
    delete::<ReplicationDestination>(&ns, "abandoned").await;
    let why = condition_with::<ReplicationDestination>(&ns, "kept", "leaving pair").await;
    assert!(why.contains(&kept), "{why}");
    assert!(
        why.contains("timed out") || why.contains("deadline"),
        "{why}"
    );
    assert!(
        why.contains(FINALIZER) && why.contains(ABANDON),
        "says what happens and what to do: {why}"
    );
    let still = finalizers_until::<ReplicationDestination>(&ns, "kept", "still finalized", |f| {
        f.iter().any(|x| x == FINALIZER)
    })
    .await;
    assert_eq!(still, [FINALIZER]);

    // The escape: annotated, the other side goes now, vault or not.
    ns.api::<ReplicationDestination>()
        .patch(
            "abandoned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ABANDON: "abandon"}}})),
        )
        .await
        .expect("annotate");
    gone::<ReplicationDestination>(&ns, "abandoned").await;
    // The frozen vault was never asked to release it: the object is gone, its finalizer
    // with it, while the kept side still waits.
    assert!(
        ns.api::<ReplicationDestination>()
            .get_opt("kept")
            .await
            .expect("kept")
            .is_some(),
        "the kept side went while the vault was frozen"
    );

    bao.freeze(false);
    gone::<ReplicationDestination>(&ns, "kept").await;
    assert!(members(&bao, &kept).await.is_empty());
    assert!(
        !has_key(&bao, &kept).await,
        "released once the vault answered"
    );
    // Abandoned: the key stays (its member entry may be gone: the frozen vault had
    // already received a release's first request, and answers it after the thaw).
    assert!(
        has_key(&bao, &abandoned).await,
        "abandoned: key left behind"
    );
}
