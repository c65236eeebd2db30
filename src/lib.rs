//! ferrosync: asynchronous 1:1 replication of persistent volumes with rsync through a
//! TLS-PSK tunnel, implementing the `volsync.backube/v1alpha1` rsyncTLS API, with the
//! site-specific decisions delegated to sandboxed WebAssembly policy plugins.
//!
//! The library holds all the logic; `main.rs` only parses the command line.

pub mod api;
pub mod config;
pub mod controller;
pub mod kubectl;
pub mod mover;
pub mod policy;
pub mod resources;
pub mod telemetry;

/// The version baked in at build time, printed by `ferrosync version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from ("unknown" without git; see build.rs).
pub const GIT_COMMIT: &str = env!("FERROSYNC_GIT_COMMIT");

/// When the binary was built (RFC 3339, UTC; `SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("FERROSYNC_BUILD_DATE");
