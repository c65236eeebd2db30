//! Reliability under load and under deletion, with asserted outcomes: many objects that
//! wait keep the apiserver quiet (status writes and Events counted in its audit log), and
//! a namespace deleted in the middle of a transfer leaves nothing behind.
//!
//! Its own binary and controller: the load would slow the end-to-end suite's controller,
//! and the controller here backs off as in production (not the suite's 1 s).

mod support;

#[path = "e2e/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

#[path = "reliability/namespace_deletion.rs"]
mod namespace_deletion;
#[path = "reliability/waiting.rs"]
mod waiting;

use std::sync::OnceLock;

use crate::support::{
    ControlPlane, Options, control_plane_with,
    controller::{RunningController, ferrosync_binary},
    deploy,
    sim::{
        Cluster,
        node::images::{self, Image},
    },
};

const MOVER_IMAGE: &str = "ferrosync.test/mover:reliability";

/// The control plane, simulators and one controller, as its ServiceAccount.
pub fn env() -> (&'static ControlPlane, &'static RunningController) {
    static CONTROLLER: OnceLock<RunningController> = OnceLock::new();
    let cp = control_plane_with(Options::end_to_end());
    images::register(
        MOVER_IMAGE,
        Image::binary(ferrosync_binary(), ferrosync::resources::job::MOVER_BINARY),
    );
    Cluster::start(cp);
    let controller = CONTROLLER.get_or_init(|| {
        let identity = deploy::controller_identity(cp);
        RunningController::start(
            cp,
            &identity,
            &[
                ("POD_NAMESPACE", deploy::NAMESPACE),
                ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
                ("FERROSYNC_MOVER__BACKOFF_LIMIT", "1"),
                ("FERROSYNC_REQUEUE__POLL", "500ms"),
                ("FERROSYNC_REQUEUE__IDLE", "10s"),
                // Production-like backoff of waits and transient errors.
                ("FERROSYNC_REQUEUE__ERROR_MIN", "1s"),
                ("FERROSYNC_REQUEUE__ERROR_MAX", "30s"),
                ("FERROSYNC_RECONCILE__CONCURRENCY", "8"),
            ],
        )
    });
    (cp, controller)
}

/// The controller's ServiceAccount, as the audit log names it.
pub const CONTROLLER_USER: &str = "system:serviceaccount:ferrosync-system:ferrosync";
