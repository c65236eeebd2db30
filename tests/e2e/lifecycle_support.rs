//! Helpers of the issue-6 lifecycle tests: whole ReplicationSource/Destination specs
//! (triggers, annotations), waits on iterations, restores of `latestImage`, and an
//! inventory of every PVC, VolumeSnapshot, Job and Pod of a namespace for leak checks.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::{PermissionsExt, lchown, symlink},
    path::{Path, PathBuf},
    time::Duration,
};

use ferrosync::{
    api::{ReplicationDestination, ReplicationSource},
    resources::{Side, names},
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{PersistentVolumeClaim, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::{STEP, bound_dir, pvc},
    support::{TestNamespace, sim::storage::snapshot, wait},
    tree,
};

/// Owner of the sample data: neither root nor a mover's uid.
pub const OWNER: (u32, u32) = (4321, 8765);
/// How long one replication may take on a loaded machine.
pub const SYNC: Duration = Duration::from_secs(180);

/// Creates ReplicationDestination `name` with the whole `spec` and `annotations`.
pub async fn create_rd(
    ns: &TestNamespace,
    name: &str,
    annotations: Value,
    spec: Value,
) -> ReplicationDestination {
    let rd: ReplicationDestination = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
        "metadata": {"name": name, "annotations": annotations}, "spec": spec,
    }))
    .expect("destination fixture");
    ns.api()
        .create(&PostParams::default(), &rd)
        .await
        .expect("creating destination")
}

/// Creates ReplicationSource `name` with the whole `spec`.
pub async fn create_rs(ns: &TestNamespace, name: &str, spec: Value) -> ReplicationSource {
    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("source fixture");
    ns.api()
        .create(&PostParams::default(), &rs)
        .await
        .expect("creating source")
}

/// The `rsyncTLS` of a Snapshot destination that the simulated storage serves.
pub fn snapshot_tls() -> Value {
    json!({
        "copyMethod": "Snapshot", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"],
        "volumeSnapshotClassName": snapshot::SNAPSHOT_CLASS,
    })
}

/// A Snapshot destination, continuous (no trigger), keeping `retain` images.
pub async fn snapshot_destination(
    ns: &TestNamespace,
    name: &str,
    retain: usize,
    extra_tls: Value,
) -> ReplicationDestination {
    let mut tls = snapshot_tls();
    merge(&mut tls, extra_tls);
    create_rd(
        ns,
        name,
        json!({"ferrosync.io/retain-snapshots": retain.to_string()}),
        json!({"rsyncTLS": tls}),
    )
    .await
}

/// Merges the keys of `extra` into `base`.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// A PVC named `name` in `ns` holding the sample tree; returns its directory.
pub async fn sample_volume(ns: &TestNamespace, name: &str) -> PathBuf {
    pvc(name).create(ns).await;
    let dir = bound_dir(ns, name).await;
    tree::write_sample(&dir, OWNER);
    dir
}

/// Sets `spec.trigger.manual` of source `name`.
pub async fn trigger_manual(ns: &TestNamespace, name: &str, value: &str) {
    let body = json!({"spec": {"trigger": {"manual": value}}});
    ns.api::<ReplicationSource>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("setting trigger.manual");
}

/// Merge-patches the spec of source `name`.
pub async fn patch_source(ns: &TestNamespace, name: &str, spec: Value) {
    ns.api::<ReplicationSource>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .expect("patching source");
}

