//! Metadata shared by every object ferrosync creates: labels, owner references.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/name`, the mover pods' Service selector.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// The uid of the ReplicationSource or ReplicationDestination that owns an object.
pub const OWNER_UID: &str = "ferrosync.io/owner-uid";
/// Marks temporary objects, deleted after each iteration; the value is the owner's uid.
pub const CLEANUP: &str = "ferrosync.io/cleanup";
/// VolSync's mark for the same thing. Both are set on ferrosync's temporary objects and
/// both are honoured, so leftovers of either controller are swept by the other.
pub const VOLSYNC_CLEANUP: &str = "volsync.backube/cleanup";
/// Every label that marks an object for cleanup after an iteration.
pub const CLEANUP_LABELS: [&str; 2] = [CLEANUP, VOLSYNC_CLEANUP];
/// Namespace annotation that opts a namespace in to privileged movers.
pub const PRIVILEGED_MOVERS: &str = "volsync.backube/privileged-movers";
/// A snapshot with this label is never deleted by ferrosync.
pub const DO_NOT_DELETE: &str = "volsync.backube/do-not-delete";

/// The role an object plays, as its `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// A mover Job and its pods.
    Mover,
    /// A point-in-time copy (PVC or VolumeSnapshot) or a destination image.
    PitCopy,
    /// A key Secret.
    Key,
    /// The destination Service.
    Service,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Mover => "mover",
            Component::PitCopy => "pit-copy",
            Component::Key => "key",
            Component::Service => "service",
        }
    }
}

/// The identity of the object that owns what a builder makes.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// A controller owner reference to it.
    pub reference: OwnerReference,
}

impl Owner {
    /// The owner of objects made for `obj`. `None` when the object has no uid yet (it was
    /// never stored), which a reconciler never sees.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<Self> {
        Some(Self {
            name: obj.name_any(),
            namespace: obj.namespace()?,
            uid: obj.uid()?,
            reference: obj.controller_owner_ref(&())?,
        })
    }
}

/// Metadata for an object named `name`, owned by `owner`. Temporary objects also get the
/// cleanup label, so a sweep finds them even if an owner reference is lost.
pub fn object_meta(
    owner: &Owner,
    name: String,
    component: Component,
    temporary: bool,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels(owner, component, temporary)),
        owner_references: Some(vec![owner.reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// The labels of [`object_meta`].
pub fn labels(owner: &Owner, component: Component, temporary: bool) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_string(), "ferrosync".to_string()),
        (COMPONENT.to_string(), component.as_str().to_string()),
        (OWNER_UID.to_string(), owner.uid.clone()),
    ]);
    if temporary {
        for key in CLEANUP_LABELS {
            labels.insert(key.to_string(), owner.uid.clone());
        }
    }
    labels
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An owner as a reconciler would see it.
    pub fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            name: name.into(),
            namespace: "ns".into(),
            uid: format!("uid-{name}"),
            reference: OwnerReference {
                api_version: "volsync.backube/v1alpha1".into(),
                kind: kind.into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }
}
