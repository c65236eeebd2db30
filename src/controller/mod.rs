//! The controller: reconcilers for both kinds and the trigger/schedule state machine.
//!
//! `run` wires configuration, telemetry and the Kubernetes client together; the
//! reconcile logic lives in submodules and never blocks the probe endpoint.

mod apply;
mod binding_overlap;
mod caches;
mod cleanup;
pub mod conditions;
mod context;
mod copy_trigger;
mod decide;
mod decisions;
mod destination;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod image;
mod iteration;
mod key_rotation;
mod keys;
mod lag;
mod leader;
mod mover_env;
mod mover_pod;
mod mover_run;
mod object_backoff;
mod pair_release;
mod pipeline;
mod pit;
mod populator;
mod progress;
mod pull_secrets;
mod recovery_point;
mod retry;
pub mod schedule;
pub mod servable;
mod source;
mod stalled;
mod startup;
mod takeover;
pub(crate) mod topology;
pub mod trigger;
mod trim;
mod unchanged;
mod validate;

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller,
        controller::{self, Action},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::{
    api::{ReplicationDestination, ReplicationSource},
    config::{self, Config},
    policy::{
        EngineOptions, credentials::KubeCredentials, http::LiveTransport, metrics::PolicyMetrics,
        oci, reload,
    },
    resources::{Side, names},
    telemetry::{self, Health, Metrics, ObjectLabels},
};

pub use context::Context;
pub use error::Error as ReconcileError;
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
    /// This replica stopped leading (the Lease was not renewed in time, or another replica
    /// holds it); it exits so that only one replica reconciles.
    #[error("stopped leading ({0}); exiting so only the new leader reconciles")]
    LostLeadership(&'static str),
    /// A configured policy plugin or bundle could not be loaded.
    #[error("loading policy plugins: {0}")]
    Policy(#[source] crate::policy::LoadError),
    /// No usable kubeconfig or in-cluster credentials.
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let config = Config::load(args.config.as_deref())?;
    telemetry::init(&config.log)?;
    let health = Health::default();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let policy_metrics = PolicyMetrics::default();
    policy_metrics.register(&mut registry);
    let exposition = telemetry::Exposition::new(registry, metrics.clone());
    let (addr, _probes) = telemetry::serve_probes(config.server.listen, health.clone()).await?;
    info!(%addr, version = crate::VERSION, "serving /healthz and /readyz");

    let client = kube::Client::try_default().await.map_err(Error::Connect)?;
    let _metrics_server = serve_metrics(&config.metrics, exposition, &client).await?;
    // Namespace labels (for label-selecting policy bindings) come from the pipeline's
    // Namespace metadata cache, started with the controllers.
    let caches = caches::Caches::new();
    let options = || EngineOptions {
        credentials: Arc::new(KubeCredentials::new(client.clone(), own_namespace())),
        transport: Arc::new(LiveTransport),
        metrics: policy_metrics.clone(),
        namespaces: Arc::new(caches.namespace_labels()),
        pull_secrets: Arc::new(oci::KubePullSecrets::new(client.clone(), &own_namespace())),
    };
    // Bundles from a registry may have to wait for it (retried with backoff, unready).
    let policy = tokio::select! {
        engine = oci::start_engine(&config.policy, options) => engine.map_err(Error::Policy)?,
        () = shutdown_signal() => return Ok(()),
    };
    for plugin in policy.plugins() {
        info!(point = %plugin.point, plugin = %plugin.name, "policy plugin loaded");
    }
    // Bundles mounted from ConfigMaps change under a running controller: reload them,
    // keeping the loaded set when the new one is invalid.
    let _reloader = reload::spawn_watcher(
        policy.clone(),
        config.policy.clone(),
        config.policy.engine.reload_interval,
    );
    tokio::select! {
        () = wait_for_crds(&client, &config) => {
            health.set_ready(true);
            info!("CRDs are installed; ready");
        }
        () = shutdown_signal() => return Ok(()),
    }
    let election = config.leader_election.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        metrics,
        policy,
        caches,
    ));
    if !election.enabled {
        run_controllers(ctx).await;
        info!("shutting down");
        return Ok(());
    }
    let mut leadership = leader::campaign(client, &election);
    tokio::select! {
        () = leadership.acquired() => info!("became the leader; reconciling"),
        () = shutdown_signal() => {
            leadership.release().await;
            return Ok(());
        }
    }
    tokio::select! {
        () = run_controllers(ctx) => {
            info!("shutting down; releasing the lease");
            leadership.release().await;
            Ok(())
        }
        lost = leadership.lost() => {
            // Dropping the controllers' future above cancelled every reconcile at its next
            // await: nothing more is sent to the apiserver from here on.
            tracing::error!(reason = lost.as_str(), "stepped down: stopped reconciling");
            Err(Error::LostLeadership(lost.as_str()))
        }
    }
}

