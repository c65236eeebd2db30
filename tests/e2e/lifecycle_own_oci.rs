//! Issue 16, bundles from an OCI registry: the real registry (distribution v3, htpasswd,
//! HTTPS with its own CA, on loopback). `ferrosync policy push` then `pull` round-trips a
//! bundle by digest; a controller configured with the bundle's digest and a pull secret
//! retries while the registry refuses the Secret's credentials, then decides with it; a wrong digest or refused credentials are refused while the old set
//! keeps serving; a restart with the blobs cached pulls nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use ferrosync::{
    api::ReplicationSource,
    policy::{
        EngineOptions, LoadError, PolicyConfig, PolicyEngine, golden,
        oci::{KubePullSecrets, OciError},
        types::DecisionPoint,
    },
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::pvc,
    lifecycle_own_support::{aws_ebs_bundle, copy_method_of},
    lifecycle_support::{create_rs, snapshot_destination, source_spec},
    support::{
        controller::ferrosync_binary,
        deploy,
        registry::{self, Registry},
        sim::storage::DRIVER,
        wait,
    },
};

const COMPONENT: &str = "copy-method-by-driver.wasm";

fn shipped() -> PathBuf {
    crate::support::bins::repo_root().join("policies/aws-ebs")
}

/// The shipped aws-ebs bundle, copied to `dir`, treating the simulator's driver as EBS
/// (so the plugin chooses Snapshot where the built-in default would not).
fn bundle_for_the_simulator(dir: &Path) -> PathBuf {
    aws_ebs_bundle(&dir.join("aws-ebs"), true)
}

fn docker_config(dir: &Path, registry: &Registry, password: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, registry.docker_config_json(password)).expect("docker config");
    path
}

