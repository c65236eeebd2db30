//! What only a ReplicationDestination does in the pipeline ([`super::pipeline`]): it
//! provisions (or adopts) the volume, exposes the listener and publishes its address, and
//! after a transfer publishes `latestImage` (a snapshot or the PVC), keeping
//! `retainSnapshots` of them.

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Service};
use kube::{Api, Resource, ResourceExt};

use super::{
    apply::{apply, create_if_absent},
    context::Context,
    decide::Reason,
    decisions,
    error::Error,
    image::{self, ImageState},
    keys::Key,
    lag::Seen,
    mover_pod,
    pipeline::{Common, Hooked, Kind, MoverData, Replicated, Step},
    progress::Progress,
    takeover, unchanged, validate,
};
use crate::{
    api::{
        CopyMethod, ReplicationDestination, ReplicationDestinationRsyncTLSSpec,
        ReplicationDestinationRsyncTLSStatus, ServiceType, Spelled, Spelling, VolumeMode,
    },
    resources::{
        Owner, names,
        pvc::{self, VolumeShape},
        service,
    },
};

/// What a destination's pass found before the trigger machine.
pub struct Prepared {
    /// The PVC that receives the data.
    pvc: String,
    /// Direct or Snapshot.
    copy_method: CopyMethod,
}

impl Kind for ReplicationDestination {
    type Prepared = Prepared;

