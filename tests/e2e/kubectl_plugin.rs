//! `kubectl ferrosync` end to end, through the real binary: replicate, status, sync,
//! failover with the source site gone, and failback that sends only the changes.
//!
//! Stand-in until the harness runs two control planes: the two "sites" are two kubeconfig
//! contexts (`east`, `west`) on this binary's one cluster, in separate namespaces, and the
//! lost site is a context whose apiserver address answers nothing. The traffic goes through
//! a LoadBalancer address, as it would between clusters.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    config::{Kubeconfig, NamedCluster, NamedContext},
};

use crate::{
    env::env,
    fixtures::{bound_dir, pvc},
    support::{TestNamespace, wait},
    tree,
    volsync::{privileged_movers, synced},
};

const OWNER: (u32, u32) = (4321, 8765);

/// The pair under test, synced once at creation and then on `sync`.
const REPLICATE: [&str; 8] = [
    "replicate",
    "db",
    "--pvc",
    "data",
    "--manual",
    "once",
    "--rpo",
    "1h",
];

/// A kubeconfig with `east` and `west` (this cluster) and `lost` (nothing listens there).
fn sites_kubeconfig(admin: &Path, dir: &Path) -> PathBuf {
    let mut config = Kubeconfig::read_from(admin).expect("admin kubeconfig");
    let base = config.contexts[0].clone();
    let mut lost_cluster = config.clusters[0].clone();
    lost_cluster.name = "lost".into();
    if let Some(cluster) = lost_cluster.cluster.as_mut() {
        // A port nothing listens on: connections are refused at once.
        cluster.server = Some(format!(
            "https://127.0.0.1:{}",
            crate::support::process::free_port()
        ));
    }
    config.clusters.push(NamedCluster { ..lost_cluster });
    for name in ["east", "west", "lost"] {
        let mut ctx: NamedContext = base.clone();
        ctx.name = name.into();
        if name == "lost"
            && let Some(c) = ctx.context.as_mut()
        {
            c.cluster = "lost".into();
        }
        config.contexts.push(ctx);
    }
    let path = dir.join("sites.kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("yaml"))
        .expect("write kubeconfig");
    path
}

struct Plugin {
    kubeconfig: PathBuf,
    src: String,
    dst: String,
}

impl Plugin {
    fn run(&self, args: &[&str], source_context: &str) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-ferrosync"))
            .args(args)
            .args([
                "--source-context",
                source_context,
                "--source-namespace",
                &self.src,
            ])
            .args(["--dest-context", "west", "--dest-namespace", &self.dst])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .output()
            .expect("running kubectl-ferrosync");
        eprintln!(
            "$ kubectl ferrosync {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str], source_context: &str) -> String {
        let out = self.run(args, source_context);
        assert!(out.status.success(), "kubectl ferrosync {args:?} failed");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn write_file(dir: &Path, name: &str, len: usize, seed: u8) {
    // Incompressible enough that rsync cannot cheat: a simple xorshift stream.
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join(name), bytes).expect("write");
}

async fn resource_versions(
    src: &TestNamespace,
    dst: &TestNamespace,
    key: &str,
) -> Vec<Option<String>> {
    vec![
        src.api::<ReplicationSource>()
            .get("db")
            .await
            .expect("rs")
            .resource_version(),
        dst.api::<ReplicationDestination>()
            .get("db")
            .await
            .expect("rd")
            .resource_version(),
        src.api::<Secret>()
            .get(key)
            .await
            .expect("key copy")
            .resource_version(),
    ]
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.path().symlink_metadata().unwrap();
        total += if meta.is_dir() {
            tree_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Waits until the destination has published the source's last sync: the source reports
/// its mover's end, the destination its image a little later.
async fn published_as_synced(src: &TestNamespace, dst: &TestNamespace) {
    let (rss, rds) = (
        src.api::<ReplicationSource>(),
        dst.api::<ReplicationDestination>(),
    );
    wait::until(
        "the destination to publish the last sync",
        Duration::from_secs(120),
        || async {
            let rs = rss.get("db").await.map_err(|e| e.to_string())?;
            let rd = rds.get("db").await.map_err(|e| e.to_string())?;
            let sent = rs.status.and_then(|s| s.sync.last_sync_time).map(|t| t.0);
            let status = rd.status.unwrap_or_default();
            let published = status.sync.last_sync_time.map(|t| t.0);
            Ok(
                (status.latest_image.is_some() && sent.is_some() && published >= sent)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

#[tokio::test]
async fn replicate_fail_over_and_fail_back_with_kubectl_ferrosync() {
    let env = env();
    let src = env.cp.namespace("kf-east").await;
    let dst = env.cp.namespace("kf-west").await;
    privileged_movers(&src).await;
    privileged_movers(&dst).await;
    let work = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin {
        kubeconfig: sites_kubeconfig(&env.cp.kubeconfig, work.path()),
        src: src.name.clone(),
        dst: dst.name.clone(),
    };

    pvc("data").create(&src).await;
    let east = bound_dir(&src, "data").await;
    tree::write_sample(&east, OWNER);
    write_file(&east, "table.db", 8 << 20, 1);

    // replicate: the destination, its key in the source namespace, the source.
    let out = plugin.ok(&REPLICATE, "east");
    let rd = dst
        .api::<ReplicationDestination>()
        .get("db")
        .await
        .expect("destination");
    let tls = rd
        .status
        .clone()
        .and_then(|s| s.rsync_tls)
        .expect("rsyncTLS status");
    let address = tls.address.expect("address");
    assert!(
        address.starts_with("127.66."),
        "a LoadBalancer address: {address}"
    );
    let key = tls.key_secret.expect("key secret");
    let original: Secret = dst.api().get(&key).await.expect("destination key");
    let copied: Secret = src
        .api()
        .get(&key)
        .await
        .expect("key copied to the source site");
    assert_eq!(original.data, copied.data, "the same key on both sides");
    let psk = String::from_utf8(original.data.unwrap()["psk.txt"].0.clone()).unwrap();
    let hex = psk.rsplit(':').next().unwrap().trim();
    assert!(!out.contains(hex), "the key was printed");
    let rs = src
        .api::<ReplicationSource>()
        .get("db")
        .await
        .expect("source");
    assert_eq!(
        rs.spec.rsync_tls.as_ref().and_then(|t| t.address.clone()),
        Some(address.clone())
    );
    synced(&src, "db", Duration::from_secs(180)).await;
    published_as_synced(&src, &dst).await;

    // Idempotent: a second run changes nothing.
    let before = resource_versions(&src, &dst, &key).await;
    plugin.ok(&REPLICATE, "east");
    assert_eq!(
        resource_versions(&src, &dst, &key).await,
        before,
        "replicate twice changed an object"
    );

    // --dry-run prints manifests for both sites that apply as they are.
    let dry = plugin.run(
        &[
            "replicate",
            "db2",
            "--pvc",
            "data",
            "--dry-run",
            "client",
            "-o",
            "yaml",
            "--address",
            "192.0.2.10",
        ],
        "east",
    );
    assert!(dry.status.success());
    let yaml = String::from_utf8(dry.stdout).unwrap();
    assert!(
        !yaml.contains("psk.txt") && !yaml.contains(hex),
        "the dry run inlined the key"
    );
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let obj: DynamicObject = serde::Deserialize::deserialize(doc).expect("a manifest");
        let kind = obj.types.clone().expect("kind").kind;
        let ns = obj.namespace().expect("namespaced");
        let ar = match kind.as_str() {
            "ReplicationSource" => kube::api::ApiResource::erase::<ReplicationSource>(&()),
            _ => kube::api::ApiResource::erase::<ReplicationDestination>(&()),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(src.client.clone(), &ns, &ar);
        let params = PatchParams::apply("dry-run-check").dry_run();
        api.patch(&obj.name_any(), &params, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("the dry-run {kind} does not apply: {e}"));
        kinds.push(kind);
    }
    assert_eq!(kinds, ["ReplicationDestination", "ReplicationSource"]);

    // status: both sides, the recovery point's age, the image.
    let status = plugin.ok(&["status", "-o", "json"], "east");
    let json_start = status.find('[').expect("json rows");
    let rows: serde_json::Value =
        serde_json::from_str(&status[json_start..status.rfind(']').unwrap() + 1]).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pair"] == "db")
        .expect("the pair");
    assert_eq!(row["source"]["name"], "db");
    assert_eq!(row["destination"]["name"], "db");
    assert!(row["recoveryPointAgeSeconds"].as_i64().is_some(), "{row}");
    assert_eq!(row["beyondObjective"], false);
    assert!(
        row["latestImage"]
            .as_str()
            .unwrap_or_default()
            .starts_with("VolumeSnapshot/"),
        "{row}"
    );
    let table = plugin.ok(&["status"], "east");
    assert!(
        table.contains("PAIR") && table.contains("RPO AGE") && table.contains("db"),
        "{table}"
    );

    // sync --wait: a change arrives; the copy of the tree as synced is kept for later.
    write_file(&east, "table.db", 8 << 20, 2);
    let out = plugin.ok(&["sync", "db", "--wait"], "east");
    assert!(out.contains("synced db"), "{out}");
    published_as_synced(&src, &dst).await;
    let as_synced = work.path().join("as-synced");
    std::fs::create_dir(&as_synced).unwrap();
    copy_tree(&east, &as_synced);

    // A write that never reaches the copy, then the east site is "lost".
    write_file(&east, "after-last-sync", 4096, 3);
    let out = plugin.ok(&["failover", "db"], "lost");
    assert!(
        out.contains("unreachable") && out.contains("promoted"),
        "{out}"
    );
    let west = bound_dir(&dst, "data").await;
    tree::assert_same(&as_synced, &west);
    assert!(!west.join("after-last-sync").exists());
    let rd = dst.api::<ReplicationDestination>().get("db").await.unwrap();
    assert_eq!(rd.spec.paused, Some(true), "the destination is fenced");
    let resume = plugin.run(&["resume", "db"], "east");
    assert_eq!(
        resume.status.code(),
        Some(5),
        "a fenced destination is never resumed"
    );

    // Failback: 1% of the volume changes on the promoted side; only that goes back.
    write_file(&west, "table.db", 8 << 20, 2); // unchanged content, rewritten
    let mut db = std::fs::read(west.join("table.db")).unwrap();
    for b in &mut db[..80 * 1024] {
        *b = !*b;
    }
    std::fs::write(west.join("table.db"), &db).unwrap();
    let out = plugin.ok(&["failback", "db", "--switch-back"], "east");
    assert!(out.contains("kept VolumeSnapshot"), "{out}");
    let reverse: ReplicationSource = match dst
        .api::<ReplicationSource>()
        .get_opt("db-reverse")
        .await
        .unwrap()
    {
        Some(rs) => rs,
        None => {
            // Switched back: the reverse pair is gone and the original direction restored.
            let rs = src.api::<ReplicationSource>().get("db").await.unwrap();
            assert_ne!(rs.spec.paused, Some(true), "the original source runs again");
            let rd = dst.api::<ReplicationDestination>().get("db").await.unwrap();
            assert!(!rd.annotations().contains_key("ferrosync.io/fenced"));
            tree::assert_same(&west, &east);
            // The first reverse sync carried the change made on the promoted side, and
            // well under 5% of the data.
            let sent: Vec<u64> = out
                .lines()
                .filter_map(|l| l.strip_prefix("reverse sync done: "))
                .map(|l| l.split(' ').next().unwrap().parse().unwrap())
                .collect();
            let data = tree_bytes(&west);
            assert_eq!(sent.len(), 2, "the reverse sync and the last delta: {out}");
            assert!(sent[0] >= 80 * 1024, "the change was sent: {sent:?}");
            assert!(
                sent[0] * 20 < data,
                "{} bytes sent for {data} bytes of data",
                sent[0]
            );
            return;
        }
    };
    panic!(
        "the reverse pair is still there after --switch-back: {:?}",
        reverse.status
    );
}
