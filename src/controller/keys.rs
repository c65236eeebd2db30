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

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ObjectReference, Secret},
    jiff::Timestamp,
};
use kube::{Api, Resource};

use super::{
    apply::{apply, create_if_absent},
    context::Context,
    decisions,
    error::Error,
    key_rotation::{self, Step},
};
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

/// Whose key: the object, on which side, in which context.
pub struct KeyOf<'a, K> {
    /// The reconcile context.
    pub ctx: &'a Context,
    /// The object.
    pub obj: &'a K,
    /// The object, for Events.
    pub object: &'a ObjectReference,
    /// Its identity.
    pub owner: &'a Owner,
    /// Its side.
    pub side: Side,
}

/// Resolves the key Secret: the user's `keySecret`, which must exist and hold a valid
/// `psk.txt`, or `volsync-rsync-tls-<name>`, created from the PSK policy's answer if
/// absent. "Not available yet" (a source whose key the destination has not stored) is a
/// transient error with the plugin's reason.
pub async fn resolve<K: Resource>(
    of: &KeyOf<'_, K>,
    user_secret: Option<&str>,
    policy_status: &mut Option<Vec<PolicyDecision>>,
) -> Result<Key, Error> {
    let (ctx, owner, side) = (of.ctx, of.owner, of.side);
    let wanted = user_secret.map_or_else(|| names::key_secret(side, &owner.name), str::to_string);
    let cache_key = format!("{}/{wanted}", owner.namespace);
    if let Some(known) = known_key(ctx, &owner.namespace, &cache_key, &wanted) {
        return Ok(known);
    }
    let (key, version) = read_key(of, user_secret, policy_status).await?;
    if let Some(version) = version {
        ctx.known_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, (version, key.clone()));
    }
    Ok(key)
}

/// The key found when its Secret was last read, if the Secret has not changed since (its
/// resourceVersion in the metadata cache is the one read).
fn known_key(ctx: &Context, namespace: &str, cache_key: &str, secret: &str) -> Option<Key> {
    let version = ctx.caches.secret_version(namespace, secret)?;
    let known = ctx.known_keys.lock().unwrap_or_else(|e| e.into_inner());
    known
        .get(cache_key)
        .filter(|(read, _)| *read == version)
        .map(|(_, key)| key.clone())
}

