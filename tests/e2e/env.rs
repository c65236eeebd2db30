//! The shared end-to-end environment: control plane, simulators, the image registry, and one
//! `ferrosync controller` for the whole binary (it watches every namespace, so two would
//! fight over the same objects).

use std::sync::OnceLock;

use crate::support::{
    ControlPlane, Options, control_plane_with,
    controller::{MetricsTls, RunningController},
    deploy,
    registry::{self, Registry},
    sim::{
        Cluster,
        node::images::{self, Image},
    },
};

/// The Secret in the controller's namespace with the test registry's credentials; the
/// controller copies it next to every mover (`mover.image_pull_secrets`).
pub const PULL_SECRET: &str = "ferrosync-registry";
/// A shell image (the host's /bin/sh), for tests of the simulators themselves.
pub const SHELL_IMAGE: &str = "ferrosync.test/shell:1";
/// The Job's backoffLimit in these tests: one retry keeps a failing test short.
pub const BACKOFF_LIMIT: i32 = 1;
/// The wait after a mover's first permanent failure, short for the tests.
pub const FAILURE_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest wait between Jobs of a mover that keeps failing.
pub const FAILURE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// How long mover pods may go without starting before the condition says so.
pub const START_TIMEOUT: &str = "30s";

/// Everything a test needs, started on first use.
pub struct Env {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// The controller (its log helps when a test fails).
    pub controller: &'static RunningController,
}

/// The environment, started by the first test that asks.
pub fn env() -> Env {
    static CONTROLLER: OnceLock<RunningController> = OnceLock::new();
    let cp = control_plane_with(Options::end_to_end());
    images::register(SHELL_IMAGE, Image::binary("/bin/sh", "/bin/sh"));
    // The movers run from the mover image scripts/build-images.sh built, pulled from a
    // registry that wants a password: the node runs them in the image's own root.
    let registry = registry::shared();
    Cluster::start(cp);
    let controller = CONTROLLER.get_or_init(|| {
        let limit = BACKOFF_LIMIT.to_string();
        let backoff_min = format!("{}s", FAILURE_BACKOFF_MIN.as_secs());
        let backoff_max = format!("{}s", FAILURE_BACKOFF_MAX.as_secs());
        // As its own ServiceAccount, bound by deploy/'s RBAC: the suite proves those rights
        // suffice, and the audit log shows which it uses.
        let identity = deploy::controller_identity(cp);
        pull_secret(cp, registry);
        RunningController::start_with(
            cp,
            &identity,
            &[
                ("POD_NAMESPACE", deploy::NAMESPACE),
                ("FERROSYNC_MOVER__IMAGE", &registry.mover_image),
                (
                    "FERROSYNC_MOVER__IMAGE_PULL_SECRETS",
                    &format!("[\"{PULL_SECRET}\"]"),
                ),
                ("FERROSYNC_MOVER__BACKOFF_LIMIT", &limit),
                ("FERROSYNC_REQUEUE__POLL", "500ms"),
                ("FERROSYNC_MOVER__PROGRESS_INTERVAL", "500ms"),
                ("FERROSYNC_REQUEUE__IDLE", "10s"),
                ("FERROSYNC_MOVER__FAILURE_BACKOFF_MIN", &backoff_min),
                ("FERROSYNC_MOVER__FAILURE_BACKOFF_MAX", &backoff_max),
                ("FERROSYNC_MOVER__START_TIMEOUT", START_TIMEOUT),
            ],
            Some(metrics_tls(cp)),
        )
    });
    Env { cp, controller }
}

/// The registry's credentials as a `kubernetes.io/dockerconfigjson` Secret in the
/// controller's namespace, as a site stores its registry login.
fn pull_secret(cp: &ControlPlane, registry: &Registry) {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": PULL_SECRET, "namespace": deploy::NAMESPACE},
        "stringData": {".dockerconfigjson": registry.docker_config_json(&registry.password)},
    });
    deploy::apply(cp, &secret.to_string());
}

/// /metrics as deployed: HTTPS with a certificate from files (as a mounted Secret gives
/// them), callers checked through the apiserver; the harness reads it as a ServiceAccount
/// bound to `ferrosync-metrics-reader`, as Prometheus would.
fn metrics_tls(cp: &ControlPlane) -> MetricsTls {
    let cert = cp
        .pki
        .serving_cert("controller-metrics", "ferrosync-metrics", &["IP:127.0.0.1"])
        .expect("metrics serving certificate");
    deploy::user_roles(cp);
    let token = deploy::service_account_token(cp, deploy::NAMESPACE, "metrics-scraper", true);
    MetricsTls {
        cert: cert.cert,
        key: cert.key,
        ca: cp.pki.ca_cert.clone(),
        token,
    }
}

impl Env {
    /// The end of the controller's log, for failure messages.
    pub fn controller_tail(&self) -> String {
        let log = self.controller.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
