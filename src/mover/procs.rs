//! Child processes: spawning stunnel and rsync so they die with the mover, finding the
//! per-connection rsync daemons under stunnel, and stopping children gracefully.
//!
//! Only processes this mover started are ever signalled, by pid. This module must never
//! signal by name or process group.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// Why a process could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The program is not on PATH.
    #[error("{0} not found on PATH; the mover image must contain it")]
    NotFound(String),
    /// spawn(2) failed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Finds `name` on PATH, as an absolute path (stunnel's `exec` needs one).
pub fn which(name: &str) -> Result<PathBuf, ProcError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| ProcError::NotFound(name.to_owned()))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Spawns `cmd` so that it gets SIGTERM if the mover dies first (a SIGKILLed mover must not
/// leave an rsync writing on, or a stunnel listening).
pub fn spawn(cmd: &mut Command, program: &str) -> Result<Child, ProcError> {
    // SAFETY: the closure runs between fork and exec and only makes the prctl(2) syscall,
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    cmd.kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcError::Spawn {
            program: program.to_owned(),
            source,
        })
}

/// Live (non-zombie) children of `parent`, from /proc. Used to know when stunnel still has
/// an rsync daemon serving a connection.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, ppid)| ppid == parent && state != 'Z' && state != 'X')
        })
        .collect()
}

/// State and parent pid from /proc/<pid>/stat; the command name may contain spaces and
/// parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Asks a child to stop with SIGTERM, then kills it after `grace`. Returns once it exited.
pub async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        signal(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        assert_eq!(parse_stat("42 (rsync) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("42 (a) b (c) Z 9 1"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn finds_live_children_and_stops_them() {
        let mut child = spawn(Command::new("sleep").arg("30"), "sleep").expect("spawn");
        let me = std::process::id();
        let pid = child.id().expect("pid");
        assert!(children_of(me).contains(&pid));
        stop(&mut child, Duration::from_secs(5)).await;
        assert!(!children_of(me).contains(&pid));
        assert!(which("sh").expect("sh").is_absolute());
        assert!(which("no-such-program-ferrosync").is_err());
    }
}
