//! `replicate --psk-pair`: both sides take their key from the vault, through each
//! cluster's controller and its PSK bundle, so no Secret crosses clusters and the source
//! names none. The pair name is checked with the controller's own rules
//! ([`crate::policy::pairs`]): a valid name on the command line, and, where the user may
//! read the Namespaces, the admin's prefix grant before anything is created. Where they
//! may not, the controller's refusal (the object's condition) is what `replicate` reports.
//!
//! Reading what a side's status says about its key is pure and unit-tested; only
//! [`precheck`] and [`await_key`] talk to a cluster. Key material is never read here: the
//! Secrets are the controllers' business.

use std::{collections::BTreeMap, future::Future, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use super::{Error, Site, wait};
use crate::{
    api::SyncStatus,
    policy::pairs::{self, PAIR_ANNOTATION, PREFIXES_ANNOTATION},
};

/// The `psk` decision's `decidedBy` when no plugin decided (or a failing one fell back).
const BUILT_IN: &str = "built-in";

/// clap's parser of `--psk-pair`: the controller's own rule for a pair name.
pub fn argument(value: &str) -> Result<String, String> {
    if pairs::valid_name(value) {
        Ok(value.to_string())
    } else {
        Err(pairs::PairError::InvalidName(value.to_string()).to_string())
    }
}

/// Whether the Namespace `namespace`, with these annotations, may use `pair`: the
/// controller's check, on the annotation `replicate` will write. The error says what a
/// cluster admin sets.
pub fn authorised(
    namespace: &str,
    pair: &str,
    namespace_annotations: &BTreeMap<String, String>,
) -> Result<(), String> {
    let object = BTreeMap::from([(PAIR_ANNOTATION.to_string(), pair.to_string())]);
    pairs::authorise(namespace, &object, namespace_annotations)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What a cluster admin runs to grant `pair` to `site`'s namespace (the pair itself as
/// the prefix: the narrowest grant).
fn grant_hint(site: &Site, pair: &str) -> String {
    format!(
        "kubectl --context {} annotate namespace {} {PREFIXES_ANNOTATION}={pair}",
        site.context, site.namespace
    )
}

/// Checks `site`'s Namespace grant for `pair` (`applying`: before anything is created, and
/// the error says so). A user who may not read Namespaces (a tenant, usually) is told that
/// the controller checks instead.
pub async fn precheck(site: &Site, pair: &str, applying: bool) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(site.client.clone());
    let namespace = match api.get_opt(&site.namespace).await {
        Ok(Some(ns)) => ns,
        // The apply that follows says what is missing.
        Ok(None) => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            eprintln!(
                "cannot read Namespace {} (context {}) to check its pair prefixes; the controller checks them",
                site.namespace, site.context
            );
            return Ok(());
        }
        Err(e) => return Err(site.api(e)),
    };
    let annotations = namespace.metadata.annotations.unwrap_or_default();
    authorised(&site.namespace, pair, &annotations).map_err(|why| {
        Error::Conflict(format!(
            "{why} (the {} site, context {}).{} A cluster admin grants it with: {}",
            site.role,
            site.context,
            if applying {
                " Nothing was created."
            } else {
                ""
            },
            grant_hint(site, pair)
        ))
    })
}

/// What a side's status says about its key, for a side that names a vault pair.
#[derive(Debug, PartialEq)]
pub enum KeyState<T> {
    /// The controller made the side's key Secret (and the destination has its address).
    Ready(T),
    /// The Namespace does not grant the pair: the controller's condition message.
    NotAuthorised(String),
    /// The key was decided without a PSK plugin: the annotation means nothing there.
    NoVault { decided_by: String, reason: String },
    /// Any other error the controller reports on the object.
    Failing(String),
    /// Not yet; the controller's message, if it says one.
    Waiting(Option<String>),
}

/// Pure: the key's state from a side's `sync` status and what the caller reads as ready
/// (`ready` is `Some` once the status names the key Secret, and for a destination also
/// its address).
pub fn key_state<T>(sync: Option<&SyncStatus>, ready: Option<T>) -> KeyState<T> {
    let psk = sync
        .and_then(|s| s.policy.as_ref())
        .into_iter()
        .flatten()
        .find(|d| d.decision == "psk");
    if let Some(d) = psk.filter(|d| d.decided_by == BUILT_IN || d.fallback == Some(true)) {
        return KeyState::NoVault {
            decided_by: d.decided_by.clone(),
            reason: d.reason.clone(),
        };
    }
    if let Some(ready) = ready {
        return KeyState::Ready(ready);
    }
    let condition = sync
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Synchronizing");
    match condition {
        Some(c) if c.reason == "Error" && c.message.contains(PREFIXES_ANNOTATION) => {
            KeyState::NotAuthorised(c.message.clone())
        }
        Some(c) if c.reason == "Error" => KeyState::Failing(c.message.clone()),
        Some(c) => KeyState::Waiting(Some(c.message.clone()).filter(|m| !m.is_empty())),
        None => KeyState::Waiting(None),
    }
}

