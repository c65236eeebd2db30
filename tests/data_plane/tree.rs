//! Building test trees and comparing two trees byte for byte, metadata included.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt, lchown, symlink},
    },
    path::{Path, PathBuf},
};

use nix::{
    fcntl::AT_FDCWD,
    sys::{
        stat::{UtimensatFlags, utimensat},
        time::TimeSpec,
    },
};

/// Path from raw bytes.
pub fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub fn write(root: &Path, rel: &[u8], contents: &[u8]) -> PathBuf {
    let path = p(root, rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::write(&path, contents).expect("write");
    path
}

pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = TimeSpec::new(secs, nsec);
    utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).expect("utimensat");
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Names that break naive movers: spaces, newlines, `#`, leading dashes, non-UTF-8 bytes,
/// and rsync's own escape sequence spelled literally.
pub const ODD_NAMES: [&[u8]; 9] = [
    b"with space",
    b"new\nline",
    b"#hash",
    b"-leading-dash",
    b"--delete",
    b"non-utf8-\xff\xfe",
    b"tab\there",
    b"literal\\#012escape",
    b"\xc3\xa9t\xc3\xa9",
];

/// Everything the full-sync test needs to see preserved. Owners are set when `owners`.
pub fn build_tricky(root: &Path, owners: bool) {
    write(root, b"plain.txt", b"hello\n");
    for (i, name) in ODD_NAMES.iter().enumerate() {
        write(root, name, format!("odd {i}\n").as_bytes());
        let mut nested = b"dir ".to_vec();
        nested.extend_from_slice(name);
        nested.extend_from_slice(b"/inner");
        write(root, &nested, b"nested\n");
    }
    // Modes, including setuid and sticky bits.
    for (name, mode) in [
        (&b"modes/0600"[..], 0o600),
        (b"modes/0755", 0o755),
        (b"modes/0444", 0o444),
        (b"modes/4755", 0o4755),
        (b"modes/2750", 0o2750),
    ] {
        chmod(&write(root, name, name), mode);
    }
    fs::create_dir_all(root.join("modes/sticky")).expect("mkdir");
    chmod(&root.join("modes/sticky"), 0o1777);
    // Numeric owners that exist nowhere in /etc/passwd.
    if owners {
        for (name, uid, gid) in [
            (&b"owners/u1234"[..], 1234, 5678),
            (b"owners/u0", 0, 0),
            (b"owners/u70000", 70000, 70001),
        ] {
            let path = write(root, name, name);
            lchown(&path, Some(uid), Some(gid)).expect("chown");
        }
    }
    // Symlinks: relative, absolute, outside the tree, dangling, with odd names, nested.
    fs::create_dir_all(root.join("links/deep/er")).expect("mkdir");
    symlink("../plain.txt", root.join("links/relative")).expect("symlink");
    symlink("/etc/hostname", root.join("links/absolute")).expect("symlink");
    symlink("../../../outside/the/tree", root.join("links/outside")).expect("symlink");
    symlink("no-such-target", root.join("links/dangling")).expect("symlink");
    symlink("../../links", root.join("links/deep/er/dir-link")).expect("symlink");
    symlink("/rsyncd-munged/already", root.join("links/looks-munged")).expect("symlink");
    symlink("plain.txt", p(root, b"link\nwith newline")).expect("symlink");
    symlink("plain.txt", p(root, b"link literal\\#012")).expect("symlink");
    symlink("plain.txt", p(root, b"-link \xff #")).expect("symlink");
    if owners {
        lchown(root.join("links/relative"), Some(4321), Some(8765)).expect("lchown");
    }
    // Hard links, inside one directory and across top-level entries.
    write(root, b"hard/a", b"shared inode\n");
    fs::hard_link(root.join("hard/a"), root.join("hard/b")).expect("link");
    fs::hard_link(root.join("hard/a"), root.join("hard-c")).expect("link");
    // A sparse file: 64 MiB with data only at both ends.
    let sparse = root.join("sparse.img");
    let mut f = fs::File::create(&sparse).expect("create");
    f.write_all(&noise(4096, 7)).expect("write");
    f.seek(SeekFrom::Start(64 << 20)).expect("seek");
    f.write_all(&noise(4096, 8)).expect("write");
    drop(f);
    // Empty directories.
    fs::create_dir_all(root.join("empty")).expect("mkdir");
    fs::create_dir_all(root.join("a/b/c/empty")).expect("mkdir");
    // Distinct mtimes with nanoseconds on everything, directories last (deepest first) so
    // creating children does not move them.
    let mut all = walk(root);
    all.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.len()));
    for (i, (rel, _)) in all.iter().enumerate() {
        set_mtime(&p(root, rel), 1_500_000_000 + i as i64 * 1000, 123_456_789);
    }
}

