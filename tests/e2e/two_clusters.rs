//! Disaster recovery between two clusters, through `kubectl ferrosync`: `east` (this
//! binary's shared cluster, its ferrosync controller a host process) and `west`
//! ([`crate::env::west`], ferrosync installed in it from `deploy/` and run from the
//! registry's images), each with its own etcd, apiserver, controllers and simulators, and
//! address ranges that never overlap. A LoadBalancer address of one is reachable from the other's pods; a
//! ClusterIP is not (`support::sim::routing` says why it is done that way).
//!
//! The tests run one at a time: one of them stops a whole control plane, as a lost site.
//! (They replace the one-cluster stand-in that used two contexts of one cluster.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    env::{Env, West, env, west},
    fixtures::{bound_dir, pvc},
    support::{ControlPlane, TestNamespace, kubeconfig, kubectl_plugin::PairSides, wait},
    tree,
    volsync::{privileged_movers, synced},
};

const OWNER: (u32, u32) = (4321, 8765);
const MIB: usize = 1 << 20;

/// One two-cluster test at a time (a test may stop a site's control plane).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Both sites, and a kubeconfig with a context for each, as a user has.
struct Sites {
    east: Env,
    west: West,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

fn sites() -> Sites {
    let (east, west) = (env(), west());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sites.kubeconfig");
    kubeconfig::merge_sites(
        &path,
        &[("east", &east.cp.kubeconfig), ("west", &west.cp.kubeconfig)],
    )
    .expect("the two sites' kubeconfig");
    Sites {
        east,
        west,
        kubeconfig: path,
        _dir: dir,
    }
}

/// One test's place in the two sites: its source's namespace in one, its destination's in
/// the other, held for the test's life together with its turn (see [`SERIAL`]).
struct Placed {
    sites: Sites,
    src: TestNamespace,
    dst: TestNamespace,
    /// The kubeconfig contexts of the source's site and the destination's.
    contexts: (&'static str, &'static str),
    // Last, so the next test starts only once this one's namespaces are dropped.
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl Placed {
    /// Waits for this test's turn, then makes the source's and the destination's
    /// namespaces, each `(site's context, namespace)`.
    async fn new(source: (&'static str, &str), dest: (&'static str, &str)) -> Self {
        let turn = SERIAL.lock().await;
        let sites = sites();
        let site = |context: &str| match context {
            "east" => sites.east.cp,
            _ => sites.west.cp,
        };
        let src = site(source.0).namespace(source.1).await;
        let dst = site(dest.0).namespace(dest.1).await;
        Placed {
            sites,
            src,
            dst,
            contexts: (source.0, dest.0),
            _one_at_a_time: turn,
        }
    }

    /// Opts both sides in to privileged movers: the sample tree's owners are kept only by
    /// a mover that may set them.
    async fn with_privileged_movers(self) -> Self {
        privileged_movers(&self.src).await;
        privileged_movers(&self.dst).await;
        self
    }

    /// `kubectl ferrosync` for this test's pair.
    fn pair(&self) -> Pair<'_> {
        Pair {
            kubeconfig: &self.sites.kubeconfig,
            source: (self.contexts.0, &self.src),
            dest: (self.contexts.1, &self.dst),
        }
    }
}

/// The source's volume `data`, bound, holding the sample tree and an incompressible
/// `table.db` of `db_len` bytes; returns its directory.
async fn sample_volume(src: &TestNamespace, db_len: usize) -> PathBuf {
    pvc("data").create(src).await;
    let dir = bound_dir(src, "data").await;
    tree::write_sample(&dir, OWNER);
    write_file(&dir, "table.db", db_len, 1);
    dir
}

/// A source volume synced once, and a copy of it as synced, to compare with what a later
/// step leaves.
struct SyncedOnce {
    volume: PathBuf,
    as_synced: PathBuf,
    _work: tempfile::TempDir,
}

impl Placed {
    /// The source's [`sample_volume`] with a `db_len`-byte `table.db`, replicated as `db`
    /// on a manual trigger and synced once.
    async fn synced_once(&self, db_len: usize) -> SyncedOnce {
        let volume = sample_volume(&self.src, db_len).await;
        self.pair().replicate_and_sync_once().await;
        let work = tempfile::tempdir().unwrap();
        let as_synced = work.path().join("as-synced");
        copy_tree(&volume, &as_synced);
        SyncedOnce {
            volume,
            as_synced,
            _work: work,
        }
    }
}

/// `kubectl ferrosync` for one pair: which context and namespace each side is in.
struct Pair<'a> {
    kubeconfig: &'a Path,
    source: (&'a str, &'a TestNamespace),
    dest: (&'a str, &'a TestNamespace),
}

