//! A copy-method plugin to start from (`ferrosync policy new copy-method <dir>` writes it
//! into a crate of its own, with this directory's `tests.json` and `policy.toml` as its
//! bundle). It keeps the requested copy method, or uses a configured one.
//!
//! A plugin must stay a pure function of its input: no state between calls, no reliance
//! on time or randomness it was not granted.

use ferrosync_plugin::copy_method::{CopyMethodDecision, CopyMethodInput, Guest, Method};
use serde::Deserialize;

/// Settings, from the bundle's `policy.toml` (`[plugin.settings]`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Used when the user requested no method: "direct", "clone" or "snapshot".
    default_method: Option<String>,
}

struct Plugin;

impl Guest for Plugin {
    fn decide(input: CopyMethodInput) -> Result<CopyMethodDecision, String> {
        let settings: Settings = ferrosync_plugin::settings(&input.settings)?;
        let (method, reason) = match (input.requested, settings.default_method.as_deref()) {
            (Some(m), _) => (m, "the requested method".to_owned()),
            (None, Some("clone")) => (Method::Clone, "the configured default".to_owned()),
            (None, Some("snapshot")) => (Method::Snapshot, "the configured default".to_owned()),
            (None, Some("direct") | None) => (Method::Direct, "nothing requested".to_owned()),
            (None, Some(other)) => return Err(format!("unknown default_method {other:?}")),
        };
        let volume_snapshot_class = match method {
            Method::Snapshot => input.snapshot_classes.first().cloned(),
            _ => None,
        };
        Ok(CopyMethodDecision {
            method,
            volume_snapshot_class,
            storage_class: None,
            reason,
        })
    }
}

ferrosync_plugin::copy_method::export_copy_method!(Plugin);
