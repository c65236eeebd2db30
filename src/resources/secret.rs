//! Key Secrets: building a generated one and reading `psk.txt` out of any.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{
    meta::{Component, Owner, object_meta},
    names::{self, Side},
};
use crate::api::psk::{KeyRing, Psk, PskError};

/// The Secret field that holds the key, as stunnel reads it.
pub const PSK_FIELD: &str = "psk.txt";
/// On a generated key Secret holding a previous key: when the rotation began (RFC 3339).
pub const PREVIOUS_KEY_SINCE: &str = "ferrosync.io/previous-key-since";
/// On a generated key Secret: the iteration whose start last checked the key.
pub const KEY_CHECKED_FOR: &str = "ferrosync.io/key-checked-for";

/// Why a key Secret cannot be used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Secret has no `psk.txt`.
    #[error("Secret {0} is missing field: psk.txt")]
    MissingField(String),
    /// `psk.txt` is not UTF-8.
    #[error("Secret {0}: psk.txt is not text")]
    NotText(String),
    /// `psk.txt` is malformed.
    #[error("Secret {secret}: {source}")]
    Malformed {
        /// The Secret's name.
        secret: String,
        /// What is wrong.
        source: PskError,
    },
}

/// The Secret ferrosync creates for a side when the user gave no keySecret.
pub fn key_secret(owner: &Owner, side: Side, psk: &Psk) -> Secret {
    key_ring_secret(
        owner,
        &names::key_secret(side, &owner.name),
        &KeyRing::single(psk.clone()),
        BTreeMap::new(),
    )
}

/// A generated key Secret `name` holding `ring`, with ferrosync's `annotations`.
pub fn key_ring_secret(
    owner: &Owner,
    name: &str,
    ring: &KeyRing,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut metadata = object_meta(owner, name.to_owned(), Component::Key, false);
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            PSK_FIELD.to_string(),
            ByteString(ring.to_file_contents().into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The current key held by a Secret (the first, when a rotation left two).
pub fn psk_of(secret: &Secret) -> Result<Psk, Error> {
    ring_of(secret).map(|r| r.current().clone())
}

/// The validated keys held by a Secret.
pub fn ring_of(secret: &Secret) -> Result<KeyRing, Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PSK_FIELD))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(PSK_FIELD))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| Error::MissingField(name.clone()))?;
    let text = String::from_utf8(raw).map_err(|_| Error::NotText(name.clone()))?;
    KeyRing::parse(&text).map_err(|source| Error::Malformed {
        secret: name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fixtures::owner;

    #[test]
    fn generated_secret_round_trips() {
        let psk = Psk::generate();
        let secret = key_secret(
            &owner("ReplicationDestination", "db"),
            Side::Destination,
            &psk,
        );
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("volsync-rsync-tls-db")
        );
        assert_eq!(psk_of(&secret).expect("valid"), psk);
    }

    #[test]
    fn missing_and_malformed_keys_are_named() {
        let mut secret = key_secret(
            &owner("ReplicationSource", "s"),
            Side::Source,
            &Psk::generate(),
        );
        secret.data = Some(BTreeMap::from([(
            "other".to_string(),
            ByteString(b"x".to_vec()),
        )]));
        assert_eq!(
            psk_of(&secret),
            Err(Error::MissingField("ferrosync-source-key-s".into()))
        );
        secret.data = Some(BTreeMap::from([(
            PSK_FIELD.to_string(),
            ByteString(b"id:abc".to_vec()),
        )]));
        let err = psk_of(&secret).expect_err("short");
        assert!(err.to_string().contains("at least 32"), "{err}");
    }
}
