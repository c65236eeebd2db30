//! The ReplicationSource reconciler: observe → decide → build → apply → status.
//!
//! It resolves the key, picks the data to send (Direct: the source PVC itself), runs one
//! mover Job per iteration against the destination's address, and records the result.

use std::sync::Arc;

use k8s_openapi::{api::core::v1::PersistentVolumeClaim, jiff::Timestamp};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    conditions::Reason,
    context::Context,
    copy_trigger::Handshake,
    decisions,
    error::Error,
    iteration, keys, mover_env, mover_pod, mover_run, pass,
    pit::{self, PitPlan, PitState},
    plan::{self, Pass},
    progress::Progress,
    validate,
};
use crate::{
    api::{
        CopyMethod, ReplicationSource, ReplicationSourceRsyncTLSStatus, ReplicationSourceStatus,
        validate_mover_volumes,
    },
    resources::{
        Owner, Side,
        job::{MoverExtras, MoverJob},
        names,
        service::RSYNC_TLS_PORT,
    },
    telemetry::ObjectLabels,
};

/// Reconciles one ReplicationSource.
#[instrument(skip_all, fields(namespace = rs.namespace().unwrap_or_default(), name = rs.name_any()))]
pub async fn reconcile(rs: Arc<ReplicationSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    pass::run(rs, ctx, step).await
}