/// Polls `state` (the key of `site`'s `kind` named in `pair`) until it is ready, at most
/// `timeout`. A refusal or a key decided without the vault ends the wait at once, with
/// what to fix; a timeout says what the controller last said.
pub async fn await_key<T, F, Fut>(
    site: &Site,
    kind: &str,
    name: &str,
    pair: &str,
    timeout: Duration,
    mut state: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<KeyState<T>, Error>>,
{
    let what = format!("the {}'s key from the vault (pair {pair})", site.role);
    let object = site.describe(kind, name);
    // What the controller last said while it was not ready, for the timeout's message.
    let last = Mutex::new(None::<String>);
    let found = wait::within(&what, timeout, || {
        let state = state();
        let (object, last) = (&object, &last);
        async move {
            match state.await? {
                KeyState::Ready(value) => Ok(Some(value)),
                KeyState::NotAuthorised(message) => Err(Error::Conflict(format!(
                    "{object}: the controller refused the pair: {message}. A cluster admin grants it with: {}; then run replicate again",
                    grant_hint(site, pair)
                ))),
                KeyState::NoVault { decided_by, reason } => Err(Error::NotReady(format!(
                    "{object}: its key was decided by {decided_by} ({reason}), not by a vault plugin, \
                     so {PAIR_ANNOTATION} means nothing in that cluster and the two sides would not share a key. \
                     Configure the vault bundle ([policy.psk] and [policy.credentials]) in the controller of context {}, \
                     or replicate without --psk-pair",
                    site.context
                ))),
                KeyState::Failing(message) => Err(Error::NotReady(format!(
                    "{object}: the controller reports: {message}; fix that and run replicate again"
                ))),
                KeyState::Waiting(message) => {
                    if message.is_some() {
                        *last.lock().unwrap_or_else(|e| e.into_inner()) = message;
                    }
                    Ok(None)
                }
            }
        }
    })
    .await?;
    found.ok_or_else(|| {
        let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
        let said = last.map_or(String::new(), |m| {
            format!("; the controller last said: {m}")
        });
        Error::NotReady(format!(
            "timed out after {}s waiting for {what} on {object}{said}. \
             Is the vault bundle configured in that cluster's controller?",
            timeout.as_secs()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyDecision;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(reason: &str, message: &str, psk: Option<(&str, Option<bool>)>) -> SyncStatus {
        SyncStatus {
            conditions: Some(vec![Condition {
                type_: "Synchronizing".into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }]),
            policy: psk.map(|(by, fallback)| {
                vec![PolicyDecision {
                    decision: "psk".into(),
                    value: "generate-locally".into(),
                    decided_by: by.into(),
                    reason: "built-in: generate the key locally".into(),
                    fallback,
                }]
            }),
            ..SyncStatus::default()
        }
    }

    #[test]
    fn a_pair_name_follows_the_controllers_rule() {
        assert_eq!(argument("team-a-db"), Ok("team-a-db".into()));
        for bad in ["", "../x", "a/b", ".hidden", &"a".repeat(64)] {
            let err = argument(bad).expect_err(bad);
            assert!(err.contains("is not a valid pair name"), "{err}");
        }
    }

    #[test]
    fn the_namespace_grant_is_the_controllers() {
        let granted = BTreeMap::from([(PREFIXES_ANNOTATION.to_string(), "geo-, x".to_string())]);
        assert_eq!(authorised("ns", "geo-db", &granted), Ok(()));
        let err = authorised("ns", "other-db", &granted).expect_err("not granted");
        assert!(
            err.contains("geo-, x") && err.contains(PREFIXES_ANNOTATION),
            "{err}"
        );
        let err = authorised("ns", "geo-db", &BTreeMap::new()).expect_err("no grant");
        assert!(err.contains("has no pair prefixes"), "{err}");
    }

    #[test]
    fn a_ready_key_is_ready_unless_no_vault_decided_it() {
        let waiting = status("Waiting", "waiting for the pre-shared key: not yet", None);
        assert_eq!(
            key_state(Some(&waiting), Some("k")),
            KeyState::Ready("k"),
            "the status names the key"
        );
        assert_eq!(
            key_state::<()>(Some(&waiting), None),
            KeyState::Waiting(Some("waiting for the pre-shared key: not yet".into()))
        );
        assert_eq!(key_state::<()>(None, None), KeyState::Waiting(None));
        for psk in [("built-in", None), ("psk-from-vault", Some(true))] {
            let local = status("Waiting", "", Some(psk));
            assert!(
                matches!(key_state(Some(&local), Some("k")), KeyState::NoVault { .. }),
                "{psk:?}"
            );
        }
        let vault = status("Waiting", "", Some(("psk-from-vault", None)));
        assert_eq!(key_state(Some(&vault), Some("k")), KeyState::Ready("k"));
    }

    #[test]
    fn refusals_are_told_apart_from_other_errors() {
        let refused = pairs::authorise(
            "ns",
            &BTreeMap::from([(PAIR_ANNOTATION.to_string(), "p".to_string())]),
            &BTreeMap::new(),
        )
        .expect_err("no grant")
        .to_string();
        assert_eq!(
            key_state::<()>(Some(&status("Error", &refused, None)), None),
            KeyState::NotAuthorised(refused)
        );
        assert_eq!(
            key_state::<()>(Some(&status("Error", "vault: HTTP 403", None)), None),
            KeyState::Failing("vault: HTTP 403".into())
        );
    }
}
