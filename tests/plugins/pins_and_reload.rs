//! Pins refuse mismatched components; reloads swap in a good new set without a restart
//! and keep the old set serving when the new one is bad.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use ferrosync::{
    api::ServiceType,
    policy::{
        Decided, EngineOptions, FailureMode, LoadError, Pins, PolicyConfig, PolicyEngine,
        ServiceTypeDecision, reload::spawn_watcher,
    },
};
use serde_json::json;

use super::common::*;

fn set_pin(dir: &Path, pin: &str) {
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().find(|l| l.starts_with("sha256 = ")).unwrap();
    std::fs::write(&file, text.replace(line, &format!("sha256 = \"{pin}\""))).unwrap();
}

/// The engine's service type for nodes of a provider whose load balancers the shipped
/// bundle does not trust, and none seen yet: ClusterIP, until the bundle trusts hetzner's.
async fn hetzner_decision(engine: &PolicyEngine) -> Decided<ServiceTypeDecision> {
    let mut input = service_input();
    input.topology.load_balancer_ingress_seen = false;
    input.topology.provider_id_prefixes = vec!["hetzner".into()];
    engine.service_type(&input).await.expect("decides")
}

/// A good change: the shipped bundle again, with settings that trust hetzner's load
/// balancers.
fn trust_hetzner(dir: &Path) {
    copy_bundle("multi-cluster", dir);
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("[\"aws\", \"gce\", \"azure\"]", "[\"hetzner\"]"),
    )
    .unwrap();
}

/// `ferrosync policy check` of the configuration file `config`.
fn policy_check(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .args(["policy", "check"])
        .arg(config)
        .output()
        .unwrap()
}

/// `config` with the operator also pinning `digest`, so that what is refused next is
/// refused for another reason than the operator's pin.
fn also_pinning(config: &PolicyConfig, digest: &str) -> PolicyConfig {
    let mut config = config.clone();
    let point = config.service_type.as_mut().expect("service_type");
    let mut pins = point.sha256.normalised().expect("pins");
    pins.push(digest.to_owned());
    point.sha256 = Pins::new(pins);
    config
}

#[tokio::test]
async fn wrong_sha256_refuses_to_load_and_says_why() {
    let mut s = spec("copy-method-by-driver", json!({}));
    let real = s.sha256.clone();
    s.sha256 = "ab".repeat(32);
    let config = PolicyConfig {
        copy_method: point(s, FailureMode::Fallback),
        ..PolicyConfig::default()
    };
    let err = PolicyEngine::new(&config, EngineOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&real) && msg.contains(&"ab".repeat(32)),
        "{msg}"
    );
    assert!(msg.contains("refusing to load"), "{msg}");
}

#[tokio::test]
async fn reload_swaps_a_good_bundle_and_keeps_the_old_on_bad_ones() {
    let Reloadable {
        _tmp,
        dir,
        config,
        engine,
    } = Reloadable::new().await;
    let decide = || hetzner_decision(&engine);
    let before = decide().await;
    assert_eq!(before.decision.service_type, ServiceType::ClusterIP);
    let old_digest = before.provenance.sha256.clone().unwrap();

    // Bad: a component that does not compile, pinned correctly.
    std::fs::write(
        dir.join("service-type-by-topology.wasm"),
        b"\0asm not really",
    )
    .unwrap();
    let bad_digest = digest(&dir.join("service-type-by-topology.wasm"));
    set_pin(&dir, &bad_digest);
    let err = engine
        .reload(&also_pinning(&config, &bad_digest))
        .await
        .expect_err("refused");
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(
        engine
            .last_reload_error()
            .unwrap()
            .contains("does not compile")
    );
    assert_eq!(decide().await.provenance.sha256.unwrap(), old_digest);

    // Bad: the wrong world (a copy-method component in a service-type bundle).
    std::fs::copy(
        wasm("copy-method-by-driver"),
        dir.join("service-type-by-topology.wasm"),
    )
    .unwrap();
    let other = digest(&wasm("copy-method-by-driver"));
    set_pin(&dir, &other);
    let err = engine
        .reload(&also_pinning(&config, &other))
        .await
        .expect_err("refused");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    // The same component, pinned by its bundle but not by the operator.
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(matches!(err, LoadError::NotOperatorPinned { .. }), "{err}");
    assert_eq!(decide().await.provenance.sha256.unwrap(), old_digest);
    assert_eq!(decide().await.provenance.sha256.unwrap(), old_digest);

    // Bad: a digest mismatch.
    copy_bundle("multi-cluster", &dir);
    set_pin(&dir, &"0".repeat(64));
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    assert_eq!(decide().await.provenance.sha256.unwrap(), old_digest);

    // Good: new settings (hetzner load balancers now trusted) take effect.
    trust_hetzner(&dir);
    engine.reload(&config).await.expect("good bundle loads");
    assert!(engine.last_reload_error().is_none());
    assert_eq!(
        decide().await.decision.service_type,
        ServiceType::LoadBalancer
    );
}

