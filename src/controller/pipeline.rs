//! The one reconcile pipeline both kinds run: from the watch event to the mover Job.
//!
//! From the watch to the mover Job, four hops: `mod.rs::run_controllers` (the watches)
//! → `pipeline::reconcile` → `pipeline::iterate` → `iteration::drive` (creates the Job).
//! A pass:
//!
//! 1. **observe**: the object comes from the controller's reflector cache (see "Cache lag"
//!    below); the kind's `prepare` hook reads (and, where it owns them, makes) what the
//!    iteration depends on: the key, the volume, the destination's Service and address.
//! 2. **decide**: [`decide`](super::decide) turns the spec, the status and `now` into what
//!    this pass does (start, continue, wait, pause) and into the condition and requeue;
//!    the mover's observed state is decided the same way, purely, in `iteration`.
//! 3. **act**: objects are applied with the one field manager (`apply`), the status is
//!    written only when it changed.
//!
//! Each kind supplies only what differs, through [`Kind`]: its spec checks, `prepare`
//! (the destination's volume, Service and address; the source's PVC), `data` (the
//! source's point-in-time copy; the destination's placement), and `publish` (the
//! destination's image and retention; the source's cleanup of its copy).
//!
//! # Cache lag
//!
//! The object reconciled is the reflector's copy. That copy may lag behind this
//! controller's own status write (a Job deletion can trigger the next pass before the
//! watch delivers the status written just before it), and the status is applied whole,
//! so an old copy would rerun a finished iteration or erase what the last pass recorded.
//! Every status write remembers the resourceVersion the apiserver returned
//! ([`OwnWrites`]); a pass whose cached copy is older than the remembered one (etcd
//! revisions grow; they are compared as numbers) reads the object once from the
//! apiserver instead. A copy at or after our own write is used as it is: no GET.
//!
//! The other caches (`caches`) lag the same way, and each reader copes where it reads:
//! - mover Jobs: this controller remembers the Jobs it created and deleted (`lag`); while
//!   the cache does not show its own last create or delete yet, the Job is read from the
//!   apiserver instead, never judged from the old copy, so a lagging cache never starts a
//!   second Job or publishes a result twice. Otherwise the cached Job is judged as it is
//!   (`iteration::drive`), its pods from the mover-pod cache (listed only when a finished
//!   Job's pod is not there yet). A Job to create that exists already (VolSync's, which
//!   the labelled watch never shows) is read once and judged as read. A Job the cache
//!   holds is not built again (`Target::mover_exists`);
//! - PVCs: a source PVC whose cached copy is older than this controller's own
//!   copy-trigger patch is read fresh (the status rule above, by the PVC's uid); a volume
//!   it provisioned and the cache does not show yet is taken as made (`lag`); a volume
//!   that `cleanupTempPVC` deletes every iteration is always read fresh;
//! - the destination's Service is applied only when the desired Service differs from the
//!   one applied last or from the cached one (`unchanged`);
//! - a key Secret is read again whenever its resourceVersion differs from the one read
//!   (`keys::resolve`), and not looked for when the metadata cache says it is absent;
//! - a namespace the cache has not seen yet is waited for (`Context::namespace_annotations`);
//! - the end-of-iteration sweep and retention take the marked PVCs and snapshots from
//!   the caches; the image just taken counts even before the cache shows it.
//!
//! It must never write a status that did not change, and never run a kind's hook for an
//! object ferrosync does not serve.

use std::{collections::HashMap, fmt::Debug, sync::Arc, sync::Mutex};

use k8s_openapi::{NamespaceResourceScope, api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use serde::{Serialize, de::DeserializeOwned};
use tracing::instrument;

use super::{
    apply::apply_status,
    context::Context,
    decide::{self, Pass},
    error::Error,
    iteration, keys,
    keys::Key,
    mover_pod, pair_release,
    progress::Progress,
    servable::{self, NotServed, Refusal, Verdict},
};
use crate::{
    api::{
        MoverOptions, ReplicationDestination, ReplicationDestinationRsyncTLSSpec,
        ReplicationDestinationStatus, ReplicationSource, ReplicationSourceRsyncTLSSpec,
        ReplicationSourceStatus, SyncStatus, Trigger, validate_mover_volumes,
    },
    resources::{
        Owner, Side,
        job::{MoverExtras, MoverJob, Placement},
        names,
    },
    telemetry::ObjectLabels,
};

/// The parts of `spec.rsyncTLS` both kinds share, after the kind's own checks.
pub struct Common<'a> {
    /// The user's `keySecret`.
    pub key_secret: Option<&'a str>,
    /// The mover options.
    pub mover: &'a MoverOptions,
}

