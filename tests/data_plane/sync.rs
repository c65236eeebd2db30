//! Successful syncs: full, incremental, deletions and renames, many files, empty source.

use std::{
    fs,
    io::{Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    time::Duration,
};

use ferrosync::mover::{Outcome, Progress};

use crate::{
    harness::{Env, KEY_A, Mover, free_port, sync},
    tree::{Check, assert_same, build_tricky, noise, p, set_mtime, write},
};

#[test]
fn full_sync_preserves_contents_metadata_links_and_odd_names() {
    full_sync_case(Env::new());
}

#[test]
fn full_sync_through_the_stunnel_fallback() {
    full_sync_case(Env::with_tunnel("stunnel"));
}

fn full_sync_case(env: Env) {
    build_tricky(&env.src, true);

    // Check argv while the destination runs: the key must only be in the file.
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let key_hex = KEY_A.split_once(':').expect("key").1;
    for entry in fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(key_hex),
                "key in argv of {:?}",
                entry.path()
            );
        }
    }
    let source = Mover::source(&env, port).run(Duration::from_secs(120));
    source.assert_code(0);
    let dest = dest.wait(Duration::from_secs(30));
    dest.assert_code(0);

    assert_same(&env.src, &env.dst, Check { owners: true });
    let sparse = fs::metadata(env.dst.join("sparse.img")).expect("stat");
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "sparse file was filled: {} blocks",
        sparse.blocks()
    );

    let s = &source.summary;
    assert_eq!(s.result, Outcome::Succeeded);
    assert_eq!(s.attempts, 1);
    assert!(s.files_transferred >= 25, "{s:?}");
    assert!(s.stats.iter().any(|l| l.starts_with("sent ")), "{s:?}");
    assert!(
        s.stats.iter().any(|l| l.starts_with("total size is ")),
        "{s:?}"
    );
    assert!(
        s.stats
            .last()
            .is_some_and(|l| l.starts_with("rsync completed in ")),
        "{s:?}"
    );
    for log in [&source.log, &dest.log] {
        assert!(!log.contains(key_hex), "key in log:\n{log}");
    }
    assert!(
        source
            .log
            .lines()
            .any(|l| l.starts_with("sent ") && l.contains(" received "))
    );
    assert!(
        source
            .log
            .lines()
            .any(|l| l.starts_with("rsync completed in "))
    );
    let progress: Vec<_> = source.log.lines().filter_map(Progress::parse).collect();
    assert!(
        progress
            .last()
            .is_some_and(|p| p.bytes >= 64 << 20 && p.files > 0),
        "{progress:?}"
    );
    assert!(dest.log.contains("from a ferrosync source"), "{}", dest.log);
    assert!(
        dest.summary.bytes_received >= s.bytes_sent / 2,
        "{:?}",
        dest.summary
    );
}

#[test]
fn incremental_sync_of_a_one_percent_change_sends_a_fraction_of_the_file() {
    incremental_case(Env::new());
}

#[test]
fn incremental_sync_through_the_stunnel_fallback() {
    incremental_case(Env::with_tunnel("stunnel"));
}

fn incremental_case(env: Env) {
    let size = 32 << 20;
    let big = write(&env.src, b"big.bin", &noise(size, 42));
    build_tricky(&env.src, false);
    sync(&env);

    // Rewrite 1% of the file, contiguous, in the middle.
    let changed = size / 100;
    let mut f = fs::OpenOptions::new().write(true).open(&big).expect("open");
    f.seek(SeekFrom::Start((size / 2) as u64)).expect("seek");
    f.write_all(&noise(changed, 1000)).expect("write");
    drop(f);

    let (source, _) = sync(&env);
    assert_same(&env.src, &env.dst, Check { owners: false });
    let sent = source.summary.bytes_sent as usize;
    assert!(
        sent < size / 10,
        "sent {sent} bytes for a {changed}-byte change in {size} bytes"
    );
    assert!(
        sent >= changed / 2,
        "sent {sent} bytes, less than the change itself?"
    );
    assert_eq!(source.summary.files_transferred, 1, "{:?}", source.summary);

    // A run with nothing changed moves almost nothing and keeps the links intact.
    let (source, _) = sync(&env);
    assert_eq!(source.summary.files_transferred, 0);
    assert!(source.summary.bytes_sent < 64 << 10, "{:?}", source.summary);
    assert_same(&env.src, &env.dst, Check { owners: false });
}

#[test]
fn deletions_and_renames_propagate() {
    deletions_case(Env::new());
}

#[test]
fn deletions_and_renames_through_the_stunnel_fallback() {
    deletions_case(Env::with_tunnel("stunnel"));
}

fn deletions_case(env: Env) {
    build_tricky(&env.src, false);
    write(&env.src, b"dir/old-name", b"renamed file\n");
    write(&env.src, b"old-dir/inside", b"renamed dir\n");
    write(&env.src, b"doomed/deep/file", b"deleted\n");
    sync(&env);

    fs::rename(env.src.join("dir/old-name"), env.src.join("dir/new-name")).expect("rename");
    fs::rename(env.src.join("old-dir"), env.src.join("new-dir")).expect("rename");
    fs::remove_dir_all(env.src.join("doomed")).expect("rm");
    fs::remove_file(p(&env.src, b"new\nline")).expect("rm");
    fs::remove_file(env.src.join("links/relative")).expect("rm");
    // Back-date what the edits touched: rsync compares directory times at whole seconds,
    // and the deletions on the destination happen within the same second as these edits.
    for (i, dir) in ["", "dir", "links", "new-dir"].into_iter().enumerate() {
        set_mtime(&env.src.join(dir), 1_700_000_000 + i as i64, 5);
    }
    let (source, _) = sync(&env);
    assert_same(&env.src, &env.dst, Check { owners: true });
    assert!(!env.dst.join("doomed").exists());
    assert!(source.summary.files_deleted >= 4, "{:?}", source.summary);
}

#[test]
fn twenty_one_thousand_files_in_the_root_directory() {
    let env = Env::new();
    for i in 0..21_000 {
        fs::write(env.src.join(format!("file-{i:05}")), i.to_string()).expect("write");
    }
    let (source, _) = sync(&env);
    assert_eq!(source.summary.files_transferred, 21_000);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn an_empty_source_succeeds_and_empties_the_destination() {
    let env = Env::new();
    write(&env.dst, b"stale/file", b"left over\n");
    let (source, _) = sync(&env);
    assert_eq!(source.summary.result, Outcome::Succeeded);
    assert!(
        source
            .log
            .contains("Skipping sync of empty source directory"),
        "{}",
        source.log
    );
    assert_eq!(fs::read_dir(&env.dst).expect("read_dir").count(), 0);
}
