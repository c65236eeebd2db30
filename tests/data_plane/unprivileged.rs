//! Unprivileged mode: both movers run as uid 1000 without PRIVILEGED_MOVER.

use std::{
    fs,
    os::unix::fs::{MetadataExt, lchown, symlink},
    path::Path,
};

use ferrosync::mover::ErrorClass;
use nix::sys::signal::Signal;

use crate::{
    harness::{Env, sync_with},
    tree::{Check, assert_same, chmod, set_mtime, walk, write},
};

const UID: u32 = 1000;

fn chown_tree(root: &Path) {
    lchown(root, Some(UID), Some(UID)).expect("chown root");
    for (rel, _) in walk(root) {
        lchown(crate::tree::p(root, &rel), Some(UID), Some(UID)).expect("chown");
    }
}

#[test]
fn an_unprivileged_mover_syncs_what_its_user_can_read() {
    let env = Env::new();
    chmod(&write(&env.src, b"private", b"only the owner\n"), 0o600);
    chmod(&write(&env.src, b"script", b"#!/bin/sh\n"), 0o755);
    write(&env.src, b"dir with space/file", b"nested\n");
    fs::create_dir(env.src.join("empty")).expect("mkdir");
    symlink("../private", env.src.join("dir with space/link")).expect("symlink");
    fs::hard_link(env.src.join("script"), env.src.join("script-link")).expect("link");
    for (i, (rel, _)) in walk(&env.src).iter().rev().enumerate() {
        set_mtime(&crate::tree::p(&env.src, rel), 1_600_000_000 + i as i64, 0);
    }
    for dir in [&env.src, &env.dst] {
        chown_tree(dir);
    }
    for keys in ["keys-src", "keys-dst"] {
        chown_tree(&env.path(keys));
    }

    let as_user = |m: crate::harness::Mover| m.var("PRIVILEGED_MOVER", "0").user(UID);
    let (source, dest) = sync_with(&env, as_user, as_user);
    assert_same(&env.src, &env.dst, Check { owners: true });
    for (rel, meta) in walk(&env.dst) {
        assert_eq!(meta.uid(), UID, "{}", String::from_utf8_lossy(&rel));
    }
    assert!(
        source.summary.files_transferred >= 3,
        "{:?}",
        source.summary
    );
    assert!(dest.log.contains("restored 1 symlink"), "{}", dest.log);
}

/// A file only root can read stops an unprivileged source with rsync's exit 23: the
/// summary names that file, relative to the volume, and everything else arrived.
#[test]
fn an_unprivileged_source_names_the_file_it_could_not_read() {
    let env = Env::new();
    write(&env.src, b"readme.txt", b"for everyone\n");
    write(&env.src, b"dir/nested.txt", b"nested\n");
    chmod(&write(&env.src, b"own.txt", b"mine\n"), 0o600);
    let secret = write(&env.src, b"dir/root-only", b"not for uid 1000\n");
    for dir in [&env.src, &env.dst] {
        chown_tree(dir);
    }
    for keys in ["keys-src", "keys-dst"] {
        chown_tree(&env.path(keys));
    }
    lchown(&secret, Some(0), Some(0)).expect("chown root");
    chmod(&secret, 0o600);

    let port = crate::harness::free_port();
    let as_user = |m: crate::harness::Mover| m.var("PRIVILEGED_MOVER", "0").user(UID);
    let dest = as_user(crate::harness::Mover::destination(&env, port))
        .spawn()
        .listening();
    let source = as_user(crate::harness::Mover::source(&env, port))
        .var("MAX_ATTEMPTS", "2")
        .run(std::time::Duration::from_secs(120));
    source.assert_code(15);
    let s = &source.summary;
    assert_eq!(s.error_class, Some(ErrorClass::RsyncFailed), "{s:?}");
    assert_eq!(s.attempts, 1, "a permanent failure is not retried");
    assert_eq!(s.errors.len(), 1, "{s:?}");
    assert!(
        s.errors[0].contains("\"dir/root-only\"") && s.errors[0].contains("Permission denied"),
        "the summary names the file relative to the volume: {s:?}"
    );
    let src = env.src.display().to_string();
    assert!(
        !s.errors[0].contains(&src),
        "no absolute source path: {s:?}"
    );
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("dir/root-only")),
        "{s:?}"
    );

    for (rel, contents) in [
        ("readme.txt", "for everyone\n"),
        ("dir/nested.txt", "nested\n"),
        ("own.txt", "mine\n"),
    ] {
        let got = fs::read_to_string(env.dst.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(got, contents, "{rel}");
    }
    assert!(!env.dst.join("dir/root-only").exists());

    // The source never signalled completion: the destination does not report success.
    dest.signal(Signal::SIGTERM);
    let dest = dest.wait(std::time::Duration::from_secs(20));
    dest.assert_code(22);
}
