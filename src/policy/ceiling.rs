//! The operator's cap on a plugin: the sha256 pins it accepts and the most it may be
//! granted (randomness, HTTP origins and bounds, limits), held in the controller's own
//! configuration, which the platform team owns.
//!
//! A bundle is a ConfigMap that whoever deploys bundles can edit, component, pin and grants
//! alike; so a bundle's own pin only proves the bundle is self-consistent, and its grants
//! are requests. What the operator pins and caps here is what is loaded: a bundle may ask
//! for less, never more. This module never loads anything; it compares.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    config::{CredentialRef, HttpGrant, Limits, PluginSpec},
    http::origin_of,
};

/// The digests the operator accepts for a decision point's component: one, or several
/// while a bundle rolls over (the old and the new), so a rollout has no window in which
/// the controller must serve neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pins(Vec<String>);

impl<'de> Deserialize<'de> for Pins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Pins(vec![s]),
            OneOrMany::Many(v) => Pins(v),
        })
    }
}

impl Pins {
    /// Pins from hex digests.
    pub fn new<S: Into<String>>(digests: impl IntoIterator<Item = S>) -> Self {
        Pins(digests.into_iter().map(Into::into).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The digests, normalised; an entry that is not 64 hex digits is an error.
    pub fn normalised(&self) -> Result<Vec<String>, String> {
        self.0
            .iter()
            .map(|p| {
                let n = p.trim().to_ascii_lowercase();
                if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(n)
                } else {
                    Err(format!("sha256 pin {p:?} is not 64 hex digits"))
                }
            })
            .collect()
    }
}

impl fmt::Display for Pins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// The most a bundle's plugin may be granted. The default grants nothing beyond pure
/// computation within the default limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ceiling {
    /// Whether the plugin may have secure randomness.
    pub random: bool,
    /// Outgoing HTTP the plugin may be granted; none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCeiling>,
    /// The largest fuel, time and memory per decision.
    pub limits: Limits,
}

/// The most HTTP a bundle may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCeiling {
    /// Origins (`scheme://host[:port]`) a bundle may list; it may list fewer.
    pub allow: Vec<String>,
    /// The longest time limit of one request.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest response body, in KiB.
    #[serde(default = "default_max_response_kib")]
    pub max_response_kib: u32,
    /// The most requests in one decision.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_max_response_kib() -> u32 {
    1024
}
fn default_max_requests() -> u32 {
    8
}

impl Ceiling {
    /// The ceiling that admits exactly what `spec` asks for: for tools that run a bundle
    /// as written (`policy test`, `policy eval --bundle`) and for tests.
    pub fn admitting(spec: &PluginSpec) -> Self {
        Ceiling {
            random: spec.grants.random,
            http: spec.grants.http.as_ref().map(|h| HttpCeiling {
                allow: h.allow.clone(),
                timeout: h.timeout,
                max_response_kib: h.max_response_kib,
                max_requests: h.max_requests,
            }),
            limits: spec.limits.clone(),
        }
    }

    /// Everything `spec` asks for beyond this ceiling, one phrase each; empty when it
    /// fits. `operator_credential` is the credential the operator's configuration names
    /// for the point: a bundle may name that one or none, never another Secret.
    pub fn excess(
        &self,
        spec: &PluginSpec,
        operator_credential: Option<&CredentialRef>,
    ) -> Vec<String> {
        let mut over = Vec::new();
        let (l, c) = (&spec.limits, &self.limits);
        if l.fuel > c.fuel {
            over.push(format!("limits.fuel {} (ceiling {})", l.fuel, c.fuel));
        }
        if l.timeout > c.timeout {
            over.push(format!(
                "limits.timeout {} (ceiling {})",
                humantime::format_duration(l.timeout),
                humantime::format_duration(c.timeout)
            ));
        }
        if l.memory_mib > c.memory_mib {
            over.push(format!(
                "limits.memory_mib {} (ceiling {})",
                l.memory_mib, c.memory_mib
            ));
        }
        if spec.grants.random && !self.random {
            over.push("grants.random (the ceiling grants no randomness)".into());
        }
        if let Some(http) = &spec.grants.http {
            match &self.http {
                None => over.push("grants.http (the ceiling grants no HTTP)".into()),
                Some(cap) => over.extend(http_excess(http, cap, operator_credential)),
            }
        }
        over
    }
}

