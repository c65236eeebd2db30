//! `kubectl ferrosync replicate --psk-pair` between two clusters that share only a real
//! OpenBao (issue 11's "the vault bundle pairs keys across the two clusters without any
//! Secret being copied", with issue 14's tenant-safe pair model).
//!
//! `east` is this binary's cluster, `west` a second one started here with its own control
//! plane, simulators (nodes, storage, load balancer, routing) and address ranges; each runs
//! its own controller configured with the shipped vault bundle against the same OpenBao.
//! The data crosses through west's LoadBalancer address, moved by movers in both sites.
//! The tests live in this binary rather than with the other two-cluster tests because
//! their controllers need a vault configuration, and those tests' controllers are shared.

use std::path::Path;

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::{
    core::v1::Secret,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::{
    env::{MOVER_IMAGE, SERIAL, env},
    lifecycle_own_vault::{Bao, PAIR, PREFIXES, grant_prefixes, token_secret},
    lifecycle_support::{assert_image_equals, manual_synced, new_image, sample_volume},
    support::{
        ControlPlane, Options, TestNamespace, control_plane_with,
        controller::RunningController,
        deploy, kubeconfig,
        kubectl_plugin::{PairSides, text},
        sim::{Cluster, Site},
    },
    volsync::privileged_movers,
};

/// The second cluster, `west`, started once per binary; its controller is the test's.
fn west() -> &'static ControlPlane {
    let cp = control_plane_with(Options::end_to_end().at(Site::West));
    Cluster::start(cp);
    cp
}

/// Starts west's controller with the e2e settings and the vault `config`, and applies
/// the vault token Secret it names.
async fn west_controller(cp: &ControlPlane, config: &Path) -> RunningController {
    let config = config.to_string_lossy();
    let controller = RunningController::start(
        cp,
        &deploy::controller_identity(cp),
        &[
            ("POD_NAMESPACE", deploy::NAMESPACE),
            ("FERROSYNC_CONFIG", config.as_ref()),
            ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
            ("FERROSYNC_MOVER__BACKOFF_LIMIT", "1"),
            ("FERROSYNC_REQUEUE__POLL", "500ms"),
            ("FERROSYNC_REQUEUE__IDLE", "10s"),
        ],
    );
    token_secret(cp).await;
    controller
}

/// Both sites' controllers, configured for one OpenBao; held for the test's life.
struct Sites {
    west: &'static ControlPlane,
    bao: Bao,
    _east: RunningController,
    _west: RunningController,
}

/// Starts both sites' controllers, west's always with the vault bundle, east's only
/// with `east_vault` (without, the `ferrosync.io/psk-pair` annotation means nothing there).
async fn sites(name: &str, east_vault: bool) -> Sites {
    let east = env();
    let west = west();
    let bao = Bao::start().await;
    let east_controller = match east_vault {
        true => {
            crate::lifecycle_own_vault::start_with_vault(
                &east,
                &bao.controller_config(east.cp, &format!("{name}-east")),
                &[],
            )
            .await
        }
        false => east.controller(&[]),
    };
    let west_controller =
        west_controller(west, &bao.controller_config(west, &format!("{name}-west"))).await;
    Sites {
        west,
        bao,
        _east: east_controller,
        _west: west_controller,
    }
}

/// `replicate` of east's `data` as `db`, synced on a manual trigger, keyed by vault `pair`.
fn replicate_args(pair: &str) -> [&str; 10] {
    [
        "replicate",
        "db",
        "--pvc",
        "data",
        "--manual",
        "once",
        "--psk-pair",
        pair,
        "--timeout",
        "90s",
    ]
}

/// Asserts `ns` holds no `db` of kind `K`: nothing was created.
async fn assert_absent<K>(ns: &TestNamespace)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let found = ns.api::<K>().get_opt("db").await.expect("reading db");
    assert!(found.is_none(), "{} db was created", K::kind(&()));
}

/// `kubectl-ferrosync`, as a user with `kubeconfig` (contexts `east` and `west`) runs it
/// for a source in east's `src` and a destination in west's `dst`.
fn kubectl<'a>(kubeconfig: &'a Path, src: &'a str, dst: &'a str) -> PairSides<'a> {
    PairSides {
        bin: env!("CARGO_BIN_EXE_kubectl-ferrosync"),
        kubeconfig,
        source: ("east", src),
        dest: ("west", dst),
    }
}

/// A kubeconfig with contexts `east` and `west` for these two kubeconfigs.
fn two_contexts(dir: &Path, east: &Path, west: &Path) -> std::path::PathBuf {
    let path = dir.join("sites.kubeconfig");
    kubeconfig::merge_sites(&path, &[("east", east), ("west", west)]).expect("kubeconfig");
    path
}