fn ferrosync(args: &[&str]) -> Output {
    Command::new(ferrosync_binary())
        .args(args)
        .output()
        .expect("ferrosync runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ferrosync policy push`, which prints the pinned reference.
fn push(registry: &Registry, bundle: &Path, repo: &str, config: &Path) -> String {
    let ca = registry.cert_dir.join("ca.crt");
    let target = format!("{}/{repo}:1", registry.host);
    let out = ferrosync(&[
        "policy",
        "push",
        &bundle.to_string_lossy(),
        &target,
        "--registry-config",
        &config.to_string_lossy(),
        "--ca-file",
        &ca.to_string_lossy(),
        "--version",
        "1",
    ]);
    assert!(out.status.success(), "push: {}", text(&out));
    let pinned = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let prefix = format!("{}/{repo}@sha256:", registry.host);
    assert!(
        pinned.starts_with(&prefix) && pinned.len() == prefix.len() + 64,
        "{pinned}"
    );
    pinned
}

fn pull(registry: &Registry, reference: &str, dir: &Path, config: &Path) -> Output {
    let ca = registry.cert_dir.join("ca.crt");
    ferrosync(&[
        "policy",
        "pull",
        reference,
        &dir.to_string_lossy(),
        "--registry-config",
        &config.to_string_lossy(),
        "--ca-file",
        &ca.to_string_lossy(),
    ])
}

#[tokio::test]
async fn policy_push_then_pull_round_trips_by_digest_and_refuses_bad_credentials() {
    let registry = registry::bare();
    let tmp = tempfile::tempdir().expect("tmp");
    let good = docker_config(tmp.path(), registry, &registry.password, "good.json");
    let bad = docker_config(tmp.path(), registry, "not-the-password", "bad.json");

    let pinned = push(registry, &shipped(), "policies/aws-ebs", &good);
    // The same bundle pushed again has the same digest: the manifest is reproducible.
    assert_eq!(
        push(registry, &shipped(), "policies/aws-ebs", &good),
        pinned
    );

    let out_dir = tmp.path().join("pulled");
    let out = pull(registry, &pinned, &out_dir, &good);
    assert!(out.status.success(), "pull: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);
    for file in ["policy.toml", COMPONENT, "tests.json"] {
        assert_eq!(
            std::fs::read(out_dir.join(file)).expect("pulled file"),
            std::fs::read(shipped().join(file)).expect("shipped file"),
            "{file}"
        );
    }
    // A tag resolves to the same digest, printed to pin.
    let tagged = format!("{}/policies/aws-ebs:1", registry.host);
    let out = pull(registry, &tagged, &tmp.path().join("by-tag"), &good);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pinned,
        "{}",
        text(&out)
    );

    // Refused credentials: nothing pulled or pushed, and the message says why.
    let refused = tmp.path().join("refused");
    let out = pull(registry, &pinned, &refused, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused the credentials"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(&registry.password));
    assert!(!refused.join("policy.toml").exists());
    let ca = registry.cert_dir.join("ca.crt");
    let out = ferrosync(&[
        "policy",
        "push",
        &shipped().to_string_lossy(),
        &format!("{}/policies/other:1", registry.host),
        "--registry-config",
        &bad.to_string_lossy(),
        "--ca-file",
        &ca.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused the credentials"),
        "{}",
        text(&out)
    );

    // A digest the registry does not hold.
    let missing = format!(
        "{}/policies/aws-ebs@sha256:{}",
        registry.host,
        "0".repeat(64)
    );
    let out = pull(registry, &missing, &tmp.path().join("missing"), &good);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not in the registry"), "{}", text(&out));
}

/// A dockerconfigjson Secret in the controller's namespace, as
/// `kubectl create secret docker-registry` makes it.
/// What the controller-side tests start from: the registry, a scratch directory in the
/// control plane's, the simulator's bundle in it, a docker config with the registry's
/// password, the component's pin, and a client; the controller's identity is in place for
/// the Secrets it reads.
type Scratch = (
    &'static Registry,
    PathBuf,
    PathBuf,
    PathBuf,
    String,
    kube::Client,
);

async fn scratch(name: &str) -> Scratch {
    let env = env();
    let registry = registry::bare();
    let dir = env.cp.dir.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bundle = bundle_for_the_simulator(&dir);
    let good = docker_config(&dir, registry, &registry.password, "good.json");
    let pin = ferrosync::policy::plugin::sha256_hex(
        &std::fs::read(bundle.join(COMPONENT)).expect("component"),
    );
    let client = env.cp.client().await;
    deploy::controller_identity(env.cp);
    (registry, dir, bundle, good, pin, client)
}

/// Engine options whose pull secrets are read, as the controller reads them, from its
/// namespace.
fn engine_options(client: &kube::Client) -> EngineOptions {
    EngineOptions {
        pull_secrets: Arc::new(KubePullSecrets::new(client.clone(), deploy::NAMESPACE)),
        ..EngineOptions::default()
    }
}

/// Two pull secrets: one with the registry's password, one it refuses.
async fn good_and_refused_secrets(
    client: &kube::Client,
    registry: &Registry,
    good: &str,
    refused: &str,
) {
    pull_secret(
        client,
        good,
        registry.docker_config_json(&registry.password),
    )
    .await;
    pull_secret(client, refused, registry.docker_config_json("wrong")).await;
}

async fn pull_secret(client: &kube::Client, name: &str, config: String) {
    let api: Api<Secret> = Api::namespaced(client.clone(), deploy::NAMESPACE);
    let _ = api.delete(name, &Default::default()).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .expect("secret");
    api.create(&PostParams::default(), &secret)
        .await
        .expect("creating the pull secret");
}

fn controller_config(
    dir: &Path,
    name: &str,
    registry: &Registry,
    reference: &str,
    pin: &str,
    secret: &str,
    cache: &Path,
) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[policy.engine]\nreload_interval = \"300ms\"\n\
             [policy.oci]\npull_secret = {secret:?}\nca_files = [{:?}]\ncache_dir = {:?}\n\
             [policy.copy_method]\noci = {reference:?}\nsha256 = {pin:?}\non_failure = \"fail\"\n",
            registry.cert_dir.join("ca.crt").to_string_lossy(),
            cache.to_string_lossy(),
        ),
    )
    .expect("config");
    path
}

fn load(path: &Path) -> PolicyConfig {
    ferrosync::config::Config::load(Some(path))
        .expect("the controller configuration loads")
        .policy
}

#[tokio::test]
async fn a_bundle_pulled_by_digest_decides_for_the_controller() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let (registry, dir, bundle, good, pin, client) = scratch("oci").await;
    let pinned = push(registry, &bundle, "policies/aws-ebs-sim", &good);
    // The Secret holds a password the registry refuses at first.
    pull_secret(
        &client,
        "policy-registry",
        registry.docker_config_json("wrong"),
    )
    .await;
    let cache = dir.join("cache");
    let config = controller_config(
        &dir,
        "controller.toml",
        registry,
        &pinned,
        &pin,
        "policy-registry",
        &cache,
    );

    let controller = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    // Refused, said so, retried with backoff; unready meanwhile (a rolling update keeps the
    // previous pod serving).
    wait::until(
        "the pull to be refused",
        Duration::from_secs(60),
        || async {
            let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
            Ok(log
                .lines()
                .filter(|l| l.contains("policy bundle not loaded; retrying"))
                .find(|l| l.contains("refused the credentials"))
                .map(str::to_owned))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert_eq!(controller.get("/readyz").map(|(code, _)| code), Some(503));
    assert!(
        !std::fs::read_to_string(&controller.log)
            .unwrap_or_default()
            .contains(&registry.password)
    );
    // Fixed: the next attempt pulls, and the controller starts deciding.
    pull_secret(
        &client,
        "policy-registry",
        registry.docker_config_json(&registry.password),
    )
    .await;
    let dst = env.cp.namespace("oci-dst").await;
    let src = env.cp.namespace("oci-src").await;
    snapshot_destination(&dst, "pulled", 1, json!({})).await;
    let (address, key) = crate::volsync::published(&dst, "pulled").await;
    crate::volsync::copy_secret(&dst, &key, &src, "pulled-key").await;
    pvc("first").create(&src).await;
    create_rs(
        &src,
        "first",
        source_spec(
            "pulled",
            "first",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    let api: Api<ReplicationSource> = src.api();
    let decided = copy_method_of(&api, "first").await;
    assert_eq!(decided.value, "Snapshot", "{decided:?}");
    assert_eq!(decided.decided_by, "copy-method-by-driver", "{decided:?}");
    assert_ne!(decided.fallback, Some(true));
    // The pulled blobs are in the cache by digest: the manifest and the component.
    let manifest_hex = pinned.rsplit_once("sha256:").expect("digest").1;
    assert!(cache.join("blobs/sha256").join(manifest_hex).is_file());
    assert!(cache.join("blobs/sha256").join(&pin).is_file());
    drop(controller);
}

#[tokio::test]
async fn a_wrong_digest_or_refused_credentials_keep_the_old_set_serving() {
    let (registry, dir, bundle, good, pin, client) = scratch("oci-refusals").await;
    let pinned = push(registry, &bundle, "policies/aws-ebs-refusals", &good);
    good_and_refused_secrets(
        &client,
        registry,
        "policy-registry-ok",
        "policy-registry-wrong",
    )
    .await;
    let cache = dir.join("cache");
    let options = || engine_options(&client);
    let good_config = load(&controller_config(
        &dir,
        "good.toml",
        registry,
        &pinned,
        &pin,
        "policy-registry-ok",
        &cache,
    ));
    let engine = PolicyEngine::new(&good_config, options())
        .await
        .expect("pulled and loaded");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("tests.json")).expect("tests"))
            .expect("json");
    let mut input = cases["cases"][0]["input"].clone();
    input["storageClass"]["provisioner"] = json!(DRIVER);
    let decide = || async {
        golden::eval_json(&engine, DecisionPoint::CopyMethod, input.clone())
            .await
            .expect("valid input")
            .expect("decides")
    };
    let before = decide().await;
    assert_eq!(
        before.decision["method"], "Snapshot",
        "{:?}",
        before.decision
    );
    assert_eq!(before.provenance.sha256.as_deref(), Some(pin.as_str()));

    // A digest the registry does not hold: refused, retryable, the old set decides.
    let wrong = format!(
        "{}/policies/aws-ebs-refusals@sha256:{}",
        registry.host,
        "1".repeat(64)
    );
    let config = load(&controller_config(
        &dir,
        "wrong.toml",
        registry,
        &wrong,
        &pin,
        "policy-registry-ok",
        &cache,
    ));
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(
        matches!(err, LoadError::Oci(OciError::NotFound { .. })),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(
        engine
            .last_reload_error()
            .expect("kept")
            .contains("correct the digest")
    );
    assert_eq!(
        decide().await.provenance.sha256.as_deref(),
        Some(pin.as_str())
    );

    // Credentials the registry refuses (nothing cached yet in this cache): refused.
    let empty_cache = dir.join("empty-cache");
    let config = load(&controller_config(
        &dir,
        "bad.toml",
        registry,
        &pinned,
        &pin,
        "policy-registry-wrong",
        &empty_cache,
    ));
    let err = engine.reload(&config).await.expect_err("refused");
    assert!(
        matches!(err, LoadError::Oci(OciError::Unauthorized { .. })),
        "{err}"
    );
    assert!(!err.to_string().contains(&registry.password));
    assert_eq!(
        decide().await.provenance.sha256.as_deref(),
        Some(pin.as_str())
    );
    // A pull secret that does not exist: refused, named.
    let config = load(&controller_config(
        &dir,
        "none.toml",
        registry,
        &pinned,
        &pin,
        "no-such-secret",
        &empty_cache,
    ));
    let err = engine
        .reload(&config)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("no-such-secret") && err.contains("not found"),
        "{err}"
    );

    // A restart that finds the blobs in its cache pulls nothing: even with credentials
    // the registry would refuse, the cached, re-verified bundle loads.
    let restarted = load(&controller_config(
        &dir,
        "restart.toml",
        registry,
        &pinned,
        &pin,
        "policy-registry-wrong",
        &cache,
    ));
    let again = PolicyEngine::new(&restarted, options())
        .await
        .expect("loaded from the cache");
    assert_eq!(again.plugins()[0].sha256, pin);

    // A tag in the configuration is refused when it is read, and says why.
    let tagged = controller_config(
        &dir,
        "tag.toml",
        registry,
        &format!("{}/policies/x:1", registry.host),
        &pin,
        "s",
        &cache,
    );
    let err = ferrosync::config::Config::load(Some(&tagged))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("must be named by digest"), "{err}");
}

/// `<component>.sig` as `cosign sign-blob --key` writes it, made with openssl: base64 of
/// the DER ECDSA P-256 signature over the component. Returns the public key's file.
fn sign(dir: &Path, bundle: &Path) -> PathBuf {
    use openssl::{
        base64,
        ec::{EcGroup, EcKey},
        hash::MessageDigest,
        nid::Nid,
        pkey::PKey,
        sign::Signer,
    };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let public = dir.join("team.pub");
    std::fs::write(&public, key.public_key_to_pem().expect("pem")).expect("write key");
    let component = std::fs::read(bundle.join(COMPONENT)).expect("component");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    let signature = signer.sign_oneshot_to_vec(&component).expect("sign");
    std::fs::write(
        bundle.join(format!("{COMPONENT}.sig")),
        base64::encode_block(&signature),
    )
    .expect("write signature");
    public
}

fn requiring_signatures(config: &Path, public: &Path) -> PolicyConfig {
    let text = std::fs::read_to_string(config).expect("config");
    let signed = config.with_extension("signed.toml");
    std::fs::write(
        &signed,
        format!(
            "{text}[policy.signatures]\npublic_keys = [{:?}]\n",
            public.to_string_lossy()
        ),
    )
    .expect("write");
    load(&signed)
}

#[tokio::test]
async fn a_signature_travels_with_the_bundle_and_is_checked_when_required() {
    let (registry, dir, bundle, good, pin, client) = scratch("oci-signed").await;
    let unsigned = push(registry, &bundle, "policies/unsigned", &good);
    let public = sign(&dir, &bundle);
    let signed = push(registry, &bundle, "policies/signed", &good);
    pull_secret(
        &client,
        "policy-registry-signed",
        registry.docker_config_json(&registry.password),
    )
    .await;
    let options = || engine_options(&client);
    let cache = dir.join("cache");

    let config = controller_config(
        &dir,
        "signed.toml",
        registry,
        &signed,
        &pin,
        "policy-registry-signed",
        &cache,
    );
    let engine = PolicyEngine::new(&requiring_signatures(&config, &public), options())
        .await
        .expect("the signed bundle loads");
    assert_eq!(engine.plugins()[0].sha256, pin);

    let config = controller_config(
        &dir,
        "unsigned.toml",
        registry,
        &unsigned,
        &pin,
        "policy-registry-signed",
        &cache,
    );
    let err = engine
        .reload(&requiring_signatures(&config, &public))
        .await
        .expect_err("an unsigned bundle is refused")
        .to_string();
    assert!(err.contains("is not signed"), "{err}");
    assert_eq!(engine.plugins()[0].sha256, pin);

    // `policy pull` brings the signature along.
    let out = pull(registry, &signed, &dir.join("pulled"), &good);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.join("pulled").join(format!("{COMPONENT}.sig"))).expect("sig"),
        std::fs::read(bundle.join(format!("{COMPONENT}.sig"))).expect("sig")
    );
}

