//! The `policy` section of the controller configuration: which plugin serves each decision
//! point, with its pin, settings, limits, grants and failure mode.
//!
//! Every struct refuses unknown keys, and the defaults grant nothing: no plugin at all
//! (built-in decisions), and for a plugin no randomness and no network. Nothing here may
//! hold a credential itself; credentials are only ever *named* (a Secret and a key).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use super::ceiling::{Ceiling, HttpCeiling, Pins};
use super::plugin::{BundleFile, LoadError};

/// The `policy` section. The default serves every decision point with its built-in default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Engine-wide settings: concurrency, epoch tick, decision cache, reload.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The plugin choosing a source's copy method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<PointConfig>,
    /// The plugin choosing a destination's Service type and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<PointConfig>,
    /// The plugin supplying pre-shared keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<PointConfig>,
    /// Where the credentials the host injects may go (`[policy.credentials]`).
    #[serde(default)]
    pub credentials: super::credentials::CredentialPolicy,
    /// Bundles serving some namespaces (or, for psk, some pair names) instead of the
    /// cluster-wide default above (`[[policy.bindings]]`); see `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<super::scope::BindingConfig>,
    /// Keys every component must be signed by (`[policy.signatures]`); unset: none.
    #[serde(
        default,
        skip_serializing_if = "super::signature::SignatureConfig::is_empty"
    )]
    pub signatures: super::signature::SignatureConfig,
    /// Candidates run beside the default's plugins, never acted on (`[policy.shadow]`).
    #[serde(default, skip_serializing_if = "super::shadow::ShadowConfig::is_empty")]
    pub shadow: super::shadow::ShadowConfig,
    /// How bundles named by OCI reference are pulled (`[policy.oci]`); see `oci`.
    #[serde(default, skip_serializing_if = "super::oci::OciConfig::is_empty")]
    pub oci: super::oci::OciConfig,
}

impl PolicyConfig {
    /// The default's configuration of `point`.
    pub fn point(&self, point: super::types::DecisionPoint) -> Option<&PointConfig> {
        use super::types::DecisionPoint::*;
        match point {
            CopyMethod => self.copy_method.as_ref(),
            ServiceType => self.service_type.as_ref(),
            Psk => self.psk.as_ref(),
        }
    }

    /// Every configured point, active and shadow, of the default and of each binding,
    /// with the name of its scope: what reload watches and the pool is sized for.
    pub fn all_points(&self) -> Vec<(&str, super::types::DecisionPoint, &PointConfig, bool)> {
        use super::types::DecisionPoint;
        let mut out = Vec::new();
        let points = [
            DecisionPoint::CopyMethod,
            DecisionPoint::ServiceType,
            DecisionPoint::Psk,
        ];
        for p in points {
            if let Some(c) = self.point(p) {
                out.push((super::scope::DEFAULT_BINDING, p, c, false));
            }
            if let Some(c) = self.shadow.point(p) {
                out.push((super::scope::DEFAULT_BINDING, p, c, true));
            }
            for b in &self.bindings {
                if let Some(c) = b.point(p) {
                    out.push((b.name.as_str(), p, c, false));
                }
                if let Some(c) = b.shadow.point(p) {
                    out.push((b.name.as_str(), p, c, true));
                }
            }
        }
        out
    }
}

/// Settings shared by all plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Decisions evaluated at once per decision point, unless the point sets its own
    /// `concurrency`; more wait. Bounds the blocking threads wasm occupies.
    pub max_concurrency: usize,
    /// Granularity of wall-time deadlines: the epoch ticker's period.
    #[serde(with = "humantime_serde")]
    pub epoch_tick: Duration,
    /// Cached decisions of plugins without grants (pure functions); 0 disables the cache.
    pub cache_entries: usize,
    /// Preallocate instance slots (faster instantiation, more virtual memory reserved).
    pub pooling: bool,
    /// How often the controller looks for changed bundles or plugin files.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A replication waiting for its key (the psk plugin answered "not available yet")
    /// asks the plugin again only after a backoff: from this, doubling with jitter...
    #[serde(with = "humantime_serde")]
    pub key_retry_min: Duration,
    /// ...up to this (each wait lengthened by up to itself at random); 0 asks on every
    /// pass.
    #[serde(with = "humantime_serde")]
    pub key_retry_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrency: 4,
            epoch_tick: Duration::from_millis(5),
            cache_entries: 1024,
            pooling: true,
            reload_interval: Duration::from_secs(10),
            key_retry_min: Duration::from_secs(2),
            key_retry_max: Duration::from_secs(60),
        }
    }
}

