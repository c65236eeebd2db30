//! The ReplicationSource reconciler: observe → decide → build → apply → status.
//!
//! It resolves the key, picks the data to send (Direct: the source PVC itself), runs one
//! mover Job per iteration against the destination's address, and records the result.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::PersistentVolumeClaim, jiff::Timestamp};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    apply::apply_status,
    conditions::Reason,
    context::Context,
    error::Error,
    iteration::{self, Outcome},
    keys,
    progress::{Progress, settle},
};
use crate::{
    api::{
        CopyMethod, ReplicationSource, ReplicationSourceRsyncTLSStatus, ReplicationSourceStatus,
    },
    resources::{Owner, Side, job::MoverJob, service::RSYNC_TLS_PORT},
};

/// Reconciles one ReplicationSource.
#[instrument(skip_all, fields(namespace = rs.namespace().unwrap_or_default(), name = rs.name_any()))]
pub async fn reconcile(rs: Arc<ReplicationSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::of(rs.as_ref())
        .ok_or_else(|| Error::Invalid("object has no uid or namespace".into()))?;
    let api: Api<ReplicationSource> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut status = rs.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let result = step(&rs, &ctx, &owner, &mut status, now).await;
    let object = rs.object_ref(&());
    let generation = rs.meta().generation;
    let requeue = settle(
        &ctx,
        &object,
        &mut status.sync.conditions,
        result,
        generation,
        now,
    )
    .await?;
    apply_status(&api, &owner.name, &status).await?;
    ctx.reset_backoff(&format!("{}/{}", owner.namespace, owner.name));
    Ok(Action::requeue(requeue))
}

async fn step(
    rs: &ReplicationSource,
    ctx: &Context,
    owner: &Owner,
    status: &mut ReplicationSourceStatus,
    now: Timestamp,
) -> Result<Progress, Error> {
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
    let copy_method = tls.copy_method.unwrap_or(CopyMethod::Direct).normalized();
    if copy_method != CopyMethod::Direct {
        return Err(Error::Invalid(format!(
            "spec.rsyncTLS.copyMethod {} is not supported yet; use Direct",
            copy_method.as_str()
        )));
    }

    let key = keys::resolve(ctx, owner, tls.key_secret.as_deref()).await?;
    status.rsync_tls = key.generated.then(|| ReplicationSourceRsyncTLSStatus {
        key_secret: Some(key.secret.clone()),
    });
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if pvcs.get_opt(source_pvc).await?.is_none() {
        return Err(Error::NotReady(format!(
            "spec.sourcePVC {source_pvc:?} does not exist"
        )));
    }

    if rs.spec.paused == Some(true) {
        return Ok(Progress::new(Reason::Paused, ctx.config.requeue.idle));
    }
    let manual = rs.spec.trigger.as_ref().and_then(|t| t.manual.clone());
    let synced_once = status.sync.last_sync_time.is_some();
    let job_exists = status.sync.last_sync_start_time.is_some()
        && status.sync.last_sync_start_time.as_ref().map(|t| t.0)
            > status.sync.last_sync_time.as_ref().map(|t| t.0);
    if let Some(manual) = &manual
        && synced_once
        && !job_exists
        && status.sync.last_manual_sync.as_deref() == Some(manual.as_str())
    {
        return Ok(Progress::new(
            Reason::WaitingForManual,
            ctx.config.requeue.idle,
        ));
    }

    let privileged = ctx.privileged_movers(&owner.namespace).await?;
    let job = MoverJob {
        owner,
        side: Side::Source,
        image: &ctx.config.mover.image,
        backoff_limit: ctx.config.mover.backoff_limit,
        pvc: source_pvc,
        key_secret: &key.secret,
        options: &tls.mover,
        privileged,
        destination: Some((address, port)),
    };
    let object = rs.object_ref(&());
    let outcome = iteration::drive(ctx, &object, &job, &mut status.sync, now).await?;
    Ok(match outcome {
        Outcome::Started | Outcome::Running => {
            Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
        }
        Outcome::Completed => {
            status.sync.last_manual_sync = manual.clone();
            Progress::new(
                if manual.is_some() {
                    Reason::WaitingForManual
                } else {
                    Reason::SyncInProgress
                },
                Duration::from_millis(10),
            )
        }
        Outcome::Failed => Progress::new(Reason::Error, ctx.config.requeue.error_min)
            .with_message("the mover failed; retrying (see latestMoverStatus)"),
    })
}
