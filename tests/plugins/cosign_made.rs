//! A signature made by the real cosign CLI (not openssl) verifies through the path the
//! controller takes when `[policy.signatures]` is set: a bundle requiring the key loads
//! and decides; so does the signature cosign 3 puts in its Sigstore bundle; one changed
//! byte of the component or of the signature is refused.
//!
//! The signature, the public key and the signed component are fixtures made once, outside
//! CI (cosign is too costly a build for every run); `tests/fixtures/cosign/README.md` has
//! the version and the commands. The private key was thrown away.

use std::path::{Path, PathBuf};

use ferrosync::{
    api::CopyMethod,
    policy::{
        FailureMode, LoadError, Pins, PolicyConfig, PolicyEngine,
        plugin::sha256_hex,
        signature::{SignatureConfig, SignatureError, signature_path},
    },
};
use openssl::base64;

use super::common::*;

const COMPONENT: &str = "copy-method-by-driver.wasm";

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/cosign")
}

/// The aws-ebs bundle in `dir` with `component` (and its cosign signature `sig`) in place
/// of its own, pinned by bundle and operator to `component`'s digest, so that only the
/// signature can refuse it.
fn bundle_with(dir: &Path, component: &[u8], sig: &str) -> PolicyConfig {
    let shipped = root().join("policies/aws-ebs");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(shipped.join("tests.json"), dir.join("tests.json")).unwrap();
    let pin = sha256_hex(component);
    let policy = std::fs::read_to_string(shipped.join("policy.toml")).unwrap();
    let shipped_pin = policy
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the shipped bundle pins its component");
    std::fs::write(dir.join("policy.toml"), policy.replace(shipped_pin, &pin)).unwrap();
    std::fs::write(dir.join(COMPONENT), component).unwrap();
    std::fs::write(signature_path(&dir.join(COMPONENT)), sig).unwrap();
    let mut point = bundle_point(dir, FailureMode::Fail).unwrap();
    point.sha256 = Pins::new([pin]);
    PolicyConfig {
        copy_method: Some(point),
        signatures: SignatureConfig {
            public_keys: vec![fixtures().join("cosign.pub")],
        },
        ..PolicyConfig::default()
    }
}

async fn refused_as_wrong(config: &PolicyConfig) {
    let err = PolicyEngine::new(config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            LoadError::Signature {
                source: SignatureError::Wrong { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_cosign_made_signature_verifies_and_one_changed_byte_is_refused() {
    let component = std::fs::read(fixtures().join(COMPONENT)).unwrap();
    let sig = std::fs::read_to_string(fixtures().join(format!("{COMPONENT}.sig"))).unwrap();
    let recorded = std::fs::read_to_string(fixtures().join(format!("{COMPONENT}.sha256"))).unwrap();
    assert_eq!(
        sha256_hex(&component),
        recorded.split_whitespace().next().unwrap(),
        "the fixture component is the one cosign signed"
    );
    let tmp = tempfile::tempdir().unwrap();

    // As cosign wrote it: loads, and the component decides.
    let signed = engine(&bundle_with(&tmp.path().join("signed"), &component, &sig)).await;
    let d = signed.copy_method(&copy_input()).await.unwrap();
    assert_eq!(d.decision.method, CopyMethod::Snapshot);
    assert_eq!(
        d.provenance.plugin.as_deref(),
        Some("copy-method-by-driver")
    );

    // cosign 3's default output, a Sigstore bundle, carries the same raw signature.
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join(format!("{COMPONENT}.bundle"))).unwrap(),
    )
    .unwrap();
    let from_bundle = bundle["messageSignature"]["signature"]
        .as_str()
        .expect("a message signature in the bundle");
    assert_ne!(from_bundle, sig.trim(), "a second, independent signature");
    engine(&bundle_with(
        &tmp.path().join("bundled"),
        &component,
        from_bundle,
    ))
    .await;

    // One byte of the component changed (and pinned, so only the signature objects).
    let mut tampered = component.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    refused_as_wrong(&bundle_with(&tmp.path().join("blob"), &tampered, &sig)).await;

    // One byte of the signature changed: still well-formed base64, no longer cosign's.
    let mut der = base64::decode_block(sig.trim()).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let forged = base64::encode_block(&der);
    refused_as_wrong(&bundle_with(&tmp.path().join("sig"), &component, &forged)).await;
}
