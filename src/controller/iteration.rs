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
    api::SyncStatus,
    resources::job::{MoverJob, mover_job},
};

/// What happened to the iteration in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mover Job was created now.
    Started,
    /// The mover is still running.
    Running,
    /// The mover completed: the data is in place.
    Completed,
    /// The mover failed after its retries; the Job was removed so the next pass retries.
    Failed,
}

/// Advances the iteration: creates the Job if there is none, otherwise records the
/// result of a finished one in `sync` and deletes the Job.
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
        JobState::Running => {
            if sync.last_sync_start_time.is_none() {
                sync.last_sync_start_time = Some(Time(now));
            }
            Ok(Outcome::Running)
        }
        JobState::Succeeded(status) => {
            sync.latest_mover_status = Some(status);
            let started = sync.last_sync_start_time.as_ref().map_or(now, |t| t.0);
            let took = now.duration_since(started);
            let took = Duration::try_from(took).unwrap_or_default();
            sync.last_sync_time = Some(Time(now));
            sync.last_sync_duration = Some(go_duration(took));
            mover_run::delete(&ctx.client, &namespace, &name).await?;
            Ok(Outcome::Completed)
        }
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
