//! A pair's key is removed when both sides are gone (issue 14), with the shipped vault
//! plugin's `release` against a real OpenBao: each side joins the pair as a member entry
//! under the pair's path, the key stays while one member remains, and the last to leave
//! deletes it. The credential reaches only the authorised pair and the asking side's own
//! member entry, so a hostile plugin releasing for tenant B cannot touch tenant A's pair.

use std::path::Path;

use ferrosync::policy::{
    FailureMode, PolicyConfig, PolicyEngine, PskAnswer, Side,
    credentials::CredentialPolicy,
    release::{PskReleaseInput, ReleaseOutcome, member_id},
};
use serde_json::json;

use super::{
    common::*,
    vault::{
        Bao, ROOT_TOKEN, authorised, bao_and_bundle, bundle_engine, get, vault_grant, vault_token,
    },
};

/// What an operator writes to let the shipped bundle record members: the pair's key (data
/// and metadata), its member list, and the asking side's own member entry.
fn member_targets(addr: &str) -> Vec<String> {
    [
        "data/ferrosync/psk/{pair}",
        "metadata/ferrosync/psk/{pair}",
        "metadata/ferrosync/psk/{pair}/members",
        "data/ferrosync/psk/{pair}/members/{member}",
        "metadata/ferrosync/psk/{pair}/members/{member}",
    ]
    .iter()
    .map(|p| format!("{addr}/v1/secret/{p}"))
    .collect()
}

/// [`member_targets`], over the loopback server's plain HTTP.
fn member_policy(bao: &Bao) -> CredentialPolicy {
    CredentialPolicy::new(member_targets(&bao.addr), vec![bao.addr.clone()])
}

async fn engine_for(bao: &Bao, dir: &Path) -> PolicyEngine {
    bundle_engine(dir, member_policy(bao), ROOT_TOKEN).await
}

async fn key_exists(bao: &Bao, pair: &str) -> bool {
    match get(bao, format!("/v1/secret/data/ferrosync/psk/{pair}")).await {
        (200, _) => true,
        (404, _) => false,
        (status, body) => panic!("vault read: HTTP {status}: {body}"),
    }
}

/// The member entries recorded for `pair`.
async fn members(bao: &Bao, pair: &str) -> Vec<String> {
    match get(
        bao,
        format!("/v1/secret/metadata/ferrosync/psk/{pair}/members?list=true"),
    )
    .await
    {
        (200, body) => body["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect(),
        (404, _) => Vec::new(),
        (status, body) => panic!("vault list: HTTP {status}: {body}"),
    }
}

fn side_input(side: Side, pair: &str, uid: &str) -> ferrosync::policy::PskInput {
    let mut input = psk_input(side, Some(pair));
    input.member = member_id(side, uid).unwrap();
    input
}

fn release_input(side: Side, uid: &str) -> PskReleaseInput {
    PskReleaseInput {
        side,
        namespace: "dr".into(),
        name: "db".into(),
        pair: String::new(),
        member: member_id(side, uid).unwrap(),
    }
}

#[tokio::test]
async fn the_key_stays_while_one_side_remains_and_goes_with_the_last() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let engine = engine_for(&bao, &dir).await;
    let pair = "db-eu-us";
    let scope = authorised(pair);
    let (dst_uid, src_uid) = ("0d5f-dst", "9a1c-src");

    // Both sides join; the destination stores the key, the source reads it.
    let dst = engine
        .psk_for_pair(&side_input(Side::Destination, pair, dst_uid), Some(&scope))
        .await
        .expect("destination decides");
    assert!(
        matches!(dst.decision.answer, PskAnswer::UseKey(_)),
        "{}",
        dst.decision.reason
    );
    let src = engine
        .psk_for_pair(&side_input(Side::Source, pair, src_uid), Some(&scope))
        .await
        .expect("source decides");
    assert_eq!(src.decision.answer, dst.decision.answer);
    // Asking again (each iteration does) writes no second entry.
    engine
        .psk_for_pair(&side_input(Side::Source, pair, src_uid), Some(&scope))
        .await
        .expect("source decides again");
    let mut joined = members(&bao, pair).await;
    joined.sort();
    assert_eq!(
        joined,
        ["destination-0d5f-dst", "source-9a1c-src"],
        "one member entry per side"
    );

    // The destination goes: the source remains, and so does the key.
    let left = engine
        .psk_release(&scope, release_input(Side::Destination, dst_uid))
        .await
        .expect("release");
    assert_eq!(
        left.decision.outcome,
        ReleaseOutcome::Left,
        "{}",
        left.decision.reason
    );
    assert!(
        key_exists(&bao, pair).await,
        "the key went with one side left"
    );
    assert_eq!(members(&bao, pair).await, ["source-9a1c-src"]);

    // The source goes too: the key is gone, all its versions.
    let last = engine
        .psk_release(&scope, release_input(Side::Source, src_uid))
        .await
        .expect("release");
    assert_eq!(
        last.decision.outcome,
        ReleaseOutcome::Deleted,
        "{}",
        last.decision.reason
    );
    assert!(!key_exists(&bao, pair).await, "the key outlived both sides");
    assert_eq!(
        get(&bao, format!("/v1/secret/metadata/ferrosync/psk/{pair}"))
            .await
            .0,
        404,
        "no version of the key is left"
    );
    assert!(members(&bao, pair).await.is_empty());

    // A release repeated (a controller that restarted before removing its finalizer)
    // finds nothing and says so.
    let again = engine
        .psk_release(&scope, release_input(Side::Source, src_uid))
        .await
        .expect("release");
    assert_eq!(again.decision.outcome, ReleaseOutcome::NoSuchPair);
}

