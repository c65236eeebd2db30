//! Leader election through a coordination Lease, so several replicas can run and only one
//! reconciles.
//!
//! The holder keeps its own expiry timer: it stops reconciling once it has gone
//! `lease_duration - renew_before` without a successful renewal, counted from when it
//! *sent* the last one, whether its renewals fail, hang or are refused. A standby takes the
//! Lease only a full `lease_duration` after it *saw* the last renewal, so the holder has
//! stopped before anyone else can start (see `timing`). Every failed renewal is logged.
//! A replica that stopped leading exits; its pod restarts and campaigns again.
//!
//! Writes are JSON merge patches carrying the `resourceVersion` they were based on, so two
//! replicas that race for a free Lease cannot both win.

mod timing;

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::config::LeaderElectionConfig;
pub use timing::{Sighting, Timing};

/// The namespace of the Lease when neither the config nor the pod names one.
pub const DEFAULT_NAMESPACE: &str = "ferrosync-system";

/// Why this replica no longer leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded in time: the Lease may be about to expire.
    NotRenewed,
    /// Another replica holds the Lease.
    TakenOver,
}

impl Lost {
    /// For the log line and the exit message.
    pub fn as_str(self) -> &'static str {
        match self {
            Lost::NotRenewed => "the Lease could not be renewed in time",
            Lost::TakenOver => "another replica holds the Lease",
        }
    }
}

/// What the election tells the controller: `Some(deadline)` while this replica leads (it
/// must stop reconciling by then unless a renewal moves it), `None` otherwise.
type Tenure = Option<Instant>;

/// Leadership: a deadline that follows the Lease.
pub struct Leadership {
    rx: watch::Receiver<Tenure>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts campaigning for the Lease.
pub fn campaign(client: Client, config: &LeaderElectionConfig) -> Leadership {
    let namespace = if config.namespace.is_empty() {
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| DEFAULT_NAMESPACE.into())
    } else {
        config.namespace.clone()
    };
    let identity = identity();
    info!(lease = %config.lease_name, %namespace, %identity, "campaigning for leadership");
    let (tx, rx) = watch::channel(None);
    let (stop, stopped) = oneshot::channel();
    let elector = Elector {
        api: Api::namespaced(client, &namespace),
        name: config.lease_name.clone(),
        identity,
        timing: Timing {
            lease: config.lease_duration,
            margin: config.renew_before,
        },
        version: String::new(),
        tx,
    };
    Leadership {
        rx,
        stop: Some(stop),
        task: tokio::spawn(elector.run(stopped)),
    }
}