    fn check(&self, _ctx: &Context) -> Result<Common<'_>, Error> {
        validate::destination(self).map_err(Error::Invalid)?;
        let tls = self.tls()?;
        if tls.volume_mode.as_ref().and_then(Spelling::known) == Some(VolumeMode::Block) {
            return Err(Error::Invalid(
                "spec.rsyncTLS.volumeMode Block is not supported yet; use Filesystem".into(),
            ));
        }
        if tls.copy_method.unwrap_or(CopyMethod::Direct).normalized() == CopyMethod::Clone {
            return Err(Error::Invalid(
                "spec.rsyncTLS.copyMethod Clone is not valid on a destination; use Direct or Snapshot"
                    .into(),
            ));
        }
        Ok(Common {
            key_secret: tls.key_secret.as_deref(),
            mover: &tls.mover,
        })
    }

    async fn prepare(&self, step: &mut Step<'_, Self>, key: &Key) -> Hooked<Prepared> {
        let (ctx, at, status) = (step.ctx, step.at, &mut *step.status);
        let tls = self.tls()?;
        let owner = at.owner;
        let pvc_name = match (&tls.destination_pvc, at.mover_exists) {
            // A running mover holds the volume: it exists, and is not read again.
            (Some(name), true) => name.clone(),
            (None, true) => names::destination_pvc(&owner.name),
            (_, false) => ensure_volume(ctx, self, owner, tls).await?,
        };
        let user_annotations = tls.service_annotations.clone().unwrap_or_default();
        // An unknown spelling never gets here: `servable` refused it.
        let requested = tls.service_type.as_ref().and_then(Spelling::known);
        let (service_type, annotations) = if requested == Some(ServiceType::NodePort) {
            // The policy contract knows ClusterIP and LoadBalancer only: a NodePort the user
            // asked for is taken as asked.
            (ServiceType::NodePort, user_annotations)
        } else {
            let decided = decisions::service_type(ctx, self, requested).await?;
            decisions::record(
                ctx,
                at.object,
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
        let svc = ensure_service(
            ctx,
            owner,
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
                at.object,
                true,
                "NoServiceAddressAssigned",
                format!(
                    "Service {} has no address yet; the mover starts once it has one",
                    svc.name_any()
                ),
            )
            .await;
            return Ok(Err(Progress::new(
                Reason::SyncInProgress,
                ctx.config.requeue.poll,
            )
            .with_message("Waiting for the Service address")));
        };
        if published.as_ref() != Some(&(address.clone(), port)) {
            let note = if port == service::RSYNC_TLS_PORT {
                format!("listening at {address}")
            } else {
                format!(
                    "listening at {address} port {port}: set the source's spec.rsyncTLS.port to {port}"
                )
            };
            ctx.event(at.object, false, "ServiceAddressAssigned", note)
                .await;
        }
        Ok(Ok(Prepared {
            pvc: pvc_name,
            copy_method: tls.copy_method.unwrap_or(CopyMethod::Direct).normalized(),
        }))
    }

    async fn every_pass(&self, step: &Step<'_, Self>, prepared: &Prepared) -> Result<(), Error> {
        if prepared.copy_method == CopyMethod::Snapshot {
            // Every pass: a user may label an image at any time, then delete the destination.
            image::release_kept(step.ctx, step.at.owner).await?;
        }
        Ok(())
    }

    async fn data(&self, step: &mut Step<'_, Self>, prepared: &Prepared) -> Hooked<MoverData> {
        let (ctx, at) = (step.ctx, step.at);
        // A user's destinationPVC may be mounted by an application: go to its node.
        let placement = match &self.tls()?.destination_pvc {
            Some(name) if !at.mover_exists => match ctx.pvc(&at.owner.namespace, name).await? {
                Some(pvc) => mover_pod::placement(ctx, &pvc).await?,
                None => None,
            },
            _ => None,
        };
        Ok(Ok(MoverData {
            pvc: prepared.pvc.clone(),
            read_only: false,
            placement,
            destination: None,
            extra_env: super::mover_env::common(&ctx.config.mover),
        }))
    }

    async fn publish(&self, step: &mut Step<'_, Self>, prepared: &Prepared) -> Hooked<()> {
        let (ctx, at, status) = (step.ctx, step.at, &mut *step.status);
        let tls = self.tls()?;
        let (owner, pvc_name) = (at.owner, &prepared.pvc);
        let snapshot = prepared.copy_method == CopyMethod::Snapshot;
        let image = if snapshot {
            let started = status
                .sync
                .last_sync_start_time
                .as_ref()
                .map_or(at.now, |t| t.0);
            let class = tls.volume_snapshot_class_name.clone();
            match image::snapshot_image(ctx, owner, pvc_name, class, started).await? {
                ImageState::Published(image) => image,
                ImageState::Waiting(what) => {
                    return Ok(Err(Progress::new(
                        Reason::SyncInProgress,
                        ctx.config.requeue.poll,
                    )
                    .with_message(what)));
                }
            }
        } else {
            image::pvc_image(pvc_name)
        };
        if status.latest_image.as_ref() != Some(&image) {
            if snapshot {
                ctx.event(
                    at.object,
                    false,
                    "VolumeSnapshotCreated",
                    format!("published VolumeSnapshot {}", image.name),
                )
                .await;
            }
            status.latest_image = Some(image.clone());
        }
        if snapshot {
            let retain = image::retention(self).map_err(Error::Invalid)?;
            // VolSync's images of this PVC count too, from the first pass after a takeover.
            takeover::adopt_images(ctx, owner, at.object, pvc_name).await?;
            image::prune(ctx, owner, &image.name, retain).await?;
            if tls.cleanup_temp_pvc == Some(true) && tls.destination_pvc.is_none() {
                image::delete_temp_pvc(ctx, owner, pvc_name).await?;
            }
        }
        // What VolSync marked for cleanup before a takeover goes now, as it would have.
        super::cleanup::sweep(ctx, owner, &[pvc_name, &image.name]).await?;
        Ok(Ok(()))
    }
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
        return match ctx.pvc(&owner.namespace, name).await? {
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
    let key = format!("{}/{name}", owner.namespace);
    // Read fresh where the cache may not show this controller's own write yet: the volume
    // it just created, and the one cleanupTempPVC deletes after every iteration (so a
    // cache that has not seen the deletion never offers the old volume again).
    let cached = ctx.caches.pvc(&owner.namespace, &name);
    let fresh = tls.cleanup_temp_pvc == Some(true)
        || !ctx.caches.pvcs_ready()
        || !ctx.pvc_writes.caught_up(&key, Seen::of(cached.as_deref()));
    let existing = match fresh {
        true => api.get_opt(&name).await?,
        false => cached.map(|p| (*p).clone()),
    };
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
    if existing.is_some() {
        return Ok(name);
    }
    let (stored, created) = create_if_absent(&api, &desired).await?;
    ctx.pvc_writes.created(key, &stored);
    if created {
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

/// The destination's Service: applied when it differs from the one applied last (or
/// from what is stored), else the cached one as it is.
async fn ensure_service(ctx: &Context, owner: &Owner, desired: &Service) -> Result<Service, Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let key = format!("{}/{name}", owner.namespace);
    let last = ctx
        .services_applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    if let Some(cached) = ctx.caches.service(&owner.namespace, &name)
        && unchanged::up_to_date(desired, last.as_deref(), cached.as_ref())
    {
        return Ok((*cached).clone());
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let stored = apply(&api, desired).await?;
    ctx.services_applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, unchanged::digest(desired));
    Ok(stored)
}
