//! Bounds on the destination's writable `control` module and on its connections.
//!
//! The control directory lives in the pod's memory-backed scratch space, so whatever a key
//! holder uploads there costs node memory. The rsync daemon filters names (only the three
//! control files, see [`super::rsyncd`]) and times out silent transfers; the destination
//! adds what rsync cannot: a cap on the bytes in the directory (temporary files included),
//! checked while connections run, and a limit on how long a connection may stay open
//! without being admitted to a transfer (rsync's daemon has no timeout before a client
//! names its module). The Job caps the scratch volume itself (`sizeLimit`). The default
//! cap, 256 MiB, holds the symlink lists of about a million links.
//! This module must never follow a symlink while measuring.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    exit::{ErrorClass, Failure},
    procs, say,
    session::{self, Store},
};

/// The only files a source may upload to the control module.
pub const CONTROL_FILES: [&str; 3] = [
    "complete",
    super::symlinks::NEWLINE_LIST,
    super::symlinks::NUL_LIST,
];
/// Entries measured at most: a source writes three files (and rsync a temporary directory
/// and files for them); more means someone is flooding the directory.
const MAX_ENTRIES: usize = 64;

/// Why the control directory is over its bounds.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// More bytes than the cap.
    #[error(
        "the control module holds {used} bytes, over its limit of {limit} bytes \
         (CONTROL_LIMIT); the source's symlink lists are too large or a client is \
         filling the destination's memory"
    )]
    TooLarge {
        /// Bytes found.
        used: u64,
        /// The cap.
        limit: u64,
    },
    /// More entries than anyone legitimate creates.
    #[error("the control module holds more than {MAX_ENTRIES} entries")]
    TooMany,
    /// Reading the directory failed.
    #[error("measuring the control module: {0}")]
    Io(#[from] io::Error),
}

