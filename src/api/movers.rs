//! What the API holds beyond rsyncTLS: the sections of VolSync's other movers, kept as
//! opaque objects, never pruned and never read.
//!
//! ferrosync replaces VolSync's controller, not its other movers: installing these CRDs
//! over VolSync's must not drop a byte of a restic or rclone object, and ferrosync must
//! never write to one. So these sections have no schema of their own
//! (`x-kubernetes-preserve-unknown-fields`), which admits everything VolSync's schema
//! admits.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A section ferrosync stores and returns exactly as written, without reading it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Opaque(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for Opaque {
    fn schema_name() -> Cow<'static, str> {
        "Opaque".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// The spec sections of the movers ferrosync does not serve, on a ReplicationSource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherSourceMovers {
    /// rsync (over ssh) is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<Opaque>,
    /// restic is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic: Option<Opaque>,
    /// rclone is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone: Option<Opaque>,
    /// syncthing is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncthing: Option<Opaque>,
    /// external hands the object to another controller (a VolSync mover plugin);
    /// ferrosync does not serve it and keeps it as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Opaque>,
}

/// The spec sections of the movers ferrosync does not serve, on a ReplicationDestination
/// (VolSync has no syncthing destination).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherDestinationMovers {
    /// rsync (over ssh) is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<Opaque>,
    /// restic is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic: Option<Opaque>,
    /// rclone is a VolSync mover that ferrosync does not serve; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone: Option<Opaque>,
    /// external hands the object to another controller (a VolSync mover plugin);
    /// ferrosync does not serve it and keeps it as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Opaque>,
}

/// The names of the other movers a section list sets, in the API's spelling.
pub trait MoverSections {
    /// Which of the sections are set.
    fn set(&self) -> Vec<&'static str>;
}

impl MoverSections for OtherSourceMovers {
    fn set(&self) -> Vec<&'static str> {
        [
            ("rsync", self.rsync.is_some()),
            ("restic", self.restic.is_some()),
            ("rclone", self.rclone.is_some()),
            ("syncthing", self.syncthing.is_some()),
            ("external", self.external.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

impl MoverSections for OtherDestinationMovers {
    fn set(&self) -> Vec<&'static str> {
        [
            ("rsync", self.rsync.is_some()),
            ("restic", self.restic.is_some()),
            ("rclone", self.rclone.is_some()),
            ("external", self.external.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// The status sections other movers write on a ReplicationSource; ferrosync never writes
/// them, and its server-side apply of status leaves them to their owner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherSourceMoverStatus {
    /// rsync is the status of VolSync's rsync (over ssh) mover; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<Opaque>,
    /// restic is the status of VolSync's restic mover; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic: Option<Opaque>,
    /// syncthing is the status of VolSync's syncthing mover; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncthing: Option<Opaque>,
    /// external is the status an external mover writes; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Opaque>,
}

/// The status sections other movers write on a ReplicationDestination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherDestinationMoverStatus {
    /// rsync is the status of VolSync's rsync (over ssh) mover; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<Opaque>,
    /// external is the status an external mover writes; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Opaque>,
}
