//! One replication iteration's mover Job, the same on both sides: start it, watch it,
//! record its result through the trigger machine, remove it (a permanently failed one
//! only when its retry is due: see `retry`), and say when its pods cannot start.

use std::time::Duration;

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ObjectReference, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Api, ResourceExt};

use super::{
    apply::create_if_absent,
    conditions::{self, Reason},
    context::Context,
    error::Error,
    mover_run::{self, JobMeta, JobState, MoverReport},
    plan::{self, Pass},
    progress::Progress,
    retry, stalled,
    trigger::Decision,
};
use crate::{
    api::{SyncProgress, SyncStats, SyncStatus},
    resources::{
        job::{MoverJob, mover_job},
        names,
    },
    telemetry::ObjectLabels,
};

/// What happened to the iteration in this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The mover Job was created now.
    Started,
    /// The mover is still running.
    Running,
    /// The mover completed: the data is in place. Publish it, then call [`complete`].
    Succeeded(MoverReport),
    /// The mover failed after its retries; the Job was removed and the trigger machine
    /// decided the retry.
    Failed(Decision),
    /// The mover needs a person: it failed permanently and its next Job waits for the
    /// backoff (or a change), or its pods cannot start. The pass reports this progress.
    Blocked(Progress),
}

/// [`drive`] as both kinds use it: every outcome but a finished transfer becomes the pass's
/// progress (`Err`), and a debug mover (`debug`) never reaches publication.
pub async fn drive_mover(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    pass: Pass<'_>,
    generation: Option<i64>,
    debug: bool,
) -> Result<Result<MoverReport, Progress>, Error> {
    let outcome = drive(ctx, object, job, sync, pass, generation).await?;
    let name = names::job(job.side, &job.owner.name);
    Ok(Err(match outcome {
        Outcome::Started | Outcome::Running if debug => super::mover_pod::debug_running(ctx, &name),
        Outcome::Succeeded(_) if debug => {
            super::mover_pod::debug_finished(ctx, object, &job.owner.namespace, &name).await?
        }
        Outcome::Started | Outcome::Running => {
            Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
        }
        Outcome::Blocked(progress) => progress,
        Outcome::Failed(_) => Progress::new(Reason::Error, ctx.config.requeue.error_min)
            .with_message("the mover failed; retrying (see latestMoverStatus)"),
        Outcome::Succeeded(mover) => return Ok(Ok(mover)),
    }))
}