/// Bytes used under `dir` (files and the blocks of directories, not following links).
pub fn usage(dir: &Path) -> Result<u64, ControlError> {
    let mut total = 0u64;
    let mut entries = 0usize;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let read = match fs::read_dir(&d) {
            Ok(r) => r,
            // A temporary directory rsync just removed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in read {
            let Ok(entry) = entry else { continue };
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(ControlError::TooMany);
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(meta.len());
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Checks the control directory against `limit`.
pub fn check(dir: &Path, limit: u64) -> Result<u64, ControlError> {
    let used = usage(dir)?;
    if used > limit {
        return Err(ControlError::TooLarge { used, limit });
    }
    Ok(used)
}

/// Tracks how long each daemon (connection) has been open.
#[derive(Debug, Default)]
pub struct Greeting {
    first_seen: HashMap<u32, Instant>,
}

impl Greeting {
    /// Given the daemons alive `now` and the one the gate admitted, returns those open for
    /// longer than `limit` without being admitted: a client that never names a module.
    pub fn overdue(
        &mut self,
        daemons: &[u32],
        admitted: Option<u32>,
        now: Instant,
        limit: Duration,
    ) -> Vec<u32> {
        self.first_seen.retain(|pid, _| daemons.contains(pid));
        let mut late = Vec::new();
        for &pid in daemons {
            let since = *self.first_seen.entry(pid).or_insert(now);
            if Some(pid) != admitted && now.duration_since(since) >= limit {
                late.push(pid);
            }
        }
        late
    }
}

/// How often connections are looked at for the greeting limit.
const GREETING_POLL: Duration = Duration::from_millis(500);

/// The destination's per-poll checks of the control module while it serves.
#[derive(Debug)]
pub struct Watch {
    dir: PathBuf,
    limit: u64,
    store: Store,
    greeting: Greeting,
    greeting_limit: Duration,
    last_greeting_check: Instant,
}

impl Watch {
    /// Watches `dir` against `limit`, with the gate's state in `store`; connections that
    /// start no transfer within `greeting_limit` are closed.
    pub fn new(
        dir: impl Into<PathBuf>,
        limit: u64,
        store: Store,
        greeting_limit: Duration,
    ) -> Self {
        Self {
            dir: dir.into(),
            limit,
            store,
            greeting: Greeting::default(),
            greeting_limit,
            last_greeting_check: Instant::now(),
        }
    }

    /// One poll: fails when the control module is over its bounds, ends connections that
    /// were never admitted in time (`daemons` lists the per-connection daemons), and tells
    /// whether a `complete` that ends this run has arrived. A `complete` from anyone but
    /// the run's owner is removed and the wait goes on.
    pub fn poll(&mut self, daemons: impl FnOnce() -> Vec<u32>) -> Result<bool, Failure> {
        check(&self.dir, self.limit).map_err(|e| {
            Failure::new(
                match e {
                    ControlError::Io(_) => ErrorClass::Internal,
                    _ => ErrorClass::RsyncFailed,
                },
                e.to_string(),
            )
        })?;
        if self.last_greeting_check.elapsed() >= GREETING_POLL {
            self.last_greeting_check = Instant::now();
            let admitted = self.store.read().ok().and_then(|s| s.active);
            for pid in
                self.greeting
                    .overdue(&daemons(), admitted, Instant::now(), self.greeting_limit)
            {
                say::info(
                    "destination",
                    &format!(
                        "closing a connection that started no transfer within {} \
                         (GREETING_TIMEOUT)",
                        humantime::format_duration(self.greeting_limit)
                    ),
                );
                procs::signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let complete = self.dir.join("complete");
        let contents = match fs::read(&complete) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Failure::new(
                    ErrorClass::Internal,
                    format!("reading {}: {e}", complete.display()),
                ));
            }
        };
        let state = self
            .store
            .read()
            .map_err(|e| Failure::new(ErrorClass::Internal, e.to_string()))?;
        match session::check_complete(&state, &contents) {
            Ok(()) => Ok(true),
            Err(rejected) => {
                say::info("destination", &rejected.to_string());
                let _ = fs::remove_file(&complete);
                Ok(false)
            }
        }
    }
}

/// Parses a byte count: digits with an optional `Ki`, `Mi` or `Gi` suffix.
pub fn parse_limit(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t {
        _ if t.ends_with("Gi") => (&t[..t.len() - 2], 30),
        _ if t.ends_with("Mi") => (&t[..t.len() - 2], 20),
        _ if t.ends_with("Ki") => (&t[..t.len() - 2], 10),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("expected a positive byte count like 268435456 or 256Mi, got {text:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_temporary_files_and_does_not_follow_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("complete"), vec![0u8; 1000]).expect("write");
        fs::create_dir(dir.path().join(".~tmp~")).expect("mkdir");
        fs::write(
            dir.path().join(".~tmp~/symlink-munging-file0"),
            vec![0u8; 5000],
        )
        .expect("write");
        let big = tempfile::tempdir().expect("tempdir");
        fs::write(big.path().join("huge"), vec![0u8; 1 << 20]).expect("write");
        std::os::unix::fs::symlink(big.path(), dir.path().join("link")).expect("symlink");
        let used = usage(dir.path()).expect("usage");
        assert!((6000..6000 + 8192 + 200).contains(&used), "{used}");
        assert_eq!(check(dir.path(), 1 << 20).expect("under"), used);
        let err = check(dir.path(), 5999).expect_err("over");
        assert!(
            err.to_string().contains("over its limit of 5999 bytes"),
            "{err}"
        );
        assert!(err.to_string().contains("CONTROL_LIMIT"), "{err}");
    }

    #[test]
    fn a_flood_of_entries_is_an_error_not_a_long_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..=MAX_ENTRIES {
            fs::write(dir.path().join(format!("f{i}")), "").expect("write");
        }
        assert!(matches!(usage(dir.path()), Err(ControlError::TooMany)));
    }

    #[test]
    fn connections_not_admitted_in_time_are_overdue() {
        let mut g = Greeting::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        assert!(g.overdue(&[1, 2], None, t0, limit).is_empty());
        let t1 = t0 + limit;
        assert_eq!(g.overdue(&[1, 2, 3], Some(2), t1, limit), vec![1]);
        // A pid that went away and came back (reuse) starts over.
        assert!(g.overdue(&[3], None, t1, limit).is_empty());
        assert!(
            g.overdue(&[1], None, t1 + Duration::from_secs(1), limit)
                .is_empty()
        );
    }

    #[test]
    fn limits_parse_with_binary_suffixes_and_errors_say_what_is_expected() {
        assert_eq!(parse_limit("1024"), Ok(1024));
        assert_eq!(parse_limit("256Mi"), Ok(256 << 20));
        assert_eq!(parse_limit("2Gi"), Ok(2 << 30));
        assert_eq!(parse_limit("4Ki"), Ok(4096));
        for bad in [
            "",
            "0",
            "-1",
            "1.5Mi",
            "10MB",
            "99999999999999999999Gi",
            "Mi",
        ] {
            let err = parse_limit(bad).expect_err(bad);
            assert!(err.contains("positive byte count"), "{err}");
        }
    }
}