#[tokio::test]
async fn a_release_for_tenant_b_cannot_touch_tenant_as_pair_or_members() {
    let (bao, _tmp, dir) = bao_and_bundle().await;

    // Tenant A's pair, joined by both of A's sides.
    let shipped = engine_for(&bao, &dir).await;
    let a_pair = "team-a-db";
    let a_scope = authorised(a_pair);
    for (side, uid) in [(Side::Destination, "a-dst"), (Side::Source, "a-src")] {
        shipped
            .psk_for_pair(&side_input(side, a_pair, uid), Some(&a_scope))
            .await
            .expect("A decides");
    }
    assert!(key_exists(&bao, a_pair).await);

    // A hostile psk plugin, granted the same vault and token, releases for tenant B
    // (authorised for team-b-*) by deleting A's key, A's members, or A's member list.
    let b_scope = authorised("team-b-db");
    for target in [
        format!("{}/v1/secret/metadata/ferrosync/psk/{a_pair}", bao.addr),
        format!(
            "{}/v1/secret/metadata/ferrosync/psk/{a_pair}/members/destination-a-dst",
            bao.addr
        ),
        // B's own pair path, but another member's entry (A's uid): not B's member.
        format!(
            "{}/v1/secret/metadata/ferrosync/psk/team-b-db/members/source-a-src",
            bao.addr
        ),
    ] {
        let mut hostile = spec("hostile-psk", json!({ "url": target }));
        hostile.grants.http = Some(vault_grant(&bao));
        let config = PolicyConfig {
            psk: point(hostile, FailureMode::Fallback),
            credentials: member_policy(&bao),
            ..PolicyConfig::default()
        };
        let engine = engine_with(&config, vault_token(ROOT_TOKEN), None).await;
        // Even configured to fall back, a failed release is an error, never "released".
        let err = engine
            .psk_release(&b_scope, release_input(Side::Destination, "b-dst"))
            .await
            .expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("denied"), "{target}: {msg}");
        assert!(!msg.contains(ROOT_TOKEN), "the token leaked: {msg}");
    }
    assert!(key_exists(&bao, a_pair).await, "A's key was deleted");
    let mut left = members(&bao, a_pair).await;
    left.sort();
    assert_eq!(left, ["destination-a-dst", "source-a-src"], "A's members");
}

#[tokio::test]
async fn an_unreachable_vault_is_an_error_not_a_release() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let engine = engine_for(&bao, &dir).await;
    let pair = "db-down";
    let scope = authorised(pair);
    engine
        .psk_for_pair(&side_input(Side::Destination, pair, "d"), Some(&scope))
        .await
        .expect("joins");
    drop(bao);
    let err = engine
        .psk_release(&scope, release_input(Side::Destination, "d"))
        .await
        .expect_err("nothing is known to be released");
    assert!(err.to_string().contains("failed"), "{err}");
}