fn http_excess(
    http: &HttpGrant,
    cap: &HttpCeiling,
    operator_credential: Option<&CredentialRef>,
) -> Vec<String> {
    let mut over = Vec::new();
    let allowed: Vec<String> = cap.allow.iter().filter_map(|o| origin_of(o).ok()).collect();
    for origin in &http.allow {
        match origin_of(origin) {
            Ok(o) if allowed.contains(&o) => {}
            Ok(o) => over.push(format!("grants.http.allow {o} (not in the ceiling)")),
            // The grant's own check reports an origin that does not parse.
            Err(_) => {}
        }
    }
    if http.timeout > cap.timeout {
        over.push(format!(
            "grants.http.timeout {} (ceiling {})",
            humantime::format_duration(http.timeout),
            humantime::format_duration(cap.timeout)
        ));
    }
    if http.max_response_kib > cap.max_response_kib {
        over.push(format!(
            "grants.http.max_response_kib {} (ceiling {})",
            http.max_response_kib, cap.max_response_kib
        ));
    }
    if http.max_requests > cap.max_requests {
        over.push(format!(
            "grants.http.max_requests {} (ceiling {})",
            http.max_requests, cap.max_requests
        ));
    }
    if let Some(asked) = &http.credentials {
        let same = operator_credential.is_some_and(|o| {
            (&o.secret, &o.namespace, &o.key) == (&asked.secret, &asked.namespace, &asked.key)
        });
        if !same {
            over.push(format!(
                "grants.http.credentials Secret {:?} key {:?} (the configuration names {})",
                asked.secret,
                asked.key,
                operator_credential
                    .map(|o| format!("Secret {:?} key {:?}", o.secret, o.key))
                    .unwrap_or_else(|| "no credential".into())
            ));
        }
    }
    over
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::config::Grants;

    fn spec(grants: Grants, limits: Limits) -> PluginSpec {
        PluginSpec {
            name: "p".into(),
            wasm: PathBuf::from("p.wasm"),
            sha256: "0".repeat(64),
            settings: serde_json::json!({}),
            limits,
            grants,
        }
    }

    fn grant(allow: &[&str]) -> HttpGrant {
        HttpGrant {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(1),
            max_response_kib: 64,
            max_requests: 2,
            credentials: None,
        }
    }

    #[test]
    fn default_ceiling_admits_a_pure_plugin_within_default_limits() {
        let s = spec(Grants::default(), Limits::default());
        assert!(Ceiling::default().excess(&s, None).is_empty());
    }

    #[test]
    fn every_excess_is_named() {
        let s = spec(
            Grants {
                random: true,
                http: Some(HttpGrant {
                    credentials: Some(CredentialRef {
                        secret: "other".into(),
                        namespace: None,
                        key: "token".into(),
                        header: "X-Vault-Token".into(),
                    }),
                    ..grant(&["https://vault:8200", "https://evil.example"])
                }),
            },
            Limits {
                fuel: u64::MAX,
                timeout: Duration::from_secs(60),
                memory_mib: 512,
            },
        );
        let ceiling = Ceiling {
            http: Some(HttpCeiling {
                allow: vec!["https://vault:8200".into()],
                timeout: Duration::from_millis(500),
                max_response_kib: 8,
                max_requests: 1,
            }),
            ..Ceiling::default()
        };
        let over = ceiling.excess(&s, None).join("; ");
        for phrase in [
            "limits.fuel",
            "limits.timeout 1m",
            "limits.memory_mib 512",
            "grants.random",
            "grants.http.allow https://evil.example:443",
            "grants.http.timeout 1s (ceiling 500ms)",
            "grants.http.max_response_kib 64 (ceiling 8)",
            "grants.http.max_requests 2 (ceiling 1)",
            "Secret \"other\"",
        ] {
            assert!(over.contains(phrase), "{phrase}: {over}");
        }
        assert!(!over.contains("vault:8200"), "{over}");
    }

    #[test]
    fn less_than_the_ceiling_is_fine_and_origins_compare_normalised() {
        let s = spec(
            Grants {
                random: false,
                http: Some(grant(&["HTTPS://Vault:8200/"])),
            },
            Limits {
                fuel: 1,
                ..Limits::default()
            },
        );
        let ceiling = Ceiling {
            random: true,
            http: Some(HttpCeiling {
                allow: vec!["https://vault:8200".into(), "https://other".into()],
                timeout: Duration::from_secs(5),
                max_response_kib: 64,
                max_requests: 4,
            }),
            limits: Limits::default(),
        };
        assert_eq!(ceiling.excess(&s, None), Vec::<String>::new());
        assert!(ceiling.excess(&s, None).is_empty());
        assert!(
            !Ceiling::default().excess(&s, None).is_empty(),
            "HTTP needs a ceiling"
        );
    }

    #[test]
    fn the_operators_credential_may_be_named_by_the_bundle() {
        let cred = CredentialRef {
            secret: "vault-token".into(),
            namespace: None,
            key: "token".into(),
            header: "X-Vault-Token".into(),
        };
        let s = spec(
            Grants {
                random: false,
                http: Some(HttpGrant {
                    credentials: Some(cred.clone()),
                    ..grant(&["https://vault:8200"])
                }),
            },
            Limits::default(),
        );
        let ceiling = Ceiling::admitting(&s);
        assert!(ceiling.excess(&s, Some(&cred)).is_empty());
        let over = ceiling.excess(&s, None).join("; ");
        assert!(
            over.contains("the configuration names no credential"),
            "{over}"
        );
    }

    #[test]
    fn pins_parse_one_or_many() {
        #[derive(Deserialize)]
        struct T {
            sha256: Pins,
        }
        let one: T =
            serde_json::from_str(&format!(r#"{{"sha256":"{}"}}"#, "A".repeat(64))).unwrap();
        assert_eq!(one.sha256.normalised().unwrap(), vec!["a".repeat(64)]);
        let two: T = serde_json::from_str(&format!(
            r#"{{"sha256":["{}","{}"]}}"#,
            "a".repeat(64),
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(two.sha256.normalised().unwrap().len(), 2);
        let bad = Pins::new(["xyz"]).normalised().unwrap_err();
        assert!(bad.contains("not 64 hex digits"), "{bad}");
    }
}
