//! One benchmark's control plane and controller, and the figures sampled at a moment.
//!
//! The control plane is the end-to-end tier's (real apiserver, etcd, kube-controller-manager
//! and kube-scheduler; simulated node and CSI driver) with the audit log on, and with
//! kube-controller-manager's client rate limit raised: at its default 20 QPS it, not the
//! controller measured, would set the pace (it makes about 14 requests per pair).
//! The controller runs as its own ServiceAccount with `deploy/`'s RBAC, so the audit log
//! tells its requests from everyone else's, with the shipped configuration apart from the
//! mover image and a quieter log.

use std::time::{Duration, Instant};

use crate::{
    audit::{AuditLog, Mark},
    procfs,
    support::{
        ControlPlane, Options, control_plane_with,
        controller::RunningController,
        deploy,
        sim::{
            Cluster,
            node::images::{self, Image},
        },
    },
};

/// The mover image; the node simulator maps it to [`trivial_mover`].
const MOVER_IMAGE: &str = "ferrosync.test/trivial-mover:scale";

/// The audit-log user of the controller (its ServiceAccount).
pub const CONTROLLER_USER: &str = "system:serviceaccount:ferrosync-system:ferrosync";

/// kube-controller-manager's `--kube-api-qps` (`FERROSYNC_SCALE_KCM_QPS`, default 500;
/// its burst is twice that).
pub fn kcm_qps() -> u32 {
    std::env::var("FERROSYNC_SCALE_KCM_QPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The running benchmark environment.
pub struct Bench {
    pub cp: &'static ControlPlane,
    pub controller: RunningController,
    pub audit: AuditLog,
    apiserver: u32,
}

/// CPU counters, the audit log's end and the load at one moment.
pub struct Sample {
    pub at: Instant,
    pub audit: Mark,
    pub controller_cpu: f64,
    pub apiserver_cpu: f64,
    /// The controller's peak resident memory so far, in MiB.
    pub controller_peak_rss: f64,
    pub load: String,
}

impl Bench {
    /// Starts the control plane, the simulators and the controller, and waits until the
    /// controller is ready, so that its start-up requests precede any measured window.
    pub async fn start() -> Bench {
        let qps = kcm_qps();
        let cp = control_plane_with(Options {
            controller_manager_args: vec![
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={}", 2 * qps),
            ],
            ..Options::end_to_end()
        });
        images::register(
            MOVER_IMAGE,
            Image::binary(
                trivial_mover(&cp.dir),
                ferrosync::resources::job::MOVER_BINARY,
            ),
        );
        Cluster::start(cp);
        let identity = deploy::controller_identity(cp);
        let mut controller = RunningController::start(
            cp,
            &identity,
            &[
                ("POD_NAMESPACE", deploy::NAMESPACE),
                ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
                ("FERROSYNC_LOG__LEVEL", "warn"),
                // The shipped retry backoff, not the harness's short test one.
                ("FERROSYNC_REQUEUE__ERROR_MIN", "1s"),
                ("FERROSYNC_REQUEUE__ERROR_MAX", "5m"),
            ],
        );
        controller
            .wait_for_status("/readyz", 200, Duration::from_secs(300))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let apiserver =
            procfs::find(&cp.pids(), "kube-apiserver").expect("the kube-apiserver process");
        let audit = AuditLog::new(cp.audit_log.as_deref().expect("the audit log is on"));
        Bench {
            cp,
            controller,
            audit,
            apiserver,
        }
    }

    /// The counters now.
    pub fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            audit: self.audit.mark(),
            controller_cpu: procfs::cpu_seconds(self.controller.pid()),
            apiserver_cpu: procfs::cpu_seconds(self.apiserver),
            controller_peak_rss: self.controller_peak_rss_mib(),
            load: procfs::load_average(),
        }
    }

    /// The controller's peak resident memory so far, in MiB.
    pub fn controller_peak_rss_mib(&self) -> f64 {
        procfs::peak_rss_mib(self.controller.pid())
    }

    /// The last lines of the controller's log, for a failure message.
    pub fn controller_log_tail(&self) -> String {
        let text = self.controller.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(50)..].join("\n")
    }
}

/// A mover that writes a successful summary where the kubelet reads it and exits 0, so the
/// benchmark measures the controller and the control plane, not N rsync processes.
fn trivial_mover(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("trivial-mover.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nprintf '{\"role\":\"%s\",\"result\":\"succeeded\",\"exitCode\":0,\"durationSeconds\":0}' \"$2\" > /dev/termination-log\nexit 0\n",
    )
    .expect("writing the trivial mover");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("making the trivial mover executable");
    path
}
