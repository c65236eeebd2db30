//! The credentials the host injects into granted HTTP requests: where their values come
//! from (a Kubernetes Secret for the controller, a fixed map for tests and the CLI), and
//! where the operator lets them go (`[policy.credentials]`).
//!
//! Values are handed only to the HTTP gate. They must never be logged, put in an error,
//! or passed to a plugin.

use std::collections::HashMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use super::{config::CredentialRef, http::origin_of, pairs::AuthorisedPair};

/// The placeholder for the asking object's authorised pair in a credential target.
pub const PAIR_PLACEHOLDER: &str = "{pair}";
/// The placeholder for the asking object's own membership of its pair (the host's
/// `<side>-<uid>`, [`super::release::member_id`]): a tenant reaches only its own entry.
pub const MEMBER_PLACEHOLDER: &str = "{member}";

/// `[policy.credentials]`: where the host may send an injected credential. The
/// controller's configuration is the platform team's; a bundle cannot widen this.
///
/// A credential accompanies a request only when the request's origin and path equal one
/// of `targets` (the query is not compared), with `{pair}` standing for the pair the
/// asking object's namespace is authorised to use ([`super::pairs`]); and only over
/// HTTPS, unless the request's origin is listed in `allow_plain_http`. Any other request
/// of a credentialed plugin is refused before anything is contacted. Empty (the default):
/// no credential goes anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialPolicy {
    /// URLs, for example `https://vault:8200/v1/secret/data/ferrosync/psk/{pair}`.
    pub targets: Vec<String>,
    /// Origins (`http://host:port`) that may receive a credential over plain HTTP; only
    /// for a vault on loopback or behind a node-local proxy.
    pub allow_plain_http: Vec<String>,
    /// `policy test` replays recorded exchanges with a placeholder token: any target.
    /// Never set from configuration.
    #[serde(skip)]
    pub(crate) replay: bool,
}

/// Why `[policy.credentials]` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialPolicyError {
    #[error("[policy.credentials] targets entry {entry:?}: {message}")]
    Target { entry: String, message: String },
    #[error("[policy.credentials] allow_plain_http entry {entry:?}: {message}")]
    PlainHttp { entry: String, message: String },
}

/// Where one decision's credential may go: exact `origin + path` URLs, and the origins
/// allowed over plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialScope {
    pub targets: Vec<String>,
    pub plain_http: Vec<String>,
    pub anywhere: bool,
}

/// `origin + path` of a URL, the form targets are compared in. Paths with dot segments,
/// empty segments or percent-escapes are refused: a server could read them as another
/// path than the one compared.
pub fn target_of(url: &str) -> Result<String, String> {
    let origin = origin_of(url)?;
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let path = uri.path();
    if path.contains('%')
        || path.contains("//")
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!(
            "path {path:?} has dot segments, empty segments or escapes"
        ));
    }
    Ok(format!("{origin}{path}"))
}

impl CredentialPolicy {
    /// A policy with these targets and plain-HTTP origins.
    pub fn new(targets: Vec<String>, allow_plain_http: Vec<String>) -> Self {
        CredentialPolicy {
            targets,
            allow_plain_http,
            replay: false,
        }
    }

    /// Checks every entry; the engine refuses to load with an invalid policy.
    pub fn validate(&self) -> Result<(), CredentialPolicyError> {
        for entry in &self.targets {
            let probe = entry
                .replace(PAIR_PLACEHOLDER, "pair")
                .replace(MEMBER_PLACEHOLDER, "member");
            let err = |message: String| CredentialPolicyError::Target {
                entry: entry.clone(),
                message,
            };
            target_of(&probe).map_err(err)?;
            if probe.contains('?') || probe.contains('#') {
                return Err(err("a target has no query or fragment".into()));
            }
            if probe.contains(['{', '}']) {
                return Err(err(format!(
                    "only {PAIR_PLACEHOLDER} and {MEMBER_PLACEHOLDER} may be substituted"
                )));
            }
            if entry.contains(MEMBER_PLACEHOLDER) && !entry.contains(PAIR_PLACEHOLDER) {
                return Err(err(format!(
                    "a {MEMBER_PLACEHOLDER} target must be under its {PAIR_PLACEHOLDER}"
                )));
            }
        }
        for entry in &self.allow_plain_http {
            let err = |message: String| CredentialPolicyError::PlainHttp {
                entry: entry.clone(),
                message,
            };
            let origin = origin_of(entry).map_err(err)?;
            if !origin.starts_with("http://") {
                return Err(err("not an http:// origin".into()));
            }
        }
        Ok(())
    }

