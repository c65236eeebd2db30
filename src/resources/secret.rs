//! Key Secrets: building a generated one and reading `psk.txt` out of any.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{
    meta::{Component, Owner, object_meta},
    names::{self, Side},
};
use crate::api::psk::{Psk, PskError};

/// The Secret field that holds the key, as stunnel reads it.
pub const PSK_FIELD: &str = "psk.txt";

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
    Secret {
        metadata: object_meta(
            owner,
            names::key_secret(side, &owner.name),
            Component::Key,
            false,
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            PSK_FIELD.to_string(),
            ByteString(psk.to_file_contents().into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The validated key held by a Secret.
pub fn psk_of(secret: &Secret) -> Result<Psk, Error> {
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
    Psk::parse(&text).map_err(|source| Error::Malformed {
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
