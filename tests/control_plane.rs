//! Tier 4: the API against a real kube-apiserver and etcd, started once for this binary.
//! Each test works in its own namespace (see `support`).

mod support;

#[path = "control_plane/controller.rs"]
mod controller;
#[path = "control_plane/crds.rs"]
mod crds;
#[path = "control_plane/deploy.rs"]
mod deploy;
#[path = "control_plane/examples.rs"]
mod examples;
#[path = "control_plane/explain.rs"]
mod explain;
#[path = "control_plane/fixtures.rs"]
mod fixtures;
#[path = "control_plane/harness.rs"]
mod harness;
#[path = "control_plane/invalid.rs"]
mod invalid;
#[path = "control_plane/parity.rs"]
mod parity;
#[path = "control_plane/policy.rs"]
mod policy;
#[path = "control_plane/status.rs"]
mod status;