/// Advances the iteration: creates the Job if there is none, reports a success (for the
/// caller to publish, then [`complete`]), or records a failure and deletes the Job once
/// its retry is due (see `retry`).
pub async fn drive(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    pass: Pass<'_>,
    generation: Option<i64>,
) -> Result<Outcome, Error> {
    let mut built = mover_job(job);
    let name = built.metadata.name.clone().unwrap_or_default();
    let namespace = job.owner.namespace.clone();
    let uid = job.owner.uid.as_str();
    match mover_run::observe(&ctx.client, &namespace, &name).await? {
        JobState::Absent => {
            let deps = dependencies(ctx, &namespace, job.key_secret, generation).await?;
            built
                .labels_mut()
                .insert(retry::FAILURES.into(), ctx.mover_failures(uid).to_string());
            built
                .annotations_mut()
                .insert(retry::DEPENDS_ON.into(), deps);
            // Created, never applied: a Job's spec is immutable, and creating needs no
            // patch right on every namespace's Jobs.
            create_if_absent(
                &Api::<Job>::namespaced(ctx.client.clone(), &namespace),
                &built,
            )
            .await?;
            ctx.event(
                object,
                false,
                "TransferStarted",
                format!("mover Job {name} started"),
            )
            .await;
            Ok(Outcome::Started)
        }
        JobState::Running(meta) => {
            if let Some(problem) = start_problem(ctx, &namespace, &name, &meta, pass).await? {
                let message = format!("mover Job {name}: {problem}");
                report_once(ctx, object, sync, "MoverNotStarted", &message).await;
                return Ok(Outcome::Blocked(
                    Progress::new(Reason::Error, ctx.config.requeue.poll).with_message(message),
                ));
            }
            if let Some(p) = mover_run::progress(&ctx.client, &namespace, &name).await {
                let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
                sync.progress = Some(SyncProgress {
                    bytes_transferred: count(p.bytes),
                    bytes_per_second: count(p.rate),
                    observed_at: Some(Time(pass.now)),
                });
            }
            Ok(Outcome::Running)
        }
        JobState::Foreign => {
            mover_run::delete(&ctx.client, &namespace, &name).await?;
            ctx.event(
                object,
                false,
                "ForeignJobReplaced",
                format!(
                    "Job {name} was not made by ferrosync (VolSync's, from before the takeover); deleted it to start ferrosync's mover"
                ),
            )
            .await;
            Ok(Outcome::Running)
        }
        JobState::Succeeded(status) => Ok(Outcome::Succeeded(status)),
        JobState::Failed(report, meta) => {
            let why = report
                .status
                .logs
                .clone()
                .unwrap_or_else(|| "no details from the mover".into());
            let kind = retry::Kind::of(report.summary.as_ref());
            let failed = retry::Failed {
                kind,
                at: meta.failed_at.unwrap_or(pass.now),
                failures_before: meta.failures_before,
                depended_on: meta.depended_on.clone(),
            };
            let deps = dependencies(ctx, &namespace, job.key_secret, generation).await?;
            let backoff = retry::Backoff {
                min: ctx.config.mover.failure_backoff_min,
                max: ctx.config.mover.failure_backoff_max,
            };
            sync.progress = None;
            sync.latest_mover_status = Some(report.status.clone());
            match retry::decide(&failed, &deps, backoff, pass.now) {
                retry::Retry::At(at) => {
                    let message = format!(
                        "mover Job {name} failed ({}): {}; the next attempt starts at {at}, or as soon as the spec or the key Secret changes",
                        kind_name(kind),
                        kind.advice()
                    );
                    if condition_message(sync) != Some(message.as_str()) {
                        ctx.event(
                            object,
                            true,
                            "TransferFailed",
                            format!("{message}. The mover said: {why}"),
                        )
                        .await;
                    }
                    let wait = at.duration_since(pass.now).unsigned_abs();
                    let requeue = wait.min(ctx.config.requeue.idle) + Duration::from_millis(100);
                    Ok(Outcome::Blocked(
                        Progress::new(Reason::Error, requeue).with_message(message),
                    ))
                }
                retry::Retry::Now(because) => {
                    let note = if report.auth_failure() {
                        format!(
                            "mover Job {name} failed: authentication failed (the keys of source and destination differ): {why}; retrying: {because}"
                        )
                    } else {
                        format!(
                            "mover Job {name} failed after its retries: {why}; retrying: {because}"
                        )
                    };
                    ctx.event(object, true, "TransferFailed", note).await;
                    ctx.set_mover_failures(uid, meta.failures_before.saturating_add(1));
                    mover_run::delete(&ctx.client, &namespace, &name).await?;
                    Ok(Outcome::Failed(plan::failed(pass, sync)?))
                }
            }
        }
    }
}

/// What a mover Job depends on now: the object's generation and its key Secret's version.
async fn dependencies(
    ctx: &Context,
    namespace: &str,
    key_secret: &str,
    generation: Option<i64>,
) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let version = secrets
        .get_metadata_opt(key_secret)
        .await?
        .and_then(|s| s.metadata.resource_version);
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

/// A Warning Event, once per distinct message: the condition already showing it means it
/// was reported.
async fn report_once(
    ctx: &Context,
    object: &ObjectReference,
    sync: &SyncStatus,
    reason: &str,
    message: &str,
) {
    if condition_message(sync) != Some(message) {
        ctx.event(object, true, reason, message.to_string()).await;
    }
}

fn condition_message(sync: &SyncStatus) -> Option<&str> {
    conditions::synchronizing(sync.conditions.as_deref().unwrap_or_default())
        .map(|c| c.message.as_str())
}

fn kind_name(kind: retry::Kind) -> String {
    match kind {
        retry::Kind::Permanent(class) | retry::Kind::Transient(class) => {
            format!("{class:?}, exit {}", class.exit_code())
        }
        retry::Kind::Unknown => "no summary".into(),
    }
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
    let decision = plan::succeeded(pass, sync)?;
    let name = names::job(job.side, &job.owner.name);
    mover_run::delete(&ctx.client, &job.owner.namespace, &name).await?;
    Ok(decision)
}