/// Starts the /metrics endpoint as configured.
async fn serve_metrics(
    config: &config::MetricsConfig,
    exposition: telemetry::Exposition,
    client: &kube::Client,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let access = if config.secure {
        let (tls, source) = telemetry::tls::server_config(
            config.cert_file.as_deref(),
            config.key_file.as_deref(),
            &config.self_signed_names,
        )
        .map_err(telemetry::Error::from)?;
        info!(certificate = %source, "metrics over HTTPS, callers checked with TokenReview and SubjectAccessReview");
        telemetry::MetricsAccess::Checked {
            tls,
            client: client.clone(),
        }
    } else {
        warn!("metrics in plain HTTP without authentication (development, loopback only)");
        telemetry::MetricsAccess::Open
    };
    let (addr, task) = telemetry::serve_metrics(config.listen, exposition, access).await?;
    info!(%addr, "serving /metrics");
    Ok(task)
}

/// Runs both reconcilers until a shutdown signal, then lets in-flight reconciles finish.
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let Some(caches) = ctx.caches.start(&client, CACHES_READY_WITHIN).await else {
        warn!("the controllers run already");
        return;
    };
    let watcher = watcher::Config::default();
    let limits = controller::Config::default().concurrency(ctx.config.reconcile.concurrency);
    let (rd_store, rd_changes) = caches::own_kind(
        Api::<ReplicationDestination>::all(client.clone()),
        watcher.clone(),
    );
    let destinations =
        Controller::for_stream(rd_changes, rd_store.clone()).with_config(limits.clone());
    let rd_store_for_secrets = rd_store.clone();
    let destinations = destinations
        .owns_shared_stream(caches.jobs.clone())
        .owns_shared_stream(caches.services)
        // A fixed key Secret must clear an Error at once, not at the next idle requeue.
        // Metadata only (`PartialObjectMeta`): the apiserver never sends this watch a
        // Secret's data.
        .watches_shared_stream(caches.secrets.clone(), move |secret| {
            referencing(
                &rd_store_for_secrets,
                &secret,
                Side::Destination,
                |rd: &ReplicationDestination| {
                    rd.spec
                        .rsync_tls
                        .as_ref()
                        .and_then(|t| t.key_secret.clone())
                },
            )
        })
        .watches_shared_stream(
            caches.namespaces.clone(),
            in_relabelled_namespace(ctx.clone(), rd_store.clone()),
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(
            pipeline::reconcile::<ReplicationDestination>,
            error_policy,
            ctx.clone(),
        )
        .for_each(|res| async move { log_result("ReplicationDestination", res) });
    let (rs_store, rs_changes) =
        caches::own_kind(Api::<ReplicationSource>::all(client.clone()), watcher);
    let sources = Controller::for_stream(rs_changes, rs_store.clone()).with_config(limits);
    let sweep = tokio::spawn(sweep_metrics(
        ctx.clone(),
        rd_store.clone(),
        rs_store.clone(),
    ));
    let rs_store_for_secrets = rs_store.clone();
    let sources = sources
        .owns_shared_stream(caches.jobs)
        .watches_shared_stream(caches.secrets, move |secret| {
            referencing(
                &rs_store_for_secrets,
                &secret,
                Side::Source,
                |rs: &ReplicationSource| {
                    rs.spec
                        .rsync_tls
                        .as_ref()
                        .and_then(|t| t.key_secret.clone())
                },
            )
        })
        .watches_shared_stream(
            caches.namespaces,
            in_relabelled_namespace(ctx.clone(), rs_store),
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(
            pipeline::reconcile::<ReplicationSource>,
            error_policy,
            ctx.clone(),
        )
        .for_each(|res| async move { log_result("ReplicationSource", res) });
    // The volume populator: PVCs whose dataSourceRef names a ReplicationDestination, and
    // the prime PVCs it makes for them.
    // The pipeline's PVC cache is its input: one PVC watch for both. A prime PVC is owned
    // by the user's PVC it fills, so its changes trigger that one.
    let populated = Controller::for_shared_stream(caches.pvcs.clone(), ctx.caches.pvc_store())
        .with_config(controller::Config::default().concurrency(ctx.config.reconcile.concurrency))
        .owns_shared_stream(caches.pvcs)
        .graceful_shutdown_on(shutdown_signal())
        .run(populator::reconcile, error_policy, ctx)
        .for_each(|res| async move { log_result("PersistentVolumeClaim", res) });
    tokio::join!(destinations, sources, populated);
    sweep.abort();
    for task in caches.tasks {
        task.abort();
    }
}

/// How long the controllers wait for the caches' first listing before they start anyway
/// (a pass then waits for what it lacks).
const CACHES_READY_WITHIN: Duration = Duration::from_secs(60);

/// A Namespace's change reconciles its objects when some policy binding selects by
/// labels: which bundle answers may have changed, and so may the `PolicyBindingOverlap`
/// condition, which should not wait for the idle requeue. Without such bindings,
/// Namespace changes concern no object.
fn in_relabelled_namespace<K>(
    ctx: Arc<Context>,
    store: Store<K>,
) -> impl Fn(Arc<PartialObjectMeta<Namespace>>) -> Vec<ObjectRef<K>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |ns| {
        if !ctx.policy.selects_by_labels() {
            return Vec::new();
        }
        let name = ns.name_any();
        store
            .state()
            .iter()
            .filter(|obj| obj.namespace().as_deref() == Some(name.as_str()))
            .map(|obj| ObjectRef::from_obj(obj.as_ref()))
            .collect()
    }
}

