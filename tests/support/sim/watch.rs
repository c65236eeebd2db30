//! A local cache of one kind (a reflector, as the real components' informers are) that
//! wakes its consumer on every change, so the simulators react to events rather than poll.

use std::{fmt::Debug, hash::Hash, sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// How long a loop sleeps when nothing changes: a resync, as informers do, so a missed
/// wake-up or a delay that has run out is acted on.
pub const RESYNC: Duration = Duration::from_millis(500);

/// Starts a reflector of `api` (with `config`) that notifies `changed` on every event.
pub fn cache<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    cache_of(api, config, changed, Default::default())
}

/// [`cache`] for kinds known only at run time (`DynamicObject` with its `ApiResource`).
pub fn cache_of<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    dyntype: K::DynamicType,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        stream
            .for_each(|_| {
                changed.notify_one();
                std::future::ready(())
            })
            .await;
    });
    reader
}

/// Waits for the next change, or [`RESYNC`].
pub async fn next_change(changed: &Notify) {
    let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
}
