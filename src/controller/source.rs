//! What only a ReplicationSource does in the pipeline ([`super::pipeline`]): it sends its
//! PVC (Direct) or a point-in-time copy of it (Clone, Snapshot) to the destination's
//! address, and removes the copy once the iteration succeeded.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, ResourceExt};

use super::{
    context::Context,
    copy_trigger::Handshake,
    decide::{self, Reason},
    decisions,
    error::Error,
    keys::Key,
    mover_env, mover_pod,
    pipeline::{Common, Hooked, Kind, MoverData, Replicated, Step},
    pit::{self, PitPlan, PitState},
    progress::Progress,
    validate,
};
use crate::{
    api::{CopyMethod, ReplicationSource, ReplicationSourceRsyncTLSStatus},
    resources::{Side, names, service::RSYNC_TLS_PORT},
};

/// What a source's pass found before the trigger machine: the PVC to send.
pub struct Prepared {
    source: PersistentVolumeClaim,
}

impl ReplicationSource {
    /// `spec.rsyncTLS.address` and port; checked before anything is made.
    fn peer(&self) -> Result<(String, i32), Error> {
        let tls = self.tls()?;
        let address = tls
            .address
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::Invalid("spec.rsyncTLS.address is required".into()))?;
        Ok((address.to_string(), tls.port.unwrap_or(RSYNC_TLS_PORT)))
    }
}

impl Kind for ReplicationSource {
    type Prepared = Prepared;

    fn check(&self, ctx: &Context) -> Result<Common<'_>, Error> {
        validate::source(self).map_err(Error::Invalid)?;
        let tls = self.tls()?;
        if self.spec.source_pvc.is_none() {
            return Err(Error::Invalid("spec.sourcePVC is required".into()));
        }
        self.peer()?;
        // Checked first: a bad tuning annotation is the user's to fix, whatever else is
        // pending.
        mover_env::source(&ctx.config.mover, self.annotations())?;
        Ok(Common {
            key_secret: tls.key_secret.as_deref(),
            mover: &tls.mover,
        })
    }

    async fn prepare(&self, step: &mut Step<'_, Self>, key: &Key) -> Hooked<Prepared> {
        let (ctx, at) = (step.ctx, step.at);
        step.status.rsync_tls = key.generated.then(|| ReplicationSourceRsyncTLSStatus {
            key_secret: Some(key.secret.clone()),
        });
        let name = self.spec.source_pvc.as_deref().unwrap_or_default();
        match ctx.pvc(&at.owner.namespace, name).await? {
            Some(source) => Ok(Ok(Prepared { source })),
            None => Err(Error::NotReady(format!(
                "spec.sourcePVC {name:?} does not exist"
            ))),
        }
    }

    async fn data(&self, step: &mut Step<'_, Self>, prepared: &Prepared) -> Hooked<MoverData> {
        let (ctx, at, status) = (step.ctx, step.at, &mut *step.status);
        let tls = self.tls()?;
        let (owner, source) = (at.owner, &prepared.source);
        // Asked on every pass (from the caches): decisions are pure functions of their
        // input, cached, and a clone the driver refused changes the input mid-iteration.
        let clone_failure = pit::clone_failure(ctx, owner);
        let decided = decisions::copy_method(ctx, tls.copy_method, source, clone_failure).await?;
        let method = decided.decision.method.normalized();
        decisions::record(
            ctx,
            at.object,
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
        let iteration = decide::iteration_id(&status.sync);
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &owner.namespace);
        let source_name = source.name_any();
        let mut handshake = Handshake {
            ctx,
            object: at.object,
            pvcs: &pvcs,
            pvc: &source_name,
            annotations: source.metadata.annotations.clone().unwrap_or_default(),
            iteration: &iteration,
        };
        if method != CopyMethod::Direct
            && let Some(waiting) = handshake.before_copy(at.now, &mut status.sync).await?
        {
            return Ok(Err(waiting));
        }
        let waiting = |what: String| {
            Ok(Err(Progress::new(
                Reason::SyncInProgress,
                ctx.config.requeue.poll,
            )
            .with_message(what)))
        };
        let pvc = match pit::ensure(ctx, owner, tls, &pit_plan, source, &iteration).await? {
            PitState::Ready(pvc) => {
                handshake.copy_made().await?;
                pvc
            }
            PitState::Waiting(what) => return waiting(what),
            PitState::Replacing(what) => {
                // The mover waited on the old copy; it starts again with the new one.
                let job = names::job(Side::Source, &owner.name);
                ctx.delete_job(&owner.namespace, &job).await?;
                return waiting(what);
            }
        };
        // The copy has the source's modes unless spec.rsyncTLS.accessModes overrides them.
        let data_modes = match (method, &tls.access_modes) {
            (CopyMethod::Direct, _) | (_, None) => mover_pod::access_modes(source),
            (_, Some(modes)) => modes.iter().map(|m| m.as_str().to_string()).collect(),
        };
        Ok(Ok(MoverData {
            pvc,
            read_only: mover_pod::read_only(&data_modes),
            // Only the user's own volume is mounted by an application; a copy is ours alone.
            placement: match method {
                CopyMethod::Direct if !at.mover_exists => mover_pod::placement(ctx, source).await?,
                _ => None,
            },
            destination: Some(self.peer()?),
            extra_env: mover_env::source(&ctx.config.mover, self.annotations())?,
        }))
    }

    async fn finish(&self, step: &Step<'_, Self>) -> Result<(), Error> {
        // Deletion is only requested: the copy stays in use by the finished pod until the
        // Job is gone, and the next iteration waits for a stale copy to disappear.
        pit::cleanup(step.ctx, step.at.owner).await?;
        Ok(())
    }
}