impl Pair<'_> {
    fn sides(&self) -> PairSides<'_> {
        PairSides {
            bin: env!("CARGO_BIN_EXE_kubectl-ferrosync"),
            kubeconfig: self.kubeconfig,
            source: (self.source.0, &self.source.1.name),
            dest: (self.dest.0, &self.dest.1.name),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.sides().run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.sides().ok(args)
    }

    /// Replicates the source's `data` as `db`, synced on a manual trigger, and waits for
    /// its first sync to be published.
    async fn replicate_and_sync_once(&self) {
        self.ok(&["replicate", "db", "--pvc", "data", "--manual", "once"]);
        self.first_sync().await;
    }

    /// Waits for the first sync: the source's, then the destination's publishing it.
    async fn first_sync(&self) {
        synced(self.source.1, "db", Duration::from_secs(180)).await;
        self.published(None).await;
    }

    /// The destination's last published sync, to tell a new one from it.
    async fn dest_last_sync(&self) -> Option<Timestamp> {
        let rd = self
            .dest
            .1
            .api::<ReplicationDestination>()
            .get("db")
            .await
            .expect("the destination");
        rd.status.and_then(|s| s.sync.last_sync_time).map(|t| t.0)
    }

    /// Waits until the destination has published a sync newer than `before`, once the source
    /// has finished one. The two sides' times come from two controllers and can land in either
    /// order within a second, so they are not compared with each other.
    async fn published(&self, before: Option<Timestamp>) {
        let (rss, rds) = (
            self.source.1.api::<ReplicationSource>(),
            self.dest.1.api::<ReplicationDestination>(),
        );
        wait::until(
            "the destination to publish the last sync",
            Duration::from_secs(180),
            || async {
                let rs = rss.get("db").await.map_err(|e| e.to_string())?;
                let rd = rds.get("db").await.map_err(|e| e.to_string())?;
                let sent = rs.status.and_then(|s| s.sync.last_sync_time);
                let status = rd.status.unwrap_or_default();
                let published = status.sync.last_sync_time.map(|t| t.0);
                Ok((status.latest_image.is_some()
                    && sent.is_some()
                    && published.is_some()
                    && published > before)
                    .then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A pseudo-random, incompressible file.
fn write_file(dir: &Path, name: &str, len: usize, seed: u8) {
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

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

/// A site's control plane stopped for the life of this guard, restarted when it goes
/// (also when the test fails, so the other two-cluster tests find it up).
struct Lost<'a>(&'a ControlPlane);

impl<'a> Lost<'a> {
    fn site(cp: &'a ControlPlane) -> Self {
        cp.stop();
        Lost(cp)
    }
}

impl Drop for Lost<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.restart() {
            eprintln!("restarting the lost site: {e}");
        }
    }
}

/// The text of a source's status (conditions, mover logs), for what it says.
async fn source_status(ns: &TestNamespace, name: &str) -> String {
    let rs: ReplicationSource = ns.api().get(name).await.expect("source");
    serde_json::to_string(&rs.status).unwrap_or_default()
}

#[tokio::test]
async fn replicate_status_and_sync_between_two_clusters_through_a_load_balancer() {
    let placed = Placed::new(("east", "tc-app"), ("west", "tc-copy"))
        .await
        .with_privileged_movers()
        .await;
    let (src, dst, pair) = (&placed.src, &placed.dst, placed.pair());
    let east = sample_volume(src, 4 * MIB).await;

    let replicate = [
        "replicate",
        "db",
        "--pvc",
        "data",
        "--manual",
        "once",
        "--rpo",
        "1h",
    ];
    let out = pair.ok(&replicate);
    let rd: ReplicationDestination = dst.api().get("db").await.expect("destination in west");
    let rs: ReplicationSource = src.api().get("db").await.expect("source in east");
    // The objective on both sides: west alerts on its copy when east is lost.
    for annotations in [rd.annotations(), rs.annotations()] {
        assert_eq!(
            annotations
                .get("ferrosync.io/recovery-point-objective")
                .map(String::as_str),
            Some("1h"),
            "{annotations:?}"
        );
    }
    let tls = rd
        .status
        .and_then(|s| s.rsync_tls)
        .expect("rsyncTLS status");
    let address = tls.address.expect("address");
    assert!(
        address.starts_with("127.74."),
        "an address of west's load-balancer range: {address}"
    );
    let key = tls.key_secret.expect("key secret");
    let original: Secret = dst.api().get(&key).await.expect("west's key");
    let copied: Secret = src.api().get(&key).await.expect("the key in east");
    assert_eq!(original.data, copied.data, "the same key in both clusters");
    let psk = String::from_utf8(original.data.unwrap()["psk.txt"].0.clone()).unwrap();
    let hex = psk.rsplit(':').next().unwrap().trim().to_string();
    assert!(!out.contains(&hex), "the key was printed");
    assert!(
        src.api::<ReplicationDestination>()
            .get_opt("db")
            .await
            .unwrap()
            .is_none()
            && dst
                .api::<ReplicationSource>()
                .get_opt("db")
                .await
                .unwrap()
                .is_none(),
        "each side lives in its own cluster only"
    );
    pair.first_sync().await;

    // Twice is a no-op.
    let versions = || async {
        vec![
            src.api::<ReplicationSource>()
                .get("db")
                .await
                .unwrap()
                .resource_version(),
            dst.api::<ReplicationDestination>()
                .get("db")
                .await
                .unwrap()
                .resource_version(),
            src.api::<Secret>()
                .get(&key)
                .await
                .unwrap()
                .resource_version(),
        ]
    };
    let before = versions().await;
    pair.ok(&replicate);
    assert_eq!(
        versions().await,
        before,
        "replicate twice changed an object"
    );

    // --dry-run: the destination applies to west, the source to east, as printed.
    let dry = pair.run(&[
        "replicate",
        "db2",
        "--pvc",
        "data",
        "--dry-run",
        "client",
        "-o",
        "yaml",
        "--address",
        &address,
        "--rpo",
        "30m",
    ]);
    assert!(dry.status.success());
    let yaml = String::from_utf8(dry.stdout).unwrap();
    assert_eq!(
        yaml.matches("ferrosync.io/recovery-point-objective: 30m")
            .count(),
        2,
        "the objective on both manifests: {yaml}"
    );
    assert!(
        !yaml.contains("psk.txt") && !yaml.contains(&hex),
        "the dry run inlined the key"
    );
    let mut applied = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let obj: DynamicObject = serde::Deserialize::deserialize(doc).expect("a manifest");
        let kind = obj.types.clone().expect("kind").kind;
        let (client, ar) = match kind.as_str() {
            "ReplicationSource" => (
                src.client.clone(),
                kube::api::ApiResource::erase::<ReplicationSource>(&()),
            ),
            _ => (
                dst.client.clone(),
                kube::api::ApiResource::erase::<ReplicationDestination>(&()),
            ),
        };
        let ns = obj.namespace().expect("namespaced");
        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
        let params = PatchParams::apply("dry-run-check").dry_run();
        api.patch(&obj.name_any(), &params, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("the dry-run {kind} does not apply to its cluster: {e}"));
        applied.push(format!("{kind} {ns}"));
    }
    assert_eq!(
        applied,
        [
            format!("ReplicationDestination {}", dst.name),
            format!("ReplicationSource {}", src.name)
        ]
    );

    // status: both sides, from both clusters, in one row.
    let status = pair.ok(&["status", "-o", "json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&status[status.find('[').unwrap()..=status.rfind(']').unwrap()])
            .unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pair"] == "db")
        .expect("the pair");
    assert_eq!(row["source"]["name"], "db");
    assert_eq!(row["destination"]["name"], "db");
    assert!(row["recoveryPointAgeSeconds"].as_i64().is_some(), "{row}");
    assert_eq!(row["recoveryPointObjectiveSeconds"], 3600, "{row}");
    assert_eq!(row["beyondObjective"], false);

    // sync --wait carries a change across; west's latest image holds east's tree.
    write_file(&east, "table.db", 4 * MIB, 2);
    let before = pair.dest_last_sync().await;
    let out = pair.ok(&["sync", "db", "--wait"]);
    assert!(out.contains("synced db"), "{out}");
    pair.published(before).await;
    let image = dst
        .api::<ReplicationDestination>()
        .get("db")
        .await
        .unwrap()
        .status
        .and_then(|s| s.latest_image)
        .expect("a latest image")
        .name;
    pvc("check").restore_of(&image).create(dst).await;
    tree::assert_same(&east, &bound_dir(dst, "check").await);
}

#[tokio::test]
async fn a_clusterip_of_the_other_cluster_is_unreachable_with_a_clear_status() {
    let placed = Placed::new(("east", "tc-cip-app"), ("west", "tc-cip-copy")).await;
    let (src, dst, pair) = (&placed.src, &placed.dst, placed.pair());
    pvc("data").create(src).await;
    write_file(&bound_dir(src, "data").await, "a", 4096, 1);

    pair.ok(&[
        "replicate",
        "db",
        "--pvc",
        "data",
        "--manual",
        "once",
        "--service-type",
        "ClusterIP",
    ]);
    let rd: ReplicationDestination = dst.api().get("db").await.unwrap();
    let address = rd
        .status
        .and_then(|s| s.rsync_tls)
        .and_then(|t| t.address)
        .expect("address");
    assert!(
        address.starts_with("127.72."),
        "a ClusterIP of west's Service range: {address}"
    );
    let said = wait::until(
        "the source in east to report the destination unreachable",
        Duration::from_secs(240),
        || async {
            let text = source_status(src, "db").await;
            Ok(text
                .to_lowercase()
                .contains("destination unreachable")
                .then_some(text))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        said.contains(&address),
        "the status names the address: {said}"
    );
    let rs: ReplicationSource = src.api().get("db").await.unwrap();
    assert!(
        rs.status.and_then(|s| s.sync.last_sync_time).is_none(),
        "nothing was synced through another cluster's ClusterIP"
    );
}

#[tokio::test]
async fn failover_while_a_sync_is_in_flight_promotes_the_last_complete_sync() {
    let placed = Placed::new(("east", "tc-fly-app"), ("west", "tc-fly-copy"))
        .await
        .with_privileged_movers()
        .await;
    let (src, dst, pair) = (&placed.src, &placed.dst, placed.pair());
    let synced = placed.synced_once(MIB).await;
    let (east, as_synced) = (&synced.volume, &synced.as_synced);

    // The next sync is slow (1 MiB/s for 24 MiB), so failover finds it in flight.
    let slow = json!({"metadata": {"annotations": {"ferrosync.io/rsync-bwlimit": "1m"}}});
    src.api::<ReplicationSource>()
        .patch("db", &PatchParams::default(), &Patch::Merge(&slow))
        .await
        .unwrap();
    write_file(east, "big.db", 24 * MIB, 7);
    pair.ok(&["sync", "db"]);
    let rss = src.api::<ReplicationSource>();
    wait::until(
        "the sync to be under way",
        Duration::from_secs(120),
        || async {
            let rs = rss.get("db").await.map_err(|e| e.to_string())?;
            let moving = rs
                .status
                .and_then(|s| s.sync.progress)
                .and_then(|p| p.bytes_transferred)
                .is_some_and(|b| b > 0);
            Ok(moving.then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let out = pair.ok(&["failover", "db", "--now"]);
    assert!(out.contains("promoted"), "{out}");
    let promoted = bound_dir(dst, "data").await;
    tree::assert_same(as_synced, &promoted);
    assert!(
        !promoted.join("big.db").exists(),
        "part of the abandoned sync was promoted"
    );
}

#[tokio::test]
async fn a_lost_source_cluster_fails_over_cannot_overwrite_when_back_and_fails_back_only_changes() {
    // West is the source here: east is this binary's shared cluster, which other tests use
    // while this one runs, so it is never the one lost.
    let placed = Placed::new(("west", "tc-dr-app"), ("east", "tc-dr-copy"))
        .await
        .with_privileged_movers()
        .await;
    let (src, dst, pair) = (&placed.src, &placed.dst, placed.pair());
    let sites = &placed.sites;
    let synced = placed.synced_once(8 * MIB).await;
    let (origin, as_synced) = (&synced.volume, &synced.as_synced);
    write_file(origin, "after-last-sync", 4096, 3);

    // West is lost; failover in east goes ahead without it.
    let lost = Lost::site(sites.west.cp);
    let started = Instant::now();
    let out = pair.ok(&["failover", "db"]);
    let copy = bound_dir(dst, "data").await;
    eprintln!(
        "failover with the source cluster gone: {:.1}s from the command to a bound PVC",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.contains("unreachable") && out.contains("promoted"),
        "{out}"
    );
    tree::assert_same(as_synced, &copy);
    let rd: ReplicationDestination = dst.api().get("db").await.unwrap();
    assert_eq!(rd.spec.paused, Some(true), "the destination is fenced");

    // West comes back, its source unpaused (failover could not reach it), and syncs: it
    // cannot reach the fenced destination, and the promoted copy stays as promoted.
    drop(lost);
    let rss = src.api::<ReplicationSource>();
    let trigger = Patch::Merge(json!({"spec": {"trigger": {"manual": "after-return"}}}));
    let params = PatchParams::default();
    wait::eventually(
        "west's API to take the trigger",
        Duration::from_secs(60),
        || rss.patch("db", &params, &trigger),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let waited = wait::until(
        "the returned source to report that it cannot sync",
        Duration::from_secs(240),
        || async {
            let text = source_status(src, "db").await;
            Ok(text.contains("\"result\":\"Failed\"").then_some(text))
        },
    )
    .await;
    let said = match waited {
        Ok(text) => text,
        Err(e) => panic!(
            "{e}\nsource status: {}\nwest's controller:\n{}",
            source_status(src, "db").await,
            sites.west.controller_tail()
        ),
    };
    assert!(
        !said.contains("\"lastManualSync\":\"after-return\""),
        "{said}"
    );
    tree::assert_same(as_synced, &copy);
    assert!(!copy.join("after-last-sync").exists());
    let resume = pair.run(&["resume", "db"]);
    assert_eq!(
        resume.status.code(),
        Some(5),
        "a fenced destination is never resumed"
    );

    // Failback: 1% of the data changes on the promoted side; only that goes back, and
    // the original volume then equals the promoted one.
    let mut db = std::fs::read(copy.join("table.db")).unwrap();
    for b in &mut db[..80 * 1024] {
        *b = !*b;
    }
    std::fs::write(copy.join("table.db"), &db).unwrap();
    let out = pair.ok(&["failback", "db", "--switch-back"]);
    assert!(out.contains("kept VolumeSnapshot"), "{out}");
    assert!(out.contains("switched back"), "{out}");
    tree::assert_same(&copy, origin);
    let sent: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("reverse sync done: "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let data = tree_bytes(&copy);
    assert_eq!(sent.len(), 2, "the reverse sync and the last delta: {out}");
    assert!(sent[0] >= 80 * 1024, "the change was sent: {sent:?}");
    assert!(
        sent[0] * 20 < data,
        "{} bytes sent for {data} bytes of data",
        sent[0]
    );
    eprintln!("failback: {} bytes sent for {data} bytes of data", sent[0]);
}
