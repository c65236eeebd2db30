//! Signatures: the operator can require every component to be signed by a key it trusts.
//!
//! The sha256 pin proves a component is the one pinned; a signature proves who made it,
//! even when pin and component travel together (one ConfigMap). The format is cosign's
//! raw blob signature, as `cosign sign-blob --key cosign.key --output-signature x.sig`
//! makes it offline: base64 of the DER-encoded ECDSA P-256 signature over the SHA-256 of
//! the component's bytes, and the key is cosign's PEM public key (`cosign.pub`). The same
//! signature is made by `openssl dgst -sha256 -sign key.pem x.wasm | base64 -w0`.
//!
//! A component's signature is the file next to it named `<component>.sig`.

use std::path::{Path, PathBuf};

use openssl::{
    base64,
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Public},
    sign::Verifier,
};
use serde::{Deserialize, Serialize};

/// `[policy.signatures]`: the keys components must be signed by. Unset: no signature is
/// required (the pins alone decide).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// PEM public keys (cosign.pub); a component signed by any one is accepted, so keys
    /// can be rolled over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PathBuf>,
}

impl SignatureConfig {
    pub fn is_empty(&self) -> bool {
        self.public_keys.is_empty()
    }
}

/// Why a component's signature is refused. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error(
        "{component} is not signed: {signature} is missing ({message}); sign it with `cosign sign-blob --key cosign.key --output-signature {signature} {component}` (cosign 3 also needs `--new-bundle-format=false --use-signing-config=false --tlog-upload=false`)"
    )]
    Unsigned {
        component: PathBuf,
        signature: PathBuf,
        message: String,
    },
    #[error("{signature} is not a base64 signature: {message}")]
    Malformed { signature: PathBuf, message: String },
    #[error("{component}: the signature in {signature} was not made by any trusted key ({keys})")]
    Wrong {
        component: PathBuf,
        signature: PathBuf,
        keys: String,
    },
}

/// The file holding a component's signature.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The trusted keys, read when a plugin set is built (so replaced key files take effect
/// at the next reload).
pub struct Trust {
    keys: Vec<(PathBuf, PKey<Public>)>,
}

impl Trust {
    /// The configured keys; `None` when no signature is required.
    pub fn load(config: &SignatureConfig) -> Result<Option<Trust>, SignatureError> {
        if config.is_empty() {
            return Ok(None);
        }
        let keys = config
            .public_keys
            .iter()
            .map(|path| {
                let bad = |message: String| SignatureError::Key {
                    path: path.clone(),
                    message,
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let key = PKey::public_key_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
                let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
                if curve != Some(Nid::X9_62_PRIME256V1) {
                    return Err(bad("not an ECDSA P-256 public key (cosign's)".into()));
                }
                Ok((path.clone(), key))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Trust { keys }))
    }

    /// Checks `bytes` (the component read from `component`) against its `.sig` file.
    pub fn verify(&self, component: &Path, bytes: &[u8]) -> Result<(), SignatureError> {
        let signature = signature_path(component);
        let text = std::fs::read_to_string(&signature).map_err(|e| SignatureError::Unsigned {
            component: component.to_owned(),
            signature: signature.clone(),
            message: e.to_string(),
        })?;
        let compact: String = text.split_whitespace().collect();
        let der = base64::decode_block(&compact).map_err(|e| SignatureError::Malformed {
            signature: signature.clone(),
            message: e.to_string(),
        })?;
        let signed_by_one = self.keys.iter().any(|(_, key)| {
            Verifier::new(MessageDigest::sha256(), key)
                .and_then(|mut v| v.verify_oneshot(&der, bytes))
                .unwrap_or(false)
        });
        if signed_by_one {
            Ok(())
        } else {
            Err(SignatureError::Wrong {
                component: component.to_owned(),
                signature,
                keys: self
                    .keys
                    .iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use openssl::{
        ec::{EcGroup, EcKey},
        sign::Signer,
    };

    use super::*;

    fn key_pair(dir: &Path, name: &str) -> (PKey<openssl::pkey::Private>, PathBuf) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let path = dir.join(format!("{name}.pub"));
        std::fs::write(&path, key.public_key_to_pem().unwrap()).unwrap();
        (key, path)
    }

    fn sign(key: &PKey<openssl::pkey::Private>, bytes: &[u8]) -> String {
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        base64::encode_block(&signer.sign_oneshot_to_vec(bytes).unwrap())
    }

    #[test]
    fn signed_unsigned_wrong_and_rolled_over() {
        let dir = tempfile::tempdir().unwrap();
        let (old, old_pub) = key_pair(dir.path(), "old");
        let (new, new_pub) = key_pair(dir.path(), "new");
        let component = dir.path().join("p.wasm");
        let bytes = b"component bytes";
        std::fs::write(&component, bytes).unwrap();
        let trust = |keys: Vec<PathBuf>| {
            Trust::load(&SignatureConfig { public_keys: keys })
                .unwrap()
                .unwrap()
        };
        let only_new = trust(vec![new_pub.clone()]);
        assert!(matches!(
            only_new.verify(&component, bytes),
            Err(SignatureError::Unsigned { .. })
        ));
        std::fs::write(signature_path(&component), sign(&old, bytes)).unwrap();
        assert!(matches!(
            only_new.verify(&component, bytes),
            Err(SignatureError::Wrong { .. })
        ));
        // Either key while rolling over.
        trust(vec![new_pub.clone(), old_pub])
            .verify(&component, bytes)
            .unwrap();
        std::fs::write(signature_path(&component), sign(&new, bytes) + "\n").unwrap();
        only_new.verify(&component, bytes).unwrap();
        // Other bytes under the same signature: refused.
        assert!(only_new.verify(&component, b"tampered").is_err());
        std::fs::write(signature_path(&component), "not base64!").unwrap();
        assert!(matches!(
            only_new.verify(&component, bytes),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(Trust::load(&SignatureConfig::default()).unwrap().is_none());
    }

    #[test]
    fn only_p256_keys_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let path = dir.path().join("rsa.pub");
        std::fs::write(&path, rsa.public_key_to_pem().unwrap()).unwrap();
        let err = Trust::load(&SignatureConfig {
            public_keys: vec![path],
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("P-256"), "{err}");
    }
}
