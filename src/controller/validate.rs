//! What ferrosync checks of an object before it acts, beyond what admission checks. Pure.
//!
//! - **Derived names.** The names ferrosync derives from an object's (its Service, key
//!   Secret, volumes, snapshots) must be valid for their kinds. Admission cannot know:
//!   a ReplicationDestination named `db.v1` is valid, its Service `…-dst-db.v1` is not; a
//!   227-character name is valid, its snapshot name is not. Checked up front, so the
//!   object gets an Error condition at once instead of a 422 later (for the snapshot,
//!   only after the data moved).
//! - **Lengths.** VolSync's CRDs bound neither `trigger.manual` nor annotations, so the
//!   apiserver accepts megabytes. ferrosync keeps admission as wide as VolSync's and
//!   refuses, with a condition, values longer than it will copy into status or Events or
//!   hand to plugins.

use std::collections::BTreeMap;

use crate::{
    api::{CopyMethod, ReplicationDestination, ReplicationSource, Trigger},
    resources::names,
};

/// The longest `trigger.manual` ferrosync acts on: it is copied to `lastManualSync`.
pub const MAX_MANUAL: usize = 256;
/// The longest value of an annotation ferrosync reads.
pub const MAX_ANNOTATION: usize = 1024;
/// The annotations ferrosync reads: those under these prefixes.
pub const READ_PREFIXES: &[&str] = &["ferrosync.io/", "volsync.backube/"];
/// DNS-1123 subdomains (most object names).
const MAX_SUBDOMAIN: usize = 253;
/// The length of the `-YYYYMMDDHHMMSS` suffix of a destination image.
const IMAGE_SUFFIX: usize = 15;

/// Checks a ReplicationSource; the message says what to change.
pub fn source(rs: &ReplicationSource) -> Result<(), String> {
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    limits(rs.spec.trigger.as_ref(), rs.metadata.annotations.as_ref())?;
    let tls = rs.spec.rsync_tls.as_ref();
    if tls.is_none_or(|t| t.key_secret.is_none()) {
        subdomain(
            "its generated key Secret",
            &names::key_secret(names::Side::Source, name),
        )?;
    }
    let copy = tls
        .and_then(|t| t.copy_method)
        .unwrap_or(CopyMethod::Direct);
    if copy.normalized() != CopyMethod::Direct {
        subdomain("its point-in-time copy", &names::source_pit(name))?;
    }
    Ok(())
}

/// Checks a ReplicationDestination; the message says what to change.
pub fn destination(rd: &ReplicationDestination) -> Result<(), String> {
    let name = rd.metadata.name.as_deref().unwrap_or_default();
    limits(rd.spec.trigger.as_ref(), rd.metadata.annotations.as_ref())?;
    let service = names::destination_service(name);
    if !is_dns1035_label(&service) {
        return Err(format!(
            "the name {name:?} cannot be used: its Service would be named {service:?}, and a Service name must consist of lowercase letters, digits and '-' (no '.'); rename the ReplicationDestination"
        ));
    }
    let tls = rd.spec.rsync_tls.as_ref();
    if tls.is_none_or(|t| t.key_secret.is_none()) {
        subdomain(
            "its generated key Secret",
            &names::key_secret(names::Side::Destination, name),
        )?;
    }
    let pvc = tls
        .and_then(|t| t.destination_pvc.clone())
        .unwrap_or_else(|| names::destination_pvc(name));
    subdomain("its volume", &pvc)?;
    if tls.and_then(|t| t.copy_method).map(CopyMethod::normalized) == Some(CopyMethod::Snapshot)
        && pvc.len() + IMAGE_SUFFIX > MAX_SUBDOMAIN
    {
        return Err(format!(
            "snapshot names would be {} characters, over Kubernetes' {MAX_SUBDOMAIN} (the volume's name {pvc:?} plus a {IMAGE_SUFFIX}-character time stamp); use a shorter name{}",
            pvc.len() + IMAGE_SUFFIX,
            if tls.is_some_and(|t| t.destination_pvc.is_some()) {
                " for spec.rsyncTLS.destinationPVC"
            } else {
                " for the ReplicationDestination"
            }
        ));
    }
    Ok(())
}

