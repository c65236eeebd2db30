//! The harness shared by the test binaries that need a real control plane (`mod support;`).
//! It starts etcd and kube-apiserver once per binary (and, for the end-to-end tier,
//! kube-controller-manager and kube-scheduler), hands each test a fresh namespace and
//! client, and leaves nothing behind: no process, no directory, even if the binary is
//! killed.
//!
//! Everything it starts listens on 127.0.0.1 only. It never shares a `kube::Client` between
//! tests (each `#[tokio::test]` has its own runtime).
//!
//! ```ignore
//! let cp = support::control_plane();                 // or control_plane_with(Options::end_to_end())
//! let ns = cp.namespace("my-test").await;            // fresh namespace + admin client
//! let pvcs = ns.api::<PersistentVolumeClaim>();
//! let sa = cp.service_account_kubeconfig("ferrosync-system", "ferrosync"); // client cert
//! let controller = support::controller::RunningController::start(cp, &sa, &[]);
//! cp.audit_events();                                 // with Options::audit_policy
//! ```

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod access;
pub mod bins;
pub mod cluster;
pub mod components;
pub mod controller;
pub mod crds;
pub mod deploy;
pub mod incluster;
pub mod kubeconfig;
pub mod kubectl_plugin;
pub mod pki;
pub mod process;
pub mod registry;
pub mod sim;
pub mod toxiproxy;
pub mod wait;

// Re-exports for the test binaries; each uses some of them.
#[allow(unused_imports)]
pub use access::TestNamespace;
#[allow(unused_imports)]
pub use cluster::{ControlPlane, Options, control_plane, control_plane_with};