    /// The scope of one decision: targets without `{pair}`, and those with it when the
    /// asking object has an authorised pair.
    pub fn scope(&self, pair: Option<&AuthorisedPair>) -> CredentialScope {
        self.scope_for(pair, None)
    }

    /// [`CredentialPolicy::scope`], with `{member}` targets for the asking object's own
    /// membership when it has one (a single valid path segment, or none).
    pub fn scope_for(
        &self,
        pair: Option<&AuthorisedPair>,
        member: Option<&str>,
    ) -> CredentialScope {
        let member = member.filter(|m| super::pairs::valid_name(m));
        let targets = self
            .targets
            .iter()
            .filter_map(|t| {
                let t = match (t.contains(PAIR_PLACEHOLDER), pair) {
                    (false, _) => t.clone(),
                    (true, Some(p)) => t.replace(PAIR_PLACEHOLDER, p.as_str()),
                    (true, None) => return None,
                };
                match (t.contains(MEMBER_PLACEHOLDER), member) {
                    (false, _) => Some(t),
                    (true, Some(m)) => Some(t.replace(MEMBER_PLACEHOLDER, m)),
                    (true, None) => None,
                }
            })
            .filter_map(|t| target_of(&t).ok())
            .collect();
        CredentialScope {
            targets,
            plain_http: self
                .allow_plain_http
                .iter()
                .filter_map(|o| origin_of(o).ok())
                .collect(),
            anywhere: self.replay,
        }
    }

    /// Whether any target names a member's own path (`{member}`).
    pub fn has_member_targets(&self) -> bool {
        self.targets.iter().any(|t| t.contains(MEMBER_PLACEHOLDER))
    }

    /// For `policy test`: replayed exchanges carry a placeholder token anywhere.
    pub(crate) fn replay() -> Self {
        CredentialPolicy {
            replay: true,
            ..CredentialPolicy::default()
        }
    }
}

/// Why a credential could not be resolved. Messages name the Secret, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential source is configured for Secret {0}")]
    NoSource(String),
    #[error("Secret {0} not found")]
    NotFound(String),
    #[error("Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    #[error("Secret {secret} key {key:?} is not valid UTF-8 header text")]
    NotText { secret: String, key: String },
    #[error("reading Secret {secret}: {message}")]
    Api { secret: String, message: String },
}

/// Resolves a [`CredentialRef`] to its value.
pub trait CredentialSource: Send + Sync {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>>;
}

/// No credentials at all: any reference is an error.
#[derive(Debug, Default)]
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        Box::pin(async move { Err(CredentialError::NoSource(r.secret.clone())) })
    }
}

/// Fixed values by `(secret, key)`: for tests and `policy eval --credential`.
#[derive(Default)]
pub struct StaticCredentials(HashMap<(String, String), String>);

impl StaticCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the value of `key` in Secret `secret`.
    pub fn with(mut self, secret: &str, key: &str, value: &str) -> Self {
        self.0.insert((secret.into(), key.into()), value.into());
        self
    }
}

impl CredentialSource for StaticCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        let found = self.0.get(&(r.secret.clone(), r.key.clone())).cloned();
        Box::pin(async move {
            found.ok_or_else(|| CredentialError::MissingKey {
                secret: r.secret.clone(),
                key: r.key.clone(),
            })
        })
    }
}

/// Reads Secrets through the Kubernetes API, in the reference's namespace or the
/// controller's own.
pub struct KubeCredentials {
    client: kube::Client,
    default_namespace: String,
}

impl KubeCredentials {
    pub fn new(client: kube::Client, default_namespace: impl Into<String>) -> Self {
        KubeCredentials {
            client,
            default_namespace: default_namespace.into(),
        }
    }
}

