//! Symlink lists and their un-munging on the destination.
//!
//! The destination's rsync daemon stores every received symlink with its target prefixed
//! by `/rsyncd-munged/`, so no link can point the daemon outside its modules. After the
//! sync the source tells the destination which links it sent, and the destination restores
//! their targets. The reference does this with rsync's `munge-symlinks --unmunge`, which
//! resets the link's and its parent directory's mtimes to "now"; here it is done natively
//! and both times (and the link's owner) are put back.
//!
//! Lists: `symlink-munging-file` holds one path per line (the reference format; names
//! containing a newline cannot be expressed and are left out), and `symlink-munging-file0`
//! holds the same paths NUL-separated (every name works). This module must never touch a
//! path outside the data directory, nor any entry that is not a munged symlink.

use std::{
    ffi::OsStr,
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, lchown, symlink},
    },
    path::{Component, Path, PathBuf},
};

use nix::{
    fcntl::AT_FDCWD,
    sys::{
        stat::{UtimensatFlags, utimensat},
        time::TimeSpec,
    },
};

/// What rsync's daemon puts in front of every symlink target it receives.
pub const MUNGE_PREFIX: &[u8] = b"/rsyncd-munged/";
/// The reference's newline-separated list, in the control module.
pub const NEWLINE_LIST: &str = "symlink-munging-file";
/// Our NUL-separated list, in the control module; a reference destination ignores it.
pub const NUL_LIST: &str = "symlink-munging-file0";

/// Why un-munging failed.
#[derive(Debug, thiserror::Error)]
pub enum SymlinkError {
    /// The listed path is absolute, has `..`, or resolves outside the data directory.
    #[error("refusing to restore symlink {0:?}: it is not inside the data directory")]
    Unsafe(PathBuf),
    /// A filesystem call failed.
    #[error("restoring symlink {path:?}: {source}")]
    Io {
        /// The link.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The reference list: one path per line. Returns the list and how many names containing a
/// newline had to be left out of it.
pub fn encode_newline_list(paths: &[Vec<u8>]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for p in paths {
        if p.contains(&b'\n') {
            skipped += 1;
            continue;
        }
        out.extend_from_slice(p);
        out.push(b'\n');
    }
    (out, skipped)
}

/// Our list: every path followed by a NUL.
pub fn encode_nul_list(paths: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p);
        out.push(0);
    }
    out
}

