//! Data-plane tier: the real `ferrosync mover` binary with real rsync, its built-in TLS-PSK
//! tunnel and stunnel (the fallback, and the reference's peers) on 127.0.0.1, between
//! directories. Every test owns its own directories and free ports, so
//! tests run in parallel. Waits are polls with deadlines, never bare sleeps.

#[path = "data_plane/harness.rs"]
mod harness;
#[path = "data_plane/tree.rs"]
mod tree;

#[path = "data_plane/failures.rs"]
mod failures;
#[path = "data_plane/hardening.rs"]
mod hardening;
#[path = "data_plane/image.rs"]
mod image;
#[path = "data_plane/interop.rs"]
mod interop;
#[path = "data_plane/rotation.rs"]
mod rotation;
#[path = "data_plane/sync.rs"]
mod sync;
#[path = "data_plane/tunnel.rs"]
mod tunnel;
#[path = "data_plane/unprivileged.rs"]
mod unprivileged;
