//! The shared end-to-end environment: control plane, simulators, the image registry, and one
//! `ferrosync controller` for the whole binary (it watches every namespace, so two would
//! fight over the same objects). The two-cluster tests add a second site, `west`, with
//! its own control plane and simulators, and ferrosync installed in it as users install it
//! (the registry is shared, as a public one is).
//!
//! East's controller stays a host process with a kubeconfig: the fault-injection tests stop
//! it and start their own with per-test settings (`lifecycle_own_*`), which a Deployment
//! shared by the whole binary cannot give them; the in-cluster tier and west cover the
//! installed controller.

use std::{path::Path, sync::OnceLock};

use crate::support::{
    ControlPlane, Options, components, control_plane_with,
    controller::{MetricsTls, RunningController},
    deploy,
    incluster::{self, Images},
    registry::{self, Registry},
    sim::{
        Cluster, Site,
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
    site(control_plane_with(Options::end_to_end()), &CONTROLLER)
}

/// The second cluster, `west`, with ferrosync installed in it.
pub struct West {
    /// Its control plane.
    pub cp: &'static ControlPlane,
}

/// The second cluster, `west`: its own control plane and simulators, with address ranges
/// of its own (see `support::sim::addresses`), and ferrosync installed from
/// `deploy/overlays/test-cluster` with `kubectl apply --server-side`: two replicas under
/// leader election with their projected token, the controller and mover images pulled
/// from the registry with a pull secret (`support::incluster`), this file's settings.
/// Started by the first two-cluster test, in parallel with `east` ([`env`]) when that is
/// not up yet.
pub fn west() -> West {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let east = std::thread::spawn(env);
    let cp = control_plane_with(Options {
        apiserver_args: vec![components::SERVICE_ACCOUNT_ADMISSION.into()],
        ..Options::end_to_end().at(Site::West)
    });
    Cluster::start(cp);
    INSTALLED.get_or_init(|| {
        let settings = settings();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Its own runtime: the caller's test runtime is busy awaiting this.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(incluster::install_configured(
                        cp,
                        Path::new(incluster::OVERLAY),
                        Images::Registry,
                        &settings,
                    ))
            })
            .join()
        })
        .expect("installing ferrosync in west");
    });
    east.join().expect("east started");
    West { cp }
}

impl West {
    /// The controller's Deployment, pods and their logs' ends, for failure messages.
    pub fn controller_tail(&self) -> String {
        incluster::describe(self.cp)
    }
}

/// The controller's settings in these tests, on both sites (the mover image and its pull
/// secret come with the install).
fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("FERROSYNC_MOVER__BACKOFF_LIMIT", BACKOFF_LIMIT.to_string()),
        ("FERROSYNC_REQUEUE__POLL", "500ms".into()),
        ("FERROSYNC_MOVER__PROGRESS_INTERVAL", "500ms".into()),
        ("FERROSYNC_REQUEUE__IDLE", "10s".into()),
        (
            "FERROSYNC_MOVER__FAILURE_BACKOFF_MIN",
            format!("{}s", FAILURE_BACKOFF_MIN.as_secs()),
        ),
        (
            "FERROSYNC_MOVER__FAILURE_BACKOFF_MAX",
            format!("{}s", FAILURE_BACKOFF_MAX.as_secs()),
        ),
        ("FERROSYNC_MOVER__START_TIMEOUT", START_TIMEOUT.into()),
    ]
}

/// One site: its simulators and its controller, started once.
fn site(cp: &'static ControlPlane, controller: &'static OnceLock<RunningController>) -> Env {
    images::register(SHELL_IMAGE, Image::binary("/bin/sh", "/bin/sh"));
    // The movers run from the mover image scripts/build-images.sh built, pulled from a
    // registry that wants a password: the node runs them in the image's own root.
    let registry = registry::shared();
    Cluster::start(cp);
    let controller = controller.get_or_init(|| {
        // As its own ServiceAccount, bound by deploy/'s RBAC: the suite proves those rights
        // suffice, and the audit log shows which it uses.
        let identity = deploy::controller_identity(cp);
        pull_secret(cp, registry);
        let pull_secrets = format!("[\"{PULL_SECRET}\"]");
        let settings = settings();
        let mut env: Vec<(&str, &str)> = vec![
            ("POD_NAMESPACE", deploy::NAMESPACE),
            ("FERROSYNC_MOVER__IMAGE", &registry.mover_image),
            ("FERROSYNC_MOVER__IMAGE_PULL_SECRETS", &pull_secrets),
        ];
        env.extend(settings.iter().map(|(k, v)| (*k, v.as_str())));
        RunningController::start_with(cp, &identity, &env, Some(metrics_tls(cp)))
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
