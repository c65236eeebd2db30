//! One reconcile pass, the same for both kinds: read the object fresh, run the kind's
//! step, turn its result into the Synchronizing condition, write the status, requeue.

use std::{fmt::Debug, sync::Arc};

use k8s_openapi::{NamespaceResourceScope, jiff::Timestamp};
use kube::{Api, Resource, runtime::controller::Action};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    apply::apply_status,
    context::Context,
    error::Error,
    pair_release,
    progress::{Progress, settle},
    servable::{self, NotServed, Refusal, Verdict},
};
use crate::{
    api::{
        ReplicationDestination, ReplicationDestinationStatus, ReplicationSource,
        ReplicationSourceStatus, SyncStatus,
    },
    resources::Owner,
};

/// What the shared pass needs of a reconciled kind.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind's status.
    type Status: Default + Clone + Serialize + Send;
    /// The kind's name, for metrics.
    const KIND: &'static str;
    /// The stored status.
    fn stored_status(&self) -> Option<&Self::Status>;
    /// The fields both kinds share.
    fn sync(status: &mut Self::Status) -> &mut SyncStatus;
    /// Whether ferrosync serves the object at all ([`servable`]).
    fn verdict(&self) -> Verdict;
}

impl Replicated for ReplicationSource {
    type Status = ReplicationSourceStatus;
    const KIND: &'static str = "ReplicationSource";
    fn stored_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn sync(status: &mut Self::Status) -> &mut SyncStatus {
        &mut status.sync
    }
    fn verdict(&self) -> Verdict {
        servable::source(&self.spec)
    }
}

impl Replicated for ReplicationDestination {
    type Status = ReplicationDestinationStatus;
    const KIND: &'static str = "ReplicationDestination";
    fn stored_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn sync(status: &mut Self::Status) -> &mut SyncStatus {
        &mut status.sync
    }
    fn verdict(&self) -> Verdict {
        servable::destination(&self.spec)
    }
}

/// Runs one pass of `step` over `obj`.
pub async fn run<K: Replicated>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    step: impl AsyncFnOnce(&K, &Context, &Owner, &mut K::Status, Timestamp) -> Result<Progress, Error>,
) -> Result<Action, Error> {
    let owner = Owner::of(obj.as_ref())
        .ok_or_else(|| Error::Invalid("object has no uid or namespace".into()))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    // The watch cache can lag behind our own status write (a Job deletion may trigger the
    // next pass first), and the status is applied whole: an old copy would rerun a finished
    // iteration or erase what the last pass recorded. Reconcile from the API server's copy.
    let Some(fresh) = api.get_opt(&owner.name).await? else {
        return Ok(Action::await_change());
    };
    let Some(owner) = Owner::of(&fresh) else {
        return Ok(Action::await_change());
    };
    let object = fresh.object_ref(&());
    let mut status = fresh.stored_status().cloned().unwrap_or_default();
    let now = Timestamp::now();
    if let Some(action) = pair_release::guard(&ctx, &fresh, &owner, &mut status, now).await? {
        return Ok(action);
    }
    let result = match fresh.verdict() {
        Verdict::Serve => step(&fresh, &ctx, &owner, &mut status, now).await,
        // Another controller's object: say so once, and write nothing, status included.
        Verdict::OtherMover(movers) => {
            if ctx.not_served.first_time(&owner.uid) {
                tracing::info!(
                    kind = K::KIND,
                    namespace = %owner.namespace,
                    name = %owner.name,
                    movers = %movers.join(","),
                    "not served: ferrosync serves only spec.rsyncTLS; leaving the object as it is"
                );
                ctx.event(&object, false, "MoverNotServed", NotServed::note(&movers))
                    .await;
            }
            return Ok(Action::await_change());
        }
        // Only the condition (and an Event) until the spec changes: no key, no Service,
        // no PVC, no Job.
        Verdict::CannotServe(Refusal::Invalid(why)) => Err(Error::Invalid(why)),
        Verdict::CannotServe(Refusal::Unsupported(why)) => Err(Error::Unsupported(why)),
    };
    ctx.metrics
        .observe_reconcile(K::KIND, result.as_ref().err().map(Error::reason));
    let generation = fresh.meta().generation;
    let requeue = settle(
        &ctx,
        &object,
        &mut K::sync(&mut status).conditions,
        result,
        generation,
        now,
    )
    .await?;
    // An unchanged status is not written again: an object stuck waiting is looked at
    // often, and each write would be an apiserver request, an etcd write and a watch
    // event for every watcher.
    let stored = fresh.stored_status().map(serde_json::to_value);
    if stored.and_then(Result::ok) != serde_json::to_value(&status).ok() {
        apply_status(&api, &owner.name, &status).await?;
    }
    Ok(Action::requeue(requeue))
}
