//! The rsync daemon configuration of the destination, as the reference writes it.
//!
//! The daemon is started by stunnel once per connection (`rsync --server --daemon`, inetd
//! style), so the config has no port or pid file. It exports exactly two modules, `data`
//! and `control`. This module must never export anything outside the data and control
//! directories, nor turn symlink munging off (with `use chroot = false` it is what keeps a
//! sender from planting links that the daemon would then follow).

use std::path::Path;

/// The module that maps to the volume.
pub const DATA_MODULE: &str = "data";
/// The module that carries the completion signal and the symlink lists.
pub const CONTROL_MODULE: &str = "control";

/// Renders rsyncd.conf. Paths are checked by `settings::check_common` to hold no newline.
pub fn render(data_dir: &Path, control_dir: &Path, log_file: &Path, privileged: bool) -> String {
    let ids = if privileged {
        // An rsync daemon started as root otherwise switches to "nobody".
        "uid = 0\ngid = *\n"
    } else {
        ""
    };
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
         {ids}\n\
         [{DATA_MODULE}]\n\
         comment = volume data\n\
         path = {data}\n\
         \n\
         [{CONTROL_MODULE}]\n\
         comment = completion signal and symlink lists\n\
         path = {control}\n",
        log = log_file.display(),
        data = data_dir.display(),
        control = control_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_reference_options_and_both_modules() {
        let conf = render(
            Path::new("/data"),
            Path::new("/tmp/control"),
            Path::new("/tmp/rsyncd.log"),
            true,
        );
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
            "[control]",
            "path = /tmp/control",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
        let unprivileged = render(Path::new("/d"), Path::new("/c"), Path::new("/l"), false);
        assert!(!unprivileged.contains("uid ="), "{unprivileged}");
    }
}
