//! Faults in the middle of a transfer: the source mover killed, and the ReplicationSource
//! deleted. Each converges, nothing is leaked (every PVC, VolumeSnapshot, Job and Pod of
//! both namespaces is counted), and `latestImage` never points at partial data.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use ferrosync::{
    api::ReplicationSource,
    resources::{Side, names},
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::{
    fixtures::bound_dir,
    lifecycle_support::{
        OWNER, SYNC, assert_image_equals, create_rs, destination_at_rest, expect, holds_for,
        latest_image, manual_synced, new_image, sample_volume, settles_to, snapshot_pair,
        source_spec,
    },
    support::{TestNamespace, wait},
};

/// Adds `files` incompressible 1 MiB files under `big/`, so a transfer takes a while.
fn add_bulk(root: &Path, files: usize) {
    let dir = root.join("big");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..files {
        let mut bytes = Vec::with_capacity(1 << 20);
        for _ in 0..(1 << 17) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(dir.join(format!("f-{i:04}")), bytes).expect("write");
    }
    std::os::unix::fs::lchown(&dir, Some(OWNER.0), Some(OWNER.1)).expect("chown");
}

/// Waits until the transfer has started writing into `dst_dir` (but is not done).
async fn mid_transfer(dst_dir: &Path) {
    wait::until("the transfer to be under way", SYNC, || async {
        let any = std::fs::read_dir(dst_dir)
            .map_err(|e| e.to_string())?
            .next()
            .is_some();
        Ok(any.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The running source mover pods.
async fn source_mover_pods(src: &TestNamespace, name: &str) -> Vec<Pod> {
    let job = names::job(Side::Source, name);
    src.api::<Pod>()
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .expect("pods")
        .items
}

/// Records every latestImage the destination shows until `done` resolves.
async fn watch_images<F: std::future::Future<Output = T>, T>(
    dst: &TestNamespace,
    name: &str,
    done: F,
) -> (T, BTreeSet<Option<String>>) {
    let mut seen = BTreeSet::new();
    tokio::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return (out, seen),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                seen.insert(latest_image(dst, name).await);
            }
        }
    }
}

#[tokio::test]
async fn the_source_mover_killed_mid_transfer_converges_without_partial_images() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-moverkill", "mk", 1, json!({})).await;
    let dst_dir = bound_dir(&dst, &names::destination_pvc("mk")).await;
    let data = sample_volume(&src, "data").await;
    add_bulk(&data, 300);
    create_rs(
        &src,
        "mk",
        source_spec(
            "mk",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;

    let (image, seen) = watch_images(&dst, "mk", async {
        mid_transfer(&dst_dir).await;
        let pods = source_mover_pods(&src, "mk").await;
        assert!(!pods.is_empty(), "a source mover is running");
        for pod in &pods {
            let name = pod.metadata.name.clone().expect("name");
            src.api::<Pod>()
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
                .expect("killing the mover pod");
            eprintln!("killed mover pod {name}");
        }
        manual_synced(&src, "mk", "one").await;
        new_image(&dst, "mk", None).await
    })
    .await;
    // Nothing but "no image" and the final image was ever published.
    let expected: BTreeSet<Option<String>> = [None, Some(image.clone())].into();
    assert!(
        seen.is_subset(&expected),
        "latestImage showed {seen:?}, expected only {expected:?}"
    );
    assert_image_equals(&dst, &image, "restored", &data).await;
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "mk", &[&image], &[]).await;
    eprintln!("mover killed: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn the_source_deleted_mid_sync_leaves_nothing_and_publishes_nothing() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-srcdel", "sd", 1, json!({})).await;
    let dst_dir = bound_dir(&dst, &names::destination_pvc("sd")).await;
    let data = sample_volume(&src, "data").await;
    add_bulk(&data, 300);
    create_rs(
        &src,
        "sd",
        source_spec(
            "sd",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    mid_transfer(&dst_dir).await;
    src.api::<ReplicationSource>()
        .delete("sd", &DeleteParams::foreground())
        .await
        .expect("deleting the source");

    // Its clone, Job and pods go with it.
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    let gone = src
        .api::<ReplicationSource>()
        .get_opt("sd")
        .await
        .expect("get");
    assert!(gone.is_none(), "the source is gone");
    // The destination never publishes the partial transfer and keeps listening.
    holds_for(
        "no image from a partial transfer",
        Duration::from_secs(15),
        || async {
            match latest_image(&dst, "sd").await {
                None => Ok(()),
                Some(image) => Err(format!("published {image}")),
            }
        },
    )
    .await;
    destination_at_rest(&dst, "sd", &[], &[]).await;
    eprintln!("source deleted: {:.1}s", started.elapsed().as_secs_f64());
}
