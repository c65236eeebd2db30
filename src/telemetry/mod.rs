//! Tracing set-up, the metrics, and the HTTP endpoints for probes and metrics.
//!
//! Keys and other secrets must never reach a log line: callers log Secret *names* only.

pub mod auth;
mod metrics;
mod server;
pub mod summary;
pub mod tls;

use std::sync::Arc;

use prometheus_client::{encoding::text, registry::Registry};

pub use metrics::{
    Metrics, ObjectLabels, SYNC_DURATION, SYNC_DURATION_QUANTILES, SYNC_DURATION_WINDOW,
};
pub use server::{Health, MetricsAccess, serve_metrics, serve_probes};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Tracing could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The level is not a valid filter directive.
    #[error("log.level {level:?}: {source}")]
    Filter {
        /// The rejected directive.
        level: String,
        /// Why.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// The metrics certificate could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The HTTP endpoint could not bind or serve.
    #[error("serving {addr}: {source}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Installs the global tracing subscriber, writing to standard error.
pub fn init(log: &LogConfig) -> Result<(), Error> {
    let filter = EnvFilter::try_new(&log.level).map_err(|source| Error::Filter {
        level: log.level.clone(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    match log.format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()?,
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()?,
    }
    Ok(())
}

/// Everything `/metrics` serves: the registry, then the summaries prometheus-client
/// cannot encode, then OpenMetrics' `# EOF`.
#[derive(Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
    metrics: Metrics,
}

impl Exposition {
    /// The exposition of `registry` (in which `metrics` is registered) and `metrics`'
    /// summaries.
    pub fn new(registry: Registry, metrics: Metrics) -> Self {
        Self {
            registry: Arc::new(registry),
            metrics,
        }
    }

    /// The text a scrape gets.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        for family in self.metrics.summaries() {
            family.encode(&mut out)?;
        }
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}
