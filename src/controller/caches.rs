//! The shared reflector caches the pipeline observes from: one watch per kind of object,
//! shared by both reconcilers, instead of GETs and LISTs in every pass.
//!
//! - Jobs: only ferrosync's movers (by label), and the same stream triggers both
//!   reconcilers (`owns`). A cluster's other Jobs never reach the controller.
//! - Secrets: metadata only (no Secret data reaches the controller through a watch). A key
//!   Secret's content is read with one GET when its resourceVersion changes (`keys`).
//! - Namespaces: metadata only (the privileged-movers and pair annotations).
//! - StorageClasses and VolumeSnapshotClasses: the copy-method policy's inputs.
//! - Events: only PVCs' ProvisioningFailed (a refused clone), by field selector.
//!
//! A cache lags behind writes, this controller's own included. Each reader says how it
//! copes: a mover Job is trusted from the cache only while it runs, and read from the
//! apiserver when it may just have been created, finished or deleted (`iteration`); a
//! namespace not seen yet is waited for, not guessed.
//!
//! It must never hold Secret data, and never watch Pods.

use std::{collections::BTreeMap, hash::Hash, sync::Mutex, time::Duration};

use futures::{Stream, StreamExt, future::BoxFuture};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event as CoreEvent, Namespace, Secret},
    storage::v1::StorageClass,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, ReflectHandle, Store, store::Writer},
        watcher,
    },
};
use tokio::task::JoinHandle;

use crate::{
    policy::namespaces::{Labels, NamespaceError, NamespaceLabels},
    resources::meta::{COMPONENT, MANAGED_BY},
};

/// The reason an external provisioner gives a PVC it could not make.
const PROVISIONING_FAILED: &str = "ProvisioningFailed";

/// The read side of every cache.
pub struct Caches {
    jobs: Store<Job>,
    secrets: Store<PartialObjectMeta<Secret>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    storage_classes: Store<StorageClass>,
    snapshot_classes: Store<DynamicObject>,
    provisioning_failures: Store<CoreEvent>,
    feeds: Mutex<Option<Feeds>>,
}

/// The write side, taken once by [`Caches::start`].
struct Feeds {
    jobs: Writer<Job>,
    secrets: Writer<PartialObjectMeta<Secret>>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    storage_classes: Writer<StorageClass>,
    snapshot_classes: Writer<DynamicObject>,
    provisioning_failures: Writer<CoreEvent>,
}

/// The running watches, and the streams that trigger the reconcilers.
pub struct Started {
    /// The watch tasks.
    pub tasks: Vec<JoinHandle<()>>,
    /// ferrosync's mover Jobs, as they change.
    pub jobs: ReflectHandle<Job>,
    /// Secrets' metadata, as it changes.
    pub secrets: ReflectHandle<PartialObjectMeta<Secret>>,
    /// Namespaces' metadata, as it changes (their labels choose policy bindings).
    pub namespaces: ReflectHandle<PartialObjectMeta<Namespace>>,
}

/// Buffered changes per shared stream before the watch waits for the reconcilers.
const SHARED_BUFFER: usize = 1024;

fn snapshot_class_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
    ))
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

impl Caches {
    /// Empty caches; [`Caches::start`] fills them.
    pub fn new() -> Self {
        let (jobs, jobs_w) = reflector::store_shared(SHARED_BUFFER);
        let (secrets, secrets_w) = reflector::store_shared(SHARED_BUFFER);
        let (namespaces, namespaces_w) = reflector::store_shared(SHARED_BUFFER);
        let (storage_classes, storage_classes_w) = reflector::store();
        let snapshot_classes_w = Writer::new(snapshot_class_resource());
        let (provisioning_failures, provisioning_failures_w) = reflector::store();
        Self {
            jobs,
            secrets,
            namespaces,
            storage_classes,
            snapshot_classes: snapshot_classes_w.as_reader(),
            provisioning_failures,
            feeds: Mutex::new(Some(Feeds {
                jobs: jobs_w,
                secrets: secrets_w,
                namespaces: namespaces_w,
                storage_classes: storage_classes_w,
                snapshot_classes: snapshot_classes_w,
                provisioning_failures: provisioning_failures_w,
            })),
        }
    }

