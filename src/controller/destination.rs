//! The ReplicationDestination reconciler: observe → decide → build → apply → status.
//!
//! It provisions (or adopts) the volume, exposes the listener, holds the key, runs one
//! mover Job per iteration, and publishes `latestImage` only after a Job succeeded.

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::{Node, PersistentVolumeClaim, Service},
    jiff::Timestamp,
};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    apply::{apply, create_if_absent},
    conditions::Reason,
    context::Context,
    decisions,
    error::Error,
    image::{self, ImageState},
    iteration, keys, mover_pod, pass,
    plan::{self, Pass},
    progress::Progress,
    takeover, validate,
};
use crate::{
    api::{
        CopyMethod, ReplicationDestination, ReplicationDestinationRsyncTLSSpec,
        ReplicationDestinationRsyncTLSStatus, ReplicationDestinationStatus, ServiceType, Spelled,
        Spelling, VolumeMode, validate_mover_volumes,
    },
    resources::{
        Owner, Side,
        job::{MoverExtras, MoverJob},
        names,
        pvc::{self, VolumeShape},
        service,
    },
    telemetry::ObjectLabels,
};

/// Reconciles one ReplicationDestination.
#[instrument(skip_all, fields(namespace = rd.namespace().unwrap_or_default(), name = rd.name_any()))]
pub async fn reconcile(
    rd: Arc<ReplicationDestination>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    pass::run(rd, ctx, step).await
}