async fn step(
    rs: &ReplicationSource,
    ctx: &Context,
    owner: &Owner,
    status: &mut ReplicationSourceStatus,
    now: Timestamp,
) -> Result<Progress, Error> {
    validate::source(rs).map_err(Error::Invalid)?;
    let tls = rs.spec.rsync_tls.as_ref().ok_or_else(|| {
        Error::Invalid(
            "spec.rsyncTLS is not set: rsyncTLS is the only replication method ferrosync supports"
                .into(),
        )
    })?;
    let source_pvc = rs
        .spec
        .source_pvc
        .as_deref()
        .ok_or_else(|| Error::Invalid("spec.sourcePVC is required".into()))?;
    let address = tls
        .address
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::Invalid("spec.rsyncTLS.address is required".into()))?;
    let port = tls.port.unwrap_or(RSYNC_TLS_PORT);
    // Checked first: a bad tuning annotation is the user's to fix, whatever else is pending.
    let extra_env = mover_env::source(&ctx.config.mover, rs.annotations())?;
    ctx.check_mover_service_account(&owner.namespace, tls.mover.mover_service_account.as_deref())
        .await?;
    validate_mover_volumes(tls.mover.mover_volumes.as_deref().unwrap_or_default())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let object = rs.object_ref(&());
    let key = keys::resolve(
        ctx,
        rs,
        &object,
        owner,
        Side::Source,
        tls.key_secret.as_deref(),
        &mut status.sync.policy,
    )
    .await?;
    status.rsync_tls = key.generated.then(|| ReplicationSourceRsyncTLSStatus {
        key_secret: Some(key.secret.clone()),
    });
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let Some(source) = pvcs.get_opt(source_pvc).await? else {
        return Err(Error::NotReady(format!(
            "spec.sourcePVC {source_pvc:?} does not exist"
        )));
    };

    let pass = Pass {
        trigger: rs.spec.trigger.as_ref(),
        paused: rs.spec.paused == Some(true),
        now,
    };
    let decision = plan::decide(pass, &mut status.sync)?;
    let labels = ObjectLabels::new(&owner.namespace, &owner.name, "source");
    ctx.metrics
        .observe_pass(&labels, decision.out_of_sync, decision.missed_interval);
    let schedule = rs.spec.trigger.as_ref().and_then(|t| t.schedule.as_deref());
    ctx.metrics.observe_schedule(&labels, schedule, now);
    if !plan::runs_mover(&decision) {
        return Ok(plan::idle_progress(&decision, &ctx.config.requeue, now));
    }
    // Asked on every pass: decisions are pure functions of their input, cached, and a
    // clone the driver refused changes the input mid-iteration.
    let clone_failure = pit::clone_failure(ctx, owner).await?;
    let decided = decisions::copy_method(ctx, tls.copy_method, &source, clone_failure).await?;
    let method = decided.decision.method.normalized();
    decisions::record(
        ctx,
        &object,
        &mut status.sync.policy,
        &decided.provenance,
        method.as_str().to_string(),
        &decided.decision.reason,
    )
    .await;
    let pit_plan = PitPlan {
        method,
        snapshot_class: tls
            .volume_snapshot_class_name
            .clone()
            .or(decided.decision.volume_snapshot_class),
        storage_class: decided.decision.storage_class,
    };
    let iteration = plan::iteration_id(&status.sync);
    let mut handshake = Handshake {
        ctx,
        object: &object,
        pvcs: &pvcs,
        pvc: source_pvc,
        annotations: source.metadata.annotations.clone().unwrap_or_default(),
        iteration: &iteration,
    };
    if method != CopyMethod::Direct
        && let Some(waiting) = handshake.before_copy(now, &mut status.sync).await?
    {
        return Ok(waiting);
    }
    let data_pvc = match pit::ensure(ctx, owner, tls, &pit_plan, &source, &iteration).await? {
        PitState::Ready(pvc) => {
            handshake.copy_made().await?;
            pvc
        }
        PitState::Waiting(what) => {
            return Ok(
                Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll).with_message(what),
            );
        }
        PitState::Replacing(what) => {
            // The mover waited on the old copy; it starts again with the new one.
            mover_run::delete(
                &ctx.client,
                &owner.namespace,
                &names::job(Side::Source, &owner.name),
            )
            .await?;
            return Ok(
                Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll).with_message(what),
            );
        }
    };

    // Once per iteration, before its Job: a pair's key may have been rotated.
    keys::refresh(
        ctx,
        rs,
        &object,
        owner,
        Side::Source,
        &key,
        &plan::iteration_id(&status.sync),
        status.sync.last_sync_time.as_ref().map(|t| t.0),
    )
    .await?;
    let privileged = ctx.privileged_movers(&owner.namespace).await?;
    let debug = mover_pod::debug_requested(rs);
    let job_name = names::job(Side::Source, &owner.name);
    if mover_pod::replace_if_mode_changed(ctx, &owner.namespace, &job_name, debug).await? {
        return Ok(
            Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
                .with_message("replacing the mover: its debug mode changed"),
        );
    }
    // The copy has the source's modes unless spec.rsyncTLS.accessModes overrides them.
    let data_modes = match (method, &tls.access_modes) {
        (CopyMethod::Direct, _) | (_, None) => mover_pod::access_modes(&source),
        (_, Some(modes)) => modes.iter().map(|m| m.as_str().to_string()).collect(),
    };
    let extras = MoverExtras {
        debug,
        read_only_data: mover_pod::read_only(&data_modes),
        // Only the user's own volume is mounted by an application; a copy is ours alone.
        placement: match method {
            CopyMethod::Direct => mover_pod::placement(ctx, &source).await?,
            _ => None,
        },
        image_pull_secrets: super::pull_secrets::ensure(ctx, &owner.namespace).await?,
    };
    let job = MoverJob {
        owner,
        side: Side::Source,
        image: &ctx.config.mover.image,
        backoff_limit: ctx.config.mover.backoff_limit,
        progress_interval: ctx.config.mover.progress_interval,
        extras,
        extra_env,
        pvc: &data_pvc,
        key_secret: &key.secret,
        options: &tls.mover,
        privileged,
        destination: Some((address, port)),
    };
    let generation = rs.metadata.generation;
    let mover = match iteration::drive_mover(
        ctx,
        &object,
        &job,
        &mut status.sync,
        pass,
        generation,
        debug,
    )
    .await?
    {
        Ok(mover) => mover,
        Err(progress) => return Ok(progress),
    };
    // Deletion is only requested: the copy stays in use by the finished pod until the Job
    // goes, and the next iteration waits for a stale copy to disappear.
    pit::cleanup(ctx, owner).await?;
    let next = iteration::complete(ctx, &job, &mut status.sync, mover, pass).await?;
    Ok(plan::idle_progress(&next, &ctx.config.requeue, now))
}
