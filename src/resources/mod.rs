//! Pure builders of the Kubernetes objects ferrosync creates: PVCs, snapshots, Services,
//! Secrets and Jobs, plus the readers of their status that reconcilers need.
//!
//! Nothing here performs I/O or reads a clock: every input is an argument, so every
//! builder is unit-tested without a cluster.

pub mod job;
pub mod meta;
pub mod names;
pub mod populator;
pub mod pvc;
pub mod secret;
pub mod service;
pub mod snapshot;

pub use meta::Owner;
pub use names::Side;
