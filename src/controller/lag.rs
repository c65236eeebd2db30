//! What this controller wrote that its caches may not show yet: the objects it created
//! (with the resourceVersion the apiserver returned) and deleted, by namespace/name.
//!
//! A reader compares what its cache shows with the record: a cached copy at or after our
//! own write is current (and the record is dropped: later copies are only newer); an older
//! copy, a copy of an object we deleted, or no copy of an object we created means the
//! watch has not delivered our write yet. The reader then reads the object from the
//! apiserver instead of acting on the old view (and records what it read): a lagging
//! cache never makes a second Job or publishes a result twice. The records live only
//! while a cache lags.

use std::{collections::HashMap, sync::Mutex};

/// A write this controller made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Created (or found) the object with this uid, at this resourceVersion.
    Object {
        /// Its uid.
        uid: String,
        /// The resourceVersion the apiserver returned.
        version: u64,
    },
    /// Deleted it (the uid, when known).
    Gone(Option<String>),
}

/// What a cache shows of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Nothing of that name.
    Absent,
    /// An object with this uid and resourceVersion.
    Present {
        /// Its uid.
        uid: &'a str,
        /// Its resourceVersion.
        version: Option<&'a str>,
    },
}

impl<'a> Seen<'a> {
    /// What a cache shows of `obj`.
    pub fn of<K: kube::Resource>(obj: Option<&'a K>) -> Self {
        match obj {
            None => Seen::Absent,
            Some(obj) => Seen::Present {
                uid: obj.meta().uid.as_deref().unwrap_or_default(),
                version: obj.meta().resource_version.as_deref(),
            },
        }
    }
}

/// Whether a cache showing `seen` has caught up with `wrote`. Pure. etcd revisions grow,
/// so resourceVersions are compared as numbers; an unparsable one is taken as old.
pub fn caught_up(wrote: Option<&Wrote>, seen: Seen<'_>) -> bool {
    match (wrote, seen) {
        (None, _) => true,
        (Some(Wrote::Object { .. }), Seen::Absent) => false,
        (Some(Wrote::Object { uid, version }), Seen::Present { uid: u, version: v }) => {
            uid == u && v.and_then(|v| v.parse::<u64>().ok()) >= Some(*version)
        }
        (Some(Wrote::Gone(_)), Seen::Absent) => true,
        // The object we deleted, or one whose uid we did not learn: not caught up. Another
        // uid is someone else's new object, made after our deletion was seen.
        (Some(Wrote::Gone(uid)), Seen::Present { uid: u, .. }) => {
            uid.as_deref().is_some_and(|gone| gone != u)
        }
    }
}

/// The records, by `namespace/name`.
#[derive(Default)]
pub struct Writes(Mutex<HashMap<String, Wrote>>);

impl Writes {
    /// Records a write to `namespace/name`.
    pub fn wrote(&self, key: String, wrote: Wrote) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, wrote);
    }

    /// Records the object `obj` as created (or found) at its resourceVersion.
    pub fn created<K: kube::Resource>(&self, key: String, obj: &K) {
        let meta = obj.meta();
        let (Some(uid), Some(version)) = (
            meta.uid.clone(),
            meta.resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        ) else {
            return;
        };
        self.wrote(key, Wrote::Object { uid, version });
    }

    /// The uid last written under `key`, if an object was.
    pub fn uid(&self, key: &str) -> Option<String> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            Some(Wrote::Object { uid, .. }) => Some(uid.clone()),
            _ => None,
        }
    }

    /// Whether a cache showing `seen` of `key` has caught up with our last write there;
    /// once it has, the record goes.
    pub fn caught_up(&self, key: &str, seen: Seen<'_>) -> bool {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let current = caught_up(records.get(key), seen);
        if current {
            records.remove(key);
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present<'a>(uid: &'a str, version: &'a str) -> Seen<'a> {
        Seen::Present {
            uid,
            version: Some(version),
        }
    }

    #[test]
    fn a_cache_is_current_once_it_shows_our_write_or_later() {
        let made = Wrote::Object {
            uid: "u1".into(),
            version: 10,
        };
        assert!(caught_up(None, Seen::Absent), "nothing written");
        assert!(caught_up(None, present("x", "1")));
        assert!(!caught_up(Some(&made), Seen::Absent), "not delivered yet");
        assert!(!caught_up(Some(&made), present("u1", "9")));
        assert!(caught_up(Some(&made), present("u1", "10")));
        assert!(caught_up(Some(&made), present("u1", "11")));
        assert!(
            !caught_up(Some(&made), present("u0", "12")),
            "the old object"
        );
        assert!(!caught_up(
            Some(&made),
            Seen::Present {
                uid: "u1",
                version: Some("x")
            }
        ));
    }

    #[test]
    fn a_deleted_object_is_gone_once_the_cache_says_so() {
        let gone = Wrote::Gone(Some("u1".into()));
        assert!(caught_up(Some(&gone), Seen::Absent));
        assert!(!caught_up(Some(&gone), present("u1", "20")), "still shown");
        assert!(caught_up(Some(&gone), present("u2", "30")), "a new one");
        assert!(!caught_up(Some(&Wrote::Gone(None)), present("u2", "30")));
    }

    #[test]
    fn records_go_once_caught_up() {
        let writes = Writes::default();
        writes.wrote(
            "ns/j".into(),
            Wrote::Object {
                uid: "u1".into(),
                version: 5,
            },
        );
        assert_eq!(writes.uid("ns/j").as_deref(), Some("u1"));
        assert!(!writes.caught_up("ns/j", Seen::Absent));
        assert!(writes.caught_up("ns/j", present("u1", "5")));
        assert_eq!(writes.uid("ns/j"), None, "dropped");
        assert!(writes.caught_up("ns/j", Seen::Absent), "nothing recorded");
    }
}
