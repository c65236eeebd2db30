//! Loading plugins: resolving a decision point's configuration (bundle or inline) to a
//! component file, checking its sha256 pin, compiling it once per digest, and checking it
//! implements the decision point's WIT world (an `InstancePre` per plugin).
//!
//! Loading never runs plugin code, and a plugin that fails to load must never affect
//! another one: every failure is a [`LoadError`] naming the plugin and the reason.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use super::{
    bindings::{copy_method::CopyMethodPre, psk::PskPre, service_type::ServiceTypePre},
    config::{Ceiling, CredentialRef, FailureMode, HttpGrant, Limits, PluginSpec, PointConfig},
    http::ResolvedGrant,
    sandbox::HostState,
    types::DecisionPoint,
};

/// The file in a bundle directory that describes it.
pub const POLICY_FILE: &str = "policy.toml";
/// Largest component accepted: a ConfigMap's binaryData must stay under 1 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 1024 * 1024;

/// Why a plugin (and so the whole new set) was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{point}: {message}")]
    Config {
        point: DecisionPoint,
        message: String,
    },
    #[error("bundle {path}: {message}")]
    Bundle { path: PathBuf, message: String },
    #[error("plugin {plugin}: cannot read {path}: {message}")]
    Read {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "plugin {plugin}: sha256 of {path} is {actual}, but the pin is {pinned}; refusing to load"
    )]
    DigestMismatch {
        plugin: String,
        path: PathBuf,
        pinned: String,
        actual: String,
    },
    #[error(
        "{point}: the bundle's plugin {plugin} is not pinned by the controller configuration; \
         once reviewed, pin its component with sha256 = \"{actual}\" in [policy.{section}]",
        section = point.as_str().replace('-', "_")
    )]
    NotPinned {
        point: DecisionPoint,
        plugin: String,
        actual: String,
    },
    #[error(
        "plugin {plugin}: its component's sha256 is {actual}, which the controller \
         configuration does not pin for {point} (it pins {pinned}); refusing to load"
    )]
    NotOperatorPinned {
        point: DecisionPoint,
        plugin: String,
        actual: String,
        pinned: String,
    },
    #[error(
        "plugin {plugin}: asks for more than the controller configuration's ceiling for \
         {point} allows: {excess}; refusing to load (ask for less in the bundle, or raise \
         [policy.{section}.ceiling])",
        section = point.as_str().replace('-', "_")
    )]
    AboveCeiling {
        point: DecisionPoint,
        plugin: String,
        excess: String,
    },
    #[error("plugin {plugin}: does not compile as a component: {message}")]
    Compile { plugin: String, message: String },
    #[error("plugin {plugin}: does not implement the {point} world: {message}")]
    WrongWorld {
        plugin: String,
        point: DecisionPoint,
        message: String,
    },
    #[error("plugin {plugin}: {message}")]
    Invalid { plugin: String, message: String },
    #[error("plugin {plugin}: refused: {source}")]
    Signature {
        plugin: String,
        #[source]
        source: super::signature::SignatureError,
    },
    #[error("bundle from a registry: {0}")]
    Oci(#[source] super::oci::OciError),
}

impl LoadError {
    /// Whether loading the same configuration again later may succeed: a registry that
    /// was unreachable, a pull secret since fixed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LoadError::Oci(e) if e.is_retryable())
    }
}

/// A bundle's `policy.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// The decision point this bundle serves.
    pub decision: DecisionPoint,
    /// The golden test table, relative to the bundle.
    #[serde(default = "default_tests")]
    pub tests: PathBuf,
    pub plugin: PluginSpec,
}

fn default_tests() -> PathBuf {
    "tests.json".into()
}

impl BundleFile {
    /// Reads `<dir>/policy.toml`; the plugin's `wasm` becomes a path inside `dir`.
    pub fn read(dir: &Path) -> Result<Self, LoadError> {
        let file = dir.join(POLICY_FILE);
        if !file.is_file() {
            return Err(LoadError::Bundle {
                path: dir.into(),
                message: format!("no {POLICY_FILE}"),
            });
        }
        let mut bundle: BundleFile =
            Figment::from(Toml::file_exact(&file))
                .extract()
                .map_err(|e| LoadError::Bundle {
                    path: dir.into(),
                    message: e.to_string(),
                })?;
        bundle.plugin.wasm = dir.join(&bundle.plugin.wasm);
        bundle.tests = dir.join(&bundle.tests);
        Ok(bundle)
    }
}

