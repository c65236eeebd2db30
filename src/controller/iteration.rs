//! One replication iteration's mover Job, the same on both sides: observe it (from the
//! Job and mover-pod caches, see "Cache lag" in `pipeline`), decide
//! ([`decide::mover`], pure), act: start it, record its result through the trigger
//! machine, remove it (a permanently failed one only when its retry is due: see `retry`),
//! and say when its pods cannot start.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ObjectReference, Pod, Secret},
};
use kube::{Api, ResourceExt};

use super::{
    apply::create_if_absent,
    context::Context,
    decide::{self, JobAct, MoverPlan, MoverRules, MoverSnapshot, Outcome, Pass},
    error::Error,
    lag::Seen,
    mover_run::{self, JobMeta, JobState, MoverReport},
    progress::Progress,
    retry, stalled,
    trigger::Decision,
};
use crate::{
    api::{SyncStats, SyncStatus},
    resources::{
        job::{MoverJob, mover_job},
        names,
    },
    telemetry::ObjectLabels,
};

/// Advances the iteration, the same for both kinds: observe the Job, decide
/// ([`decide::mover`], pure), act. Creates the Job if there is none (hop 4 from the
/// watch), returns a finished transfer (`Ok(Ok)`, for the caller to publish, then
/// [`complete`]), and every other outcome as the pass's progress (`Ok(Err)`): a running
/// mover, a failure recorded (its Job deleted once its retry is due, see `retry`), pods
/// that cannot start. A debug mover (`debug`) never reaches publication.
///
/// `buildable` is false when `job` was built without what only creating needs (the cache
/// held the Job): should the Job turn out gone, nothing is created in this pass, and the
/// next pass builds it whole.
pub async fn drive(
    ctx: &Context,
    object: &ObjectReference,
    (job, buildable): (&MoverJob<'_>, bool),
    sync: &mut SyncStatus,
    pass: Pass<'_>,
    (generation, debug): (Option<i64>, bool),
) -> Result<Result<MoverReport, Progress>, Error> {
    let name = names::job(job.side, &job.owner.name);
    let namespace = &job.owner.namespace;
    let outcome = match observe(ctx, job, pass, generation).await? {
        // The cache has not shown this controller's own create or delete of the Job yet:
        // the watch event that brings it triggers the next pass.
        None => Outcome::Running,
        Some(seen) if !buildable && seen.state == JobState::Absent => Outcome::Running,
        Some(mut seen) => {
            let plan = decide::mover(&seen, sync, pass, rules(ctx))?;
            match act(ctx, object, job, plan).await? {
                Acted::Done(outcome) => outcome,
                // A Job of that name the cache does not hold: VolSync's (its Jobs carry
                // none of ferrosync's labels), or ours from before a restart. Judged as read.
                Acted::Exists(existing) => {
                    seen.state = judged(ctx, namespace, &name, Some(&existing)).await?;
                    let plan = decide::mover(&seen, sync, pass, rules(ctx))?;
                    match plan.job {
                        JobAct::Create { .. } => Outcome::Running,
                        _ => match act(ctx, object, job, plan).await? {
                            Acted::Done(outcome) => outcome,
                            Acted::Exists(_) => Outcome::Running,
                        },
                    }
                }
            }
        }
    };
    Ok(match outcome {
        Outcome::Started | Outcome::Running if debug => {
            Err(super::mover_pod::debug_running(ctx, &name))
        }
        Outcome::Succeeded(_) if debug => {
            Err(super::mover_pod::debug_finished(ctx, object, namespace, &name).await?)
        }
        outcome => decide::mover_progress(outcome, rules(ctx)),
    })
}

/// The configuration's part of the mover decision.
fn rules(ctx: &Context) -> MoverRules {
    MoverRules {
        backoff: retry::Backoff {
            min: ctx.config.mover.failure_backoff_min,
            max: ctx.config.mover.failure_backoff_max,
        },
        poll: ctx.config.requeue.poll,
        idle: ctx.config.requeue.idle,
        retry: ctx.config.requeue.error_min,
    }
}

/// Reads what the mover decision depends on, from the caches: the Job, its pods (past
/// the start timeout), its log (at the progress interval) and its dependencies. `None`
/// while the Job cache has not shown this controller's own last create or delete of the
/// Job (`lag`), or has not listed yet.
async fn observe(
    ctx: &Context,
    job: &MoverJob<'_>,
    pass: Pass<'_>,
    generation: Option<i64>,
) -> Result<Option<MoverSnapshot>, Error> {
    let name = names::job(job.side, &job.owner.name);
    let namespace = &job.owner.namespace;
    let cached = ctx.caches.job(namespace, &name);
    let key = format!("{namespace}/{name}");
    if !ctx.caches.movers_ready() || !ctx.job_writes.caught_up(&key, Seen::of(cached.as_deref())) {
        return Ok(None);
    }
    let state = judged(ctx, namespace, &name, cached.as_deref()).await?;
    let mut seen = MoverSnapshot {
        job: name,
        state,
        start_problem: None,
        progress: None,
        depends_on_now: None,
        failures: ctx.mover_failures(&job.owner.uid),
    };
    match &seen.state {
        JobState::Absent | JobState::Failed(..) => {
            seen.depends_on_now =
                Some(dependencies(ctx, namespace, job.key_secret, generation).await?);
        }
        JobState::Running(meta) => {
            let pods = pods_of(ctx, namespace, &seen.job, cached.as_deref());
            seen.start_problem = start_problem(ctx, meta, &pods, pass);
            if seen.start_problem.is_none() && ctx.progress_due(&job.owner.uid) {
                seen.progress = mover_run::progress(&ctx.client, namespace, &pods).await;
            }
        }
        JobState::Foreign | JobState::Succeeded(_) => {}
    }
    Ok(Some(seen))
}

/// The cached pods of the Job `job` (those it owns: a deleted Job's pods may linger).
fn pods_of(ctx: &Context, namespace: &str, name: &str, job: Option<&Job>) -> Vec<Pod> {
    let uid = job.and_then(|j| j.metadata.uid.as_deref());
    let mut pods = ctx.caches.mover_pods(namespace, name);
    pods.retain(|p| owned_by(p, uid));
    pods
}

fn owned_by(pod: &Pod, uid: Option<&str>) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| Some(r.uid.as_str()) == uid)
}

