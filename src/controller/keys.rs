//! The pre-shared key of either side: the user's Secret, validated, or
//! `volsync-rsync-tls-<name>`, whose key the PSK policy supplies (by default a freshly
//! generated one) when the Secret does not exist yet.
//!
//! Key material is only ever handled as a `Psk`; logs, Events and conditions name Secrets
//! and decisions only.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{Api, Resource};

use super::{apply::create_if_absent, context::Context, decisions, error::Error};
use crate::{
    api::{PolicyDecision, psk::Psk},
    policy::{self, PskAnswer},
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
    let name = names::key_secret(&owner.name);
    let stored = match api.get_opt(&name).await? {
        Some(existing) => existing,
        None => {
            let decided = decisions::psk(ctx, obj, policy_side(side), &name).await?;
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
            create_if_absent(&api, &secret::key_secret(owner, &psk))
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

fn policy_side(side: Side) -> policy::Side {
    match side {
        Side::Source => policy::Side::Source,
        Side::Destination => policy::Side::Destination,
    }
}