/// Splits a list on `sep`, dropping empty entries.
pub fn decode_list(bytes: &[u8], sep: u8) -> Vec<Vec<u8>> {
    bytes
        .split(|b| *b == sep)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Every symlink under `data` that rsync sends (`-x`, `--exclude=lost+found`), relative.
///
/// The whole tree is listed, not only the links rsync itemises as changed: a link sent by
/// an interrupted run is already munged on the destination but unchanged for rsync (which
/// compares link targets with the prefix stripped), so only a full list restores it.
pub fn find_all(data: &Path) -> io::Result<Vec<Vec<u8>>> {
    let root_dev = fs::metadata(data)?.dev();
    let mut found = Vec::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let dir = data.join(OsStr::from_bytes(&rel));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Unreadable or vanished directories are rsync's to report, not ours.
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == "lost+found" {
                continue;
            }
            // The directory entry's type, without a stat per entry (std stats only when
            // the filesystem does not report types); only directories are stat'ed, for
            // their device.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let is_link = kind.is_symlink();
            let descend = kind.is_dir() && entry.metadata().is_ok_and(|m| m.dev() == root_dev);
            if !(is_link || descend) {
                continue;
            }
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            if is_link {
                found.push(child);
            } else {
                stack.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Counts of one un-munging run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Links whose target was restored.
    pub restored: usize,
    /// Listed paths that were missing, not symlinks, or not munged.
    pub skipped: usize,
}

/// Restores the targets of the listed links (paths relative to `data_dir`).
pub fn unmunge_all(data_dir: &Path, paths: &[Vec<u8>]) -> Result<Restored, SymlinkError> {
    let root = fs::canonicalize(data_dir).map_err(|source| SymlinkError::Io {
        path: data_dir.to_owned(),
        source,
    })?;
    let mut counts = Restored::default();
    for rel in paths {
        if unmunge_one(&root, Path::new(OsStr::from_bytes(rel)))? {
            counts.restored += 1;
        } else {
            counts.skipped += 1;
        }
    }
    Ok(counts)
}

fn unmunge_one(root: &Path, rel: &Path) -> Result<bool, SymlinkError> {
    let unsafe_path = || SymlinkError::Unsafe(rel.to_owned());
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(unsafe_path());
    }
    let path = root.join(rel);
    let io_err = |source| SymlinkError::Io {
        path: path.clone(),
        source,
    };
    let link_meta = match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => m,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    let target = fs::read_link(&path).map_err(io_err)?;
    let Some(real) = target.as_os_str().as_bytes().strip_prefix(MUNGE_PREFIX) else {
        return Ok(false);
    };
    let parent = path.parent().ok_or_else(unsafe_path)?;
    // An earlier restored link in the path could lead elsewhere; stay inside the volume.
    if !fs::canonicalize(parent).map_err(io_err)?.starts_with(root) {
        return Err(unsafe_path());
    }
    let parent_meta = fs::metadata(parent).map_err(io_err)?;
    let tmp = create_temp_link(parent, OsStr::from_bytes(real)).map_err(io_err)?;
    let owner_differs = fs::symlink_metadata(&tmp)
        .is_ok_and(|m| (m.uid(), m.gid()) != (link_meta.uid(), link_meta.gid()));
    if owner_differs {
        // Only root can give a link away; an unprivileged mover owns every link anyway.
        match lchown(&tmp, Some(link_meta.uid()), Some(link_meta.gid())) {
            Err(e) if e.raw_os_error() != Some(nix::libc::EPERM) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(e));
            }
            _ => {}
        }
    }
    fs::rename(&tmp, &path).map_err(io_err)?;
    set_times(&path, &link_meta, UtimensatFlags::NoFollowSymlink).map_err(io_err)?;
    // A non-root mover cannot set the times of a directory it does not own (the volume's
    // root, typically); rsync could not set them either, so there is nothing to restore.
    match set_times(parent, &parent_meta, UtimensatFlags::FollowSymlink) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {}
        other => other.map_err(io_err)?,
    }
    Ok(true)
}

