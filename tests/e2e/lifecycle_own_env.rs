//! The environment of the `lifecycle` test binary: the end-to-end control plane and
//! simulators, but no shared controller. Its tests need a controller of their own (a
//! policy configuration, or one they kill), so they run one at a time, each with its own.

use std::{path::PathBuf, sync::Mutex};

use crate::support::{
    ControlPlane, Options, control_plane_with,
    controller::{RunningController, ferrosync_binary},
    deploy,
    sim::{
        Cluster,
        node::images::{self, Image},
    },
};

/// The mover image the controllers are configured with.
pub const MOVER_IMAGE: &str = "ferrosync.test/mover:e2e";

/// One test at a time: each runs its own controller, and two would fight.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The log of the controller started last, for failure messages.
static LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// What the shared helpers use.
pub struct Env {
    /// The control plane.
    pub cp: &'static ControlPlane,
}

/// The environment, started by the first test that asks.
pub fn env() -> Env {
    let cp = control_plane_with(Options::end_to_end());
    images::register(
        MOVER_IMAGE,
        Image::binary(ferrosync_binary(), ferrosync::resources::job::MOVER_BINARY),
    );
    Cluster::start(cp);
    Env { cp }
}

impl Env {
    /// The end of the current controller's log.
    pub fn controller_tail(&self) -> String {
        let path = LOG.lock().expect("log path").clone();
        let log = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts a controller with the e2e settings and `extra` environment, as its
    /// ServiceAccount with deploy/'s RBAC (in namespace [`deploy::NAMESPACE`]).
    pub fn controller(&self, extra: &[(&str, &str)]) -> RunningController {
        let identity = deploy::controller_identity(self.cp);
        let mut vars = vec![
            ("POD_NAMESPACE", deploy::NAMESPACE),
            ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
            ("FERROSYNC_MOVER__BACKOFF_LIMIT", "1"),
            ("FERROSYNC_REQUEUE__POLL", "500ms"),
            ("FERROSYNC_REQUEUE__IDLE", "10s"),
        ];
        vars.extend_from_slice(extra);
        let controller = RunningController::start(self.cp, &identity, &vars);
        *LOG.lock().expect("log path") = Some(controller.log.clone());
        controller
    }
}
