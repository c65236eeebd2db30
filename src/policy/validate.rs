//! Output validation: turns a plugin's raw WIT output into a decision the controller may
//! use, or says precisely why not.
//!
//! Every field of every output passes through here. It must never trust guest data, never
//! echo key material into an error, and never panic on any input.

use super::{
    bindings::wit,
    guest_text,
    types::{
        CopyMethodDecision, CopyMethodInput, Pairs, PskAnswer, PskDecision, ServiceTypeDecision,
    },
};
use crate::api::{CopyMethod, ServiceType, psk::Psk};

/// Longest reason accepted: it lands in Events and status, which must stay small.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most annotations a plugin may add to a Service.
pub const MAX_ANNOTATIONS: usize = 32;
/// Largest total size of a plugin's annotation keys and values.
pub const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

/// Why an output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOutput {
    #[error("reason is {0} bytes; at most {MAX_REASON_BYTES} are allowed")]
    ReasonTooLong(usize),
    #[error("{what} {name:?} is not a valid DNS-1123 subdomain")]
    BadName { what: &'static str, name: String },
    #[error("{what} {name:?} does not exist")]
    Missing { what: &'static str, name: String },
    #[error("a Snapshot decision needs a VolumeSnapshotClass, and none is named or available")]
    NoSnapshotClass,
    #[error(
        "a {method} decision uses no {unused}, but the plugin named {named}; name only what \
         the method uses (Clone: a StorageClass; Snapshot: both; Direct: neither)"
    )]
    UnusedClass {
        method: &'static str,
        unused: &'static str,
        named: String,
    },
    #[error("annotation key {0:?} is not a valid Kubernetes annotation key")]
    BadAnnotationKey(String),
    #[error("too many annotations: {0} (at most {MAX_ANNOTATIONS})")]
    TooManyAnnotations(usize),
    #[error("annotations total {0} bytes; at most {MAX_ANNOTATION_BYTES} are allowed")]
    AnnotationsTooLarge(usize),
    #[error("duplicate annotation key {0:?}")]
    DuplicateAnnotation(String),
    #[error("invalid key: {0}")]
    BadKey(crate::api::psk::PskError),
}

fn reason(r: String) -> Result<String, InvalidOutput> {
    if r.len() > MAX_REASON_BYTES {
        return Err(InvalidOutput::ReasonTooLong(r.len()));
    }
    // Control characters would garble Events and logs; format characters (direction
    // overrides, zero-width spaces) would disguise them.
    Ok(guest_text::clean(&r))
}

/// A DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters,
/// each dot-separated label starting and ending alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A qualified annotation key: an optional DNS-1123 subdomain prefix and '/', then a name
/// of at most 63 characters of alphanumerics, '-', '_' and '.', alphanumeric at both ends.
pub fn is_annotation_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn existing_name(
    what: &'static str,
    name: Option<String>,
    existing: &[String],
) -> Result<Option<String>, InvalidOutput> {
    let Some(name) = name else { return Ok(None) };
    if !is_dns1123_subdomain(&name) {
        return Err(InvalidOutput::BadName { what, name });
    }
    if !existing.contains(&name) {
        return Err(InvalidOutput::Missing { what, name });
    }
    Ok(Some(name))
}

/// Validates a copy-method decision against what exists.
pub(crate) fn copy_method(
    raw: wit::CopyMethodDecision,
    input: &CopyMethodInput,
) -> Result<CopyMethodDecision, InvalidOutput> {
    let method = match raw.method {
        wit::Method::Direct => CopyMethod::Direct,
        wit::Method::Clone => CopyMethod::Clone,
        wit::Method::Snapshot => CopyMethod::Snapshot,
    };
    let reason = reason(raw.reason)?;
    unused_classes(
        method,
        raw.volume_snapshot_class.as_deref(),
        raw.storage_class.as_deref(),
    )?;
    let volume_snapshot_class = existing_name(
        "VolumeSnapshotClass",
        raw.volume_snapshot_class,
        &input.snapshot_classes,
    )?;
    let storage_class = existing_name("StorageClass", raw.storage_class, &input.storage_classes)?;
    if method == CopyMethod::Snapshot
        && volume_snapshot_class.is_none()
        && input.snapshot_classes.is_empty()
    {
        return Err(InvalidOutput::NoSnapshotClass);
    }
    Ok(CopyMethodDecision {
        method,
        volume_snapshot_class,
        storage_class,
        reason,
    })
}

/// A class the method never uses is refused rather than silently carried along: status
/// and Events would show a decision that is not the one carried out.
fn unused_classes(
    method: CopyMethod,
    snapshot_class: Option<&str>,
    storage_class: Option<&str>,
) -> Result<(), InvalidOutput> {
    let named = |what: &str, name: &str| format!("{what} {:?}", guest_text::clean(name));
    let (label, unused, names) = match method {
        CopyMethod::Direct | CopyMethod::None => (
            "Direct",
            "VolumeSnapshotClass or StorageClass",
            [
                snapshot_class.map(|n| named("VolumeSnapshotClass", n)),
                storage_class.map(|n| named("StorageClass", n)),
            ],
        ),
        CopyMethod::Clone => (
            "Clone",
            "VolumeSnapshotClass",
            [
                snapshot_class.map(|n| named("VolumeSnapshotClass", n)),
                None,
            ],
        ),
        CopyMethod::Snapshot => return Ok(()),
    };
    let names: Vec<String> = names.into_iter().flatten().collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(InvalidOutput::UnusedClass {
        method: label,
        unused,
        named: names.join(" and "),
    })
}