/// What the mover of this iteration reads or writes, and how it reaches its peer.
pub struct MoverData {
    /// The PVC mounted at /data.
    pub pvc: String,
    /// Whether the data is mounted read-only.
    pub read_only: bool,
    /// The node of the application that mounts a single-node volume.
    pub placement: Option<Placement>,
    /// Source only: the destination's address and port.
    pub destination: Option<(String, i32)>,
    /// More mover settings as environment variables.
    pub extra_env: Vec<(String, String)>,
}

/// Where the pass stands on one object: shared by every hook.
pub struct Target<'a> {
    /// The object's identity.
    pub owner: &'a Owner,
    /// The object, for Events.
    pub object: &'a ObjectReference,
    /// The time of this pass.
    pub now: Timestamp,
    /// Whether the cache holds this object's mover Job: what only creating a Job needs
    /// (pull secrets, the namespace's privilege, the application's node) is not read.
    pub mover_exists: bool,
}

/// What a hook returns: the value, or the progress to report while it waits.
pub type Hooked<T> = Result<Result<T, Progress>, Error>;

/// What every hook of one pass shares: the context, the object's place and its status.
pub struct Step<'a, K: Replicated> {
    /// The reconcile context.
    pub ctx: &'a Context,
    /// The object's identity and the time of the pass.
    pub at: &'a Target<'a>,
    /// The status this pass writes.
    pub status: &'a mut K::Status,
}

/// The facts of a reconciled kind that both kinds have alike (see [`replicated!`]).
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind's status.
    type Status: Default + Clone + Serialize + Send + Sync;
    /// The kind's `spec.rsyncTLS`.
    type Tls;
    /// The kind's name, for metrics and logs.
    const KIND: &'static str;
    /// Which side of a pair the kind is.
    const SIDE: Side;

    /// The stored status.
    fn stored_status(&self) -> Option<&Self::Status>;
    /// The fields both kinds share.
    fn sync(status: &mut Self::Status) -> &mut SyncStatus;
    /// Whether ferrosync serves the object at all ([`super::servable`]).
    fn verdict(&self) -> Verdict;
    /// `spec.trigger`.
    fn trigger(&self) -> Option<&Trigger>;
    /// `spec.paused`.
    fn paused(&self) -> bool;
    /// `spec.rsyncTLS`, the only method ferrosync serves.
    fn tls(&self) -> Result<&Self::Tls, Error>;
}

/// Implements [`Replicated`] for a kind: every field it reads has the same name in both.
macro_rules! replicated {
    ($kind:ty, $status:ty, $tls:ty, $side:expr, $verdict:path) => {
        impl Replicated for $kind {
            type Status = $status;
            type Tls = $tls;
            const KIND: &'static str = stringify!($kind);
            const SIDE: Side = $side;
            fn stored_status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn sync(status: &mut Self::Status) -> &mut SyncStatus {
                &mut status.sync
            }
            fn verdict(&self) -> Verdict {
                $verdict(&self.spec)
            }
            fn trigger(&self) -> Option<&Trigger> {
                self.spec.trigger.as_ref()
            }
            fn paused(&self) -> bool {
                self.spec.paused == Some(true)
            }
            fn tls(&self) -> Result<&Self::Tls, Error> {
                self.spec.rsync_tls.as_ref().ok_or_else(|| {
                    Error::Invalid(
                        "spec.rsyncTLS is not set: rsyncTLS is the only replication method ferrosync supports"
                            .into(),
                    )
                })
            }
        }
    };
}

replicated!(
    ReplicationSource,
    ReplicationSourceStatus,
    ReplicationSourceRsyncTLSSpec,
    Side::Source,
    servable::source
);
replicated!(
    ReplicationDestination,
    ReplicationDestinationStatus,
    ReplicationDestinationRsyncTLSSpec,
    Side::Destination,
    servable::destination
);