async fn step(
    rd: &ReplicationDestination,
    ctx: &Context,
    owner: &Owner,
    status: &mut ReplicationDestinationStatus,
    now: Timestamp,
) -> Result<Progress, Error> {
    validate::destination(rd).map_err(Error::Invalid)?;
    let tls = rd.spec.rsync_tls.as_ref().ok_or_else(|| {
        Error::Invalid(
            "spec.rsyncTLS is not set: rsyncTLS is the only replication method ferrosync supports"
                .into(),
        )
    })?;
    if tls.volume_mode.as_ref().and_then(Spelling::known) == Some(VolumeMode::Block) {
        return Err(Error::Invalid(
            "spec.rsyncTLS.volumeMode Block is not supported yet; use Filesystem".into(),
        ));
    }
    let copy_method = tls.copy_method.unwrap_or(CopyMethod::Direct).normalized();
    if copy_method == CopyMethod::Clone {
        return Err(Error::Invalid(
            "spec.rsyncTLS.copyMethod Clone is not valid on a destination; use Direct or Snapshot"
                .into(),
        ));
    }

    ctx.check_mover_service_account(&owner.namespace, tls.mover.mover_service_account.as_deref())
        .await?;
    validate_mover_volumes(tls.mover.mover_volumes.as_deref().unwrap_or_default())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let object = rd.object_ref(&());
    let key = keys::resolve(
        ctx,
        rd,
        &object,
        owner,
        Side::Destination,
        tls.key_secret.as_deref(),
        &mut status.sync.policy,
    )
    .await?;
    let pvc_name = ensure_volume(ctx, rd, owner, tls).await?;

    let user_annotations = tls.service_annotations.clone().unwrap_or_default();
    // An unknown spelling never gets here: `servable` refused it.
    let requested = tls.service_type.as_ref().and_then(Spelling::known);
    let (service_type, annotations) = if requested == Some(ServiceType::NodePort) {
        // The policy contract knows ClusterIP and LoadBalancer only: a NodePort the user
        // asked for is taken as asked.
        (ServiceType::NodePort, user_annotations)
    } else {
        let decided = decisions::service_type(ctx, rd, requested).await?;
        decisions::record(
            ctx,
            &object,
            &mut status.sync.policy,
            &decided.provenance,
            decided.decision.service_type.as_str().to_string(),
            &decided.decision.reason,
        )
        .await;
        // The user's serviceAnnotations always win over a plugin's.
        let merged = decided.decision.merged_annotations(&user_annotations);
        (decided.decision.service_type, merged)
    };
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let svc = apply(
        &svc_api,
        &service::destination_service(owner, service_type, annotations),
    )
    .await?;
    let endpoint = if service_type == ServiceType::NodePort {
        let nodes = Api::<Node>::all(ctx.client.clone())
            .list(&Default::default())
            .await?;
        service::endpoint(&svc, &nodes.items)
    } else {
        service::endpoint(&svc, &[])
    };
    let published = status.rsync_tls.as_ref().and_then(|s| {
        Some((
            s.address.clone()?,
            s.port.unwrap_or(service::RSYNC_TLS_PORT),
        ))
    });
    status.rsync_tls = Some(ReplicationDestinationRsyncTLSStatus {
        address: endpoint.as_ref().map(|e| e.0.clone()),
        key_secret: Some(key.secret.clone()),
        port: endpoint.as_ref().map(|e| e.1),
    });
    let Some((address, port)) = endpoint else {
        ctx.event(
            &object,
            true,
            "NoServiceAddressAssigned",
            format!(
                "Service {} has no address yet; the mover starts once it has one",
                svc.name_any()
            ),
        )
        .await;
        return Ok(
            Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
                .with_message("Waiting for the Service address"),
        );
    };
    if published.as_ref() != Some(&(address.clone(), port)) {
        let note = if port == service::RSYNC_TLS_PORT {
            format!("listening at {address}")
        } else {
            format!(
                "listening at {address} port {port}: set the source's spec.rsyncTLS.port to {port}"
            )
        };
        ctx.event(&object, false, "ServiceAddressAssigned", note)
            .await;
    }

    let pass = Pass {
        trigger: rd.spec.trigger.as_ref(),
        paused: rd.spec.paused == Some(true),
        now,
    };
    let decision = plan::decide(pass, &mut status.sync)?;
    let labels = ObjectLabels::new(&owner.namespace, &owner.name, "destination");
    ctx.metrics
        .observe_pass(&labels, decision.out_of_sync, decision.missed_interval);
    let schedule = rd.spec.trigger.as_ref().and_then(|t| t.schedule.as_deref());
    ctx.metrics.observe_schedule(&labels, schedule, now);
    if copy_method == CopyMethod::Snapshot {
        // Every pass: a user may label an image at any time, then delete the destination.
        image::release_kept(ctx, owner).await?;
    }
    if !plan::runs_mover(&decision) {
        return Ok(plan::idle_progress(&decision, &ctx.config.requeue, now));
    }
    // Once per iteration, before its Job: a pair's key may have been rotated.
    keys::refresh(
        ctx,
        rd,
        &object,
        owner,
        Side::Destination,
        &key,
        &plan::iteration_id(&status.sync),
        status.sync.last_sync_time.as_ref().map(|t| t.0),
    )
    .await?;
    let privileged = ctx.privileged_movers(&owner.namespace).await?;
    let debug = mover_pod::debug_requested(rd);
    let job_name = names::job(Side::Destination, &owner.name);
    if mover_pod::replace_if_mode_changed(ctx, &owner.namespace, &job_name, debug).await? {
        return Ok(
            Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
                .with_message("replacing the mover: its debug mode changed"),
        );
    }
    // A user's destinationPVC may be mounted by an application: go to its node.
    let placement = match &tls.destination_pvc {
        Some(name) => {
            match Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &owner.namespace)
                .get_opt(name)
                .await?
            {
                Some(pvc) => mover_pod::placement(ctx, &pvc).await?,
                None => None,
            }
        }
        None => None,
    };
    let extras = MoverExtras {
        debug,
        read_only_data: false,
        placement,
        image_pull_secrets: super::pull_secrets::ensure(ctx, &owner.namespace).await?,
    };
    let job = MoverJob {
        owner,
        side: Side::Destination,
        image: &ctx.config.mover.image,
        backoff_limit: ctx.config.mover.backoff_limit,
        progress_interval: ctx.config.mover.progress_interval,
        extras,
        extra_env: super::mover_env::common(&ctx.config.mover),
        pvc: &pvc_name,
        key_secret: &key.secret,
        options: &tls.mover,
        privileged,
        destination: None,
    };
    let generation = rd.metadata.generation;
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

    // Publish first, record second: a crash in between publishes again, never loses data.
    let image = if copy_method == CopyMethod::Snapshot {
        let started = status
            .sync
            .last_sync_start_time
            .as_ref()
            .map_or(now, |t| t.0);
        let class = tls.volume_snapshot_class_name.clone();
        match image::snapshot_image(ctx, owner, &pvc_name, class, started).await? {
            ImageState::Published(image) => image,
            ImageState::Waiting(what) => {
                return Ok(
                    Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
                        .with_message(what),
                );
            }
        }
    } else {
        image::pvc_image(&pvc_name)
    };
    if status.latest_image.as_ref() != Some(&image) {
        if copy_method == CopyMethod::Snapshot {
            ctx.event(
                &object,
                false,
                "VolumeSnapshotCreated",
                format!("published VolumeSnapshot {}", image.name),
            )
            .await;
        }
        status.latest_image = Some(image.clone());
    }
    if copy_method == CopyMethod::Snapshot {
        let retain = image::retention(rd).map_err(Error::Invalid)?;
        // VolSync's images of this PVC count too, from the first pass after a takeover.
        takeover::adopt_images(ctx, owner, &object, &pvc_name).await?;
        image::prune(ctx, owner, &image.name, retain).await?;
        if tls.cleanup_temp_pvc == Some(true) && tls.destination_pvc.is_none() {
            image::delete_temp_pvc(ctx, owner, &pvc_name).await?;
        }
    }
    // What VolSync marked for cleanup before a takeover goes now, as it would have.
    super::cleanup::sweep(ctx, owner, &[&pvc_name, &image.name]).await?;
    let next = iteration::complete(ctx, &job, &mut status.sync, mover, pass).await?;
    // Without a trigger the destination opens the next listener right away.
    Ok(plan::idle_progress(&next, &ctx.config.requeue, now))
}