#[tokio::test]
async fn watcher_reloads_changed_files_without_a_restart() {
    let Reloadable {
        _tmp,
        dir,
        config,
        engine,
    } = Reloadable::new().await;
    let watcher = spawn_watcher(engine.clone(), config.clone(), Duration::from_millis(50));
    assert_eq!(
        hetzner_decision(&engine).await.decision.service_type,
        ServiceType::ClusterIP
    );

    // A bad change is refused and reported; the old set keeps serving.
    set_pin(&dir, &"1".repeat(64));
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.last_reload_error().is_none() {
        assert!(Instant::now() < deadline, "bad bundle never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hetzner_decision(&engine).await.decision.service_type,
        ServiceType::ClusterIP
    );

    // A good change takes effect.
    trust_hetzner(&dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = hetzner_decision(&engine).await;
        if d.decision.service_type == ServiceType::LoadBalancer {
            break;
        }
        assert!(Instant::now() < deadline, "good bundle never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(engine.last_reload_error().is_none());
    watcher.abort();
}

#[test]
fn cli_check_validates_a_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.toml");
    let bundle = root().join("policies/aws-ebs");
    let pin = digest(&bundle.join("copy-method-by-driver.wasm"));
    std::fs::write(
        &good,
        format!(
            "[policy.copy_method]\nbundle = {bundle:?}\nsha256 = {pin:?}\non_failure = \"fail\"\n\
             ceiling = {{ limits = {{ fuel = 20000000, timeout = \"100ms\", memory_mib = 16 }} }}\n",
        ),
    )
    .unwrap();
    let out = policy_check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("copy-method: plugin copy-method-by-driver"),
        "{stdout}"
    );
    assert!(stdout.contains("psk: built-in default"), "{stdout}");

    // Without the operator's pin the bundle is refused, and the error says what to pin.
    let unpinned = tmp.path().join("unpinned.toml");
    std::fs::write(
        &unpinned,
        format!("[policy.copy_method]\nbundle = {bundle:?}\n"),
    )
    .unwrap();
    let out = policy_check(&unpinned);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not pinned by the controller configuration")
            && stderr.contains(&format!("sha256 = \"{pin}\" in [policy.copy_method]")),
        "{stderr}"
    );

    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[policy.copy_method]\nbundle = \"/nonexistent\"\nsurprise = 1\n",
    )
    .unwrap();
    let out = policy_check(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("surprise"));
}

#[test]
fn cli_eval_answers_what_if() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.json");
    std::fs::write(&input, serde_json::to_string(&copy_input()).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .args(["policy", "eval", "copy-method"])
        .arg(&input)
        .arg("--bundle")
        .arg(root().join("policies/aws-ebs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["decision"]["method"], "Snapshot");
    assert_eq!(v["provenance"]["decided_by"], "plugin");
    assert_eq!(v["provenance"]["plugin"], "copy-method-by-driver");
}
