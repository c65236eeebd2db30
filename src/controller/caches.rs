//! The shared reflector caches the pipeline observes from: one watch per kind of object,
//! shared by both reconcilers, instead of GETs and LISTs in every pass.
//!
//! - Jobs: only ferrosync's movers (by label), and the same stream triggers both
//!   reconcilers (`owns`). A cluster's other Jobs never reach the controller. Kept
//!   without their spec: the readers need only metadata and status.
//! - Secrets: metadata only (no Secret data reaches the controller through a watch). A key
//!   Secret's content is read with one GET when its resourceVersion changes (`keys`).
//! - Namespaces: metadata only (the privileged-movers and pair annotations).
//! - StorageClasses and VolumeSnapshotClasses: the copy-method policy's inputs.
//! - Events: only PVCs' ProvisioningFailed (a refused clone), by field selector.
//! - PersistentVolumeClaims: the sources, the destinations' volumes and the copies; the
//!   same stream drives the volume populator (one PVC watch, not two).
//! - Services: the destinations' Services (`owns`), compared with the desired one so an
//!   unchanged Service is not applied again.
//! - Pods: only ferrosync's mover pods (by label): their termination message, why they
//!   cannot start, which one runs, and where a single-node volume's mover is mounted
//!   already (`mover_pod::placement`). An application's pods are never watched. Kept
//!   with only the part of their spec placement reads.
//! - VolumeSnapshots: copies and images, for retention and the cleanup sweep.
//!
//! A cache lags behind writes, this controller's own included. Each reader says how it
//! copes ("Cache lag" in `pipeline`): a mover Job is read from the apiserver while the
//! cache does not show this controller's own create or delete of it (`lag`); a namespace
//! not seen yet is waited for, not guessed. Where a reader needs an answer the cache
//! cannot give before its first listing, it asks the apiserver (`*_ready`).
//!
//! Every cache stores objects trimmed (`trim`): without `managedFields` nor kubectl's
//! last-applied copy, which no reader uses. Nothing read from a cache is written back
//! whole (writes are server-side applies of built objects and merge patches), so a
//! trimmed copy loses nothing on the server.
//!
//! It must never hold Secret data, and never watch Pods other than ferrosync's movers.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    hash::Hash,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use futures::{Stream, StreamExt, future::BoxFuture};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event as CoreEvent, Namespace, PersistentVolumeClaim, Pod, Secret, Service},
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
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::trim::{Annotations, placement_spec_only, trim, without_spec};
use crate::{
    policy::namespaces::{Labels, NamespaceError, NamespaceLabels},
    resources::{
        meta::{COMPONENT, MANAGED_BY},
        snapshot::VolumeSnapshot,
    },
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
    pvcs: Store<PersistentVolumeClaim>,
    services: Store<Service>,
    mover_pods: Store<Pod>,
    snapshots: Store<VolumeSnapshot>,
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
    pvcs: Writer<PersistentVolumeClaim>,
    services: Writer<Service>,
    mover_pods: Writer<Pod>,
    snapshots: Writer<VolumeSnapshot>,
}