/// Where the Job `job` stands; a finished one's pods are listed when the pod cache lacks
/// its result.
async fn judged(
    ctx: &Context,
    namespace: &str,
    name: &str,
    job: Option<&Job>,
) -> Result<JobState, Error> {
    let Some(found) = job.filter(|j| super::takeover::is_ours(j)) else {
        return Ok(mover_run::state(job, &[]));
    };
    let mut pods = pods_of(ctx, namespace, name, job);
    if mover_run::lacks_result(found, &pods) {
        pods = mover_run::pods(&ctx.client, namespace, name).await?;
        let uid = found.metadata.uid.as_deref();
        pods.retain(|p| owned_by(p, uid));
    }
    Ok(mover_run::state(job, &pods))
}

/// What `act` did.
enum Acted {
    /// The plan was carried out.
    Done(Outcome),
    /// The Job to create exists already (the cache did not hold it).
    Exists(Box<Job>),
}

/// Carries out the mover plan.
async fn act(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    plan: MoverPlan,
) -> Result<Acted, Error> {
    let namespace = &job.owner.namespace;
    let name = names::job(job.side, &job.owner.name);
    match plan.job {
        JobAct::Keep => {}
        JobAct::Create {
            failures_before,
            depends_on,
        } => {
            let mut built = mover_job(job);
            built
                .labels_mut()
                .insert(retry::FAILURES.into(), failures_before.to_string());
            built
                .annotations_mut()
                .insert(retry::DEPENDS_ON.into(), depends_on);
            // Created, never applied: a Job's spec is immutable, and creating needs no
            // patch right on every namespace's Jobs.
            let (stored, created) = create_if_absent(
                &Api::<Job>::namespaced(ctx.client.clone(), namespace),
                &built,
            )
            .await?;
            if !created {
                return Ok(Acted::Exists(Box::new(stored)));
            }
            ctx.job_writes
                .created(format!("{namespace}/{name}"), &stored);
        }
        JobAct::Delete => ctx.delete_job(namespace, &name).await?,
    }
    if let Some(n) = plan.failures {
        ctx.set_mover_failures(&job.owner.uid, n);
    }
    for event in plan.events {
        ctx.event(object, event.warning, event.reason, event.note)
            .await;
    }
    Ok(Acted::Done(plan.outcome))
}

/// What a mover Job depends on now: the object's generation and its key Secret's version.
async fn dependencies(
    ctx: &Context,
    namespace: &str,
    key_secret: &str,
    generation: Option<i64>,
) -> Result<String, Error> {
    // Not in the cache yet (just created): the version this controller read or made, else
    // asked once.
    let known = || {
        ctx.known_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{namespace}/{key_secret}"))
            .map(|(version, _)| version.clone())
    };
    let version = match ctx
        .caches
        .secret_version(namespace, key_secret)
        .or_else(known)
    {
        Some(version) => Some(version),
        None => Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(key_secret)
            .await?
            .and_then(|s| s.metadata.resource_version),
    };
    Ok(retry::depends_on(
        generation,
        key_secret,
        version.as_deref(),
    ))
}

/// Why a running Job's pods (`pods`) have not started, once `mover.start_timeout` has
/// passed.
fn start_problem(ctx: &Context, meta: &JobMeta, pods: &[Pod], pass: Pass<'_>) -> Option<String> {
    let timeout = ctx.config.mover.start_timeout;
    let created = meta.created?;
    if pass.now.duration_since(created).unsigned_abs() < timeout {
        return None;
    }
    stalled::start_problem(created, pods, pass.now, timeout)
}

/// Records a successful iteration in `sync` and deletes its Job. Called only after the
/// data was published, so a crash before this point repeats the publication instead of
/// losing it. Returns the trigger machine's decision about what follows.
pub async fn complete(
    ctx: &Context,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    mover: MoverReport,
    pass: Pass<'_>,
) -> Result<Decision, Error> {
    let started = sync.last_sync_start_time.as_ref().map_or(pass.now, |t| t.0);
    let seconds = pass.now.duration_since(started).as_secs_f64().max(0.0);
    let labels = ObjectLabels::new(&job.owner.namespace, &job.owner.name, job.side.as_str());
    ctx.metrics
        .observe_sync(&labels, seconds, mover.bytes(job.side));
    if let Some(summary) = &mover.summary {
        let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
        sync.last_sync_stats = Some(SyncStats {
            bytes_sent: count(summary.bytes_sent),
            bytes_received: count(summary.bytes_received),
            files_transferred: count(summary.files_transferred),
            files_deleted: count(summary.files_deleted),
        });
    }
    sync.progress = None;
    sync.latest_mover_status = Some(mover.status);
    ctx.set_mover_failures(&job.owner.uid, 0);
    let decision = decide::succeeded(pass, sync)?;
    let name = names::job(job.side, &job.owner.name);
    ctx.delete_job(&job.owner.namespace, &name).await?;
    Ok(decision)
}
