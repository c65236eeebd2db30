//! Generated key Secrets of a source and a destination with the same name in one
//! namespace (issue 14). Both were `volsync-rsync-tls-<name>`, one Secret owned by
//! whichever came first, so deleting that one took the other's key away. The destination
//! keeps VolSync's name; the source has its own.

use std::collections::BTreeMap;

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::{
    env::env,
    fixtures::STEP,
    support::wait,
    volsync::{destination, published, source},
};

async fn data_of(api: &Api<Secret>, name: &str) -> Option<BTreeMap<String, ByteString>> {
    api.get_opt(name)
        .await
        .expect("get secret")
        .and_then(|s| s.data)
}

#[tokio::test]
async fn a_same_named_source_and_destination_keep_their_own_keys() {
    let env = env();
    let ns = env.cp.namespace("same-name").await;
    destination(&ns, "db", json!({})).await;
    source(&ns, "db", "data", json!({"address": "destination.invalid"})).await;
    let (_, rd_secret) = published(&ns, "db").await;
    assert_eq!(rd_secret, "volsync-rsync-tls-db", "VolSync's name is kept");
    let rs_api: Api<ReplicationSource> = ns.api();
    let rs_secret = wait::until("the source to publish its key Secret", STEP, || async {
        let rs = rs_api.get("db").await.map_err(|e| e.to_string())?;
        Ok(rs
            .status
            .and_then(|s| s.rsync_tls)
            .and_then(|t| t.key_secret))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert_ne!(rs_secret, rd_secret, "one Secret for both sides");

    let secrets: Api<Secret> = ns.api();
    let rs_key = data_of(&secrets, &rs_secret)
        .await
        .expect("the source's key");
    ns.api::<ReplicationDestination>()
        .delete("db", &DeleteParams::background())
        .await
        .expect("deleting the destination");
    wait::until("the destination's key to be collected", STEP, || async {
        Ok(data_of(&secrets, &rd_secret).await.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        data_of(&secrets, &rs_secret).await,
        Some(rs_key),
        "the source's key survives the destination"
    );
}