impl Leadership {
    /// Resolves once this replica holds the Lease.
    pub async fn acquired(&mut self) {
        if self.rx.wait_for(Option::is_some).await.is_err() {
            // The elector stopped; treat as never acquired.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica must stop reconciling. Its own timer: it fires at the
    /// deadline even while the elector's renewal request hangs.
    pub async fn lost(&mut self) -> Lost {
        loop {
            let Some(deadline) = *self.rx.borrow_and_update() else {
                return Lost::TakenOver;
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Lost::NotRenewed,
                changed = self.rx.changed() => if changed.is_err() { return Lost::NotRenewed },
            }
        }
    }

    /// Releases the Lease, so a standby takes over without waiting for it to expire.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Bounded: a release that cannot reach the apiserver must not hold up the exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The resourceVersion of our last write, the precondition of the next.
    version: String,
    tx: watch::Sender<Tenure>,
}

/// How a write to the Lease went.
enum Write {
    Done,
    /// Someone else changed the Lease since we read it.
    Conflict,
    Failed(String),
}

impl Elector {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let renewed_at = tokio::select! {
            at = self.acquire() => at,
            _ = &mut stop => return,
        };
        let _ = self.tx.send(Some(Instant::from_std(
            self.timing.step_down_at(renewed_at.into_std()),
        )));
        tokio::select! {
            () = self.hold(renewed_at) => {}
            _ = &mut stop => self.release().await,
        }
        let _ = self.tx.send(None);
    }

    /// Campaigns until this replica holds the Lease; returns when its winning write was
    /// sent.
    async fn acquire(&mut self) -> Instant {
        let poll = self.timing.poll_every();
        let mut sighting: Option<Sighting> = None;
        loop {
            let now = Instant::now();
            let lease = match tokio::time::timeout(poll, self.api.get_opt(&self.name)).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(err)) => {
                    warn!(%err, lease = %self.name, "reading the Lease failed; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Err(_) => {
                    warn!(lease = %self.name, "reading the Lease timed out; retrying");
                    continue;
                }
            };
            let Some(lease) = lease else {
                let start = Instant::now();
                if let Write::Done = self.create().await {
                    return start;
                }
                tokio::time::sleep(poll).await;
                continue;
            };
            let spec = lease.spec.clone().unwrap_or_default();
            let seen = Sighting::update(
                sighting.as_ref(),
                lease.metadata.resource_version.clone().unwrap_or_default(),
                spec.holder_identity.clone(),
                Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
                )
                .max(self.timing.lease),
                now.into_std(),
            );
            let free_at = Instant::from_std(seen.free_at());
            if Instant::now() >= free_at {
                let start = Instant::now();
                self.version = seen.version.clone();
                let transitions = spec.lease_transitions.unwrap_or(0)
                    + i32::from(seen.holder.as_deref() != Some(self.identity.as_str()));
                match self.write(self.take_spec(transitions)).await {
                    Write::Done => return start,
                    Write::Conflict => debug!("another replica took the Lease first"),
                    Write::Failed(err) => warn!(%err, "taking the Lease failed; retrying"),
                }
                sighting = None;
                continue;
            }
            debug!(holder = ?seen.holder, "the Lease is held; waiting");
            sighting = Some(seen);
            tokio::time::sleep_until(free_at.min(Instant::now() + poll)).await;
        }
    }

    /// Renews until a renewal fails for too long or another replica holds the Lease.
    async fn hold(&mut self, mut renewed_at: Instant) {
        let every = self.timing.renew_every();
        let mut next = renewed_at + every;
        loop {
            let deadline = Instant::from_std(self.timing.step_down_at(renewed_at.into_std()));
            tokio::time::sleep_until(next.min(deadline)).await;
            let start = Instant::now();
            if start >= deadline {
                return;
            }
            let outcome = tokio::time::timeout_at(deadline, self.renew()).await;
            match outcome {
                Ok(Write::Done) => {
                    renewed_at = start;
                    let _ = self.tx.send(Some(Instant::from_std(
                        self.timing.step_down_at(start.into_std()),
                    )));
                }
                Ok(Write::Conflict) => {
                    warn!(lease = %self.name, "another replica holds the Lease");
                    return;
                }
                Ok(Write::Failed(err)) => warn!(
                    %err,
                    lease = %self.name,
                    stop_in = ?deadline.saturating_duration_since(Instant::now()),
                    "renewing the Lease failed; retrying"
                ),
                Err(_) => warn!(
                    lease = %self.name,
                    "renewing the Lease got no answer before this replica must stop leading"
                ),
            }
            next = start + every;
        }
    }

    async fn renew(&mut self) -> Write {
        match self.write(json!({"renewTime": now()})).await {
            // Someone changed the Lease (a label, a field we do not own): still ours?
            Write::Conflict => match self.api.get_opt(&self.name).await {
                Ok(Some(lease))
                    if lease
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(self.identity.as_str()) =>
                {
                    self.version = lease.metadata.resource_version.unwrap_or_default();
                    self.write(json!({"renewTime": now()})).await
                }
                Ok(_) => Write::Conflict,
                Err(err) => Write::Failed(err.to_string()),
            },
            other => other,
        }
    }

    async fn release(&mut self) {
        match self.write(json!({"holderIdentity": null})).await {
            Write::Done => info!(lease = %self.name, "released the Lease"),
            Write::Conflict => {}
            Write::Failed(err) => warn!(%err, "releasing the Lease failed; it expires by itself"),
        }
    }

    fn take_spec(&self, transitions: i32) -> serde_json::Value {
        let now = now();
        json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds(),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        })
    }

    /// Whole seconds, rounded up: a standby must never wait less than the holder assumes.
    fn lease_seconds(&self) -> i32 {
        let d = self.timing.lease;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    async fn create(&mut self) -> Write {
        let lease: Lease = match serde_json::from_value(json!({
            "metadata": {"name": self.name},
            "spec": self.take_spec(0),
        })) {
            Ok(lease) => lease,
            Err(err) => return Write::Failed(err.to_string()),
        };
        let created = tokio::time::timeout(
            self.timing.poll_every(),
            self.api.create(&PostParams::default(), &lease),
        )
        .await;
        self.outcome(created)
    }

    /// A merge patch of the Lease's spec, based on `self.version`.
    async fn write(&mut self, spec: serde_json::Value) -> Write {
        let patch = json!({
            "metadata": {"resourceVersion": self.version},
            "spec": spec,
        });
        let written = tokio::time::timeout(
            self.timing.poll_every(),
            self.api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        self.outcome(written)
    }

    fn outcome(
        &mut self,
        result: Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed>,
    ) -> Write {
        match result {
            Ok(Ok(lease)) => {
                self.version = lease.metadata.resource_version.unwrap_or_default();
                Write::Done
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Write::Conflict,
            Ok(Err(err)) => Write::Failed(err.to_string()),
            Err(_) => Write::Failed("no answer in time".into()),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
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
