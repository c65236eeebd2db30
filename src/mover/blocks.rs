//! The block size of rsync's delta transfer, chosen from the largest file of the volume.
//!
//! rsync picks about √size per file (14 KB for 200 MB), so a database that rewrites
//! scattered 2–16 KB pages resends a whole 14 KB block around each one. A block of
//! [`SMALL_BLOCK`] resends little around each change, at the price of more checksums:
//! about 11 bytes per block (a 4-byte rolling sum and a 3-byte strong sum from the
//! receiver, a 4-byte token per matched block from the sender), 0.5 % of a changed file.
//! `--block-size` applies to every file of a run, so the rule looks at the largest file:
//! the block only grows once that file would need more than [`MAX_BLOCKS`] blocks, which
//! bounds the sender's checksum table (about 40 bytes per block). Measurements are in
//! BENCHMARKS.md. This module must never change a file.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The block for large files, bytes.
pub const SMALL_BLOCK: u64 = 2048;
/// At most this many blocks per file (2 Mi blocks: 4 GiB files at [`SMALL_BLOCK`]).
pub const MAX_BLOCKS: u64 = 1 << 21;
/// rsync's own choice is at most [`SMALL_BLOCK`] up to this size, so nothing is passed.
const RSYNC_CHOICE_UP_TO: u64 = SMALL_BLOCK * SMALL_BLOCK;
/// rsync's largest block (protocol 30 and later).
const RSYNC_MAX_BLOCK: u64 = 128 * 1024;

/// The `--block-size` for a run whose largest regular file has `largest` bytes, or `None`
/// to let rsync choose.
pub fn for_largest_file(largest: u64) -> Option<u32> {
    if largest <= RSYNC_CHOICE_UP_TO {
        return None;
    }
    let block = largest.div_ceil(MAX_BLOCKS).max(SMALL_BLOCK);
    // rsync rounds its own blocks to multiples of 8; so do we.
    let block = block.div_ceil(8) * 8;
    u32::try_from(block.min(RSYNC_MAX_BLOCK)).ok()
}

/// The size of the largest regular file under `root`, staying on its filesystem as rsync
/// `-x` does and following no symlinks. Unreadable directories are skipped: rsync will
/// name them.
pub fn largest_file(root: &Path) -> io::Result<u64> {
    let dev = fs::symlink_metadata(root)?.dev();
    let mut largest = 0;
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if entry.metadata().is_ok_and(|m| m.dev() == dev) {
                    stack.push(entry.path());
                }
            } else if kind.is_file()
                && let Ok(meta) = entry.metadata()
            {
                largest = largest.max(meta.len());
            }
        }
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_for_large_files_bounded_in_count() {
        assert_eq!(for_largest_file(0), None);
        assert_eq!(for_largest_file(4 << 20), None);
        assert_eq!(for_largest_file((4 << 20) + 1), Some(2048));
        assert_eq!(for_largest_file(200_000_000), Some(2048));
        assert_eq!(for_largest_file(4 << 30), Some(2048));
        // 8 GiB: twice the blocks allowed at 2 KiB, so 4 KiB.
        assert_eq!(for_largest_file(8 << 30), Some(4096));
        assert_eq!(for_largest_file(1 << 40), Some(131_072));
        let odd = for_largest_file((5 << 30) + 7).expect("block");
        assert_eq!(odd % 8, 0);
        assert!(u64::from(odd) * MAX_BLOCKS >= (5 << 30) + 7);
    }

    #[test]
    fn finds_the_largest_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join("a/b/big"), vec![0u8; 5000]).expect("write");
        fs::write(dir.path().join("small"), b"x").expect("write");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("link")).expect("symlink");
        assert_eq!(largest_file(dir.path()).expect("walk"), 5000);
    }
}
