//! `copy-method-by-driver`: picks the point-in-time copy method from what the PVC's CSI
//! driver can do, as told by a table in the settings (EBS snapshots but cannot clone,
//! vSphere likewise, most others do both).
//!
//! Rules, in order:
//! - Direct stays Direct: the user chose no copy.
//! - A requested Clone that the driver cannot do, or that was seen to fail, becomes a
//!   Snapshot when the driver snapshots and a class exists, else Direct.
//! - A requested Snapshot the driver cannot take becomes a Clone if it can, else Direct.
//! - Nothing requested: the table's `prefer`, subject to the same checks.
//!
//! It only names snapshot and storage classes that the host says exist.

use std::collections::BTreeMap;

use ferrosync_plugin::copy_method::{CopyMethodDecision, CopyMethodInput, Guest, Method};
use serde::Deserialize;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Capabilities by provisioner name.
    #[serde(default)]
    drivers: BTreeMap<String, Driver>,
    /// Capabilities of a provisioner missing from the table.
    #[serde(default)]
    default: Driver,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Driver {
    #[serde(default)]
    clone: bool,
    #[serde(default)]
    snapshot: bool,
    /// The method when none is requested: "clone", "snapshot" or "direct".
    #[serde(default)]
    prefer: Option<String>,
    /// A preferred VolumeSnapshotClass, used when it exists.
    #[serde(default)]
    snapshot_class: Option<String>,
    /// A StorageClass for the PiT copy, used when it exists.
    #[serde(default)]
    pit_storage_class: Option<String>,
}

impl Default for Driver {
    fn default() -> Self {
        Driver {
            clone: true,
            snapshot: true,
            prefer: None,
            snapshot_class: None,
            pit_storage_class: None,
        }
    }
}

struct Plugin;

impl Guest for Plugin {
    fn decide(input: CopyMethodInput) -> Result<CopyMethodDecision, String> {
        let settings: Settings = ferrosync_plugin::settings(&input.settings)?;
        let provisioner = input
            .storage_class
            .as_ref()
            .map(|sc| sc.provisioner.clone())
            .unwrap_or_default();
        let known = settings.drivers.get(&provisioner);
        let driver = known.cloned().unwrap_or(settings.default);
        let who = if known.is_some() {
            format!("driver {provisioner}")
        } else {
            format!("unlisted driver {provisioner:?}")
        };
        let snapshot_class = driver
            .snapshot_class
            .clone()
            .filter(|c| input.snapshot_classes.contains(c))
            .or_else(|| input.snapshot_classes.first().cloned());
        let can_snapshot = driver.snapshot && snapshot_class.is_some();
        let can_clone = driver.clone && input.clone_failure.is_none();

        let wanted = match (input.requested, driver.prefer.as_deref()) {
            (Some(m), _) => m,
            (None, Some("clone")) => Method::Clone,
            (None, Some("snapshot")) => Method::Snapshot,
            (None, _) => Method::Direct,
        };
        let (method, why) = match wanted {
            Method::Direct => (Method::Direct, "Direct: no point-in-time copy".to_owned()),
            Method::Clone if can_clone => (Method::Clone, format!("Clone: {who} clones")),
            Method::Clone if can_snapshot => (
                Method::Snapshot,
                format!("Snapshot instead of Clone: {who} {}", cannot_clone(&input)),
            ),
            Method::Clone => (
                Method::Direct,
                format!(
                    "Direct: {who} {} and has no snapshot class",
                    cannot_clone(&input)
                ),
            ),
            Method::Snapshot if can_snapshot => {
                (Method::Snapshot, format!("Snapshot: {who} snapshots"))
            }
            Method::Snapshot if can_clone => (
                Method::Clone,
                format!("Clone instead of Snapshot: {who} has no usable snapshot class"),
            ),
            Method::Snapshot => (
                Method::Direct,
                format!("Direct: {who} can neither snapshot nor clone"),
            ),
        };
        let storage_class = match method {
            Method::Direct => None,
            _ => driver
                .pit_storage_class
                .filter(|c| input.storage_classes.contains(c)),
        };
        Ok(CopyMethodDecision {
            volume_snapshot_class: match method {
                Method::Snapshot => snapshot_class,
                _ => None,
            },
            method,
            storage_class,
            reason: why,
        })
    }
}

fn cannot_clone(input: &CopyMethodInput) -> &'static str {
    if input.clone_failure.is_some() {
        "failed to clone this PVC"
    } else {
        "cannot clone"
    }
}

ferrosync_plugin::copy_method::export_copy_method!(Plugin);