/// Validates a service-type decision's annotations.
pub(crate) fn service_type(
    raw: wit::ServiceTypeDecision,
) -> Result<ServiceTypeDecision, InvalidOutput> {
    let service_type = match raw.service_type {
        wit::ServiceType::ClusterIp => ServiceType::ClusterIP,
        wit::ServiceType::LoadBalancer => ServiceType::LoadBalancer,
    };
    let reason = reason(raw.reason)?;
    if raw.annotations.len() > MAX_ANNOTATIONS {
        return Err(InvalidOutput::TooManyAnnotations(raw.annotations.len()));
    }
    let total: usize = raw.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATION_BYTES {
        return Err(InvalidOutput::AnnotationsTooLarge(total));
    }
    let mut annotations = Pairs::new();
    for (k, v) in raw.annotations {
        if !is_annotation_key(&k) {
            return Err(InvalidOutput::BadAnnotationKey(k));
        }
        if annotations.insert(k.clone(), v).is_some() {
            return Err(InvalidOutput::DuplicateAnnotation(k));
        }
    }
    Ok(ServiceTypeDecision {
        service_type,
        annotations,
        reason,
    })
}

/// Validates a psk decision: a key must parse and carry at least 128 bits.
pub(crate) fn psk(raw: wit::PskDecision) -> Result<PskDecision, InvalidOutput> {
    let reason = reason(raw.reason)?;
    let answer = match raw.answer {
        wit::PskAnswer::UseKey(k) => {
            PskAnswer::UseKey(Psk::new(&k.identity, &k.key_hex).map_err(InvalidOutput::BadKey)?)
        }
        wit::PskAnswer::GenerateLocally => PskAnswer::GenerateLocally,
        wit::PskAnswer::NotAvailableYet => PskAnswer::NotAvailableYet,
    };
    Ok(PskDecision { answer, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["gp3", "csi-snapclass", "a.b-c.d", "x"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "Gp3",
            "-a",
            "a-",
            "a..b",
            "a_b",
            &"a".repeat(64),
            "snap class",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn annotation_keys() {
        for ok in [
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "simple",
            "a_b.c-d",
            "example.com/X_Y",
        ] {
            assert!(is_annotation_key(ok), "{ok}");
        }
        for bad in [
            "",
            "bad key",
            "Not_A_Domain/name",
            "/name",
            "a/",
            "-x",
            "x/y/z",
        ] {
            assert!(!is_annotation_key(bad), "{bad}");
        }
    }

    #[test]
    fn short_key_refused_without_echoing_it() {
        let raw = wit::PskDecision {
            answer: wit::PskAnswer::UseKey(wit::Key {
                identity: "id".into(),
                key_hex: "0123456789abcdef".into(),
            }),
            reason: "r".into(),
        };
        let err = psk(raw).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }

    fn copy_input() -> CopyMethodInput {
        CopyMethodInput {
            snapshot_classes: vec!["snap".into()],
            storage_classes: vec!["gp3".into()],
            ..Default::default()
        }
    }

    fn copy_raw(
        method: wit::Method,
        snap: Option<&str>,
        sc: Option<&str>,
    ) -> wit::CopyMethodDecision {
        wit::CopyMethodDecision {
            method,
            volume_snapshot_class: snap.map(Into::into),
            storage_class: sc.map(Into::into),
            reason: "r".into(),
        }
    }

    #[test]
    fn classes_a_method_does_not_use_are_refused() {
        let err = copy_method(
            copy_raw(wit::Method::Direct, Some("snap"), Some("gp3")),
            &copy_input(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a Direct decision uses no VolumeSnapshotClass or StorageClass"),
            "{err}"
        );
        assert!(
            err.contains("VolumeSnapshotClass \"snap\" and StorageClass \"gp3\""),
            "{err}"
        );
        let err = copy_method(
            copy_raw(wit::Method::Direct, None, Some("gp3")),
            &copy_input(),
        )
        .unwrap_err();
        assert!(matches!(err, InvalidOutput::UnusedClass { .. }), "{err}");
        let err = copy_method(
            copy_raw(wit::Method::Clone, Some("snap"), None),
            &copy_input(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a Clone decision uses no VolumeSnapshotClass"),
            "{err}"
        );
        // What each method does use is accepted.
        for (m, snap, sc) in [
            (wit::Method::Direct, None, None),
            (wit::Method::Clone, None, Some("gp3")),
            (wit::Method::Snapshot, Some("snap"), Some("gp3")),
        ] {
            copy_method(copy_raw(m, snap, sc), &copy_input()).expect("valid");
        }
    }

    #[test]
    fn reasons_lose_direction_and_zero_width_characters() {
        let mut raw = copy_raw(wit::Method::Direct, None, None);
        raw.reason = "ok\u{202E}gnp.exe\u{200B}\n".into();
        let d = copy_method(raw, &copy_input()).unwrap();
        assert_eq!(d.reason, "okgnp.exe ");
    }

    #[test]
    fn long_reason_refused() {
        let raw = wit::ServiceTypeDecision {
            service_type: wit::ServiceType::ClusterIp,
            annotations: vec![],
            reason: "x".repeat(MAX_REASON_BYTES + 1),
        };
        assert!(matches!(
            service_type(raw),
            Err(InvalidOutput::ReasonTooLong(_))
        ));
    }
}
