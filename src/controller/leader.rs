//! Leader election through a coordination Lease, so several replicas can run and only one
//! reconciles. A replica that loses the Lease stops at once rather than racing the new
//! leader; its pod restarts and campaigns again.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::info;

use crate::config::LeaderElectionConfig;

/// The namespace of the Lease when neither the config nor the pod names one.
pub const DEFAULT_NAMESPACE: &str = "ferrosync-system";

/// Leadership: a flag that follows the Lease.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Starts campaigning for the Lease.
pub async fn campaign(
    client: Client,
    config: &LeaderElectionConfig,
) -> Result<Leadership, LeaseManagerError> {
    let namespace = if config.namespace.is_empty() {
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| DEFAULT_NAMESPACE.into())
    } else {
        config.namespace.clone()
    };
    let identity = identity();
    info!(lease = %config.lease_name, %namespace, %identity, "campaigning for leadership");
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_field_manager(format!("ferrosync-leader-{identity}"))
        .with_duration(whole_seconds(config.lease_duration))
        .with_grace(whole_seconds(config.renew_before))
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    Ok(Leadership { rx, task })
}

impl Leadership {
    /// Resolves once this replica holds the Lease.
    pub async fn acquired(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                // The manager stopped; treat as never acquired.
                return std::future::pending().await;
            }
        }
    }

    /// Resolves when this replica no longer holds the Lease.
    pub async fn lost(&mut self) {
        while *self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Releases the Lease, so a standby takes over without waiting for it to expire.
    pub async fn release(self) {
        drop(self.rx);
        let _ = self.task.await;
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The pod's name where Kubernetes provides it, else the host name and process id, so two
/// replicas on one machine (as in tests) differ.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|_| "ferrosync".into());
    format!("{host}-{}", std::process::id())
}