/// One decision point: a plugin (from a bundle directory or given inline), what the
/// operator allows it, how many of its decisions run at once, and what to do when it fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// A bundle directory (for example a mounted ConfigMap) holding `policy.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// A plugin given inline instead of a bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSpec>,
    /// A bundle in an OCI registry instead of a directory, by digest only
    /// (`<registry>/<repository>@sha256:<hex>`); `sha256` still pins its component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<super::oci::BundleRef>,
    /// The operator's pin of a bundle's component: its sha256, or a list while a bundle
    /// rolls over. Required with `bundle`: the bundle's own pin proves only that the
    /// bundle is self-consistent. (An inline `plugin` carries its pin itself.)
    #[serde(default, skip_serializing_if = "Pins::is_empty")]
    pub sha256: Pins,
    /// The most a bundle may be granted; it may ask for less, never more. By default no
    /// randomness, no HTTP and the default limits.
    #[serde(default)]
    pub ceiling: Ceiling,
    /// `fallback` to the built-in default (and say so), or `fail` the reconcile.
    #[serde(default)]
    pub on_failure: FailureMode,
    /// The credential the host injects into the plugin's granted HTTP requests. A bundle
    /// may name this one (or none), never another Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialRef>,
    /// Decisions of this point evaluated at once; more wait for a slot, within
    /// `deadline`. Default: `engine.max_concurrency`. Each point has its own slots, so a
    /// slow vault never holds up copy-method or service-type decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// The longest a decision of this point may take, waiting for a slot and resolving
    /// credentials included; the plugin's run is cut to what remains. Default: twice the
    /// plugin's time limit, at least one second.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub deadline: Option<Duration>,
}

impl PointConfig {
    /// Serves the point with the bundle in `dir` exactly as written: the operator pin is
    /// the bundle's own and the ceiling is what it asks for. For tools that run a bundle
    /// on its author's word (`policy test`, `policy eval --bundle`) and for tests; a
    /// controller's configuration should pin and cap bundles itself.
    pub fn bundle_as_written(dir: &Path) -> Result<Self, LoadError> {
        let bundle = BundleFile::read(dir)?;
        let credentials = bundle
            .plugin
            .grants
            .http
            .as_ref()
            .and_then(|h| h.credentials.clone());
        Ok(PointConfig {
            bundle: Some(dir.to_owned()),
            sha256: Pins::new([bundle.plugin.sha256.clone()]),
            ceiling: Ceiling::admitting(&bundle.plugin),
            credentials,
            ..PointConfig::default()
        })
    }

    /// Serves the point with an inline plugin.
    pub fn inline(plugin: PluginSpec) -> Self {
        PointConfig {
            plugin: Some(plugin),
            ..PointConfig::default()
        }
    }
}

/// What a failed plugin decision turns into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Use the built-in default and report the failure.
    #[default]
    Fallback,
    /// Report the failure as an Error condition; the reconcile does not proceed.
    Fail,
}

/// A plugin: its component, the pin it must match, and how it may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// A name for logs, metrics and Events.
    pub name: String,
    /// The component file; relative to the bundle directory when in a bundle.
    pub wasm: PathBuf,
    /// Hex SHA-256 of the component; a mismatch refuses to load.
    pub sha256: String,
    /// Handed to the plugin as JSON in every input.
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    /// Fuel, time and memory.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities beyond pure computation. None by default.
    #[serde(default)]
    pub grants: Grants,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Per-decision limits of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wasm fuel (roughly instructions) per decision, instantiation included.
    pub fuel: u64,
    /// Wall time per decision, host calls such as HTTP included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory, in MiB, summed over the component's memories.
    pub memory_mib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            timeout: Duration::from_millis(250),
            memory_mib: 32,
        }
    }
}

/// Capabilities granted to a plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Secure randomness (`wasi:random/random`). Without it, asking traps.
    #[serde(default)]
    pub random: bool,
    /// Outgoing HTTP(S) to an allow-list of origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
}

/// Outgoing HTTP, bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Origins (`scheme://host[:port]`) the plugin may reach; nothing else is contacted.
    pub allow: Vec<String>,
    /// Time limit of one request.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest response body accepted, in KiB.
    #[serde(default = "default_max_response_kib")]
    pub max_response_kib: u32,
    /// Most requests in one decision.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
    /// A header the host adds, with its value read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialRef>,
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

/// Where a credential comes from, and which request header carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// The Secret's name.
    pub secret: String,
    /// Its namespace; the controller's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The key within the Secret.
    #[serde(default = "default_credential_key")]
    pub key: String,
    /// The request header that carries the value.
    #[serde(default = "default_credential_header")]
    pub header: String,
}

fn default_credential_key() -> String {
    "token".into()
}
fn default_credential_header() -> String {
    "X-Vault-Token".into()
}

#[cfg(test)]
mod tests {
    use figment::{
        Figment,
        providers::{Format, Toml},
    };

    use super::*;

    fn parse(toml: &str) -> Result<PolicyConfig, Box<figment::Error>> {
        Figment::from(Toml::string(toml))
            .extract()
            .map_err(Box::new)
    }

    #[test]
    fn default_is_no_plugins() {
        let c = parse("").unwrap();
        assert_eq!(c, PolicyConfig::default());
        assert!(c.copy_method.is_none() && c.service_type.is_none() && c.psk.is_none());
    }

