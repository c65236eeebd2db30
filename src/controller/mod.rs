//! The controller: reconcilers for both kinds and the trigger/schedule state machine.
//!
//! `run` wires configuration, telemetry and the Kubernetes client together; the
//! reconcile logic lives in submodules and never blocks the probe endpoint.

mod startup;

use std::{path::PathBuf, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::{
    config::{self, Config},
    telemetry::{self, Health},
};

pub use startup::{CrdCheck, check_crds};

/// Arguments of `ferrosync controller`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file, layered over the built-in defaults (config/default.toml) and
    /// under FERROSYNC_* environment variables.
    #[arg(long, env = "FERROSYNC_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Failures that stop the controller at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// Logging or the probe endpoint could not start.
    #[error(transparent)]
    Telemetry(#[from] telemetry::Error),
    /// No usable kubeconfig or in-cluster credentials.
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let config = Config::load(args.config.as_deref())?;
    telemetry::init(&config.log)?;
    let health = Health::default();
    let registry = Arc::new(Registry::default());
    let (addr, _server) = telemetry::serve(config.server.listen, health.clone(), registry).await?;
    info!(%addr, version = crate::VERSION, "serving /healthz, /readyz and /metrics");

    let client = kube::Client::try_default().await.map_err(Error::Connect)?;
    tokio::select! {
        () = wait_for_crds(&client, &config) => {
            health.set_ready(true);
            info!("CRDs are installed; ready");
        }
        () = shutdown_signal() => return Ok(()),
    }
    shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

/// Retries the CRD check until it passes. Until then /readyz answers 503 and each attempt
/// logs what is missing, so `kubectl describe pod` and the logs say why.
async fn wait_for_crds(client: &kube::Client, config: &Config) {
    let mut delay = config.requeue.error_min;
    loop {
        match check_crds(client).await {
            Ok(CrdCheck::Installed) => return,
            Ok(CrdCheck::Missing(missing)) => warn!(
                missing = %missing.join(", "),
                "CRDs not installed; apply them with `kubectl apply -k deploy/` (or `ferrosync crd | kubectl apply -f -`)"
            ),
            Err(err) => warn!(%err, "checking the CRDs failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2)
            .min(config.requeue.error_max)
            .max(Duration::from_millis(1));
    }
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