/// The plugin a decision point's configuration names, with paths resolved.
pub fn resolve(point: DecisionPoint, cfg: &PointConfig) -> Result<PluginSpec, LoadError> {
    let config_err = |message: &str| LoadError::Config {
        point,
        message: message.into(),
    };
    match (&cfg.bundle, &cfg.plugin) {
        (Some(dir), None) => {
            let bundle = BundleFile::read(dir)?;
            if bundle.decision != point {
                return Err(LoadError::Bundle {
                    path: dir.clone(),
                    message: format!("serves {}, not {point}", bundle.decision),
                });
            }
            Ok(bundle.plugin)
        }
        (None, Some(spec)) => Ok(spec.clone()),
        (Some(_), Some(_)) => Err(config_err("give either `bundle` or `plugin`, not both")),
        (None, None) if cfg.oci.is_some() => Err(config_err(
            "an `oci` bundle is served once pulled; this configuration was not resolved",
        )),
        (None, None) => Err(config_err(
            "give a `bundle` directory, an `oci` reference or a `plugin`",
        )),
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An instantiable plugin, checked against its world.
pub(crate) enum Pre {
    CopyMethod(CopyMethodPre<HostState>),
    ServiceType(ServiceTypePre<HostState>),
    Psk(PskPre<HostState>),
}

/// A loaded plugin: everything a decision needs, immutable once built.
pub(crate) struct LoadedPlugin {
    pub name: String,
    pub sha256: String,
    pub point: DecisionPoint,
    pub on_failure: FailureMode,
    pub settings_json: String,
    pub limits: Limits,
    /// The longest a decision may take, waiting for a slot included.
    pub deadline: Duration,
    pub random: bool,
    pub http: Option<HttpGrant>,
    pub credential: Option<CredentialRef>,
    pub pre: Pre,
    /// Decisions of a plugin without grants are pure: cacheable by input.
    pub pure: bool,
    /// A shadow candidate: no credential, HTTP cut to reading, answers never acted on.
    pub shadow: bool,
}

/// Components compiled so far, by sha256: a reload of an unchanged plugin compiles nothing.
#[derive(Default)]
pub(crate) struct ComponentCache(Mutex<HashMap<String, Component>>);

impl ComponentCache {
    fn get_or_compile(
        &self,
        engine: &Engine,
        plugin: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(c.clone());
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
            plugin: plugin.into(),
            message: format!("{e:#}"),
        })?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.into(), component.clone());
        Ok(component)
    }

    /// Forgets components no longer used by `keep`.
    pub fn retain(&self, keep: &[&str]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// Reads, verifies, compiles and type-checks one plugin. Blocking (compilation).
pub(crate) fn load(
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &ComponentCache,
    point: DecisionPoint,
    cfg: &PointConfig,
    trust: Option<&super::signature::Trust>,
) -> Result<LoadedPlugin, LoadError> {
    let spec = resolve(point, cfg)?;
    let name = spec.name.clone();
    let invalid = |message: String| LoadError::Invalid {
        plugin: name.clone(),
        message,
    };
    let pinned = spec.sha256.trim().to_ascii_lowercase();
    if pinned.len() != 64 || !pinned.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "sha256 pin {:?} is not 64 hex digits",
            spec.sha256
        )));
    }
    if spec.limits.fuel == 0 || spec.limits.timeout.is_zero() || spec.limits.memory_mib == 0 {
        return Err(invalid("limits must be non-zero".into()));
    }
    let read_err = |message: String| LoadError::Read {
        plugin: name.clone(),
        path: spec.wasm.clone(),
        message,
    };
    let size = std::fs::metadata(&spec.wasm)
        .map_err(|e| read_err(e.to_string()))?
        .len();
    // A pulled component has no ConfigMap to fit in, only the registry's bound.
    let (max, within) = match cfg.oci {
        Some(_) => (
            super::oci::MAX_PULLED_COMPONENT_BYTES,
            "are pulled from a registry",
        ),
        None => (MAX_COMPONENT_BYTES, "fit a ConfigMap"),
    };
    if size > max {
        return Err(read_err(format!("{size} bytes; at most {max} {within}")));
    }
    // The bytes hashed are the bytes compiled: a component swapped after this read (a
    // torn bundle update) can never be served under the digest checked here.
    let bytes = std::fs::read(&spec.wasm).map_err(|e| read_err(e.to_string()))?;
    let actual = sha256_hex(&bytes);
    if actual != pinned {
        return Err(LoadError::DigestMismatch {
            plugin: name.clone(),
            path: spec.wasm.clone(),
            pinned,
            actual,
        });
    }
    if let Some(trust) = trust {
        // The bytes verified are the bytes hashed and compiled.
        trust
            .verify(&spec.wasm, &bytes)
            .map_err(|source| LoadError::Signature {
                plugin: name.clone(),
                source,
            })?;
    }
    if cfg.bundle.is_some() {
        operator_allows(point, cfg, &spec, &actual)?;
    } else if !cfg.sha256.is_empty() {
        return Err(LoadError::Config {
            point,
            message: "`sha256` pins a bundle's component; an inline plugin's pin is its \
                      own `sha256`"
                .into(),
        });
    } else if cfg.ceiling != Ceiling::default() {
        return Err(LoadError::Config {
            point,
            message: "`ceiling` caps a bundle; an inline plugin's grants and limits are \
                      the configuration's own"
                .into(),
        });
    }
    let credential = cfg.credentials.clone().or_else(|| {
        spec.grants
            .http
            .as_ref()
            .and_then(|h| h.credentials.clone())
    });
    if let Some(grant) = &spec.grants.http {
        ResolvedGrant::new(grant, None).map_err(&invalid)?;
    }

    let component = cache.get_or_compile(engine, &name, &actual, &bytes)?;
    let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
        plugin: name.clone(),
        point,
        message: format!("{e:#}"),
    };
    let instance_pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
    let pre = match point {
        DecisionPoint::CopyMethod => {
            Pre::CopyMethod(CopyMethodPre::new(instance_pre).map_err(wrong_world)?)
        }
        DecisionPoint::ServiceType => {
            Pre::ServiceType(ServiceTypePre::new(instance_pre).map_err(wrong_world)?)
        }
        DecisionPoint::Psk => Pre::Psk(PskPre::new(instance_pre).map_err(wrong_world)?),
    };
    let settings_json =
        serde_json::to_string(&spec.settings).map_err(|e| invalid(e.to_string()))?;
    let pure = !spec.grants.random && spec.grants.http.is_none();
    let deadline = cfg
        .deadline
        .unwrap_or_else(|| (spec.limits.timeout * 2).max(Duration::from_secs(1)));
    Ok(LoadedPlugin {
        name: spec.name,
        sha256: actual,
        point,
        on_failure: cfg.on_failure,
        settings_json,
        limits: spec.limits,
        deadline,
        random: spec.grants.random,
        http: spec.grants.http,
        credential,
        pre,
        pure,
        shadow: false,
    })
}

