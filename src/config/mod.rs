//! The controller's configuration, layered with figment: the built-in
//! `config/default.toml`, then an optional file, then `FERROSYNC_*` environment variables.
//!
//! Unknown keys and bad values stop start-up with an error that names the key and the
//! file it came from; nothing here falls back silently.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyConfig;

/// The built-in defaults, compiled in so the binary runs without the file.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "FERROSYNC_";

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key is unknown, has the wrong type, or a file cannot be read or parsed. figment's
    /// message names the key and the file or variable it came from.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// The whole configuration of the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The probe endpoint.
    pub server: ServerConfig,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Mover Jobs.
    pub mover: MoverConfig,
    /// How much reconciling runs at once.
    pub reconcile: ReconcileConfig,
    /// Requeue intervals.
    pub requeue: RequeueConfig,
    /// Leader election among replicas.
    pub leader_election: LeaderElectionConfig,
    /// Policy plugins.
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// The plain-HTTP endpoint for the kubelet's probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where /healthz and /readyz are served.
    pub listen: SocketAddr,
}

/// The `/metrics` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where /metrics is served.
    pub listen: SocketAddr,
    /// HTTPS, with every caller checked through the apiserver (TokenReview, then a
    /// SubjectAccessReview for `get` on `/metrics`). False: plain HTTP for anyone, which is
    /// refused unless `listen` is a loopback address.
    pub secure: bool,
    /// PEM certificate chain (for example a mounted Secret's `tls.crt`); without it and
    /// `key_file`, a self-signed certificate is generated at start.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (`tls.key`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// DNS names of the self-signed certificate.
    pub self_signed_names: Vec<String>,
}

/// How logs are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Text for people, JSON for pipelines.
    pub format: LogFormat,
    /// A tracing filter directive.
    pub level: String,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of the mover Jobs the controller creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoverConfig {
    /// The container image of mover Jobs.
    pub image: String,
    /// The Job's backoffLimit: retries of a failed mover Pod.
    pub backoff_limit: i32,
    /// How often a running mover logs its progress.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Secrets in the controller's namespace for pulling the mover image. Each is copied
    /// into a mover's namespace as `volsync-pull-<hash>` and named in its Pod's
    /// imagePullSecrets, as VolSync does.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// The wait after a mover's first permanent failure (a wrong key, a full destination).
    #[serde(with = "humantime_serde")]
    pub failure_backoff_min: Duration,
    /// The longest wait between Jobs of a mover that keeps failing permanently.
    #[serde(with = "humantime_serde")]
    pub failure_backoff_max: Duration,
    /// How long a mover Job's pods may go without starting (an image that cannot be
    /// pulled, no node that fits) before the condition says so.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Which TLS-PSK tunnel the movers use (the Job's `TLS_TUNNEL`).
    #[serde(default)]
    pub tls_tunnel: TlsTunnel,
}

/// The movers' TLS-PSK tunnel; both put the same TLS 1.3 PSK handshake on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsTunnel {
    /// In-process TLS in the mover, with batched records.
    #[default]
    Builtin,
    /// stunnel processes, as VolSync's mover: the fallback.
    Stunnel,
}

/// How much reconciling runs at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Reconciles of each kind at once (at least 1).
    pub concurrency: u16,
    /// How long a deleted object of a vault pair keeps its finalizer while its release
    /// fails (an unreachable vault, a failing plugin); then it is let go with a Warning
    /// Event, its membership left behind. Bounds how long a namespace deletion can wait.
    #[serde(with = "humantime_serde")]
    pub pair_release_timeout: Duration,
}

/// How soon objects are looked at again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueConfig {
    /// Safety-net re-check of an idle object.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Poll of something that progresses by itself.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// First backoff after a transient error.
    #[serde(with = "humantime_serde")]
    pub error_min: Duration,
    /// Longest backoff after repeated transient errors.
    #[serde(with = "humantime_serde")]
    pub error_max: Duration,
}

/// Leader election through a coordination Lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Whether to campaign for a Lease before reconciling.
    pub enabled: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace; empty means the pod's namespace.
    pub namespace: String,
    /// Validity of the Lease without renewal.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// The holder stops reconciling this long before its Lease would expire unrenewed.
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
}

impl Config {
    /// Loads the defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        Self::figment(file, Env::prefixed(ENV_PREFIX))
    }

    /// Loads with an explicit environment provider, so tests need not touch the process
    /// environment.
    pub fn figment(file: Option<&Path>, env: Env) -> Result<Self, Error> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            // `Toml::file` silently skips a missing file; an explicit --config must exist.
            if !file.exists() {
                return Err(Error::Invalid(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    file.display()
                )))));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only variables whose first segment is a configuration section are ours; others
        // that share the prefix (FERROSYNC_CONFIG, build and test settings) are not keys.
        let env = env.split("__").filter(|key| {
            // Keys are uncased: compare lowercase.
            let key = key.as_str().to_ascii_lowercase();
            SECTIONS.contains(&key.split(['.', '_']).next().unwrap_or(""))
        });
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: &str| {
            Err(Error::Invalid(Box::new(figment::Error::from(
                msg.to_string(),
            ))))
        };
        if self.requeue.error_min > self.requeue.error_max {
            return invalid("requeue.error_min must not exceed requeue.error_max");
        }
        if self.mover.failure_backoff_min > self.mover.failure_backoff_max {
            return invalid("mover.failure_backoff_min must not exceed mover.failure_backoff_max");
        }
        if self.mover.backoff_limit < 0 {
            return invalid("mover.backoff_limit must be 0 or more");
        }
        if self.reconcile.concurrency == 0 {
            return invalid("reconcile.concurrency must be at least 1");
        }
        let le = &self.leader_election;
        if le.enabled && (le.renew_before.as_secs() < 1 || le.renew_before >= le.lease_duration) {
            return invalid(
                "leader_election.renew_before must be at least 1s and less than lease_duration",
            );
        }
        if !self.metrics.secure && !self.metrics.listen.ip().is_loopback() {
            return invalid(&format!(
                "metrics.secure = false serves /metrics without authentication, which is allowed \
                 only on a loopback address, not {}; set metrics.secure = true (HTTPS with \
                 TokenReview and SubjectAccessReview) or listen on 127.0.0.1",
                self.metrics.listen
            ));
        }
        if self.metrics.cert_file.is_some() != self.metrics.key_file.is_some() {
            return invalid(
                "metrics.cert_file and metrics.key_file must be set together (or neither, for a self-signed certificate)",
            );
        }
        if self.mover.image.trim().is_empty() {
            return invalid("mover.image must not be empty");
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return invalid(&format!(
                "log.level {:?} is not a valid tracing filter",
                self.log.level
            ));
        }
        Ok(())
    }
}

/// The top-level sections; see [`Config`].
const SECTIONS: &[&str] = &[
    "server",
    "metrics",
    "log",
    "mover",
    "reconcile",
    "requeue",
    "leader",
    "policy",
];

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
