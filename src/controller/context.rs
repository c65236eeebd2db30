//! What every reconcile shares: the client, the configuration, the event recorder and
//! per-object backoff for transient errors.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, ServiceAccount};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use super::{
    caches::Caches,
    error::Error,
    lag::{Writes, Wrote},
    mover_run,
    object_backoff::ObjectBackoffs,
    pipeline::OwnWrites,
    servable::NotServed,
    topology::TopologyCache,
};
use crate::{
    config::Config,
    policy::PolicyEngine,
    resources::{meta::PRIVILEGED_MOVERS, snapshot::VolumeSnapshot},
    telemetry::Metrics,
};

/// The field manager of every server-side apply ferrosync makes.
pub const FIELD_MANAGER: &str = "ferrosync";

/// Shared state of the reconcilers.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The loaded configuration.
    pub config: Config,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The policy plugins.
    pub policy: PolicyEngine,
    /// The topology summary the service-type policy sees.
    pub topology: TopologyCache,
    /// The shared reflector caches the pipeline reads from.
    pub caches: Caches,
    /// The resourceVersions of this controller's own status writes (cache lag).
    pub own_writes: OwnWrites,
    /// The mover Jobs this controller created and deleted, until the Job cache shows it.
    pub job_writes: Writes,
    /// The PVCs this controller provisioned, until the PVC cache shows them.
    pub pvc_writes: Writes,
    /// The last Service applied, by namespace/name: a digest of what was applied, so an
    /// unchanged desired Service is not applied again (`destination`).
    pub services_applied: Mutex<HashMap<String, String>>,
    /// Objects of other movers already announced (once each).
    pub not_served: NotServed,
    recorder: Recorder,
    failures: ObjectBackoffs,
    /// Consecutive failed mover Jobs per object uid, between deleting a failed Job and
    /// creating the next (the Jobs carry the count otherwise; see `retry`).
    mover_failures: Mutex<HashMap<String, u32>>,
    recent_events: Mutex<HashMap<(String, String, String), Instant>>,
    /// Key Secrets already read and validated, by namespace/name: their resourceVersion
    /// and what was found (`keys::resolve` reads a Secret again only when it changed).
    pub known_keys: Mutex<HashMap<String, (String, super::keys::Key)>>,
    /// When each object's mover log was last read for progress (`progress_due`).
    progress_reads: Mutex<HashMap<String, Instant>>,
}

/// An identical Event (same object, reason and note) is recorded at most once per this
/// window, so an object stuck in a waiting or failing state does not flood the cluster.
pub const EVENT_REPEAT_WINDOW: Duration = Duration::from_secs(60);

impl Context {
    /// A context for `client` and `config`, reading from `caches` (not started yet).
    pub fn new(
        client: Client,
        config: Config,
        metrics: Metrics,
        policy: PolicyEngine,
        caches: Caches,
    ) -> Self {
        let reporter = Reporter {
            controller: "ferrosync".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let failures = ObjectBackoffs::new(config.requeue.error_min, config.requeue.error_max);
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            policy,
            topology: TopologyCache::default(),
            not_served: NotServed::default(),
            own_writes: OwnWrites::default(),
            job_writes: Writes::default(),
            pvc_writes: Writes::default(),
            services_applied: Mutex::new(HashMap::new()),
            caches,
            known_keys: Mutex::new(HashMap::new()),
            failures,
            mover_failures: Mutex::new(HashMap::new()),
            recent_events: Mutex::new(HashMap::new()),
            progress_reads: Mutex::new(HashMap::new()),
        }
    }