/// Creates a symlink to `target` under a random name in `dir` and returns its path. The
/// name cannot be guessed, and symlink(2) never replaces an existing entry, so a file a
/// source placed in the volume is never overwritten or removed; a name that exists already
/// (however unlikely) is simply skipped.
fn create_temp_link(dir: &Path, target: &OsStr) -> io::Result<PathBuf> {
    use rand::RngExt as _;
    const TRIES: usize = 8;
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..TRIES {
        let mut bytes = [0u8; 12];
        rand::rng().fill(&mut bytes[..]);
        let tmp = dir.join(format!(".ferrosync-unmunge.{}", hex::encode(bytes)));
        match symlink(target, &tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn set_times(path: &Path, meta: &fs::Metadata, flag: UtimensatFlags) -> io::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(AT_FDCWD, path, &atime, &mtime, flag).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(path: &Path, secs: i64, flag: UtimensatFlags) {
        let t = TimeSpec::new(secs, 0);
        utimensat(AT_FDCWD, path, &t, &t, flag).expect("utimensat");
    }

    #[test]
    fn lists_round_trip_and_the_newline_list_skips_what_it_cannot_hold() {
        let paths = vec![b"a b".to_vec(), b"new\nline".to_vec(), b"\xff#x".to_vec()];
        let (newline, skipped) = encode_newline_list(&paths);
        assert_eq!(skipped, 1);
        assert_eq!(
            decode_list(&newline, b'\n'),
            vec![paths[0].clone(), paths[2].clone()]
        );
        assert_eq!(decode_list(&encode_nul_list(&paths), 0), paths);
    }

    #[test]
    fn finds_every_link_but_not_in_lost_and_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/lost+found")).expect("mkdir");
        symlink("x", dir.path().join("top")).expect("symlink");
        symlink("x", dir.path().join("a/in\nner")).expect("symlink");
        symlink("x", dir.path().join("a/lost+found/hidden")).expect("symlink");
        let found = find_all(dir.path()).expect("walk");
        assert_eq!(found, vec![b"a/in\nner".to_vec(), b"top".to_vec()]);
    }

    #[test]
    fn unmunges_and_keeps_link_and_parent_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub dir");
        fs::create_dir(&sub).expect("mkdir");
        let link = sub.join("li\nnk");
        symlink("/rsyncd-munged/../target", &link).expect("symlink");
        symlink("plain", sub.join("plain")).expect("symlink");
        set_mtime(&link, 1_000_000, UtimensatFlags::NoFollowSymlink);
        set_mtime(&sub, 2_000_000, UtimensatFlags::FollowSymlink);

        let list = vec![
            b"sub dir/li\nnk".to_vec(),
            b"sub dir/plain".to_vec(),
            b"missing".to_vec(),
        ];
        let counts = unmunge_all(dir.path(), &list).expect("unmunge");
        assert_eq!(
            counts,
            Restored {
                restored: 1,
                skipped: 2
            }
        );
        assert_eq!(
            fs::read_link(&link).expect("readlink"),
            PathBuf::from("../target")
        );
        assert_eq!(
            fs::symlink_metadata(&link).expect("lstat").mtime(),
            1_000_000
        );
        assert_eq!(fs::metadata(&sub).expect("stat").mtime(), 2_000_000);
        assert_eq!(
            fs::read_link(sub.join("plain")).expect("readlink"),
            PathBuf::from("plain")
        );
    }

    #[test]
    fn entries_named_like_the_temporary_link_are_neither_replaced_nor_in_the_way() {
        // The temporary name used to be `.ferrosync-unmunge.<pid>`: a source could place a
        // file or directory under it, and the destination deleted the file or failed.
        let dir = tempfile::tempdir().expect("tempdir");
        let old_name = format!(".ferrosync-unmunge.{}", std::process::id());
        for sub in ["f", "d"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
            symlink("/rsyncd-munged/target", dir.path().join(sub).join("link")).expect("symlink");
        }
        fs::write(dir.path().join("f").join(&old_name), b"user data").expect("write");
        fs::create_dir(dir.path().join("d").join(&old_name)).expect("mkdir");

        let counts =
            unmunge_all(dir.path(), &[b"f/link".to_vec(), b"d/link".to_vec()]).expect("unmunge");
        assert_eq!(counts.restored, 2);
        assert_eq!(
            fs::read(dir.path().join("f").join(&old_name)).expect("file kept"),
            b"user data"
        );
        assert!(dir.path().join("d").join(&old_name).is_dir());
        for sub in ["f", "d"] {
            assert_eq!(
                fs::read_link(dir.path().join(sub).join("link")).expect("readlink"),
                PathBuf::from("target")
            );
            let leftovers: Vec<_> = fs::read_dir(dir.path().join(sub))
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name())
                .filter(|n| {
                    n.to_string_lossy().starts_with(".ferrosync-unmunge.") && *n != *old_name
                })
                .collect();
            assert!(leftovers.is_empty(), "temporary links left: {leftovers:?}");
        }
    }

    #[test]
    fn temporary_names_are_random_and_never_replace_an_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = create_temp_link(dir.path(), OsStr::new("x")).expect("first");
        let b = create_temp_link(dir.path(), OsStr::new("y")).expect("second");
        assert_ne!(a, b);
        let name = a.file_name().expect("name").to_string_lossy().into_owned();
        let suffix = name.strip_prefix(".ferrosync-unmunge.").expect("prefix");
        assert_eq!(suffix.len(), 24, "{name}");
        assert_eq!(fs::read_link(&a).expect("readlink"), PathBuf::from("x"));
    }

    #[test]
    fn refuses_paths_that_leave_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [&b"../x"[..], b"/etc/passwd", b"a/../../x"] {
            let err = unmunge_all(dir.path(), &[bad.to_vec()]).expect_err("unsafe");
            assert!(matches!(err, SymlinkError::Unsafe(_)), "{err}");
        }
    }
}