/// The PVC that receives data: the user's destinationPVC, or one ferrosync provisions.
async fn ensure_volume(
    ctx: &Context,
    rd: &ReplicationDestination,
    owner: &Owner,
    tls: &ReplicationDestinationRsyncTLSSpec,
) -> Result<String, Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if let Some(name) = &tls.destination_pvc {
        return match api.get_opt(name).await? {
            Some(pvc) if pvc.metadata.deletion_timestamp.is_some() => Err(Error::NotReady(
                format!("spec.rsyncTLS.destinationPVC {name:?} is being deleted"),
            )),
            Some(_) => Ok(name.clone()),
            None => Err(Error::NotReady(format!(
                "spec.rsyncTLS.destinationPVC {name:?} does not exist"
            ))),
        };
    }
    let (Some(capacity), Some(modes)) = (&tls.capacity, &tls.access_modes) else {
        return Err(Error::Invalid(
            "spec.rsyncTLS.capacity and accessModes are required when destinationPVC is not set"
                .into(),
        ));
    };
    let shape = VolumeShape::new(capacity.clone(), modes, tls.storage_class_name.clone());
    let desired = pvc::destination_pvc(owner, &shape);
    let name = desired.metadata.name.clone().unwrap_or_default();
    let existing = api.get_opt(&name).await?;
    if existing
        .as_ref()
        .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    {
        // cleanupTempPVC deleted last iteration's volume; a new one follows once it is gone.
        return Err(Error::NotReady(format!(
            "waiting for the previous PVC {name} to be deleted"
        )));
    }
    // Created, never applied: a PVC's spec is mostly immutable, and creating needs no
    // patch right on every namespace's PVCs.
    if existing.is_none() && create_if_absent(&api, &desired).await?.1 {
        ctx.event(
            &rd.object_ref(&()),
            false,
            "PersistentVolumeClaimCreated",
            format!("created PVC {name}"),
        )
        .await;
    }
    Ok(name)
}