impl CredentialSource for KubeCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        Box::pin(async move {
            let ns = r.namespace.as_deref().unwrap_or(&self.default_namespace);
            let name = format!("{ns}/{}", r.secret);
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), ns);
            let secret = api
                .get_opt(&r.secret)
                .await
                .map_err(|e| CredentialError::Api {
                    secret: name.clone(),
                    message: e.to_string(),
                })?
                .ok_or_else(|| CredentialError::NotFound(name.clone()))?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| b.0.clone())
                .ok_or_else(|| CredentialError::MissingKey {
                    secret: name.clone(),
                    key: r.key.clone(),
                })?;
            let value = String::from_utf8(bytes)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
                .ok_or_else(|| CredentialError::NotText {
                    secret: name,
                    key: r.key.clone(),
                })?;
            Ok(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::pairs::{PAIR_ANNOTATION, PREFIXES_ANNOTATION, authorise};

    fn pair(name: &str) -> AuthorisedPair {
        let obj = BTreeMap::from([(PAIR_ANNOTATION.to_owned(), name.to_owned())]);
        let ns = BTreeMap::from([(PREFIXES_ANNOTATION.to_owned(), name.to_owned())]);
        authorise("ns", &obj, &ns).unwrap().unwrap()
    }

    fn policy() -> CredentialPolicy {
        CredentialPolicy {
            targets: vec![
                "https://Vault:8200/v1/secret/data/ferrosync/psk/{pair}".into(),
                "https://vault:8200/v1/secret/metadata/ferrosync/psk/{pair}".into(),
                "https://vault:8200/v1/sys/health".into(),
            ],
            allow_plain_http: vec!["http://127.0.0.1:8200".into()],
            replay: false,
        }
    }

    #[test]
    fn the_scope_names_only_the_authorised_pairs_paths() {
        let scope = policy().scope(Some(&pair("team-a-db")));
        assert_eq!(
            scope.targets,
            [
                "https://vault:8200/v1/secret/data/ferrosync/psk/team-a-db",
                "https://vault:8200/v1/secret/metadata/ferrosync/psk/team-a-db",
                "https://vault:8200/v1/sys/health",
            ]
        );
        assert_eq!(scope.plain_http, ["http://127.0.0.1:8200"]);
        assert!(!scope.anywhere);
        let none = policy().scope(None);
        assert_eq!(none.targets, ["https://vault:8200/v1/sys/health"]);
    }

    #[test]
    fn a_member_target_names_only_the_asking_sides_own_entry() {
        let policy = CredentialPolicy::new(
            vec![
                "https://vault:8200/v1/secret/data/ferrosync/psk/{pair}".into(),
                "https://vault:8200/v1/secret/metadata/ferrosync/psk/{pair}/members/{member}"
                    .into(),
            ],
            vec![],
        );
        policy.validate().expect("valid");
        assert!(policy.has_member_targets());
        let p = pair("team-a-db");
        assert_eq!(
            policy.scope_for(Some(&p), Some("source-1234")).targets,
            [
                "https://vault:8200/v1/secret/data/ferrosync/psk/team-a-db",
                "https://vault:8200/v1/secret/metadata/ferrosync/psk/team-a-db/members/source-1234",
            ]
        );
        // No member, or one that could leave its segment: no member target at all.
        for member in [None, Some("../x"), Some("a/b"), Some("")] {
            assert_eq!(
                policy.scope_for(Some(&p), member).targets,
                ["https://vault:8200/v1/secret/data/ferrosync/psk/team-a-db"],
                "{member:?}"
            );
        }
        assert!(!CredentialPolicy::default().has_member_targets());
        let loose = CredentialPolicy::new(vec!["https://vault/v1/members/{member}".into()], vec![]);
        let err = loose.validate().expect_err("a member outside its pair");
        assert!(err.to_string().contains("under its {pair}"), "{err}");
    }

    #[test]
    fn invalid_entries_are_named() {
        policy().validate().expect("valid");
        for (bad, field) in [
            (
                CredentialPolicy {
                    targets: vec!["https://vault/v1/{ns}/{pair}".into()],
                    ..Default::default()
                },
                "targets",
            ),
            (
                CredentialPolicy {
                    targets: vec!["https://vault/v1/a/../sys/{pair}".into()],
                    ..Default::default()
                },
                "targets",
            ),
            (
                CredentialPolicy {
                    targets: vec!["https://vault/v1/{pair}?x=1".into()],
                    ..Default::default()
                },
                "targets",
            ),
            (
                CredentialPolicy {
                    allow_plain_http: vec!["https://vault:8200".into()],
                    ..Default::default()
                },
                "allow_plain_http",
            ),
        ] {
            let err = bad.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn target_paths_are_compared_literally() {
        assert_eq!(
            target_of("https://V:1/a/b?version=2").unwrap(),
            "https://v:1/a/b"
        );
        for url in ["https://v/a/../b", "https://v/a/%2e%2e/b", "https://v/a//b"] {
            assert!(target_of(url).is_err(), "{url}");
        }
    }
}
