//! The benchmark's objects: N pairs, each a PVC, a ReplicationDestination and a
//! ReplicationSource, and the watch that says when every one of them has synced.

use std::collections::HashSet;

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::support::sim::storage;

/// When a pair syncs.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// `manual: once`: one sync, then the object waits for a new manual value.
    Once,
    /// A schedule that next fires on the 1st of January: the first sync runs at once (as
    /// for any new object), then the object is idle for weeks.
    FarAhead,
}

impl Trigger {
    fn spec(self) -> Value {
        match self {
            Trigger::Once => json!({"manual": "once"}),
            Trigger::FarAhead => json!({"schedule": "0 0 1 1 *"}),
        }
    }
}

/// Creates pairs `0..n` in `namespace`, one object after another (as a script applying
/// them would).
pub async fn create(client: &Client, namespace: &str, n: usize, trigger: Trigger) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let rds: Api<ReplicationDestination> = Api::namespaced(client.clone(), namespace);
    let rss: Api<ReplicationSource> = Api::namespaced(client.clone(), namespace);
    let pp = PostParams::default();
    for i in 0..n {
        let pvc = serde_json::from_value(json!({
            "metadata": {"name": format!("data-{i}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage::CLASS,
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .expect("pvc");
        pvcs.create(&pp, &pvc).await.expect("creating a PVC");
        let rd = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
            "metadata": {"name": format!("dst-{i}")},
            "spec": {"trigger": trigger.spec(),
                     "rsyncTLS": {"copyMethod": "Direct", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"],
                                  "storageClassName": storage::CLASS}},
        }))
        .expect("rd");
        rds.create(&pp, &rd).await.expect("creating a destination");
        let rs = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
            "metadata": {"name": format!("src-{i}")},
            "spec": {"sourcePVC": format!("data-{i}"), "trigger": trigger.spec(),
                     "rsyncTLS": {"copyMethod": "Direct", "address": "127.0.0.1"}},
        }))
        .expect("rs");
        rss.create(&pp, &rs).await.expect("creating a source");
    }
}

/// Returns once `n` destinations and `n` sources in `namespace` have a `lastSyncTime`.
/// It watches (one watch per kind) rather than polls, so that observing the convergence
/// costs the apiserver next to nothing beside what it measures.
pub async fn synced(client: &Client, namespace: &str, n: usize) {
    let rds: Api<ReplicationDestination> = Api::namespaced(client.clone(), namespace);
    let rss: Api<ReplicationSource> = Api::namespaced(client.clone(), namespace);
    tokio::join!(
        all_synced(rds, n, |o: &ReplicationDestination| {
            o.status
                .as_ref()
                .is_some_and(|s| s.sync.last_sync_time.is_some())
        }),
        all_synced(rss, n, |o: &ReplicationSource| {
            o.status
                .as_ref()
                .is_some_and(|s| s.sync.last_sync_time.is_some())
        }),
    );
}

async fn all_synced<K>(api: Api<K>, n: usize, synced: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut done = HashSet::new();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while done.len() < n {
        match events.next().await {
            Some(Ok(object)) if synced(&object) => {
                done.insert(object.name_any());
            }
            // A dropped watch is retried with backoff; its error is no result.
            Some(_) => {}
            None => panic!("the watch of synced objects ended"),
        }
    }
}
