//! The rsync daemon configuration of the destination, as the reference writes it, with the
//! bounds the reference lacks.
//!
//! The daemon is started once per connection (`rsync --server --daemon`, inetd style), so
//! the config has no port or pid file. It exports exactly two modules, `data` and
//! `control`. Beyond the reference:
//! - a gate (`ferrosync mover gate`, see [`super::session`]) runs before and after every
//!   transfer: one transfer at a time, and one source's session per run;
//! - `control` accepts only the three control files, is write-only and times out quickly;
//!   `data` times out after the source's default I/O timeout;
//! - options that make the daemon follow symlinks (`-L`, `-k`, `-K`, `--copy-unsafe-links`)
//!   are refused: with `use chroot = false`, a link restored by an earlier run must never
//!   be followed out of the volume.
//!
//! This module must never export anything outside the data and control directories, nor
//! turn symlink munging off (with `use chroot = false` it is what keeps a sender from
//! planting links that the daemon would then follow).

use std::path::{Path, PathBuf};

use super::control::CONTROL_FILES;

/// The module that maps to the volume.
pub const DATA_MODULE: &str = "data";
/// The module that carries the completion signal and the symlink lists.
pub const CONTROL_MODULE: &str = "control";
/// The daemon's I/O timeout on `data`, as the source's default `RSYNC_IO_TIMEOUT`.
pub const DATA_TIMEOUT_SECS: u64 = 600;
/// The daemon's I/O timeout on `control`: the files are small.
pub const CONTROL_TIMEOUT_SECS: u64 = 60;
/// Client options the daemon refuses: each makes the daemon follow symlinks.
pub const REFUSED_OPTIONS: &str = "copy-links copy-dirlinks copy-unsafe-links keep-dirlinks";

/// What the daemon config is made of. Paths are checked by `settings::check_common` (and
/// the gate binary by the destination) to hold no whitespace, quote or control character.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The volume.
    pub data_dir: PathBuf,
    /// The control module's directory.
    pub control_dir: PathBuf,
    /// The daemons' shared log.
    pub log_file: PathBuf,
    /// Whether the daemon keeps uid 0.
    pub privileged: bool,
    /// The mover binary, which runs the gate.
    pub gate_binary: PathBuf,
    /// The session directory the gate keeps its state in.
    pub session_dir: PathBuf,
}

/// Renders rsyncd.conf.
pub fn render(d: &Daemon) -> String {
    let ids = if d.privileged {
        // An rsync daemon started as root otherwise switches to "nobody".
        "uid = 0\ngid = *\n"
    } else {
        ""
    };
    let gate = |phase: &str| {
        format!(
            // `exec`: the shell rsync runs the command with becomes the gate instead of
            // forking it, one process less per transfer.
            "exec '{}' mover gate {phase} '{}'",
            d.gate_binary.display(),
            d.session_dir.display()
        )
    };
    let includes = CONTROL_FILES
        .iter()
        .map(|f| format!("/{f}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# Written by ferrosync mover destination; read by each per-connection rsync daemon.\n\
         address = 127.0.0.1\n\
         use chroot = false\n\
         numeric ids = true\n\
         munge symlinks = true\n\
         read only = false\n\
         open noatime = true\n\
         reverse lookup = false\n\
         log file = {log}\n\
         refuse options = {REFUSED_OPTIONS}\n\
         pre-xfer exec = {pre}\n\
         post-xfer exec = {post}\n\
         {ids}\n\
         [{DATA_MODULE}]\n\
         comment = volume data\n\
         path = {data}\n\
         timeout = {DATA_TIMEOUT_SECS}\n\
         \n\
         [{CONTROL_MODULE}]\n\
         comment = completion signal and symlink lists\n\
         path = {control}\n\
         timeout = {CONTROL_TIMEOUT_SECS}\n\
         write only = true\n\
         include = {includes}\n\
         exclude = *\n",
        log = d.log_file.display(),
        data = d.data_dir.display(),
        control = d.control_dir.display(),
        pre = gate("pre"),
        post = gate("post"),
    )
}

/// Whether a path can go into the config (and the gate's shell command) as it is.
pub fn is_plain(path: &Path) -> bool {
    path.to_str().is_some_and(|t| {
        !t.is_empty()
            && !t
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(privileged: bool) -> Daemon {
        Daemon {
            data_dir: "/data".into(),
            control_dir: "/tmp/control".into(),
            log_file: "/tmp/rsyncd.log".into(),
            privileged,
            gate_binary: "/usr/local/bin/ferrosync".into(),
            session_dir: "/tmp/session".into(),
        }
    }

    #[test]
    fn has_the_reference_options_both_modules_and_the_bounds() {
        let conf = render(&daemon(true));
        for line in [
            "address = 127.0.0.1",
            "use chroot = false",
            "numeric ids = true",
            "munge symlinks = true",
            "read only = false",
            "open noatime = true",
            "reverse lookup = false",
            "uid = 0",
            "gid = *",
            "[data]",
            "path = /data",
            "timeout = 600",
            "[control]",
            "path = /tmp/control",
            "timeout = 60",
            "write only = true",
            "include = /complete /symlink-munging-file /symlink-munging-file0",
            "exclude = *",
            "refuse options = copy-links copy-dirlinks copy-unsafe-links keep-dirlinks",
            "pre-xfer exec = exec '/usr/local/bin/ferrosync' mover gate pre '/tmp/session'",
            "post-xfer exec = exec '/usr/local/bin/ferrosync' mover gate post '/tmp/session'",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
        let unprivileged = render(&daemon(false));
        assert!(!unprivileged.contains("uid ="), "{unprivileged}");
    }

    #[test]
    fn only_plain_paths_go_into_the_config() {
        assert!(is_plain(Path::new("/usr/local/bin/ferrosync")));
        for bad in ["", "/a b", "/a'b", "/a\nb", "/a\"b"] {
            assert!(!is_plain(Path::new(bad)), "{bad:?}");
        }
    }
}
