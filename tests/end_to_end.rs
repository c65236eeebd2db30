//! Tier 5: the control plane with kube-controller-manager and kube-scheduler (and an audit
//! log), on which the simulators and the real controller run end to end.
//!
//! Every test in this binary uses `cluster()`, so the control plane starts once with the
//! same options.

mod support;

#[path = "end_to_end/control_plane.rs"]
mod control_plane;

/// The shared end-to-end control plane.
pub fn cluster() -> &'static support::ControlPlane {
    support::control_plane_with(support::Options::end_to_end())
}
