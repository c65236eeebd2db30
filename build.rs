//! Bakes the commit and the build date into the binary for `ferrosync version`.
//!
//! The commit comes from git when the source is a checkout, else from
//! `FERROSYNC_GIT_COMMIT` (image builds copy the sources without `.git`), else "unknown".
//! The date is `SOURCE_DATE_EPOCH` when set (reproducible builds), else the time this
//! script last ran: it reruns when HEAD moves, not on every build, so that an unchanged
//! commit does not recompile the crate.

use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reruns this script when `path` changes. Only for files that exist: cargo reruns a
/// script on every build while a watched path is missing.
fn watch(path: PathBuf) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERROSYNC_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            // HEAD itself, the branch it points to, and packed refs (a worktree keeps
            // HEAD in its own git dir and refs in the common one).
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                watch(PathBuf::from(dir).join("HEAD"));
            }
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let common = PathBuf::from(common);
                watch(common.join("packed-refs"));
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watch(common.join(branch));
                }
            }
            commit
        }
        None => std::env::var("FERROSYNC_GIT_COMMIT")
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "unknown".into()),
    };
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    println!("cargo:rustc-env=FERROSYNC_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=FERROSYNC_BUILD_DATE={}",
        date.format("%Y-%m-%dT%H:%M:%SZ")
    );
}
