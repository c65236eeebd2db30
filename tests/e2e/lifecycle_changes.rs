//! Later syncs: a second sync picks up changed, deleted and renamed files, and twenty
//! iterations of random changes match every time without leaking anything.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, lchown, symlink},
    time::Instant,
};

use ferrosync::api::ReplicationSource;
use serde_json::json;

use crate::lifecycle_support::{
    Rng, assert_image_equals, create_rs, destination_at_rest, expect, manual_synced, mutate,
    new_image, sample_volume, seed, settles_to, snapshot_pair, source_spec, trigger_manual,
};

#[tokio::test]
async fn a_second_sync_picks_up_changed_deleted_and_renamed_files() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-second", "second", 1, json!({})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "second",
        source_spec(
            "second",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    manual_synced(&src, "second", "one").await;
    let first = new_image(&dst, "second", None).await;
    assert_image_equals(&dst, &first, "restore-1", &data).await;

    // Changed content, mode and owner; deleted file and directory; renamed file and
    // directory; a symlink pointing elsewhere; a new hard link.
    fs::write(
        data.join("a/hello.txt"),
        "changed content, longer than before\n",
    )
    .expect("write");
    fs::set_permissions(data.join("run.sh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    lchown(data.join("empty"), Some(1111), Some(2222)).expect("chown");
    fs::remove_file(data.join("name with spaces & \u{fc}n\u{ef}code.txt")).expect("rm");
    fs::remove_dir(data.join("empty-dir")).expect("rmdir");
    fs::rename(data.join("a/c/big.bin"), data.join("big-renamed.bin")).expect("mv");
    fs::rename(data.join("a/b"), data.join("b-moved")).expect("mv dir");
    fs::remove_file(data.join("link")).expect("rm link");
    symlink("b-moved/private", data.join("link")).expect("symlink");
    fs::hard_link(data.join("run.sh"), data.join("run-hardlink")).expect("hard link");

    trigger_manual(&src, "second", "two").await;
    let rs = manual_synced(&src, "second", "two").await;
    let second = new_image(&dst, "second", Some(&first)).await;
    assert_image_equals(&dst, &second, "restore-2", &data).await;
    let stats = rs
        .status
        .and_then(|s| s.sync.last_sync_stats)
        .expect("lastSyncStats");
    assert!(
        stats.files_deleted.unwrap_or(0) >= 2,
        "the deletions are counted: {stats:?}"
    );
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "second", &[&second], &[]).await;
    eprintln!("second sync: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn twenty_iterations_of_random_changes_match_every_time_and_leak_nothing() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-twenty", "twenty", 1, json!({})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "twenty",
        source_spec(
            "twenty",
            "data",
            &address,
            json!({"manual": "0"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    manual_synced(&src, "twenty", "0").await;
    let mut image = new_image(&dst, "twenty", None).await;
    assert_image_equals(&dst, &image, "restore-0", &data).await;
    let mut rng = Rng(seed("twenty iterations"));
    for round in 1..=20 {
        let done = mutate(&data, &mut rng, round);
        let value = round.to_string();
        trigger_manual(&src, "twenty", &value).await;
        manual_synced(&src, "twenty", &value).await;
        image = new_image(&dst, "twenty", Some(&image)).await;
        let check = format!("restore-{round}");
        eprintln!("round {round}: {done:?}");
        assert_image_equals(&dst, &image, &check, &data).await;
    }
    let rs: ReplicationSource = src.api().get("twenty").await.expect("rs");
    assert_eq!(
        rs.status.and_then(|s| s.sync.last_manual_sync).as_deref(),
        Some("20")
    );
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "twenty", &[&image], &[]).await;
    eprintln!("twenty iterations: {:.1}s", started.elapsed().as_secs_f64());
}