/// `psk.txt` of Secret `name` in `ns`.
async fn psk(ns: &TestNamespace, name: &str) -> String {
    let secret: Secret = ns.api().get(name).await.expect("key Secret");
    String::from_utf8(secret.data.expect("data")["psk.txt"].0.clone()).expect("utf-8")
}

#[tokio::test]
async fn kubectl_pairs_two_clusters_through_the_vault_without_copying_a_secret() {
    let _one_at_a_time = SERIAL.lock().await;
    let started = std::time::Instant::now();
    let sites = sites("kubectl-pair", true).await;
    let east = env();
    let src = east.cp.namespace("vp-app").await;
    let dst = sites.west.namespace("vp-copy").await;
    for (cp, ns) in [(east.cp, &src), (sites.west, &dst)] {
        privileged_movers(ns).await;
        grant_prefixes(cp, &ns.name, "vp-").await;
    }
    let data = sample_volume(&src, "data").await;
    let pair = format!("vp-db-{}", src.name);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = two_contexts(dir.path(), &east.cp.kubeconfig, &sites.west.kubeconfig);
    let kubectl = kubectl(&kubeconfig, &src.name, &dst.name);

    let replicate = replicate_args(&pair);
    let mut said = kubectl.ok(&replicate);
    let rs: ReplicationSource = src.api().get("db").await.expect("source in east");
    let rd: ReplicationDestination = dst.api().get("db").await.expect("destination in west");
    for annotations in [rs.annotations(), rd.annotations()] {
        assert_eq!(annotations.get(PAIR), Some(&pair), "{annotations:?}");
    }
    let tls = rs.spec.rsync_tls.clone().expect("rsyncTLS");
    assert_eq!(tls.key_secret, None, "the source names no key Secret");
    let address = rd
        .status
        .and_then(|s| s.rsync_tls)
        .and_then(|t| t.address)
        .expect("west's address");
    assert_eq!(tls.address.as_deref(), Some(address.as_str()));
    assert!(
        address.starts_with("127.74."),
        "an address of west's load-balancer range: {address}"
    );
    // replicate returned once the source's key was there: the controller's, from the vault.
    assert_eq!(
        rs.status
            .and_then(|s| s.rsync_tls)
            .and_then(|t| t.key_secret)
            .as_deref(),
        Some("ferrosync-source-key-db")
    );

    // The first sync crosses through west's load balancer; then `sync --wait` carries a
    // change, and west's newest image holds east's tree.
    manual_synced(&src, "db", "once").await;
    let first = new_image(&dst, "db", None).await;
    std::fs::write(data.join("after-first-sync"), b"a change").expect("write");
    said += &kubectl.ok(&["sync", "db", "--wait"]);
    let second = new_image(&dst, "db", Some(&first)).await;
    assert_image_equals(&dst, &second, "restored", &data).await;

    // No Secret crossed: the source namespace holds only the key its controller made
    // from the vault, and both sides hold the vault's key.
    let in_source: Vec<Secret> = src
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items;
    assert_eq!(
        in_source.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["ferrosync-source-key-db"],
        "only the controller's key Secret in the source namespace"
    );
    assert_eq!(
        in_source[0]
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ferrosync"),
        "made by the controller, not by kubectl"
    );
    let vault = sites.bao.key(&pair).await.expect("the pair's key in vault");
    assert_eq!(psk(&src, "ferrosync-source-key-db").await, vault);
    assert_eq!(psk(&dst, "volsync-rsync-tls-db").await, vault);

    // Twice is a no-op (the controllers keep writing status, so the spec's generation
    // and the metadata are compared); status names the vault pair as the key's source.
    let versions = || async {
        let rs: ReplicationSource = src.api().get("db").await.unwrap();
        let rd: ReplicationDestination = dst.api().get("db").await.unwrap();
        [rs.metadata, rd.metadata].map(|m| (m.generation, m.annotations, m.labels))
    };
    let before = versions().await;
    said += &kubectl.ok(&replicate);
    assert_eq!(
        versions().await,
        before,
        "replicate twice changed an object"
    );
    let status = kubectl.ok(&["status", "-o", "json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&status[status.find('[').unwrap()..=status.rfind(']').unwrap()])
            .expect("status json");
    assert_eq!(rows[0]["keySource"], format!("vault pair {pair}"), "{rows}");
    said += &status;

    // --dry-run: both manifests name the pair, neither a key Secret.
    let dry = kubectl.run(&[
        "replicate",
        "db2",
        "--pvc",
        "data",
        "--psk-pair",
        &pair,
        "--address",
        &address,
        "--dry-run",
        "client",
        "-o",
        "yaml",
    ]);
    assert!(dry.status.success());
    let yaml = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert_eq!(
        yaml.matches(&format!("{PAIR}: {pair}")).count(),
        2,
        "the pair on both manifests: {yaml}"
    );
    assert!(!yaml.contains("keySecret"), "{yaml}");
    said += &text(&dry);

    let hex = vault.rsplit(':').next().expect("identity:key").trim();
    assert!(hex.len() >= 32, "a key, not an empty string");
    assert!(!said.contains(hex), "kubectl printed the key");
    eprintln!(
        "vault pair through kubectl across two clusters: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// A Role for a tenant who may write both kinds and read PVCs in `ns`, but not read
/// Namespaces: `replicate` cannot check the grant and relies on the controller's word.
async fn tenant_in(ns: &TestNamespace, user: &str) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "pair-tenant"},
        "rules": [
            {"apiGroups": ["volsync.backube"],
             "resources": ["replicationsources", "replicationdestinations"],
             "verbs": ["get", "create", "patch"]},
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]},
        ],
    }))
    .expect("role");
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "pair-tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pair-tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("binding");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the RoleBinding");
}