/// Reads (or makes) the key Secret; returns it with the resourceVersion read.
async fn read_key<K: Resource>(
    of: &KeyOf<'_, K>,
    user_secret: Option<&str>,
    policy_status: &mut Option<Vec<PolicyDecision>>,
) -> Result<(Key, Option<String>), Error> {
    let (ctx, obj, object, owner, side) = (of.ctx, of.obj, of.object, of.owner, of.side);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if let Some(name) = user_secret {
        let found = api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::Invalid(format!("keySecret {name:?}: Secret not found")))?;
        secret::psk_of(&found).map_err(|e| Error::Invalid(format!("keySecret: {e}")))?;
        let key = Key {
            secret: name.to_string(),
            generated: false,
        };
        return Ok((key, found.metadata.resource_version));
    }
    let mut name = names::key_secret(side, &owner.name);
    // A Secret the metadata cache says is absent is not asked for (a 404 per new object),
    // unless this controller read or made it before: the cache may not show it yet.
    let ns = &owner.namespace;
    let absent = |name: &str| {
        ctx.caches.secret_absent(ns, name)
            && !ctx
                .known_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&format!("{ns}/{name}"))
    };
    let mut found = match absent(&name) {
        true => None,
        false => api.get_opt(&name).await?,
    };
    if found.is_none() && side == Side::Source {
        // Before sources had a name of their own they used the destination's: keep a
        // Secret of that name this very source made, so upgrading changes no key.
        let legacy = names::legacy_key_secret(&owner.name);
        let old = match absent(&legacy) {
            true => None,
            false => api.get_opt(&legacy).await?,
        };
        if let Some(old) = old.filter(|s| owned_by(s, owner)) {
            name = legacy;
            found = Some(old);
        }
    }
    let stored = match found {
        Some(existing) => existing,
        None => {
            let pair = authorised_pair(ctx, obj, &owner.namespace).await?;
            let decided =
                decisions::psk(ctx, obj, policy_side(side), &name, false, pair.as_ref()).await?;
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
    // A legacy name is not what the cache is looked up by: read it each time.
    let version = (name == names::key_secret(side, &owner.name))
        .then_some(stored.metadata.resource_version)
        .flatten();
    let key = Key {
        secret: name,
        generated: true,
    };
    Ok((key, version))
}

/// At the start of an iteration (`iteration`, before its mover Job exists), checks a
/// generated key of an authorised pair against the pair's key now, once per iteration,
/// and rotates the Secret as [`key_rotation::next`] says: a source takes a new key, a
/// destination accepts the new and the previous one until a sync completed after the
/// change. Keys of no pair, and users' Secrets, are left alone.
#[allow(clippy::too_many_arguments)]
pub async fn refresh<K: Resource>(
    ctx: &Context,
    obj: &K,
    object: &ObjectReference,
    owner: &Owner,
    side: Side,
    key: &Key,
    iteration: &str,
    last_sync: Option<Timestamp>,
) -> Result<(), Error> {
    if !key.generated || iteration.is_empty() || !names_a_pair(ctx, obj) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let Some(stored) = api.get_opt(&key.secret).await? else {
        return Ok(());
    };
    let annotations = stored.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(secret::KEY_CHECKED_FOR).map(String::as_str) == Some(iteration) {
        return Ok(());
    }
    let Some(pair) = authorised_pair(ctx, obj, &owner.namespace).await? else {
        return Ok(());
    };
    let held = secret::ring_of(&stored).map_err(|e| {
        Error::Invalid(format!(
            "generated key: {e}; delete the Secret to regenerate it"
        ))
    })?;
    // A vault that cannot answer must not stop a pair whose key works: keep it, say so,
    // and look again next iteration (the mark below keeps this pass's passes from asking
    // again while the mover runs).
    let supplied =
        match decisions::psk(ctx, obj, policy_side(side), &key.secret, true, Some(&pair)).await {
            Ok(decided) => match decided.decision.answer {
                PskAnswer::UseKey(k) => Some(k),
                PskAnswer::GenerateLocally | PskAnswer::NotAvailableYet => None,
            },
            Err(e) => {
                ctx.event(
                    object,
                    true,
                    "KeyCheckFailed",
                    format!(
                        "pair {}: the key could not be checked ({e}); {} stays in use",
                        pair.as_str(),
                        key.secret
                    ),
                )
                .await;
                None
            }
        };
    let since = annotations
        .get(secret::PREVIOUS_KEY_SINCE)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let now = Timestamp::now();
    let step = supplied.map_or(Step::Keep, |supplied| {
        key_rotation::next(side, &held, since, &supplied, last_sync, now)
    });
    let (ring, previous_since) = match step {
        Step::Keep => (held.clone(), since),
        Step::Write {
            ring,
            previous_since,
        } => (ring, previous_since),
    };
    let mut marks = BTreeMap::from([(secret::KEY_CHECKED_FOR.to_owned(), iteration.to_owned())]);
    if let Some(t) = previous_since {
        marks.insert(secret::PREVIOUS_KEY_SINCE.to_owned(), t.to_string());
    }
    apply(
        &api,
        &secret::key_ring_secret(owner, &key.secret, &ring, marks),
    )
    .await?;
    let note = match (
        ring.current() != held.current(),
        ring.previous(),
        held.previous(),
    ) {
        (true, Some(_), _) => Some(format!(
            "pair {}: new key in {}; the previous key stays accepted until a sync completes",
            pair.as_str(),
            key.secret
        )),
        (true, None, _) => Some(format!(
            "pair {}: {} now holds the pair's new key",
            pair.as_str(),
            key.secret
        )),
        (false, None, Some(_)) => Some(format!(
            "pair {}: the previous key is no longer accepted ({} holds only the new one)",
            pair.as_str(),
            key.secret
        )),
        _ => None,
    };
    if let Some(note) = note {
        ctx.event(object, false, "KeyRotated", note).await;
    }
    Ok(())
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
    if !names_a_pair(ctx, obj) {
        return Ok(None);
    }
    let annotations = obj.meta().annotations.clone().unwrap_or_default();
    let ns_annotations = ctx.namespace_annotations(namespace)?;
    pairs::authorise(namespace, &annotations, &ns_annotations)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Whether `obj` names a pair that a configured PSK plugin would act on. No API call.
fn names_a_pair<K: Resource>(ctx: &Context, obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(pairs::PAIR_ANNOTATION))
        && ctx
            .policy
            .plugins()
            .iter()
            .any(|p| p.point == policy::DecisionPoint::Psk)
}

fn policy_side(side: Side) -> policy::Side {
    match side {
        Side::Source => policy::Side::Source,
        Side::Destination => policy::Side::Destination,
    }
}