/// A bundle's component must carry one of the operator's pins, and its grants and limits
/// must fit under the operator's ceiling.
fn operator_allows(
    point: DecisionPoint,
    cfg: &PointConfig,
    spec: &PluginSpec,
    actual: &str,
) -> Result<(), LoadError> {
    if cfg.sha256.is_empty() {
        return Err(LoadError::NotPinned {
            point,
            plugin: spec.name.clone(),
            actual: actual.into(),
        });
    }
    let pins = cfg
        .sha256
        .normalised()
        .map_err(|message| LoadError::Config { point, message })?;
    if !pins.iter().any(|p| p == actual) {
        return Err(LoadError::NotOperatorPinned {
            point,
            plugin: spec.name.clone(),
            actual: actual.into(),
            pinned: pins.join(", "),
        });
    }
    let excess = cfg.ceiling.excess(spec, cfg.credentials.as_ref());
    if !excess.is_empty() {
        return Err(LoadError::AboveCeiling {
            point,
            plugin: spec.name.clone(),
            excess: excess.join("; "),
        });
    }
    Ok(())
}

/// The files a decision point's configuration depends on: reload watches these.
pub fn watched_files(point: DecisionPoint, cfg: &PointConfig) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = &cfg.bundle {
        files.push(dir.join(POLICY_FILE));
    }
    if let Ok(spec) = resolve(point, cfg) {
        files.push(super::signature::signature_path(&spec.wasm));
        files.push(spec.wasm);
    }
    files
}