#[tokio::test]
async fn replicate_refuses_an_ungranted_vault_pair_and_a_site_without_the_vault() {
    let _one_at_a_time = SERIAL.lock().await;
    // East's controller has no vault bundle here: its source would generate a key of its
    // own, which west's destination would never accept.
    let sites = sites("kubectl-refused", false).await;
    let east = env();
    let src = east.cp.namespace("vp-deny-app").await;
    let dst = sites.west.namespace("vp-deny-copy").await;
    sample_volume(&src, "data").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = two_contexts(dir.path(), &east.cp.kubeconfig, &sites.west.kubeconfig);
    let as_admin = kubectl(&admin, &src.name, &dst.name);

    // A name the controller could never use is a usage error.
    let out = as_admin.run(&replicate_args("../db"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not a valid pair name"));

    // Who may read the Namespaces is refused before anything is created.
    let out = as_admin.run(&replicate_args("vp-db"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(
        said.contains(PREFIXES) && said.contains("Nothing was created"),
        "{said}"
    );
    // A dry run prints the manifests for a repository, and warns.
    let dry = as_admin.run(&[
        "replicate",
        "db",
        "--pvc",
        "data",
        "--psk-pair",
        "vp-db",
        "--dry-run",
        "client",
    ]);
    let said = text(&dry);
    assert!(dry.status.success(), "{said}");
    assert!(
        said.contains("warning: ") && said.contains(PREFIXES) && !said.contains("Nothing was"),
        "{said}"
    );
    assert_absent::<ReplicationDestination>(&dst).await;
    assert_absent::<ReplicationSource>(&src).await;

    // A tenant who may not read them gets the controller's refusal of the destination,
    // and the source is never created.
    tenant_in(&src, "pair-tenant").await;
    tenant_in(&dst, "pair-tenant").await;
    let tenant = dir.path().join("tenant.kubeconfig");
    kubeconfig::merge_sites(
        &tenant,
        &[
            ("east", &east.cp.user_kubeconfig("pair-tenant", &[])),
            ("west", &sites.west.user_kubeconfig("pair-tenant", &[])),
        ],
    )
    .expect("tenant kubeconfig");
    let as_tenant = kubectl(&tenant, &src.name, &dst.name);
    let out = as_tenant.run(&replicate_args("vp-db"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(
        said.contains("the controller refused the pair")
            && said.contains("is not authorised")
            && said.contains(PREFIXES),
        "{said}"
    );
    assert_absent::<ReplicationSource>(&src).await;
    assert_eq!(
        sites.bao.key("vp-db").await,
        None,
        "nothing stored for the pair"
    );

    // Granted, but east's controller has no vault bundle: west stores the pair's key, and
    // replicate stops at east's source, whose key no vault plugin decided.
    let src = east.cp.namespace("vp-novault-app").await;
    let dst = sites.west.namespace("vp-novault-copy").await;
    for (cp, ns) in [(east.cp, &src), (sites.west, &dst)] {
        grant_prefixes(cp, &ns.name, "vp-").await;
    }
    sample_volume(&src, "data").await;
    let as_admin = kubectl(&admin, &src.name, &dst.name);
    let out = as_admin.run(&replicate_args("vp-novault"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(
        said.contains(&format!("ReplicationSource {}/db (context east)", src.name))
            && said.contains("not by a vault plugin")
            && said.contains("[policy.psk]"),
        "{said}"
    );
    assert!(
        sites.bao.key("vp-novault").await.is_some(),
        "west stored it"
    );
}
