//! One replication iteration's mover Job, the same on both sides: start it, watch it,
//! record its result, remove it.

use std::time::Duration;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::Api;

use super::{
    apply::apply,
    conditions::go_duration,
    context::Context,
    error::Error,
    mover_run::{self, JobState},
};
use crate::{
    api::{MoverStatus, SyncStatus},
    resources::{
        job::{MoverJob, mover_job},
        names,
    },
};

/// What happened to the iteration in this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The mover Job was created now.
    Started,
    /// The mover is still running.
    Running,
    /// The mover completed: the data is in place. Publish it, then call [`complete`].
    Succeeded(MoverStatus),
    /// The mover failed after its retries; the Job was removed so the next pass retries.
    Failed,
}

/// Records a successful iteration in `sync` and deletes its Job. Called only after the
/// data was published, so a crash before this point repeats the publication instead of
/// losing it.
pub async fn complete(
    ctx: &Context,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    mover: MoverStatus,
    now: Timestamp,
) -> Result<(), Error> {
    let started = sync.last_sync_start_time.as_ref().map_or(now, |t| t.0);
    let took = Duration::try_from(now.duration_since(started)).unwrap_or_default();
    sync.latest_mover_status = Some(mover);
    // Never before the start, so the iteration reads back as finished.
    sync.last_sync_time = Some(Time(whole_second(now).max(started)));
    sync.last_sync_duration = Some(go_duration(took));
    let name = names::job(job.side, &job.owner.name);
    mover_run::delete(&ctx.client, &job.owner.namespace, &name).await?;
    Ok(())
}

/// Whether an iteration has started and not yet completed: `lastSyncStartTime` is newer
/// than `lastSyncTime`. A failed mover leaves the iteration in progress, so its retry
/// reuses the same point-in-time copy.
pub fn in_progress(sync: &SyncStatus) -> bool {
    match (&sync.last_sync_start_time, &sync.last_sync_time) {
        (Some(start), Some(done)) => start.0 > done.0,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Starts a new iteration at `now` (it becomes [`in_progress`]).
///
/// Status times have whole-second precision, so the start is kept strictly after the
/// last completion: otherwise an iteration begun in the same second as the previous one
/// ended would read back as finished.
pub fn begin(sync: &mut SyncStatus, now: Timestamp) {
    let mut start = whole_second(now);
    if let Some(done) = &sync.last_sync_time
        && start <= done.0
    {
        start = done.0 + k8s_openapi::jiff::SignedDuration::from_secs(1);
    }
    sync.last_sync_start_time = Some(Time(start));
}

/// Truncates to what a status timestamp can hold.
fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The identity of the current iteration, stamped on its temporary objects.
pub fn id(sync: &SyncStatus) -> String {
    sync.last_sync_start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// Advances the iteration: creates the Job if there is none, reports a success (for the
/// caller to publish, then [`complete`]), or records a failure and deletes the Job so the
/// next pass retries.
pub async fn drive(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let built = mover_job(job);
    let name = built.metadata.name.clone().unwrap_or_default();
    let namespace = job.owner.namespace.clone();
    match mover_run::observe(&ctx.client, &namespace, &name).await? {
        JobState::Absent => {
            apply(
                &Api::<Job>::namespaced(ctx.client.clone(), &namespace),
                &built,
            )
            .await?;
            sync.last_sync_start_time = Some(Time(now));
            ctx.event(
                object,
                false,
                "TransferStarted",
                format!("mover Job {name} started"),
            )
            .await;
            Ok(Outcome::Started)
        }
        JobState::Running => Ok(Outcome::Running),
        JobState::Succeeded(status) => Ok(Outcome::Succeeded(status)),
        JobState::Failed(status) => {
            let why = status
                .logs
                .clone()
                .unwrap_or_else(|| "no details from the mover".into());
            let auth = why.contains("auth");
            let note = if auth {
                format!(
                    "mover Job {name} failed: authentication failed (the keys of source and destination differ): {why}"
                )
            } else {
                format!("mover Job {name} failed after its retries: {why}")
            };
            ctx.event(object, true, "TransferFailed", note).await;
            sync.latest_mover_status = Some(status);
            mover_run::delete(&ctx.client, &namespace, &name).await?;
            Ok(Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: i32) -> Timestamp {
        Timestamp::new(secs, nanos).expect("valid")
    }

    #[test]
    fn an_iteration_begun_in_the_second_of_the_last_completion_is_in_progress() {
        let mut sync = SyncStatus {
            last_sync_time: Some(Time(at(100, 0))),
            last_sync_start_time: Some(Time(at(90, 0))),
            ..SyncStatus::default()
        };
        assert!(!in_progress(&sync));
        begin(&mut sync, at(100, 400_000_000));
        // What the API server hands back: whole seconds.
        let reread: SyncStatus =
            serde_json::from_value(serde_json::to_value(&sync).expect("ser")).expect("de");
        assert!(in_progress(&reread));
        assert_eq!(
            id(&reread),
            id(&sync),
            "the iteration keeps its identity across a status round trip"
        );
    }

    #[test]
    fn a_first_iteration_is_in_progress_until_recorded() {
        let mut sync = SyncStatus::default();
        assert!(!in_progress(&sync));
        begin(&mut sync, at(50, 999_999_999));
        assert!(in_progress(&sync));
        assert_eq!(id(&sync), at(50, 0).to_string());
    }
}
