//! The operator caps bundles: the controller's configuration pins each bundle's component
//! and sets a ceiling on its grants and limits. A bundle may ask for less, never more; a
//! bundle over its ceiling, or whose component the operator did not pin, is refused with
//! an error naming what is wrong, and the set loaded before keeps serving.

use std::path::Path;

use ferrosync::{
    api::ServiceType,
    policy::{
        Ceiling, CredentialRef, EngineOptions, FailureMode, HttpCeiling, LoadError, Pins,
        PointConfig, PolicyConfig, PolicyEngine,
    },
};

use super::common::*;

/// The psk point as an operator would write it for the shipped vault bundle.
fn vault_point(dir: &Path, ceiling: Ceiling) -> PointConfig {
    let bundle = ferrosync::policy::plugin::BundleFile::read(dir).unwrap();
    PointConfig {
        bundle: Some(dir.to_owned()),
        sha256: Pins::new([bundle.plugin.sha256]),
        ceiling,
        on_failure: FailureMode::Fail,
        credentials: Some(vault_credential()),
        ..PointConfig::default()
    }
}

/// The token Secret the shipped vault bundle names, which the operator names too.
fn vault_credential() -> CredentialRef {
    ferrosync::policy::plugin::BundleFile::read(&root().join("policies/vault"))
        .unwrap()
        .plugin
        .grants
        .http
        .and_then(|h| h.credentials)
        .expect("the vault bundle names its token Secret")
}

/// Exactly what the shipped vault bundle asks for (randomness, its vault, ten seconds),
/// read from the bundle so that the test follows it.
fn vault_ceiling() -> Ceiling {
    let bundle =
        ferrosync::policy::plugin::BundleFile::read(&root().join("policies/vault")).unwrap();
    assert!(bundle.plugin.grants.random && bundle.plugin.grants.http.is_some());
    Ceiling::admitting(&bundle.plugin)
}

/// The vault bundle's origin, normalised as errors name it.
fn vault_origin() -> String {
    let allow = &vault_ceiling().http.unwrap().allow;
    assert_eq!(allow.len(), 1, "{allow:?}");
    ferrosync::policy::http::origin_of(&allow[0]).unwrap()
}

async fn refused(config: &PolicyConfig) -> LoadError {
    PolicyEngine::new(config, EngineOptions::default())
        .await
        .err()
        .expect("refused")
}

#[tokio::test]
async fn a_bundle_within_its_ceiling_loads_and_one_over_it_is_refused_naming_each_excess() {
    let dir = root().join("policies/vault");
    // Exactly what it asks for: loads.
    let fits = PolicyConfig {
        psk: Some(vault_point(&dir, vault_ceiling())),
        ..PolicyConfig::default()
    };
    let engine = engine(&fits).await;
    assert_eq!(engine.plugins()[0].name, "psk-from-vault");

    // More than it asks for: still loads (a bundle may ask for less).
    let mut roomy = vault_ceiling();
    roomy.limits.timeout *= 3;
    roomy
        .http
        .as_mut()
        .unwrap()
        .allow
        .push("https://other.example".into());
    let config = PolicyConfig {
        psk: Some(vault_point(&dir, roomy)),
        ..PolicyConfig::default()
    };
    engine_with(
        &config,
        std::sync::Arc::new(ferrosync::policy::credentials::NoCredentials),
        None,
    )
    .await;

    // The default ceiling: no randomness, no HTTP, the default limits.
    let config = PolicyConfig {
        psk: Some(vault_point(&dir, Ceiling::default())),
        ..PolicyConfig::default()
    };
    let err = refused(&config).await;
    assert!(matches!(err, LoadError::AboveCeiling { .. }), "{err}");
    let msg = err.to_string();
    let asked = humantime::format_duration(vault_ceiling().limits.timeout).to_string();
    for phrase in [
        "plugin psk-from-vault: asks for more than the controller configuration's ceiling for psk allows",
        &format!("limits.timeout {asked} (ceiling 250ms)"),
        "grants.random",
        "grants.http (the ceiling grants no HTTP)",
        "[policy.psk.ceiling]",
    ] {
        assert!(msg.contains(phrase), "{phrase}: {msg}");
    }

    // One origin more than the ceiling allows, and a larger response.
    let mut tight = vault_ceiling();
    let asked_kib = tight.http.as_ref().unwrap().max_response_kib;
    tight.http = Some(HttpCeiling {
        allow: vec!["https://elsewhere.example:8200".into()],
        max_response_kib: asked_kib / 2,
        ..tight.http.unwrap()
    });
    let config = PolicyConfig {
        psk: Some(vault_point(&dir, tight)),
        ..PolicyConfig::default()
    };
    let msg = refused(&config).await.to_string();
    assert!(
        msg.contains(&format!(
            "grants.http.allow {} (not in the ceiling)",
            vault_origin()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "grants.http.max_response_kib {asked_kib} (ceiling {})",
            asked_kib / 2
        )),
        "{msg}"
    );
    assert!(!msg.contains("grants.random"), "{msg}");
}