/// The hooks where the kinds differ, in the order a pass calls them.
pub trait Kind: Replicated {
    /// What `prepare` found, for the later hooks.
    type Prepared: Send + Sync;

    /// The kind's own spec checks; the shared part of `spec.rsyncTLS`.
    fn check(&self, ctx: &Context) -> Result<Common<'_>, Error>;

    /// Before the trigger machine: what every pass needs (the key is resolved already).
    async fn prepare(&self, step: &mut Step<'_, Self>, key: &Key) -> Hooked<Self::Prepared>;

    /// Every pass after the trigger machine decided, mover or not.
    async fn every_pass(&self, _step: &Step<'_, Self>, _: &Self::Prepared) -> Result<(), Error> {
        Ok(())
    }

    /// The data of this iteration's mover, or the progress to report while it is not ready.
    async fn data(&self, step: &mut Step<'_, Self>, prepared: &Self::Prepared)
    -> Hooked<MoverData>;

    /// After a successful transfer, before the iteration is recorded: publish its result
    /// and clean up. `Ok(Err)` holds the iteration open (publication not done yet).
    async fn publish(&self, _step: &mut Step<'_, Self>, _: &Self::Prepared) -> Hooked<()> {
        Ok(Ok(()))
    }

    /// After the iteration was recorded and its Job deleted: remove what only that Job used.
    /// Not before: a copy deleted while its Job stays holds the next iteration (it waits for
    /// the stale copy to go, which the finished pod keeps) should the controller stop between
    /// the two.
    async fn finish(&self, _step: &Step<'_, Self>) -> Result<(), Error> {
        Ok(())
    }
}

/// The resourceVersion of each object's last status write by this controller (see
/// "Cache lag" in the module header).
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, u64>>);

impl OwnWrites {
    /// Remembers the resourceVersion of this controller's write to the object `uid` (a
    /// status, or a PVC's annotations).
    pub(super) fn remember(&self, uid: &str, version: Option<&str>) {
        let Some(v) = version.and_then(|v| v.parse().ok()) else {
            return;
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), v);
    }