/// Every entry under `root` (not `root` itself), by relative path bytes.
pub fn walk(root: &Path) -> Vec<(Vec<u8>, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = p(root, &rel);
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
            let entry = entry.expect("entry");
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(entry.file_name().as_bytes());
            let meta = fs::symlink_metadata(entry.path()).expect("lstat");
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push((child, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What [`compare`] checks besides names, types, contents, modes, link targets, hard links
/// and mtimes.
#[derive(Clone, Copy)]
pub struct Check {
    pub owners: bool,
}

/// Compares two trees; returns every difference found.
pub fn compare(src: &Path, dst: &Path, check: Check) -> Result<(), String> {
    let a = walk(src);
    let b = walk(dst);
    let names =
        |v: &[(Vec<u8>, fs::Metadata)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(&a) != names(&b) {
        let (na, nb) = (names(&a), names(&b));
        let only_a: Vec<_> = na
            .iter()
            .filter(|n| !nb.contains(n))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        let only_b: Vec<_> = nb
            .iter()
            .filter(|n| !na.contains(n))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        return Err(format!(
            "entries differ: only in source {only_a:?}, only in destination {only_b:?}"
        ));
    }
    let mut diffs = Vec::new();
    let mut inode_a: HashMap<(u64, u64), &[u8]> = HashMap::new();
    let dst_ino: HashMap<&[u8], u64> = b.iter().map(|(n, m)| (n.as_slice(), m.ino())).collect();
    for ((name, ma), (_, mb)) in a.iter().zip(&b) {
        let shown = String::from_utf8_lossy(name);
        let mut differ = |what: &str, x: String, y: String| {
            if x != y {
                diffs.push(format!("{shown:?}: {what} {x} != {y}"));
            }
        };
        differ(
            "type",
            format!("{:?}", ma.file_type()),
            format!("{:?}", mb.file_type()),
        );
        differ(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
        if !ma.file_type().is_symlink() {
            differ(
                "mode",
                format!("{:o}", ma.mode()),
                format!("{:o}", mb.mode()),
            );
        }
        if check.owners {
            differ(
                "uid:gid",
                format!("{}:{}", ma.uid(), ma.gid()),
                format!("{}:{}", mb.uid(), mb.gid()),
            );
        }
        if ma.file_type().is_symlink() {
            let ta = fs::read_link(p(src, name)).expect("readlink");
            let tb = fs::read_link(p(dst, name)).expect("readlink");
            differ("target", format!("{ta:?}"), format!("{tb:?}"));
        } else if ma.is_file() {
            differ("size", ma.len().to_string(), mb.len().to_string());
            if !same_contents(&p(src, name), &p(dst, name), ma.len()) {
                diffs.push(format!("{shown:?}: contents differ"));
            }
            if ma.nlink() > 1 {
                match inode_a.get(&(ma.dev(), ma.ino())) {
                    Some(first) if dst_ino[first] != mb.ino() => {
                        diffs.push(format!(
                            "{shown:?}: hard link to {:?} lost",
                            String::from_utf8_lossy(first)
                        ));
                    }
                    Some(_) => {}
                    None => {
                        inode_a.insert((ma.dev(), ma.ino()), name);
                    }
                }
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

fn same_contents(a: &Path, b: &Path, size: u64) -> bool {
    if size < 1 << 20 {
        return fs::read(a).expect("read") == fs::read(b).expect("read");
    }
    let (mut fa, mut fb) = (
        fs::File::open(a).expect("open"),
        fs::File::open(b).expect("open"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Asserts the trees match, with the differences in the message.
pub fn assert_same(src: &Path, dst: &Path, check: Check) {
    if let Err(diffs) = compare(src, dst, check) {
        panic!("trees differ:\n{diffs}");
    }
}
