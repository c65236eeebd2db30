//! The harness shared by the test binaries that run against a real control plane
//! (`mod support;`). It starts etcd and kube-apiserver once per binary (and, for the
//! end-to-end tier, kube-controller-manager and kube-scheduler), hands each test a fresh
//! namespace and client, and leaves nothing behind: no process, no directory.
//!
//! It never contacts anything but 127.0.0.1, and never shares a `kube::Client` between
//! tests (each test has its own runtime).

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod bins;
pub mod cluster;
pub mod components;
pub mod controller;
pub mod crds;
pub mod kubeconfig;
pub mod pki;
pub mod process;
pub mod sim;
pub mod wait;

pub use cluster::{ControlPlane, Options, TestNamespace, control_plane, control_plane_with};