    /// Whether `cached` is older than the last status this controller wrote for `uid`.
    /// An unparsable version is taken as stale: reading once more is always safe.
    pub fn is_stale(&self, uid: &str, cached: Option<&str>) -> bool {
        let written = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .copied();
        match (written, cached.map(str::parse::<u64>)) {
            (None, _) => false,
            (Some(w), Some(Ok(c))) => c < w,
            (Some(_), _) => true,
        }
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// Reconciles one object of either kind: hop 2 from the watch (`run_controllers`).
#[instrument(skip_all, fields(kind = K::KIND, namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::of(obj.as_ref())
        .ok_or_else(|| Error::Invalid("object has no uid or namespace".into()))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let fresh = if ctx
        .own_writes
        .is_stale(&owner.uid, obj.meta().resource_version.as_deref())
    {
        let Some(fresh) = api.get_opt(&owner.name).await? else {
            ctx.own_writes.forget(&owner.uid);
            return Ok(Action::await_change());
        };
        Arc::new(fresh)
    } else {
        obj
    };
    let Some(owner) = Owner::of(fresh.as_ref()) else {
        return Ok(Action::await_change());
    };

    let object = fresh.object_ref(&());
    let mut status = fresh.stored_status().cloned().unwrap_or_default();
    let now = Timestamp::now();
    // Deletion hooks (finalizers) go here, before `leave_alone`.
    if let Some(action) =
        pair_release::guard(&ctx, fresh.as_ref(), &owner, &mut status, now).await?
    {
        return Ok(action);
    }
    if decide::leave_alone(fresh.meta()) {
        return Ok(Action::await_change());
    }
    let at = Target {
        owner: &owner,
        object: &object,
        now,
        mover_exists: ctx
            .caches
            .job(&owner.namespace, &names::job(K::SIDE, &owner.name))
            .is_some(),
    };
    let result = match fresh.verdict() {
        Verdict::Serve => iterate(fresh.as_ref(), &ctx, &at, &mut status).await,
        // Another controller's object: say so once, and write nothing, status included.
        Verdict::OtherMover(movers) => {
            if ctx.not_served.first_time(&owner.uid) {
                tracing::info!(
                    kind = K::KIND,
                    namespace = %owner.namespace,
                    name = %owner.name,
                    movers = %movers.join(","),
                    "not served: ferrosync serves only spec.rsyncTLS; leaving the object as it is"
                );
                ctx.event(&object, false, "MoverNotServed", NotServed::note(&movers))
                    .await;
            }
            return Ok(Action::await_change());
        }
        // Only the condition (and an Event) until the spec changes: no key, no Service,
        // no PVC, no Job.
        Verdict::CannotServe(Refusal::Invalid(why)) => Err(Error::Invalid(why)),
        Verdict::CannotServe(Refusal::Unsupported(why)) => Err(Error::Unsupported(why)),
    };
    ctx.metrics
        .observe_reconcile(K::KIND, result.as_ref().err().map(Error::reason));
    // On every pass, not only when a decision is made: the condition shows a late
    // overlap of bindings while it lasts, and goes with it.
    super::binding_overlap::check(
        &ctx,
        &object,
        K::SIDE,
        &mut K::sync(&mut status).conditions,
        fresh.meta().generation,
        now,
    )
    .await;
    // On every pass too: the recovery point after it, and the objective as annotated now.
    let sync = K::sync(&mut status);
    super::recovery_point::check(
        &ctx,
        super::recovery_point::Observed {
            object: &object,
            labels: &ObjectLabels::new(&owner.namespace, &owner.name, K::SIDE.as_str()),
            annotations: fresh.annotations(),
            last_sync: sync.last_sync_time.as_ref().map(|t| t.0),
            generation: fresh.meta().generation,
            now,
        },
        &mut sync.conditions,
    )
    .await;
    record(&ctx, fresh.as_ref(), &owner, result, status, now).await
}

/// Records a pass's `result` on `obj`: the condition, an Event when it is news, the
/// object's backoff, and the status, written only when it changed. Returns when to come
/// back. Shared by the pass and the pair release, so a failure reads the same from both.
pub(super) async fn record<K: Replicated>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    result: Result<Progress, Error>,
    mut status: K::Status,
    now: Timestamp,
) -> Result<Action, Error> {
    let key = format!("{}/{}", owner.namespace, owner.name);
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    let (requeue, event) = decide::settle(
        result,
        &mut K::sync(&mut status).conditions,
        obj.meta().generation,
        now,
        ctx.config.requeue.idle,
        || ctx.backoff(&key),
    )?;
    if let Some(event) = event {
        ctx.event(
            &obj.object_ref(&()),
            event.warning,
            event.reason,
            event.note,
        )
        .await;
    }
    // An unchanged status is not written again: an object stuck waiting is looked at
    // often, and each write would be an apiserver request, an etcd write and a watch
    // event for every watcher.
    let stored = obj.stored_status().map(serde_json::to_value);
    if stored.and_then(Result::ok) != serde_json::to_value(&status).ok() {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        let written = apply_status(&api, &owner.name, &status).await?;
        ctx.own_writes
            .remember(&owner.uid, written.meta().resource_version.as_deref());
    }
    Ok(Action::requeue(requeue))
}

