//! The policy host: sandboxed WebAssembly plugins that make three site-specific decisions
//! (copy method, Service type, pre-shared key), loaded from configuration and bundles.
//!
//! The controller calls [`PolicyEngine`]; everything else here serves it or the
//! `ferrosync policy` command. A plugin must never be able to crash, hang or escape the
//! host: each runs in a fresh, limited sandbox and its output is validated before use.
//!
//! - `config`, `ceiling`: the `[policy]` configuration section, and the operator's pins
//!   and ceilings that cap what a bundle may be granted.
//! - `plugin`: bundles, pins, compilation and world checks.
//! - `sandbox`: the per-decision Store state, locked-down WASI, the linker.
//! - `execute`: one decision in a fresh Store, and the classification of failures.
//! - `engine`: [`PolicyEngine`], its reload, cache and metrics.
//! - `validate`, `guest_text`, `defaults`: output validation, the cleaning of any text a
//!   plugin hands back, and the built-in decisions.
//! - `key_wait`: the backoff of a replication waiting for its key.
//! - `http`, `credentials`, `pairs`: the HTTP grant, the credentials it injects and where
//!   they may go, and the replication pairs the host authorises.
//! - `release`: the psk world's `release`, which removes a deleted side from its pair.
//! - `golden`, `reload`, `cli`: bundle tests, file watching, the command line.
//! - `authoring`: `policy new`, `pin`, `inspect` and `bench`, for plugin authors.
//! - `oci`: bundles pulled from an OCI registry by digest; `policy push` and `pull`.
//!
//! Wiring it into the controller:
//!
//! ```text
//! let metrics = PolicyMetrics::default();
//! metrics.register(&mut registry);
//! let engine = PolicyEngine::new(&config.policy, EngineOptions {
//!     credentials: Arc::new(KubeCredentials::new(client.clone(), controller_namespace)),
//!     transport: Arc::new(LiveTransport),
//!     metrics,
//! }).await?;                       // refuses to start on a bad bundle, and says why
//! reload::spawn_watcher(engine.clone(), config.policy.clone(),
//!                       config.policy.engine.reload_interval);
//! let decided = engine.copy_method(&input).await?;   // Err only for `on_failure = "fail"`
//! ```

pub mod authoring;
mod bindings;
mod cache;
mod ceiling;
mod cli;
pub mod config;
pub mod credentials;
pub mod defaults;
pub mod diff;
mod engine;
mod execute;
#[cfg(test)]
mod fuzz_tests;
pub mod golden;
pub mod guest_text;
pub mod http;
mod key_wait;
pub mod metrics;
pub mod namespaces;
pub mod oci;
mod outcome;
pub mod pairs;
pub mod plugin;
pub mod release;
pub mod reload;
pub mod report;
mod sandbox;
pub mod scope;
pub mod shadow;
pub mod signature;
pub mod types;
pub mod validate;

pub use cli::{Command, run};
pub use config::*;
pub use engine::{BindingOverlap, EngineOptions, MAX_PLUGIN_MEMORY_MIB, PluginInfo, PolicyEngine};
pub use outcome::{Decided, DecidedBy, Failure, FailureKind, PolicyError, PolicyEvent, Provenance};
pub use plugin::LoadError;
pub use sandbox::STDERR_CAPACITY;
pub use types::*;
