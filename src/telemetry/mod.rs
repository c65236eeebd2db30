//! Tracing set-up and the HTTP endpoint for probes and metrics.
//!
//! Keys and other secrets must never reach a log line: callers log Secret *names* only.

mod metrics;
mod server;

pub use metrics::{Metrics, ObjectLabels};

pub use server::{Health, serve};

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