/// One iteration step of a served object: hop 3 from the watch.
async fn iterate<K: Kind>(
    obj: &K,
    ctx: &Context,
    at: &Target<'_>,
    status: &mut K::Status,
) -> Result<Progress, Error> {
    let common = obj.check(ctx)?;
    let owner = at.owner;
    ctx.check_mover_service_account(
        &owner.namespace,
        common.mover.mover_service_account.as_deref(),
    )
    .await?;
    validate_mover_volumes(common.mover.mover_volumes.as_deref().unwrap_or_default())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let of = keys::KeyOf {
        ctx,
        obj,
        object: at.object,
        owner,
        side: K::SIDE,
    };
    let key = keys::resolve(&of, common.key_secret, &mut K::sync(status).policy).await?;
    let mut step = Step::<K> { ctx, at, status };
    let prepared = match obj.prepare(&mut step, &key).await? {
        Ok(prepared) => prepared,
        Err(waiting) => return Ok(waiting),
    };
    let status = &mut *step.status;

    let pass = Pass {
        trigger: obj.trigger(),
        paused: obj.paused(),
        now: at.now,
    };
    let decision = decide::decide(pass, K::sync(status))?;
    let labels = ObjectLabels::new(&owner.namespace, &owner.name, K::SIDE.as_str());
    ctx.metrics
        .observe_pass(&labels, decision.out_of_sync, decision.missed_interval);
    let schedule = obj.trigger().and_then(|t| t.schedule.as_deref());
    ctx.metrics.observe_schedule(&labels, schedule, at.now);
    let mut step = Step::<K> { ctx, at, status };
    obj.every_pass(&step, &prepared).await?;
    if !decide::runs_mover(&decision) {
        return Ok(decide::idle_progress(
            &decision,
            &ctx.config.requeue,
            at.now,
        ));
    }
    let data = match obj.data(&mut step, &prepared).await? {
        Ok(data) => data,
        Err(waiting) => return Ok(waiting),
    };
    let status = &mut *step.status;
    // Once per iteration, before its Job: a pair's key may have been rotated.
    let sync = K::sync(status);
    keys::refresh(
        ctx,
        obj,
        at.object,
        owner,
        K::SIDE,
        &key,
        &decide::iteration_id(sync),
        sync.last_sync_time.as_ref().map(|t| t.0),
    )
    .await?;
    let debug = mover_pod::debug_requested(obj);
    let job_name = names::job(K::SIDE, &owner.name);
    if mover_pod::replace_if_mode_changed(ctx, &owner.namespace, &job_name, debug).await? {
        return Ok(
            Progress::new(decide::Reason::SyncInProgress, ctx.config.requeue.poll)
                .with_message("replacing the mover: its debug mode changed"),
        );
    }
    let job = MoverJob {
        owner,
        side: K::SIDE,
        image: &ctx.config.mover.image,
        backoff_limit: ctx.config.mover.backoff_limit,
        progress_interval: ctx.config.mover.progress_interval,
        extras: MoverExtras {
            debug,
            read_only_data: data.read_only,
            placement: data.placement.clone(),
            image_pull_secrets: match at.mover_exists {
                true => Vec::new(),
                false => super::pull_secrets::ensure(ctx, &owner.namespace).await?,
            },
        },
        extra_env: data.extra_env.clone(),
        pvc: &data.pvc,
        key_secret: &key.secret,
        options: common.mover,
        privileged: !at.mover_exists && ctx.privileged_movers(&owner.namespace)?,
        destination: data.destination.as_ref().map(|(a, p)| (a.as_str(), *p)),
    };
    let generation = obj.meta().generation;
    // A Job that exists is not built again: `at.mover_exists` skipped what only creating
    // needs, and `drive` creates nothing from such a spec.
    let mover = match iteration::drive(
        ctx,
        at.object,
        (&job, !at.mover_exists),
        K::sync(status),
        pass,
        (generation, debug),
    )
    .await?
    {
        Ok(mover) => mover,
        Err(progress) => return Ok(progress),
    };
    // Publish first, record second: a crash in between publishes again, never loses data.
    let mut step = Step::<K> { ctx, at, status };
    if let Err(waiting) = obj.publish(&mut step, &prepared).await? {
        return Ok(waiting);
    }
    let status = &mut *step.status;
    let next = iteration::complete(ctx, &job, K::sync(status), mover, pass).await?;
    obj.finish(&Step::<K> { ctx, at, status }).await?;
    Ok(decide::idle_progress(&next, &ctx.config.requeue, at.now))
}

#[cfg(test)]
mod tests {
    use super::OwnWrites;

    #[test]
    fn a_cached_copy_older_than_our_own_write_is_stale() {
        let writes = OwnWrites::default();
        assert!(!writes.is_stale("u", Some("5")), "nothing written yet");
        writes.remember("u", Some("10"));
        assert!(writes.is_stale("u", Some("9")));
        assert!(!writes.is_stale("u", Some("10")));
        assert!(!writes.is_stale("u", Some("11")));
        assert!(writes.is_stale("u", Some("not-a-number")));
        assert!(writes.is_stale("u", None));
        writes.forget("u");
        assert!(!writes.is_stale("u", Some("1")));
    }
}