/// Waits until source `name` has satisfied manual trigger `value`; returns it.
pub async fn manual_synced(ns: &TestNamespace, name: &str, value: &str) -> ReplicationSource {
    let api: Api<ReplicationSource> = ns.api();
    wait::until(
        &format!("source {name} to sync {value:?}"),
        SYNC,
        || async {
            let rs = api.get(name).await.map_err(|e| e.to_string())?;
            let done = rs.status.as_ref().is_some_and(|s| {
                s.sync.last_manual_sync.as_deref() == Some(value)
                    && s.sync.last_sync_time.is_some()
                    && s.sync.last_sync_start_time.is_none()
            });
            Ok(done.then_some(rs))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// The destination's latestImage name, if any.
pub async fn latest_image(ns: &TestNamespace, name: &str) -> Option<String> {
    let rd: ReplicationDestination = ns.api().get(name).await.expect("destination");
    rd.status.and_then(|s| s.latest_image).map(|i| i.name)
}

/// Waits until the destination publishes a VolumeSnapshot other than `previous`; returns
/// its name.
pub async fn new_image(ns: &TestNamespace, name: &str, previous: Option<&str>) -> String {
    let api: Api<ReplicationDestination> = ns.api();
    wait::until(
        &format!("destination {name} to publish a new image"),
        SYNC,
        || async {
            let rd = api.get(name).await.map_err(|e| e.to_string())?;
            let image = rd.status.and_then(|s| s.latest_image);
            Ok(image
                .filter(|i| i.kind == "VolumeSnapshot" && Some(i.name.as_str()) != previous)
                .map(|i| i.name))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// The VolumeSnapshot API of `ns`.
pub fn snapshots(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(ns.client.clone(), &ns.name, &snapshot::snapshots())
}

/// Restores VolumeSnapshot `snap` to a new PVC `claim`, as a user does; returns its
/// directory once bound.
pub async fn restore(ns: &TestNamespace, snap: &str, claim: &str) -> PathBuf {
    let vs = snapshots(ns).get(snap).await.expect("the image exists");
    assert_eq!(
        vs.data.pointer("/status/readyToUse"),
        Some(&json!(true)),
        "latestImage {snap} is ready: {:?}",
        vs.data.get("status")
    );
    pvc(claim).restore_of(snap).create(ns).await;
    bound_dir(ns, claim).await
}

/// Restores `snap` into `claim` and compares it with `source`, then deletes the restore.
pub async fn assert_image_equals(ns: &TestNamespace, snap: &str, claim: &str, source: &Path) {
    let dir = restore(ns, snap, claim).await;
    tree::assert_same(source, &dir);
    ns.api::<PersistentVolumeClaim>()
        .delete(claim, &Default::default())
        .await
        .expect("deleting the restore");
}

/// Every PVC, VolumeSnapshot, Job and Pod of a namespace, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub pvcs: BTreeSet<String>,
    pub snapshots: BTreeSet<String>,
    pub jobs: BTreeSet<String>,
    /// Pods, by the name of the Job that owns them (or their own name).
    pub pods: BTreeSet<String>,
}

/// Lists everything in `ns`, whatever its labels.
pub async fn inventory(ns: &TestNamespace) -> Result<Inventory, String> {
    let lp = ListParams::default();
    let names = |items: Vec<String>| items.into_iter().collect::<BTreeSet<_>>();
    let pvcs = ns
        .api::<PersistentVolumeClaim>()
        .list(&lp)
        .await
        .map_err(|e| e.to_string())?;
    let snaps = snapshots(ns).list(&lp).await.map_err(|e| e.to_string())?;
    let jobs = ns.api::<Job>().list(&lp).await.map_err(|e| e.to_string())?;
    let pods = ns.api::<Pod>().list(&lp).await.map_err(|e| e.to_string())?;
    Ok(Inventory {
        pvcs: names(pvcs.items.iter().map(|p| p.name_any()).collect()),
        snapshots: names(snaps.items.iter().map(|s| s.name_any()).collect()),
        jobs: names(jobs.items.iter().map(|j| j.name_any()).collect()),
        pods: names(
            pods.items
                .iter()
                .map(|p| {
                    p.labels()
                        .get("job-name")
                        .cloned()
                        .unwrap_or_else(|| p.name_any())
                })
                .collect(),
        ),
    })
}

/// Builds an expected inventory from string slices.
pub fn expect(pvcs: &[&str], snapshots: &[&str], jobs: &[&str], pods: &[&str]) -> Inventory {
    let set = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Inventory {
        pvcs: set(pvcs),
        snapshots: set(snapshots),
        jobs: set(jobs),
        pods: set(pods),
    }
}

/// Waits until `ns` holds exactly `expected` (objects being deleted count until gone).
pub async fn settles_to(ns: &TestNamespace, expected: &Inventory) {
    let result = wait::until(
        &format!("namespace {} to hold exactly {expected:?}", ns.name),
        STEP * 2,
        || async {
            let got = inventory(ns).await?;
            Ok((&got == expected).then_some(()))
        },
    )
    .await;
    if let Err(e) = result {
        panic!("{e}\nlast seen: {:?}", inventory(ns).await);
    }
}

/// The inventory of a continuous destination `name` at rest: its PVC, its images, and
/// the listener Job of the next iteration (with at most its one pod).
pub async fn destination_at_rest(
    ns: &TestNamespace,
    name: &str,
    images: &[&str],
    extra_pvcs: &[&str],
) {
    let dst_pvc = names::destination_pvc(name);
    let job = names::job(Side::Destination, name);
    let mut pvcs = vec![dst_pvc.as_str()];
    pvcs.extend_from_slice(extra_pvcs);
    let with_pod = expect(&pvcs, images, &[&job], &[&job]);
    let without_pod = expect(&pvcs, images, &[&job], &[]);
    let result = wait::until(
        &format!("destination namespace {} at rest", ns.name),
        STEP * 2,
        || async {
            let got = inventory(ns).await?;
            Ok((got == with_pod || got == without_pod).then_some(()))
        },
    )
    .await;
    if let Err(e) = result {
        panic!("{e}\nlast seen: {:?}", inventory(ns).await);
    }
}

/// Asserts that `check` holds on every poll for `period` (for "nothing happens" facts).
pub async fn holds_for<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = std::time::Instant::now() + period;
    while std::time::Instant::now() < deadline {
        if let Err(e) = check().await {
            panic!("{what} stopped holding: {e}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two namespaces with privileged movers (so owners are compared too), a Snapshot
/// destination `name` in the first, and its key copied to `<name>-key` in the second as a
/// user does; returns them with the destination's address.
pub async fn snapshot_pair(
    prefix: &str,
    name: &str,
    retain: usize,
    extra_tls: Value,
) -> (TestNamespace, TestNamespace, String) {
    let env = env();
    let dst = env.cp.namespace(&format!("{prefix}-dst")).await;
    let src = env.cp.namespace(&format!("{prefix}-src")).await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    snapshot_destination(&dst, name, retain, extra_tls).await;
    let (address, key) = crate::volsync::published(&dst, name).await;
    crate::volsync::copy_secret(&dst, &key, &src, &format!("{name}-key")).await;
    (dst, src, address)
}

/// The spec of a source of `pvc` sending to `address` with key `<name>-key`.
pub fn source_spec(
    name: &str,
    pvc: &str,
    address: &str,
    trigger: Value,
    extra_tls: Value,
) -> Value {
    let mut tls = json!({"keySecret": format!("{name}-key"), "address": address});
    merge(&mut tls, extra_tls);
    json!({"sourcePVC": pvc, "trigger": trigger, "rsyncTLS": tls})
}

/// One manual replication of the sample tree from PVC `data` of `src` through source
/// `name` (with `src_tls` over the key and address); returns the published image once it
/// has been restored and compared with the source.
pub async fn replicate_once(
    dst: &TestNamespace,
    src: &TestNamespace,
    name: &str,
    address: &str,
    src_tls: Value,
) -> (PathBuf, String) {
    let data = sample_volume(src, "data").await;
    create_rs(
        src,
        name,
        source_spec(name, "data", address, json!({"manual": "first"}), src_tls),
    )
    .await;
    manual_synced(src, name, "first").await;
    let image = new_image(dst, name, None).await;
    assert_image_equals(dst, &image, "restored", &data).await;
    (data, image)
}

/// The images (VolumeSnapshots labelled as such) a destination has in `ns`.
pub async fn image_count(ns: &TestNamespace) -> Result<usize, String> {
    let list = snapshots(ns)
        .list(&ListParams::default().labels("ferrosync.io/image=true"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .count())
}

/// The reason of the source's Synchronizing condition.
pub async fn source_reason(ns: &TestNamespace, name: &str) -> Option<String> {
    let rs: ReplicationSource = ns.api().get(name).await.ok()?;
    rs.status?
        .sync
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Synchronizing")
        .map(|c| c.reason)
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("readdir").flatten() {
            let t = e.file_type().expect("type");
            if t.is_dir() {
                dirs.push(e.path());
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// Applies a few random changes under `root`; returns what was done.
pub fn mutate(root: &Path, rng: &mut Rng, round: usize) -> Vec<String> {
    let mut done = Vec::new();
    for step in 0..(1 + rng.below(5)) {
        let (files, dirs) = entries(root);
        let dir = dirs[rng.below(dirs.len())].clone();
        let file = (!files.is_empty()).then(|| files[rng.below(files.len())].clone());
        let new = dir.join(format!("f-{round}-{step}"));
        match (rng.below(8), file) {
            (0, _) | (_, None) => {
                let len = rng.below(200_000);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                fs::write(&new, bytes).expect("create");
                done.push(format!("create {}", new.display()));
            }
            (1, Some(f)) if !f.is_symlink() => {
                let mut bytes = fs::read(&f).unwrap_or_default();
                bytes.extend_from_slice(format!("round {round}\n").as_bytes());
                fs::write(&f, bytes).expect("modify");
                done.push(format!("modify {}", f.display()));
            }
            (2, Some(f)) => {
                fs::remove_file(&f).expect("delete");
                done.push(format!("delete {}", f.display()));
            }
            (3, Some(f)) => {
                fs::rename(&f, &new).expect("rename");
                done.push(format!("rename {} -> {}", f.display(), new.display()));
            }
            (4, _) => {
                fs::create_dir(&new).expect("mkdir");
                done.push(format!("mkdir {}", new.display()));
            }
            (5, Some(f)) if !f.is_symlink() => {
                let mode = [0o600, 0o640, 0o644, 0o755][rng.below(4)];
                fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
                done.push(format!("chmod {mode:o} {}", f.display()));
            }
            (6, Some(f)) => {
                let id = 1000 + rng.below(5000) as u32;
                lchown(&f, Some(id), Some(id + 1)).expect("chown");
                done.push(format!("chown {id} {}", f.display()));
            }
            (_, Some(f)) => {
                let target = f.file_name().expect("name").to_owned();
                symlink(&target, &new).expect("symlink");
                done.push(format!("symlink {} -> {target:?}", new.display()));
            }
        }
    }
    done
}

/// A seed from the clock, printed so that a failing run can be replayed.
pub fn seed(what: &str) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    eprintln!("{what}: seed {seed:#x}");
    seed | 1
}
