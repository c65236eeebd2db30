//! Policy bundles from an OCI registry: `ferrosync policy push` and `pull`, and bundles
//! named in the controller's configuration by digest (`oci = "<registry>/<repo>@sha256:…"`)
//! as an alternative to a mounted ConfigMap. The artifact is defined in
//! `docs/policy-bundle-artifact.md`.
//!
//! - `reference`: a bundle reference that must carry a digest (tags are refused).
//! - `artifact`: the manifest, built from a bundle directory and checked when pulled (pure).
//! - `auth`: registry credentials from a `kubernetes.io/dockerconfigjson` Secret or file.
//! - `cache`: pulled blobs stored by digest on disk, re-verified on every use.
//! - `registry`: the distribution protocol (the `oci-client` crate), TLS and plain HTTP.
//! - `resolve`: turns the configuration's OCI points into verified bundle directories.
//! - `cli`: the two subcommands.
//!
//! Nothing pulled is trusted until it is verified: the manifest's bytes against the
//! digest asked for, each layer's bytes against its descriptor, then the bundle is loaded
//! exactly as one from a directory (the operator's pin, ceiling and signature checks).

mod artifact;
mod auth;
mod cache;
pub mod cli;
mod reference;
mod registry;
mod resolve;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use artifact::{
    ARTIFACT_TYPE, COMPONENT_MEDIA_TYPE, EMPTY_CONFIG_DIGEST, EMPTY_MEDIA_TYPE, POLICY_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE, TESTS_MEDIA_TYPE,
};
pub use auth::{
    DockerConfigFile, KubePullSecrets, LocalDockerConfig, NoPullSecrets, PullSecretSource,
};
pub use reference::BundleRef;
pub use resolve::{has_oci, materialise};

/// Largest component pulled from a registry: no ConfigMap limit applies, but a bundle is
/// read into memory and compiled, so it stays bounded.
pub const MAX_PULLED_COMPONENT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest `policy.toml`, `tests.json` or signature layer.
pub const MAX_TEXT_LAYER_BYTES: u64 = 1024 * 1024;

/// `[policy.oci]`: how the controller reaches the registries its bundles come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// A `kubernetes.io/dockerconfigjson` Secret in the controller's namespace, read by
    /// name; its entry for a bundle's registry host authenticates the pull. Unset, or no
    /// entry for the host: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
    /// PEM CA certificates trusted for registries besides the system's (a private CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host:port`) spoken to over plain HTTP: only for a registry on
    /// loopback or a node-local mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plain_http: Vec<String>,
    /// Where pulled blobs are kept by digest (an emptyDir in the Deployment), so a
    /// restarted container does not pull again. Unset: a private directory per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
}

impl OciConfig {
    pub fn is_empty(&self) -> bool {
        *self == OciConfig::default()
    }
}

/// Why a bundle was not pushed or pulled. Each message names the reference and says what
/// to do; none carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    #[error(
        "{reference:?}: a bundle in the controller configuration must be named by digest \
         (<registry>/<repository>@sha256:<64 hex>), not by tag: a tag can be moved under a \
         running fleet, a digest cannot; `ferrosync policy push` prints the digest"
    )]
    TagNotAllowed { reference: String },
    #[error("{reference:?} is not an OCI reference: {message}")]
    BadReference { reference: String, message: String },
    #[error("{point}: give one of `bundle`, `plugin` or `oci`")]
    Ambiguous { point: String },
    #[error("registry {registry}: {message}")]
    Settings { registry: String, message: String },
    #[error(
        "pull secret {secret}: {message}; it must be a kubernetes.io/dockerconfigjson \
         Secret in the controller's namespace (kubectl create secret docker-registry)"
    )]
    PullSecret { secret: String, message: String },
    #[error("{reference}: the registry refused the credentials ({message}); check the pull secret")]
    Unauthorized { reference: String, message: String },
    #[error("{reference}: not in the registry ({message}); push the bundle, or correct the digest")]
    NotFound { reference: String, message: String },
    #[error("{reference}: cannot reach the registry: {message}")]
    Unreachable { reference: String, message: String },
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: {what} has sha256:{actual}, not the {expected} asked for; refused")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: not a ferrosync policy bundle: {message}")]
    NotABundle { reference: String, message: String },
    #[error("bundle {dir}: {message}")]
    Bundle { dir: PathBuf, message: String },
    #[error("policy cache {dir}: {message}")]
    Cache { dir: PathBuf, message: String },
}

impl OciError {
    /// Whether trying again later may succeed (the registry comes back, the Secret is
    /// fixed, the bundle is pushed); false for what the configuration itself gets wrong.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            OciError::TagNotAllowed { .. }
                | OciError::BadReference { .. }
                | OciError::Ambiguous { .. }
                | OciError::Settings { .. }
        )
    }
}

/// The waits between attempts at a bundle the registry refused or could not serve: from
/// a second, doubling with jitter, up to two minutes, for as long as it takes.
pub fn retry_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_secs(1))
        .with_max_delay(std::time::Duration::from_secs(120))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Builds the engine at start-up. A bundle the registry cannot serve yet (unreachable,
/// credentials refused, not pushed) is retried with backoff, each refusal logged and
/// counted, while the controller stays unready (so a rolling update keeps the previous
/// pod serving); any other load error stops the start as before.
pub async fn start_engine(
    config: &super::PolicyConfig,
    options: impl Fn() -> super::EngineOptions,
) -> Result<super::PolicyEngine, super::LoadError> {
    let mut waits = retry_backoff();
    loop {
        let options = options();
        let metrics = options.metrics.clone();
        match super::PolicyEngine::new(config, options).await {
            Err(e) if e.is_retryable() => {
                let wait = waits.next().unwrap_or(std::time::Duration::from_secs(120));
                metrics.reload_refused.set(1);
                tracing::error!(error = %e, retry_in = ?wait, "policy bundle not loaded; retrying");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
