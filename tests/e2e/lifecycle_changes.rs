//! Later syncs: a second sync picks up changed, deleted and renamed files, and twenty
//! iterations of random changes match every time without leaking anything.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, lchown, symlink},
    path::{Path, PathBuf},
    time::Instant,
};

use ferrosync::api::ReplicationSource;
use serde_json::json;

use crate::lifecycle_support::{
    assert_image_equals, create_rs, destination_at_rest, expect, manual_synced, new_image,
    sample_volume, settles_to, snapshot_pair, source_spec, trigger_manual,
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

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
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
fn mutate(root: &Path, rng: &mut Rng, round: usize) -> Vec<String> {
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
    let seed = 0x5eed_0006_u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
    eprintln!("twenty iterations: seed {seed:#x}");
    let mut rng = Rng(seed | 1);
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
