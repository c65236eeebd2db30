//! Unprivileged mode: both movers run as uid 1000 without PRIVILEGED_MOVER.

use std::{
    fs,
    os::unix::fs::{MetadataExt, lchown, symlink},
    path::Path,
};

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
