//! The pre-shared key of either side: the user's Secret, validated, or a generated one.
//!
//! Key material is only ever handled as a `Psk`; logs and conditions name Secrets only.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{apply::create_if_absent, context::Context, error::Error};
use crate::{
    api::psk::Psk,
    resources::{Owner, names, secret},
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
/// `psk.txt`, or `volsync-rsync-tls-<name>`, created with a fresh key if absent.
pub async fn resolve(
    ctx: &Context,
    owner: &Owner,
    user_secret: Option<&str>,
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
            create_if_absent(&api, &secret::key_secret(owner, &Psk::generate()))
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
