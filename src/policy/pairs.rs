//! Replication pairs, authorised by the host.
//!
//! A pair name (the `ferrosync.io/psk-pair` annotation) is what the PSK plugin keys its
//! vault path on, and anyone who can create a ReplicationSource can write it. So the
//! host, not the plugin, decides whether a namespace may use a pair: the Namespace's
//! `ferrosync.io/psk-pair-prefixes` annotation (comma-separated) lists the prefixes its
//! pair names must start with. Namespaces are cluster-scoped and tenants usually cannot
//! edit them, so the annotation is the cluster admin's word. Without it a namespace may
//! use no pair at all. The credential the host injects into the plugin's requests is then
//! sent only to the paths of the authorised pair ([`super::credentials::CredentialPolicy`]).
//!
//! Pure: the caller reads the annotations.

use std::collections::BTreeMap;

/// The object annotation naming its pair.
pub const PAIR_ANNOTATION: &str = "ferrosync.io/psk-pair";
/// The Namespace annotation listing the pair prefixes its objects may use.
pub const PREFIXES_ANNOTATION: &str = "ferrosync.io/psk-pair-prefixes";
/// Longest pair name: it becomes one path segment of a vault path.
pub const MAX_PAIR_LEN: usize = 63;

/// Why an object may not use the pair it names. Messages say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The name could escape its path segment or is too long.
    #[error(
        "{PAIR_ANNOTATION} {0:?} is not a valid pair name: 1 to {MAX_PAIR_LEN} letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidName(String),
    /// The namespace lists no prefix the name starts with.
    #[error(
        "{PAIR_ANNOTATION} {pair:?} is not authorised in namespace {namespace}: {allowed}; a cluster admin grants pair prefixes with the Namespace annotation {PREFIXES_ANNOTATION}"
    )]
    NotAuthorised {
        pair: String,
        namespace: String,
        allowed: String,
    },
}

/// A pair name the host checked against the namespace's prefixes. Only [`authorise`]
/// makes one, so holding it is proof of the check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthorisedPair(String);

impl AuthorisedPair {
    /// The pair name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `pair` is safe as one path segment (the shipped plugin applies the same rule).
pub fn valid_name(pair: &str) -> bool {
    !pair.is_empty()
        && pair.len() <= MAX_PAIR_LEN
        && !pair.starts_with('.')
        && pair
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The prefixes a Namespace's annotations grant: entries trimmed, empty ones dropped.
pub fn prefixes(namespace_annotations: &BTreeMap<String, String>) -> Vec<String> {
    namespace_annotations
        .get(PREFIXES_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The pair an object in `namespace` names, if any, once authorised by the namespace's
/// annotations. `Ok(None)`: the object names no pair.
pub fn authorise(
    namespace: &str,
    object_annotations: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
) -> Result<Option<AuthorisedPair>, PairError> {
    let Some(pair) = object_annotations.get(PAIR_ANNOTATION) else {
        return Ok(None);
    };
    if !valid_name(pair) {
        return Err(PairError::InvalidName(pair.clone()));
    }
    let granted = prefixes(namespace_annotations);
    if granted.iter().any(|p| pair.starts_with(p.as_str())) {
        return Ok(Some(AuthorisedPair(pair.clone())));
    }
    let allowed = if granted.is_empty() {
        "the namespace has no pair prefixes".to_owned()
    } else {
        format!("its pair prefixes are {}", granted.join(", "))
    };
    Err(PairError::NotAuthorised {
        pair: pair.clone(),
        namespace: namespace.to_owned(),
        allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_pair_is_authorised_only_under_the_namespaces_prefixes() {
        let ns = map(&[(PREFIXES_ANNOTATION, " team-a- , shared-db ,")]);
        for pair in ["team-a-db", "team-a-", "shared-db-eu-us"] {
            let got = authorise("a", &map(&[(PAIR_ANNOTATION, pair)]), &ns);
            assert_eq!(got.map(|p| p.map(|p| p.0)), Ok(Some(pair.to_owned())));
        }
        let err = authorise("a", &map(&[(PAIR_ANNOTATION, "team-b-db")]), &ns)
            .expect_err("another team's pair");
        let msg = err.to_string();
        assert!(msg.contains("team-a-, shared-db"), "{msg}");
        assert!(msg.contains(PREFIXES_ANNOTATION), "{msg}");
    }

    #[test]
    fn no_prefixes_no_pairs() {
        let err =
            authorise("a", &map(&[(PAIR_ANNOTATION, "db")]), &map(&[])).expect_err("unlisted");
        assert!(err.to_string().contains("has no pair prefixes"), "{err}");
        assert_eq!(authorise("a", &map(&[]), &map(&[])), Ok(None));
    }

    #[test]
    fn names_that_could_leave_their_path_segment_are_refused() {
        let ns = map(&[(PREFIXES_ANNOTATION, ".,a")]);
        for pair in [
            "",
            "..",
            "../x",
            "a/b",
            "a%2fb",
            "a?x",
            "a b",
            &"a".repeat(64),
        ] {
            assert_eq!(
                authorise("n", &map(&[(PAIR_ANNOTATION, pair)]), &ns),
                Err(PairError::InvalidName(pair.to_owned())),
                "{pair:?}"
            );
        }
    }
}