#[tokio::test]
async fn a_bundle_may_not_pick_its_own_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    copy_bundle("vault", &dir);
    // The bundle names another Secret of the controller's namespace, to send it to its
    // allowed origin as a header.
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let own = format!("secret = \"{}\"", vault_credential().secret);
    assert!(text.contains(&own), "{text}");
    std::fs::write(
        &file,
        text.replace(&own, "secret = \"ferrosync-admin-kubeconfig\""),
    )
    .unwrap();
    let config = PolicyConfig {
        psk: Some(vault_point(&dir, vault_ceiling())),
        ..PolicyConfig::default()
    };
    let msg = refused(&config).await.to_string();
    assert!(
        msg.contains("grants.http.credentials Secret \"ferrosync-admin-kubeconfig\"")
            && msg.contains(&format!(
                "the configuration names Secret {:?}",
                vault_credential().secret
            )),
        "{msg}"
    );
}

#[tokio::test]
async fn only_a_component_the_operator_pinned_is_loaded() {
    let dir = root().join("policies/multi-cluster");
    let own = PointConfig::bundle_as_written(&dir).unwrap();
    // Not pinned at all: refused, and the error names the digest to review and pin.
    let unpinned = PolicyConfig {
        service_type: Some(PointConfig {
            sha256: Pins::default(),
            ..own.clone()
        }),
        ..PolicyConfig::default()
    };
    let err = refused(&unpinned).await;
    let actual = digest(&dir.join("service-type-by-topology.wasm"));
    assert!(matches!(err, LoadError::NotPinned { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("sha256 = \"{actual}\" in [policy.service_type]")),
        "{err}"
    );

    // Pinned to something else: the bundle is self-consistent, which is not enough.
    let other = PolicyConfig {
        service_type: Some(PointConfig {
            sha256: Pins::new(["ab".repeat(32)]),
            ..own.clone()
        }),
        ..PolicyConfig::default()
    };
    let err = refused(&other).await;
    assert!(matches!(err, LoadError::NotOperatorPinned { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&actual) && msg.contains(&"ab".repeat(32)),
        "{msg}"
    );

    // One of several pins (a rollover): loads.
    let rollover = PolicyConfig {
        service_type: Some(PointConfig {
            sha256: Pins::new(["ab".repeat(32), actual.to_uppercase()]),
            ..own
        }),
        ..PolicyConfig::default()
    };
    let engine = engine(&rollover).await;
    assert_eq!(engine.plugins()[0].sha256, actual);
}

#[tokio::test]
async fn a_bundle_that_grows_its_grants_is_refused_and_the_old_set_keeps_serving() {
    let Reloadable {
        _tmp,
        dir,
        config,
        engine,
    } = Reloadable::new().await;
    let before = engine
        .service_type(&service_input())
        .await
        .expect("decides");
    assert_eq!(before.decision.service_type, ServiceType::LoadBalancer);

    // Whoever edits the bundle's ConfigMap grants it HTTP and more time: the operator's
    // ceiling (what it asked for before) stays, so the new bundle is refused.
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("timeout = \"100ms\"", "timeout = \"5s\"")
            + "\n[plugin.grants.http]\nallow = [\"https://exfiltrate.example\"]\n",
    )
    .unwrap();
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(matches!(err, LoadError::AboveCeiling { .. }), "{err}");
    let msg = engine.last_reload_error().expect("kept for status");
    assert!(msg.contains("limits.timeout 5s (ceiling 100ms)"), "{msg}");
    assert!(
        msg.contains("grants.http (the ceiling grants no HTTP)"),
        "{msg}"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    engine.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("ferrosync_policy_reload_refused 1"), "{text}");

    // The previous plugin, with its previous limits, keeps deciding.
    let after = engine
        .service_type(&service_input())
        .await
        .expect("decides");
    assert_eq!(after.provenance.sha256, before.provenance.sha256);
    assert_eq!(after.decision.service_type, ServiceType::LoadBalancer);
}

#[tokio::test]
async fn a_pin_or_ceiling_beside_an_inline_plugin_is_a_clear_error() {
    // An inline plugin is the operator's own: its pin and grants are in [plugin].
    let s = spec("copy-method-by-driver", serde_json::json!({}));
    let pinned = PointConfig {
        sha256: Pins::new([s.sha256.clone()]),
        ..PointConfig::inline(s.clone())
    };
    let capped = PointConfig {
        ceiling: Ceiling {
            random: true,
            ..Ceiling::default()
        },
        ..PointConfig::inline(s)
    };
    for (cfg, says) in [
        (pinned, "`sha256` pins a bundle's component"),
        (capped, "`ceiling` caps a bundle"),
    ] {
        let err = refused(&PolicyConfig {
            copy_method: Some(cfg),
            ..PolicyConfig::default()
        })
        .await;
        assert!(matches!(err, LoadError::Config { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}