    /// Starts the watches, and waits (up to `ready_within`) until the caches the pipeline
    /// relies on hold their first listing. `None` when they were started already.
    pub async fn start(&self, client: &Client, ready_within: Duration) -> Option<Started> {
        let feeds = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        let jobs = feeds.jobs.subscribe()?;
        let secrets = feeds.secrets.subscribe()?;
        let namespaces = feeds.namespaces.subscribe()?;
        let movers =
            watcher::Config::default().labels(&format!("{MANAGED_BY}=ferrosync,{COMPONENT}=mover"));
        let failures = watcher::Config::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,reason={PROVISIONING_FAILED}"
        ));
        let all = watcher::Config::default;
        let tasks = vec![
            feed(
                "jobs",
                watcher(Api::<Job>::all(client.clone()), movers),
                feeds.jobs,
            ),
            feed(
                "secrets",
                watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), all()),
                feeds.secrets,
            ),
            feed(
                "namespaces",
                watcher(
                    Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                    all(),
                ),
                feeds.namespaces,
            ),
            feed(
                "storageclasses",
                watcher(Api::<StorageClass>::all(client.clone()), all()),
                feeds.storage_classes,
            ),
            feed(
                "volumesnapshotclasses",
                watcher(
                    Api::<DynamicObject>::all_with(client.clone(), &snapshot_class_resource()),
                    all(),
                ),
                feeds.snapshot_classes,
            ),
            feed(
                "events",
                watcher(Api::<CoreEvent>::all(client.clone()), failures),
                feeds.provisioning_failures,
            ),
        ];
        let ready = async {
            let _ = futures::join!(
                self.jobs.wait_until_ready(),
                self.secrets.wait_until_ready(),
                self.namespaces.wait_until_ready(),
                self.storage_classes.wait_until_ready(),
            );
        };
        if tokio::time::timeout(ready_within, ready).await.is_err() {
            tracing::warn!("caches not filled in time; passes wait for what they lack");
        }
        Some(Started {
            tasks,
            jobs,
            secrets,
            namespaces,
        })
    }

    /// The mover Job `name` in `namespace`, as last seen.
    pub fn job(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Job>> {
        self.jobs.get(&ObjectRef::new(name).within(namespace))
    }

    /// The resourceVersion of the Secret `name` in `namespace`, as last seen.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|s| s.metadata.resource_version.clone())
    }

    /// The annotations of the namespace `name`; `None` until the watch has seen it.
    pub fn namespace_annotations(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(name))
            .map(|ns| ns.metadata.annotations.clone().unwrap_or_default())
    }

    /// The Namespaces' labels, for the policy engine's label-selecting bindings: from the
    /// same metadata watch, so choosing a bundle costs no request.
    pub fn namespace_labels(&self) -> CachedNamespaceLabels {
        CachedNamespaceLabels(self.namespaces.clone())
    }

    /// Every StorageClass.
    pub fn storage_classes(&self) -> Vec<std::sync::Arc<StorageClass>> {
        self.storage_classes.state()
    }

    /// Every VolumeSnapshotClass (none where the snapshot CRDs are not installed).
    pub fn snapshot_classes(&self) -> Vec<std::sync::Arc<DynamicObject>> {
        self.snapshot_classes.state()
    }

    /// The ProvisioningFailed messages of the PVC `pvc` in `namespace`.
    pub fn provisioning_failures(&self, namespace: &str, pvc: &str) -> Vec<String> {
        self.provisioning_failures
            .state()
            .iter()
            .filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
            .filter(|e| e.involved_object.name.as_deref() == Some(pvc))
            .filter_map(|e| e.message.clone())
            .collect()
    }
}

/// Runs one watch into its store. Watch errors back off and are logged, never fatal (the
/// snapshot classes' watch fails for good where their CRD is not installed).
fn feed<K, S>(what: &'static str, stream: S, writer: Writer<K>) -> JoinHandle<()>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    tokio::spawn(async move {
        stream
            .default_backoff()
            .reflect_shared(writer)
            .for_each(|event| async move {
                if let Err(err) = event {
                    tracing::debug!(cache = what, %err, "watch error; retrying");
                }
            })
            .await;
    })
}

/// [`NamespaceLabels`] from the Namespace metadata cache. A namespace the watch has not
/// seen yet is "not found": the decision fails and is retried, never made with no labels.
pub struct CachedNamespaceLabels(Store<PartialObjectMeta<Namespace>>);

impl NamespaceLabels for CachedNamespaceLabels {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, NamespaceError>> {
        let found = self
            .0
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
            .ok_or_else(|| NamespaceError::NotFound(namespace.into()));
        Box::pin(async move { found })
    }
}
