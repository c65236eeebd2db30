//! Sample data for a source volume, and a byte-for-byte comparison of two trees with
//! their metadata (type, mode, owner, mtime, symlink targets, hard links).

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// What is compared of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Vec<u8>,
    link: Option<PathBuf>,
    /// The first path (in order) sharing this entry's inode, for hard links.
    same_as: Option<PathBuf>,
}

/// Writes a tree exercising what a volume holds: nested and empty directories, an
/// executable, a private file, a 1 MiB file, an empty file, odd names, symlinks (one
/// dangling) and a hard link; everything owned by `owner` with fixed times.
pub fn write_sample(root: &Path, owner: (u32, u32)) {
    let files: &[(&str, &[u8], u32)] = &[
        ("a/hello.txt", b"hello, world\n", 0o644),
        ("a/b/private", b"secret-ish\n", 0o600),
        ("run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("empty", b"", 0o644),
        (
            "name with spaces & \u{fc}n\u{ef}code.txt",
            b"odd name\n",
            0o640,
        ),
    ];
    for dir in ["a/b", "empty-dir", "a/c"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).expect("chmod");
    for (path, content, mode) in files {
        fs::write(root.join(path), content).expect("write");
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("a/c/big.bin"), big).expect("write");
    symlink("a/hello.txt", root.join("link")).expect("symlink");
    symlink("nowhere", root.join("a/dangling")).expect("symlink");
    fs::hard_link(root.join("a/hello.txt"), root.join("a/hard")).expect("hard link");
    let time = SystemTime::UNIX_EPOCH + Duration::new(1_577_934_245, 123_456_789);
    // Deepest first, so setting a file's time does not disturb its directory's afterwards.
    let mut all = walk(root);
    all.reverse();
    for path in all {
        let full = root.join(&path);
        lchown(&full, Some(owner.0), Some(owner.1)).expect("lchown");
        if !full.is_symlink() {
            let f = fs::File::open(&full).expect("open");
            f.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))
                .expect("set_times");
        }
    }
}

/// Every path under `root`, relative, parents before children, sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The tree under `root` (without `root` itself, whose metadata belongs to the volume).
pub fn read(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in walk(root) {
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full).expect("lstat");
        let t = meta.file_type();
        let kind = if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_file() {
            "file"
        } else {
            "other"
        };
        let same_as = if t.is_file() && meta.nlink() > 1 {
            let first = inodes
                .entry(meta.ino())
                .or_insert_with(|| path.clone())
                .clone();
            (first != path).then_some(first)
        } else {
            None
        };
        out.insert(
            path,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                // Directory times are checked too: rsync sets them after filling them.
                mtime: if t.is_symlink() {
                    (0, 0)
                } else {
                    (meta.mtime(), meta.mtime_nsec())
                },
                content: if t.is_file() {
                    fs::read(&full).expect("read")
                } else {
                    Vec::new()
                },
                link: t
                    .is_symlink()
                    .then(|| fs::read_link(&full).expect("readlink")),
                same_as,
            },
        );
    }
    out
}

/// Panics with the first differences when the trees differ.
pub fn assert_same(source: &Path, destination: &Path) {
    let (a, b) = (read(source), read(destination));
    let mut diffs = Vec::new();
    for (path, entry) in &a {
        match b.get(path) {
            None => diffs.push(format!("missing: {}", path.display())),
            Some(other) if other != entry => diffs.push(format!(
                "differs: {}\n  source:      {}\n  destination: {}",
                path.display(),
                summary(entry),
                summary(other)
            )),
            Some(_) => {}
        }
    }
    diffs.extend(
        b.keys()
            .filter(|p| !a.contains_key(*p))
            .map(|p| format!("extra: {}", p.display())),
    );
    assert!(diffs.is_empty(), "the trees differ:\n{}", diffs.join("\n"));
}

fn summary(e: &Entry) -> String {
    format!(
        "{} {:o} {}:{} mtime {:?} {} bytes link {:?} same_as {:?}",
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.mtime,
        e.content.len(),
        e.link,
        e.same_as
    )
}