fn limits(
    trigger: Option<&Trigger>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    if let Some(manual) = trigger.and_then(|t| t.manual.as_deref())
        && manual.len() > MAX_MANUAL
    {
        return Err(format!(
            "spec.trigger.manual is {} bytes long; ferrosync acts on values of at most {MAX_MANUAL}",
            manual.len()
        ));
    }
    for (key, value) in annotations.into_iter().flatten() {
        if READ_PREFIXES.iter().any(|p| key.starts_with(p)) && value.len() > MAX_ANNOTATION {
            return Err(format!(
                "annotation {key} is {} bytes long; ferrosync reads values of at most {MAX_ANNOTATION}",
                value.len()
            ));
        }
    }
    Ok(())
}

fn subdomain(what: &str, name: &str) -> Result<(), String> {
    if name.len() > MAX_SUBDOMAIN {
        return Err(format!(
            "{what} would be named with {} characters, over Kubernetes' {MAX_SUBDOMAIN}; use a shorter name",
            name.len()
        ));
    }
    Ok(())
}

/// A DNS-1035 label: a Service name.
fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= names::MAX_LABEL
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rd(name: &str, tls: serde_json::Value) -> ReplicationDestination {
        serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"rsyncTLS": tls},
        }))
        .expect("fixture")
    }

    fn rs(name: &str, spec: serde_json::Value) -> ReplicationSource {
        serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }))
        .expect("fixture")
    }

    #[test]
    fn a_dotted_destination_name_is_refused_naming_the_service() {
        let err = destination(&rd("db.v1", json!({}))).expect_err("invalid Service name");
        assert!(err.contains("\"volsync-rsync-tls-dst-db.v1\""), "{err}");
        assert!(destination(&rd("db-v1", json!({}))).is_ok());
        // Long names are shortened for the Service, and stay valid.
        assert!(destination(&rd(&"a".repeat(200), json!({}))).is_ok());
    }

    #[test]
    fn snapshot_names_over_253_are_refused_before_any_job() {
        let snapshot =
            json!({"copyMethod": "Snapshot", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]});
        // volsync-<name>-dst-<14 digits>: 227 characters make 254.
        assert!(destination(&rd(&"a".repeat(226), snapshot.clone())).is_ok());
        let err = destination(&rd(&"a".repeat(227), snapshot.clone())).expect_err("too long");
        assert!(err.contains("254 characters"), "{err}");
        // Direct publishes the PVC itself: no snapshot name.
        assert!(destination(&rd(&"a".repeat(227), json!({"copyMethod": "Direct"}))).is_ok());
        // A named destinationPVC sets the snapshot names.
        let named = json!({"copyMethod": "Snapshot", "destinationPVC": "p".repeat(240)});
        let err = destination(&rd("short", named)).expect_err("too long");
        assert!(err.contains("destinationPVC"), "{err}");
        // The generated key Secret: volsync-rsync-tls-<name>.
        let err = destination(&rd(&"a".repeat(236), json!({"copyMethod": "Direct"})))
            .expect_err("key Secret too long");
        assert!(err.contains("key Secret"), "{err}");
        assert!(
            destination(&rd(
                &"a".repeat(236),
                json!({"copyMethod": "Direct", "keySecret": "k"})
            ))
            .is_ok()
        );
    }

    #[test]
    fn manual_triggers_and_read_annotations_are_bounded() {
        let ok = rs("s", json!({"trigger": {"manual": "m".repeat(MAX_MANUAL)}}));
        assert!(source(&ok).is_ok());
        let long = rs(
            "s",
            json!({"trigger": {"manual": "m".repeat(MAX_MANUAL + 1)}}),
        );
        assert!(
            source(&long)
                .expect_err("too long")
                .contains("spec.trigger.manual")
        );

        let mut r = rd("d", json!({}));
        let annotations = r.metadata.annotations.get_or_insert_with(Default::default);
        // Annotations ferrosync does not read are not its business.
        annotations.insert("example.com/notes".into(), "x".repeat(100_000));
        assert!(destination(&r).is_ok());
        let annotations = r.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(
            "ferrosync.io/retain-snapshots".into(),
            "9".repeat(MAX_ANNOTATION + 1),
        );
        let err = destination(&r).expect_err("too long");
        assert!(err.contains("ferrosync.io/retain-snapshots"), "{err}");
    }

    #[test]
    fn a_long_source_name_with_a_copy_is_refused() {
        let clone =
            json!({"sourcePVC": "p", "rsyncTLS": {"copyMethod": "Clone", "keySecret": "k"}});
        assert!(source(&rs(&"a".repeat(241), clone.clone())).is_ok());
        let err = source(&rs(&"a".repeat(242), clone)).expect_err("too long");
        assert!(err.contains("point-in-time copy"), "{err}");
    }
}