    /// Records an Event on `object`. A failure to record is logged, never fatal: events
    /// are for people, and the reconcile must go on without them.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, note: String) {
        self.event_for(object, warning, reason, reason, note).await;
    }

    /// Like [`Context::event`], with an explicit action. Events with the same reason and
    /// action are aggregated into one series by the recorder, so distinct decisions of one
    /// reason (PolicyDecision for each decision point) need distinct actions.
    pub async fn event_for(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let key = (
            object.uid.clone().unwrap_or_default(),
            reason.to_string(),
            note.clone(),
        );
        {
            let mut recent = self.recent_events.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recent.retain(|_, at| now.duration_since(*at) < EVENT_REPEAT_WINDOW);
            if recent.contains_key(&key) {
                return;
            }
            recent.insert(key, now);
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, object).await {
            warn!(%err, reason, "recording an event failed");
        }
    }

    /// The next backoff for an object whose reconcile failed transiently or waits: doubling
    /// from `requeue.error_min` up to `requeue.error_max`, with jitter (up to the delay
    /// again, still capped), so objects that failed together do not retry together.
    pub fn backoff(&self, key: &str) -> Duration {
        self.failures.next(key)
    }

    /// Forgets an object's failures after a clean reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.reset(key);
    }

    /// Consecutive failed mover Jobs of the object with `uid`.
    pub fn mover_failures(&self, uid: &str) -> u32 {
        let map = self
            .mover_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(uid).copied().unwrap_or(0)
    }

    /// Records the consecutive failed mover Jobs of `uid` (0 forgets it).
    pub fn set_mover_failures(&self, uid: &str, n: u32) {
        let mut map = self
            .mover_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            map.remove(uid);
        } else {
            map.insert(uid.to_string(), n);
        }
    }

    /// Whether the mover log of the object `uid` is due for a progress read: the mover
    /// logs progress every `mover.progress_interval`, so reading it more often (every pass)
    /// would only read the same line again. Marks the read when due.
    pub fn progress_due(&self, uid: &str) -> bool {
        let mut reads = self
            .progress_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let interval = self.config.mover.progress_interval;
        reads.retain(|_, at| now.duration_since(*at) < interval.max(EVENT_REPEAT_WINDOW));
        match reads.get(uid) {
            Some(at) if now.duration_since(*at) < interval => false,
            _ => {
                reads.insert(uid.to_string(), now);
                true
            }
        }
    }

    /// Deletes the mover Job `name` (and, through garbage collection, its pods), and
    /// remembers it, so that a pass whose cache still shows it waits for the watch
    /// instead of judging it again (`lag`).
    pub async fn delete_job(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let key = format!("{namespace}/{name}");
        let uid = self
            .caches
            .job(namespace, name)
            .and_then(|j| j.metadata.uid.clone())
            .or_else(|| self.job_writes.uid(&key));
        mover_run::delete(&self.client, namespace, name).await?;
        self.job_writes.wrote(key, Wrote::Gone(uid));
        Ok(())
    }

    /// The PVC `name` in `namespace`: from the cache, unless the cache has not listed yet
    /// or shows it older than this controller's own last write to it (the copy-trigger
    /// annotations), when it is read from the apiserver.
    pub async fn pvc(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, kube::Error> {
        if self.caches.pvcs_ready() {
            match self.caches.pvc(namespace, name) {
                None => return Ok(None),
                Some(cached)
                    if !self.own_writes.is_stale(
                        cached.metadata.uid.as_deref().unwrap_or_default(),
                        cached.metadata.resource_version.as_deref(),
                    ) =>
                {
                    return Ok(Some((*cached).clone()));
                }
                Some(_) => {}
            }
        }
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
    }

    /// The PVCs of `namespace` labelled `label=value`: from the cache, listed before its
    /// first listing.
    pub async fn labelled_pvcs(
        &self,
        namespace: &str,
        label: &str,
        value: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, kube::Error> {
        if self.caches.pvcs_ready() {
            let cached = self.caches.labelled_pvcs(namespace, label, value);
            return Ok(cached.iter().map(|p| (**p).clone()).collect());
        }
        let selector = ListParams::default().labels(&format!("{label}={value}"));
        Ok(Api::namespaced(self.client.clone(), namespace)
            .list(&selector)
            .await?
            .items)
    }

    /// The VolumeSnapshots of `namespace` with every label of `labels` (`None`: any
    /// value): from the cache, listed before its first listing.
    pub async fn labelled_snapshots(
        &self,
        namespace: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Vec<VolumeSnapshot>, kube::Error> {
        if let Some(cached) = self.caches.labelled_snapshots(namespace, labels) {
            return Ok(cached.iter().map(|s| (**s).clone()).collect());
        }
        let selector: Vec<String> = labels
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            })
            .collect();
        Ok(Api::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default().labels(&selector.join(",")))
            .await?
            .items)
    }

    /// Checks that the user's moverServiceAccount exists: a missing one would leave the
    /// mover Job unable to create pods, with the reason buried in the Job's events.
    pub async fn check_mover_service_account(
        &self,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(), Error> {
        let Some(name) = name else { return Ok(()) };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await? {
            Some(_) => Ok(()),
            None => Err(Error::Invalid(format!(
                "spec.rsyncTLS.moverServiceAccount {name:?} does not exist in namespace {namespace}"
            ))),
        }
    }

    /// Whether `namespace` opted in to privileged movers.
    pub fn privileged_movers(&self, namespace: &str) -> Result<bool, Error> {
        Ok(self
            .namespace_annotations(namespace)?
            .get(PRIVILEGED_MOVERS)
            .is_some_and(|v| v == "true"))
    }

    /// The annotations of `namespace`, from the cache. A namespace the watch has not
    /// delivered yet is waited for: guessing "no annotations" could start an unprivileged
    /// mover or refuse a pair its namespace authorises.
    pub fn namespace_annotations(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, Error> {
        self.caches.namespace_annotations(namespace).ok_or_else(|| {
            Error::NotReady(format!("namespace {namespace} is not in the cache yet"))
        })
    }
}
