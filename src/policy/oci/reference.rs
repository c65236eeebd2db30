//! Bundle references. The controller accepts only `<registry>/<repository>@sha256:<hex>`:
//! what it serves must not change under it when someone moves a tag. `policy pull`
//! accepts a tag for people and prints the digest it resolved.

use std::fmt;

use oci_client::Reference;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::OciError;

/// A reference that names a manifest by its sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    text: String,
    reference: Reference,
}

impl BundleRef {
    /// Parses `text`, refusing a reference without a sha256 digest.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let reference = parse_any(text)?;
        match reference.digest() {
            Some(_) => Ok(BundleRef {
                text: text.trim().to_owned(),
                reference,
            }),
            None => Err(OciError::TagNotAllowed {
                reference: text.into(),
            }),
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The manifest digest, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        self.reference.digest().unwrap_or_default()
    }

    /// The registry host (`host[:port]`), as credentials are looked up by.
    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }
}

impl fmt::Display for BundleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a reference with a tag or a digest; a digest must be sha256 in lowercase hex.
/// The registry must be explicit: a bundle is never looked for on Docker Hub by default.
pub fn parse_any(text: &str) -> Result<Reference, OciError> {
    let text = text.trim();
    let bad = |message: &str| OciError::BadReference {
        reference: text.into(),
        message: message.into(),
    };
    let first = text.split('/').next().unwrap_or_default();
    if !text.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost")
    {
        return Err(bad(
            "name the registry host first (registry.example/policies/aws-ebs@sha256:…)",
        ));
    }
    let reference: Reference = text.parse().map_err(|e| bad(&format!("{e}")))?;
    if let Some(digest) = reference.digest() {
        check_digest(digest).map_err(|m| bad(&m))?;
    }
    Ok(reference)
}

/// `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?} is not sha256"))?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("digest {digest:?} is not 64 lowercase hex digits"))
    }
}

impl Serialize for BundleRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for BundleRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BundleRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:548376b7e0d3b6ee7e0f5ab4c4cb43a34b3f9b1f2c7d4b6b1a8d8f0e9c6a5b4d";

    #[test]
    fn digests_are_accepted_and_tags_refused_with_the_reason() {
        let r = BundleRef::parse(&format!("127.0.0.1:5000/policies/aws-ebs@{DIGEST}")).unwrap();
        assert_eq!(r.digest(), DIGEST);
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference().repository(), "policies/aws-ebs");
        for tagged in [
            "registry.example/policies/aws-ebs:1.2",
            "registry.example/policies/aws-ebs",
        ] {
            let err = BundleRef::parse(tagged).unwrap_err();
            assert!(matches!(err, OciError::TagNotAllowed { .. }), "{err}");
            assert!(err.to_string().contains("a tag can be moved"), "{err}");
            assert!(!err.is_retryable());
        }
        // A tag beside the digest: the digest decides.
        let both = format!("registry.example/p/a:1@{DIGEST}");
        assert_eq!(BundleRef::parse(&both).unwrap().digest(), DIGEST);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "aws-ebs@sha256:00",
            "policies/aws-ebs:1",
            "registry.example/p/a@sha256:ABC",
            "registry.example/p/a@md5:0123",
            &format!("registry.example/p/a@{}", DIGEST.to_uppercase()),
        ] {
            let err = parse_any(bad).expect_err(bad);
            assert!(matches!(err, OciError::BadReference { .. }), "{bad}: {err}");
        }
        assert!(parse_any("localhost:5000/p/a:1").is_ok());
    }

    #[test]
    fn the_configuration_refuses_a_tag_when_it_is_read() {
        #[derive(Deserialize)]
        struct Point {
            #[allow(dead_code)]
            oci: BundleRef,
        }
        let err = toml_like(r#"{"oci": "registry.example/policies/aws-ebs:1"}"#);
        assert!(err.contains("must be named by digest"), "{err}");
        fn toml_like(json: &str) -> String {
            serde_json::from_str::<Point>(json)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        }
    }
}