    #[test]
    fn full_plugin_entry() {
        let c = parse(
            r#"
            [engine]
            max_concurrency = 2
            epoch_tick = "1ms"
            [psk]
            on_failure = "fail"
            credentials = { secret = "vault-token" }
            [psk.plugin]
            name = "psk-from-vault"
            wasm = "/p/psk.wasm"
            sha256 = "00"
            settings = { address = "https://vault:8200" }
            limits = { fuel = 1000, timeout = "2s", memory_mib = 8 }
            grants = { random = true, http = { allow = ["https://vault:8200"] } }
            "#,
        )
        .unwrap();
        let psk = c.psk.unwrap();
        assert_eq!(psk.on_failure, FailureMode::Fail);
        let cred = psk.credentials.unwrap();
        assert_eq!(
            (cred.key.as_str(), cred.header.as_str()),
            ("token", "X-Vault-Token")
        );
        let plugin = psk.plugin.unwrap();
        assert_eq!(plugin.limits.timeout, Duration::from_secs(2));
        let http = plugin.grants.http.unwrap();
        assert_eq!(http.timeout, Duration::from_secs(2));
        assert_eq!(http.max_response_kib, 1024);
        assert!(plugin.grants.random);
        assert_eq!(c.engine.max_concurrency, 2);
        assert_eq!(c.engine.cache_entries, 1024);
    }

    #[test]
    fn operator_pins_ceilings_and_slots() {
        let c = parse(&format!(
            r#"
            [engine]
            key_retry_min = "500ms"
            key_retry_max = "2m"
            [psk]
            bundle = "/etc/ferrosync-policies/vault"
            sha256 = ["{a}", "{b}"]
            concurrency = 2
            deadline = "20s"
            [psk.ceiling]
            random = true
            limits = {{ fuel = 1000, timeout = "10s", memory_mib = 16 }}
            http = {{ allow = ["https://vault:8200"], max_requests = 4 }}
            [copy_method]
            bundle = "/etc/ferrosync-policies/aws-ebs"
            sha256 = "{a}"
            "#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(c.engine.key_retry_min, Duration::from_millis(500));
        assert_eq!(c.engine.key_retry_max, Duration::from_secs(120));
        let psk = c.psk.unwrap();
        assert_eq!(psk.sha256.normalised().unwrap().len(), 2);
        assert_eq!(psk.concurrency, Some(2));
        assert_eq!(psk.deadline, Some(Duration::from_secs(20)));
        assert!(psk.ceiling.random);
        assert_eq!(psk.ceiling.limits.timeout, Duration::from_secs(10));
        let http = psk.ceiling.http.unwrap();
        assert_eq!((http.max_requests, http.max_response_kib), (4, 1024));
        // An unset ceiling grants nothing, within the default limits.
        let copy = c.copy_method.unwrap();
        assert_eq!(copy.ceiling, Ceiling::default());
        assert_eq!(copy.ceiling.limits, Limits::default());
        assert_eq!(copy.sha256.normalised().unwrap(), vec!["a".repeat(64)]);
        assert_eq!((copy.concurrency, copy.deadline), (None, None));
    }

    #[test]
    fn bindings_and_shadows_parse_and_old_configs_stay_valid() {
        let c = parse(&format!(
            r#"
            [copy_method]
            bundle = "/p/default"
            sha256 = "{a}"
            [shadow.copy_method]
            bundle = "/p/candidate"
            sha256 = "{a}"
            [[bindings]]
            name = "team-a"
            namespaces = ["team-a", "team-a-dev"]
            copy_method = {{ bundle = "/p/a", sha256 = "{a}" }}
            [[bindings]]
            name = "team-b"
            namespace_selector = {{ match_labels = {{ team = "b" }}, match_expressions = [{{ key = "tier", operator = "In", values = ["gold"] }}] }}
            service_type = {{ bundle = "/p/b", sha256 = "{a}" }}
            [bindings.shadow.service_type]
            bundle = "/p/b-next"
            sha256 = "{a}"
            [[bindings]]
            name = "vault-db"
            psk_pair_prefixes = ["db-"]
            psk = {{ bundle = "/p/vault", sha256 = "{a}" }}
            "#,
            a = "a".repeat(64)
        ))
        .unwrap();
        assert_eq!(c.bindings.len(), 3);
        assert!(c.shadow.copy_method.is_some());
        assert!(c.bindings[1].shadow.service_type.is_some());
        super::super::scope::check(&c.bindings).unwrap();
        // Default, its shadow, then each binding's, point by point.
        let scopes: Vec<_> = c
            .all_points()
            .iter()
            .map(|(b, p, _, s)| (*b, *p, *s))
            .collect();
        assert_eq!(scopes.len(), 6);
        // A config without bindings reads as before.
        let old = parse("[copy_method]\nbundle = \"/x\"\nsha256 = \"00\"").unwrap();
        assert!(old.bindings.is_empty() && old.shadow.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        for bad in [
            "surprise = 1",
            "[engine]\nthreads = 2",
            "[copy_method]\nbundel = \"/x\"",
            "[psk.plugin]\nname = \"x\"\nwasm = \"x\"\nsha256 = \"x\"\ngrants = { network = true }",
            "[psk.ceiling]\nnetwork = true",
            "[psk.ceiling.http]\nallow = []\nproxy = \"x\"",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
    }
}
