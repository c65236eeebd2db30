//! One replication iteration's mover Job, the same on both sides: observe it, decide
//! ([`decide::mover`], pure), act: start it, record its result through the trigger
//! machine, remove it (a permanently failed one only when its retry is due: see `retry`),
//! and say when its pods cannot start.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ObjectReference, Secret},
};
use kube::{Api, ResourceExt};

use super::{
    apply::create_if_absent,
    context::Context,
    decide::{self, JobAct, MoverPlan, MoverRules, MoverSnapshot, Outcome, Pass},
    error::Error,
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
    let seen = observe(ctx, job, pass, generation).await?;
    let outcome = if !buildable && seen.state == JobState::Absent {
        Outcome::Running
    } else {
        let plan = decide::mover(&seen, sync, pass, rules(ctx))?;
        act(ctx, object, job, plan).await?
    };
    Ok(match outcome {
        Outcome::Started | Outcome::Running if debug => {
            Err(super::mover_pod::debug_running(ctx, &seen.job))
        }
        Outcome::Succeeded(_) if debug => {
            Err(
                super::mover_pod::debug_finished(ctx, object, &job.owner.namespace, &seen.job)
                    .await?,
            )
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

/// Reads what the mover decision depends on: the Job, and only when they matter its pods
/// (past the start timeout), its log (at the progress interval) and its dependencies.
async fn observe(
    ctx: &Context,
    job: &MoverJob<'_>,
    pass: Pass<'_>,
    generation: Option<i64>,
) -> Result<MoverSnapshot, Error> {
    let name = names::job(job.side, &job.owner.name);
    let namespace = &job.owner.namespace;
    // The cache is trusted only for a running Job of ours: one that may just have been
    // created, finished or deleted is read from the apiserver, so a lagging cache never
    // starts a second Job or publishes a result twice.
    let state = match ctx.caches.job(namespace, &name) {
        Some(cached) if super::takeover::is_ours(&cached) && mover_run::is_running(&cached) => {
            JobState::Running(JobMeta::of(&cached))
        }
        _ => mover_run::observe(&ctx.client, namespace, &name).await?,
    };
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
            seen.start_problem = start_problem(ctx, namespace, &seen.job, meta, pass).await?;
            if seen.start_problem.is_none() && ctx.progress_due(&job.owner.uid) {
                seen.progress = mover_run::progress(&ctx.client, namespace, &seen.job).await;
            }
        }
        JobState::Foreign | JobState::Succeeded(_) => {}
    }
    Ok(seen)
}

/// Carries out the mover plan.
async fn act(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    plan: MoverPlan,
) -> Result<Outcome, Error> {
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
            create_if_absent(
                &Api::<Job>::namespaced(ctx.client.clone(), namespace),
                &built,
            )
            .await?;
        }
        JobAct::Delete => mover_run::delete(&ctx.client, namespace, &name).await?,
    }
    if let Some(n) = plan.failures {
        ctx.set_mover_failures(&job.owner.uid, n);
    }
    for event in plan.events {
        ctx.event(object, event.warning, event.reason, event.note)
            .await;
    }
    Ok(plan.outcome)
}

/// What a mover Job depends on now: the object's generation and its key Secret's version.
async fn dependencies(
    ctx: &Context,
    namespace: &str,
    key_secret: &str,
    generation: Option<i64>,
) -> Result<String, Error> {
    let version = match ctx.caches.secret_version(namespace, key_secret) {
        Some(version) => Some(version),
        // Not in the cache yet (just created): asked once.
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

/// Why a running Job's pods have not started, once `mover.start_timeout` has passed.
async fn start_problem(
    ctx: &Context,
    namespace: &str,
    name: &str,
    meta: &JobMeta,
    pass: Pass<'_>,
) -> Result<Option<String>, Error> {
    let timeout = ctx.config.mover.start_timeout;
    let Some(created) = meta.created else {
        return Ok(None);
    };
    // Listing pods only once it could matter keeps the common pass cheap.
    if pass.now.duration_since(created).unsigned_abs() < timeout {
        return Ok(None);
    }
    let pods = mover_run::pods(&ctx.client, namespace, name).await?;
    Ok(stalled::start_problem(created, &pods, pass.now, timeout))
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
    mover_run::delete(&ctx.client, &job.owner.namespace, &name).await?;
    Ok(decision)
}
