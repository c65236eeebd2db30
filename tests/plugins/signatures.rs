//! Signatures required by the operator, made with openssl in cosign's raw blob format
//! (base64 of the DER ECDSA P-256 signature over SHA-256, as `cosign sign-blob --key`
//! writes it): a signed bundle serves; an unsigned one or one signed by another key is
//! refused, at start and at reload, and the old set keeps serving.

use std::{path::Path, process::Command};

use ferrosync::{
    api::CopyMethod,
    policy::{
        FailureMode, LoadError, Pins, PolicyConfig, PolicyEngine, signature::SignatureConfig,
    },
};

use super::common::*;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key pair: `<name>.key` and `<name>.pub` (PEM, as cosign's).
fn key_pair(dir: &Path, name: &str) {
    openssl(
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            &format!("{name}.key"),
        ],
        dir,
    );
    openssl(
        &[
            "ec",
            "-in",
            &format!("{name}.key"),
            "-pubout",
            "-out",
            &format!("{name}.pub"),
        ],
        dir,
    );
}

/// Signs `file` with `<name>.key` into `file.sig`, in cosign's format.
fn sign(dir: &Path, name: &str, file: &Path) {
    let der = dir.join("sig.der");
    openssl(
        &[
            "dgst",
            "-sha256",
            "-sign",
            &format!("{name}.key"),
            "-out",
            &der.to_string_lossy(),
            &file.to_string_lossy(),
        ],
        dir,
    );
    openssl(
        &[
            "base64",
            "-A",
            "-in",
            &der.to_string_lossy(),
            "-out",
            &format!("{}.sig", file.to_string_lossy()),
        ],
        dir,
    );
}

#[tokio::test]
async fn only_components_signed_by_a_trusted_key_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_pair(dir, "team");
    key_pair(dir, "stranger");
    let bundle = dir.join("aws-ebs");
    copy_bundle("aws-ebs", &bundle);
    let component = bundle.join("copy-method-by-driver.wasm");
    // The operator pins the current component and the next one (a roll-over).
    let old_pin = digest(&component);
    let mut next = std::fs::read(&component).unwrap();
    next.extend_from_slice(b"\0");
    let next_pin = ferrosync::policy::plugin::sha256_hex(&next);
    let mut point = bundle_point(&bundle, FailureMode::Fail).unwrap();
    point.sha256 = Pins::new([old_pin.clone(), next_pin.clone()]);
    let config = PolicyConfig {
        copy_method: Some(point),
        signatures: SignatureConfig {
            public_keys: vec![dir.join("team.pub")],
        },
        ..PolicyConfig::default()
    };

    // Unsigned: refused at start, saying how to sign.
    let err = PolicyEngine::new(&config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::Signature { .. }), "{err}");
    assert!(err.to_string().contains("cosign sign-blob"), "{err}");

    // Signed by a stranger: refused.
    sign(dir, "stranger", &component);
    let err = PolicyEngine::new(&config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("not made by any trusted key"),
        "{err}"
    );

    // Signed by the team: served.
    sign(dir, "team", &component);
    let engine = engine(&config).await;
    let d = engine.copy_method(&copy_input()).await.unwrap();
    assert_eq!(d.decision.method, CopyMethod::Snapshot);

    // The next component, pinned by bundle and operator but signed by the stranger, is
    // refused at reload (before it is even compiled), and the signed one keeps serving.
    std::fs::write(&component, &next).unwrap();
    let policy = bundle.join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace(&old_pin, &next_pin)).unwrap();
    sign(dir, "stranger", &component);
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(matches!(err, LoadError::Signature { .. }), "{err}");
    assert!(engine.last_reload_error().is_some());
    let d = engine.copy_method(&copy_input()).await.unwrap();
    assert_eq!(
        d.decision.method,
        CopyMethod::Snapshot,
        "the old set serves"
    );
    assert_eq!(
        d.provenance.plugin.as_deref(),
        Some("copy-method-by-driver")
    );
}