/// The running watches, and the streams that trigger the reconcilers.
pub struct Started {
    /// The watch tasks.
    pub tasks: Vec<JoinHandle<()>>,
    /// ferrosync's mover Jobs, as they change.
    pub jobs: ReflectHandle<Job>,
    /// Secrets' metadata, as it changes.
    pub secrets: ReflectHandle<PartialObjectMeta<Secret>>,
    /// PVCs, as they change (the volume populator's input).
    pub pvcs: ReflectHandle<PersistentVolumeClaim>,
    /// Services, as they change (a destination's address).
    pub services: ReflectHandle<Service>,
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
        let (pvcs, pvcs_w) = reflector::store_shared(SHARED_BUFFER);
        let (services, services_w) = reflector::store_shared(SHARED_BUFFER);
        let (mover_pods, mover_pods_w) = reflector::store();
        let (snapshots, snapshots_w) = reflector::store();
        Self {
            jobs,
            secrets,
            namespaces,
            storage_classes,
            snapshot_classes: snapshot_classes_w.as_reader(),
            provisioning_failures,
            pvcs,
            services,
            mover_pods,
            snapshots,
            feeds: Mutex::new(Some(Feeds {
                jobs: jobs_w,
                secrets: secrets_w,
                namespaces: namespaces_w,
                storage_classes: storage_classes_w,
                snapshot_classes: snapshot_classes_w,
                provisioning_failures: provisioning_failures_w,
                pvcs: pvcs_w,
                services: services_w,
                mover_pods: mover_pods_w,
                snapshots: snapshots_w,
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
        let pvcs = feeds.pvcs.subscribe()?;
        let services = feeds.services.subscribe()?;
        let namespaces = feeds.namespaces.subscribe()?;
        let movers = || {
            watcher::Config::default().labels(&format!("{MANAGED_BY}=ferrosync,{COMPONENT}=mover"))
        };
        let failures = watcher::Config::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,reason={PROVISIONING_FAILED}"
        ));
        let all = watcher::Config::default;
        let tasks = vec![
            feed(
                "jobs",
                watcher(Api::<Job>::all(client.clone()), movers()).modify(without_spec),
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
            feed(
                "persistentvolumeclaims",
                watcher(Api::<PersistentVolumeClaim>::all(client.clone()), all()),
                feeds.pvcs,
            ),
            feed(
                "services",
                watcher(Api::<Service>::all(client.clone()), all()),
                feeds.services,
            ),
            feed(
                "pods",
                watcher(Api::<Pod>::all(client.clone()), movers()).modify(placement_spec_only),
                feeds.mover_pods,
            ),
            feed(
                "volumesnapshots",
                watcher(Api::<VolumeSnapshot>::all(client.clone()), all()),
                feeds.snapshots,
            ),
        ];
        let ready = async {
            let _ = futures::join!(
                self.jobs.wait_until_ready(),
                self.secrets.wait_until_ready(),
                self.namespaces.wait_until_ready(),
                self.storage_classes.wait_until_ready(),
                self.pvcs.wait_until_ready(),
                self.services.wait_until_ready(),
                self.mover_pods.wait_until_ready(),
            );
        };
        if tokio::time::timeout(ready_within, ready).await.is_err() {
            tracing::warn!("caches not filled in time; passes wait for what they lack");
        }
        Some(Started {
            tasks,
            jobs,
            secrets,
            pvcs,
            services,
            namespaces,
        })
    }

    /// The PVC store, for the volume populator's controller.
    pub fn pvc_store(&self) -> Store<PersistentVolumeClaim> {
        self.pvcs.clone()
    }

    /// Whether the mover Jobs' and pods' caches hold their first listing: until then an
    /// absent Job may only not have been listed yet.
    pub fn movers_ready(&self) -> bool {
        ready(&self.jobs) && ready(&self.mover_pods)
    }

    /// The PVC `name` in `namespace`, as last seen; `None` also before the first listing
    /// (see [`Caches::pvcs_ready`]).
    pub fn pvc(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.pvcs.get(&ObjectRef::new(name).within(namespace))
    }

    /// Whether the PVC cache holds its first listing.
    pub fn pvcs_ready(&self) -> bool {
        ready(&self.pvcs)
    }

    /// The PVCs of `namespace` labelled `label=value`.
    pub fn labelled_pvcs(
        &self,
        namespace: &str,
        label: &str,
        value: &str,
    ) -> Vec<Arc<PersistentVolumeClaim>> {
        self.pvcs
            .state_filter(|p| in_namespace_labelled(p, namespace, &[(label, Some(value))]))
    }

    /// The Service `name` in `namespace`, as last seen.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every mover pod in `namespace`, as last seen.
    pub fn namespace_mover_pods(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.mover_pods
            .state_filter(|p| in_namespace_labelled(p, namespace, &[]))
    }

    /// The pods of the mover Job `job` in `namespace`, as last seen.
    pub fn mover_pods(&self, namespace: &str, job: &str) -> Vec<Pod> {
        self.mover_pods
            .state_filter(|p| in_namespace_labelled(p, namespace, &[(JOB_NAME, Some(job))]))
            .into_iter()
            .map(|p| (*p).clone())
            .collect()
    }

    /// The VolumeSnapshots of `namespace` with every label of `labels` (`None`: any
    /// value), or `None` before the first listing (or where the snapshot CRDs are not
    /// installed): the caller asks the apiserver then.
    pub fn labelled_snapshots(
        &self,
        namespace: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Option<Vec<Arc<VolumeSnapshot>>> {
        ready(&self.snapshots).then(|| {
            self.snapshots
                .state_filter(|s| in_namespace_labelled(s, namespace, labels))
        })
    }

    /// The mover Job `name` in `namespace`, as last seen: its metadata and status, without
    /// its spec (`trim::without_spec`).
    pub fn job(&self, namespace: &str, name: &str) -> Option<Arc<Job>> {
        self.jobs.get(&ObjectRef::new(name).within(namespace))
    }

    /// The resourceVersion of the Secret `name` in `namespace`, as last seen.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|s| s.metadata.resource_version.clone())
    }

    /// Whether the Secret `name` in `namespace` is known not to exist: the metadata cache
    /// has listed and does not hold it. (It may lag behind a Secret made a moment ago:
    /// callers that made one themselves do not ask.)
    pub fn secret_absent(&self, namespace: &str, name: &str) -> bool {
        ready(&self.secrets)
            && self
                .secrets
                .get(&ObjectRef::new(name).within(namespace))
                .is_none()
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

/// The label the Job controller puts on a Job's pods.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Whether the store's first listing has arrived (without waiting for it).
fn ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Whether `obj` is in `namespace` and carries every label of `labels` (`None`: any value).
fn in_namespace_labelled<K: Resource>(
    obj: &K,
    namespace: &str,
    labels: &[(&str, Option<&str>)],
) -> bool {
    let meta = obj.meta();
    let own = meta.labels.as_ref();
    meta.namespace.as_deref() == Some(namespace)
        && labels.iter().all(|(key, value)| {
            own.and_then(|l| l.get(*key))
                .is_some_and(|v| value.is_none_or(|want| v == want))
        })
}

/// Runs one watch into its store, each object trimmed before it is stored. Watch errors
/// back off and are logged, never fatal (the snapshot classes' watch fails for good where
/// their CRD is not installed).
fn feed<K, S>(what: &'static str, stream: S, writer: Writer<K>) -> JoinHandle<()>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    tokio::spawn(async move {
        stream
            .modify(|obj| trim(obj, Annotations::WithoutLastApplied))
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

/// A reconciler's own kind (ReplicationSources, ReplicationDestinations): its store and
/// the stream of changes that triggers it, as `Controller::new` would make them, but
/// trimmed before they are stored. Their annotations are kept whole: the policy plugins
/// are shown them (`trim`).
pub fn own_kind<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let changes = watcher(api, config)
        .modify(|obj| trim(obj, Annotations::All))
        .reflect(writer)
        .applied_objects();
    (store, changes)
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
