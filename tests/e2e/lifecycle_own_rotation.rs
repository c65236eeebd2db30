//! Rotation of a vault pair's key, end to end (issue 14): `ferrosync.io/rotate-key` on the
//! destination makes it store a new key at its next iteration start, accepting the new
//! and the previous key side by side; the source takes the new key at its next iteration;
//! the destination drops the previous key once a sync completed after the rotation. Every
//! sync across it succeeds at the first attempt: there is no moment without a common key.
//! And a vault that stops answering leaves the pair syncing with the keys it holds.

use std::collections::BTreeMap;

use ferrosync::api::ReplicationDestination;
use ferrosync::resources::secret::KEY_CHECKED_FOR;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::{STEP, events},
    lifecycle_own_vault::{
        Bao, create_paired_destination, create_paired_source, grant_prefixes, start_with_vault,
    },
    lifecycle_support::{manual_synced, patch_source, sample_volume},
    support::{TestNamespace, wait},
};

/// The lines of `psk.txt` in Secret `name`.
async fn lines(ns: &TestNamespace, name: &str) -> Vec<String> {
    let secret: Secret = ns.api().get(name).await.expect("key secret");
    let data: BTreeMap<_, _> = secret.data.expect("data");
    String::from_utf8(data["psk.txt"].0.clone())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until Secret `name` holds exactly `want`.
async fn holds(ns: &TestNamespace, name: &str, want: &[String], what: &str) {
    wait::until(what, STEP, || async {
        Ok((lines(ns, name).await == want).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));
}

async fn sync(ns: &TestNamespace, value: &str) {
    patch_source(ns, "db", json!({"trigger": {"manual": value}})).await;
    let rs = manual_synced(ns, "db", value).await;
    let result = rs
        .status
        .and_then(|s| s.sync.latest_mover_status)
        .and_then(|m| m.result)
        .map(|r| r.to_string());
    assert_eq!(result.as_deref(), Some("Successful"), "sync {value}");
}

/// Waits until the destination has published a sync and its next iteration has checked
/// its key (the Secret's `ferrosync.io/key-checked-for` names the iteration's start). A
/// rotation requested before that would be taken by that iteration already, and a source
/// triggered sooner could still reach the finishing listener of the last one.
async fn next_iteration_checked_its_key(dst: &TestNamespace) {
    wait::until(
        "the destination's next iteration to check its key",
        STEP,
        || async {
            let rd: ReplicationDestination =
                dst.api().get("db").await.map_err(|e| e.to_string())?;
            let sync = rd.status.map(|s| s.sync).unwrap_or_default();
            let started = match (sync.last_sync_time, sync.last_sync_start_time) {
                (Some(_), Some(started)) => started.0.to_string(),
                _ => return Ok(None),
            };
            let secret: Secret = dst
                .api()
                .get("volsync-rsync-tls-db")
                .await
                .map_err(|e| e.to_string())?;
            let checked = secret.annotations().get(KEY_CHECKED_FOR).cloned();
            Ok((checked == Some(started)).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));
}

#[tokio::test]
async fn a_rotated_key_takes_over_without_a_failed_sync() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config(env.cp, "rotation");
    let _controller = start_with_vault(&env, &config, &[]).await;
    let dst = env.cp.namespace("rot-dst").await;
    let src = env.cp.namespace("rot-src").await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    grant_prefixes(env.cp, &dst.name, "rot-").await;
    grant_prefixes(env.cp, &src.name, "rot-").await;
    sample_volume(&src, "data").await;
    let pair = format!("rot-{}", dst.name);

    create_paired_destination(&dst, "db", &pair).await;
    let (address, _) = crate::volsync::published(&dst, "db").await;
    create_paired_source(&src, "db", &pair, "Clone", &address).await;
    manual_synced(&src, "db", "one").await;
    let old = lines(&src, "ferrosync-source-key-db").await;
    assert_eq!(old.len(), 1);
    next_iteration_checked_its_key(&dst).await;

    // The rotation request; the listener already open keeps the old key, so sync "two"
    // uses it, and the destination rotates when its next iteration starts.
    dst.api::<ReplicationDestination>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"ferrosync.io/rotate-key": "1"}}})),
        )
        .await
        .expect("annotating");
    sync(&src, "two").await;
    let rotated = wait::until("the destination to rotate", STEP, || async {
        let l = lines(&dst, "volsync-rsync-tls-db").await;
        Ok((l.len() == 2).then_some(l))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert_eq!(rotated[1], old[0], "the previous key is still accepted");
    assert_ne!(rotated[0], old[0]);
    let new = vec![rotated[0].clone()];
    assert_eq!(
        bao.key(&pair).await,
        Some(new[0].clone()),
        "the vault's key"
    );
    assert_eq!(lines(&src, "ferrosync-source-key-db").await, old, "not yet");

    // The source's next iteration takes the new key; the destination then drops the old.
    sync(&src, "three").await;
    assert_eq!(lines(&src, "ferrosync-source-key-db").await, new);
    holds(&dst, "volsync-rsync-tls-db", &new, "the previous key to go").await;
    sync(&src, "four").await;

    let failed: Vec<String> = events(&src.client, &src.name)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TransferFailed"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        failed.is_empty(),
        "a sync failed across the rotation: {failed:?}"
    );

    // A vault that stops answering does not stop the pair: the keys it holds stay in use,
    // and an Event says the check failed.
    drop(bao);
    sync(&src, "five").await;
    let warned = events(&src.client, &src.name)
        .await
        .expect("events")
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("KeyCheckFailed"));
    assert!(warned, "no KeyCheckFailed Event on the source");
    assert_eq!(lines(&src, "ferrosync-source-key-db").await, new);
}