#[tokio::test]
async fn refused_credentials_are_retried_with_backoff_until_the_secret_is_fixed() {
    let (registry, dir, bundle, good, pin, client) = scratch("oci-retry").await;
    let pinned = push(registry, &bundle, "policies/retried", &good);
    good_and_refused_secrets(
        &client,
        registry,
        "policy-registry-first",
        "policy-registry-later",
    )
    .await;
    let options = || engine_options(&client);
    // A second point from a directory, whose change makes the watcher reload.
    let service = dir.join("multi-cluster");
    std::fs::create_dir_all(&service).expect("mkdir");
    for entry in std::fs::read_dir(shipped().with_file_name("multi-cluster"))
        .expect("bundle")
        .flatten()
    {
        std::fs::copy(entry.path(), service.join(entry.file_name())).expect("copy");
    }
    let service_pin = ferrosync::policy::plugin::sha256_hex(
        &std::fs::read(service.join("service-type-by-topology.wasm")).expect("component"),
    );
    let with_service = |name: &str, secret: &str, cache: &Path| {
        let path = controller_config(&dir, name, registry, &pinned, &pin, secret, cache);
        let text = std::fs::read_to_string(&path).expect("config");
        std::fs::write(
            &path,
            format!(
                "{text}[policy.service_type]\nbundle = {:?}\nsha256 = {service_pin:?}\n",
                service.to_string_lossy()
            ),
        )
        .expect("write");
        load(&path)
    };
    let started = with_service(
        "first.toml",
        "policy-registry-first",
        &dir.join("cache-first"),
    );
    let engine = PolicyEngine::new(&started, options()).await.expect("loads");
    // The watcher's configuration pulls with a Secret the registry refuses, into an empty
    // cache; a changed service-type bundle makes it reload.
    let watched = with_service(
        "later.toml",
        "policy-registry-later",
        &dir.join("cache-later"),
    );
    let _watcher = ferrosync::policy::reload::spawn_watcher(
        engine.clone(),
        watched,
        Duration::from_millis(100),
    );
    let policy = service.join("policy.toml");
    let text = std::fs::read_to_string(&policy).expect("read");
    std::fs::write(&policy, format!("{text}\n# changed\n")).expect("write");
    let refused = wait::until(
        "the reload to be refused",
        Duration::from_secs(30),
        || async {
            Ok(engine
                .last_reload_error()
                .filter(|e| e.contains("refused the credentials")))
        },
    )
    .await
    .expect("refused");
    assert!(!refused.contains(&registry.password));
    let reloads = |result: &str| {
        engine
            .metrics()
            .reloads
            .get_or_create(&ferrosync::policy::metrics::ReloadLabels {
                result: result.into(),
            })
            .get()
    };
    assert_eq!(reloads("ok"), 0);
    // Fixed: the next retry, without any file changing, pulls and swaps the set in.
    pull_secret(
        &client,
        "policy-registry-later",
        registry.docker_config_json(&registry.password),
    )
    .await;
    wait::until("the retry to succeed", Duration::from_secs(30), || async {
        Ok(engine.last_reload_error().is_none().then_some(()))
    })
    .await
    .expect("retried");
    assert_eq!(reloads("ok"), 1);
    assert!(dir.join("cache-later/blobs/sha256").join(&pin).is_file());
}
