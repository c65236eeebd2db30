//! The pre-shared key of either side: the user's Secret, validated, or a generated one
//! (`volsync-rsync-tls-<name>` for a destination, `ferrosync-source-key-<name>` for a
//! source), whose key the PSK policy supplies (by default a freshly generated one) when
//! the Secret does not exist yet.
//!
//! An object that names a pair (`ferrosync.io/psk-pair`) reaches the policy only once its
//! Namespace authorises the pair ([`crate::policy::pairs`]): the plugin's vault
//! credential then reaches only that pair's paths.
//!
//! Key material is only ever handled as a `Psk`; logs, Events and conditions name Secrets
//! and decisions only.

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use kube::{Api, Resource};

use super::{apply::create_if_absent, context::Context, decisions, error::Error};
use crate::{
    api::{PolicyDecision, psk::Psk},
    policy::{
        self, PskAnswer,
        pairs::{self, AuthorisedPair},
    },
    resources::{Owner, Side, names, secret},
};

/// The Secret a mover mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Its name.
    pub secret: String,
    /// Whether ferrosync made it (and so publishes it in status).
    pub generated: bool,
}

/// Resolves the key Secret: the user's `keySecret`, which must exist and hold a valid
/// `psk.txt`, or `volsync-rsync-tls-<name>`, created from the PSK policy's answer if
/// absent. "Not available yet" (a source whose key the destination has not stored) is a
/// transient error with the plugin's reason.
pub async fn resolve<K: Resource>(
    ctx: &Context,
    obj: &K,
    object: &ObjectReference,
    owner: &Owner,
    side: Side,
    user_secret: Option<&str>,
    policy_status: &mut Option<Vec<PolicyDecision>>,
) -> Result<Key, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if let Some(name) = user_secret {
        let found = api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::Invalid(format!("keySecret {name:?}: Secret not found")))?;
        secret::psk_of(&found).map_err(|e| Error::Invalid(format!("keySecret: {e}")))?;
        return Ok(Key {
            secret: name.to_string(),
            generated: false,
        });
    }
    let mut name = names::key_secret(side, &owner.name);
    let mut found = api.get_opt(&name).await?;
    if found.is_none() && side == Side::Source {
        // Before sources had a name of their own they used the destination's: keep a
        // Secret of that name this very source made, so upgrading changes no key.
        let legacy = names::legacy_key_secret(&owner.name);
        if let Some(old) = api.get_opt(&legacy).await?.filter(|s| owned_by(s, owner)) {
            name = legacy;
            found = Some(old);
        }
    }
    let stored = match found {
        Some(existing) => existing,
        None => {
            let pair = authorised_pair(ctx, obj, &owner.namespace).await?;
            let decided =
                decisions::psk(ctx, obj, policy_side(side), &name, pair.as_ref()).await?;
            let (value, psk) = match decided.decision.answer {
                PskAnswer::UseKey(psk) => ("use-key", psk),
                PskAnswer::GenerateLocally => ("generate-locally", Psk::generate()),
                PskAnswer::NotAvailableYet => {
                    decisions::record(
                        ctx,
                        object,
                        policy_status,
                        &decided.provenance,
                        "not-available-yet".into(),
                        &decided.decision.reason,
                    )
                    .await;
                    return Err(Error::NotReady(format!(
                        "waiting for the pre-shared key: {}",
                        decided.decision.reason
                    )));
                }
            };
            decisions::record(
                ctx,
                object,
                policy_status,
                &decided.provenance,
                value.into(),
                &decided.decision.reason,
            )
            .await;
            create_if_absent(&api, &secret::key_secret(owner, side, &psk))
                .await?
                .0
        }
    };
    secret::psk_of(&stored).map_err(|e| {
        Error::Invalid(format!(
            "generated key: {e}; delete the Secret to regenerate it"
        ))
    })?;
    Ok(Key {
        secret: name,
        generated: true,
    })
}

/// Whether `secret` has an owner reference to `owner`.
fn owned_by(secret: &Secret, owner: &Owner) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner.uid)
}

/// The pair `obj` names, once its Namespace authorises it. Asked only when a PSK plugin
/// is configured (without one the annotation means nothing); an unauthorised pair is an
/// error that names the Namespace annotation a cluster admin sets.
async fn authorised_pair<K: Resource>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
) -> Result<Option<AuthorisedPair>, Error> {
    let annotations = obj.meta().annotations.clone().unwrap_or_default();
    let psk_plugin = ctx
        .policy
        .plugins()
        .iter()
        .any(|p| p.point == policy::DecisionPoint::Psk);
    if !psk_plugin || !annotations.contains_key(pairs::PAIR_ANNOTATION) {
        return Ok(None);
    }
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(namespace)
        .await?;
    let ns_annotations = ns.metadata.annotations.unwrap_or_default();
    pairs::authorise(namespace, &annotations, &ns_annotations)
        .map_err(|e| Error::Invalid(e.to_string()))
}

fn policy_side(side: Side) -> policy::Side {
    match side {
        Side::Source => policy::Side::Source,
        Side::Destination => policy::Side::Destination,
    }
}