/// The objects in the Secret's namespace whose key Secret (given, or generated for
/// `side`) is this one.
fn referencing<K>(
    store: &Store<K>,
    secret: &PartialObjectMeta<Secret>,
    side: Side,
    key_secret: impl Fn(&K) -> Option<String>,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (name, namespace) = (secret.name_any(), secret.namespace());
    store
        .state()
        .iter()
        .filter(|obj| obj.namespace() == namespace)
        .filter(|obj| {
            key_secret(obj).is_some_and(|k| k == name)
                || names::key_secret(side, &obj.name_any()) == name
                || (side == Side::Source && names::legacy_key_secret(&obj.name_any()) == name)
        })
        .map(|obj| ObjectRef::from_obj(obj.as_ref()))
        .collect()
}

/// Removes the metric series of deleted objects, every `requeue.poll`.
async fn sweep_metrics(
    ctx: Arc<Context>,
    rds: Store<ReplicationDestination>,
    rss: Store<ReplicationSource>,
) {
    let mut tick = tokio::time::interval(ctx.config.requeue.poll);
    loop {
        tick.tick().await;
        let mut alive = std::collections::HashSet::new();
        for rd in rds.state() {
            alive.insert(ObjectLabels::new(
                &rd.namespace().unwrap_or_default(),
                &rd.name_any(),
                "destination",
            ));
        }
        for rs in rss.state() {
            alive.insert(ObjectLabels::new(
                &rs.namespace().unwrap_or_default(),
                &rs.name_any(),
                "source",
            ));
        }
        ctx.metrics.forget(&alive);
    }
}

/// Transient failures back off per object, doubling up to `requeue.error_max`.
fn error_policy<K: ResourceExt + kube::Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let delay = ctx.backoff(&key);
    ctx.metrics
        .observe_reconcile(K::kind(&()).as_ref(), Some(err.reason()));
    warn!(object = %key, reason = err.reason(), %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(kind: &str, res: Result<T, E>) {
    if let Err(err) = res {
        // Watch errors and objects that fail to deserialise are reported, never fatal.
        warn!(kind, %err, "controller stream error");
    }
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

/// The namespace the controller runs in: where Secrets named by plugin grants live.
pub(crate) fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE").unwrap_or_else(|_| leader::DEFAULT_NAMESPACE.into())
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
