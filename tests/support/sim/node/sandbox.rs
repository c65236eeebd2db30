//! How the node simulator runs one container: a bubblewrap sandbox, entered as root with
//! no user namespace, in which `setpriv` switches to the container's uid, gid and groups
//! and only then drops capabilities (dropping them first would make `setresuid` fail).
//!
//! The sandbox has its own mount, PID, IPC and UTS namespaces, the container process is
//! PID 1 (so, as in a real container, SIGTERM is ignored unless it handles it). The root
//! is the image's own filesystem for an image pulled from a registry (so `setpriv`, the
//! binary and its libraries must be in the image), otherwise an empty tmpfs with the
//! host's /usr (minus /usr/local), /etc (entry by entry when a volume is mounted below it)
//! and library directories bound read-only; plus exactly the declared mounts. Not
//! modelled: seccomp, AppArmor or SELinux, cgroup limits, and the network (containers
//! share the host's loopback; each pod is told its own 127.x address).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};

use super::images::Image;

/// What a container runtime gives a container by default (containerd's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The ids and privileges a container's process runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups (fsGroup and supplementalGroups).
    pub groups: Vec<u32>,
    /// Capabilities in the bounding set, without the `CAP_` prefix. A non-root process
    /// ends up with none of them effective, as with a real runtime (no ambient caps).
    pub capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem: true`.
    pub read_only_root: bool,
}

/// Resolves the effective security settings of `container` in a pod with `pod_ctx`, the
/// way the kubelet and runtime do: the container's settings override the pod's, which
/// override the image's user. Fails like the kubelet (`CreateContainerConfigError`) when
/// runAsNonRoot is set and the process would run as root.
pub fn identity(
    pod_ctx: Option<&PodSecurityContext>,
    container: &Container,
    image: &Image,
) -> Result<Identity, String> {
    let ctx = container.security_context.as_ref();
    let pick = |c: Option<i64>, p: Option<i64>| c.or(p).map(|v| v as u32);
    let uid = pick(
        ctx.and_then(|c| c.run_as_user),
        pod_ctx.and_then(|p| p.run_as_user),
    )
    .unwrap_or(image.user.0);
    let gid = pick(
        ctx.and_then(|c| c.run_as_group),
        pod_ctx.and_then(|p| p.run_as_group),
    )
    .unwrap_or(image.user.1);
    let non_root = ctx
        .and_then(|c| c.run_as_non_root)
        .or(pod_ctx.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let mut groups: Vec<u32> = pod_ctx
        .and_then(|p| p.fs_group)
        .into_iter()
        .chain(
            pod_ctx
                .and_then(|p| p.supplemental_groups.clone())
                .unwrap_or_default(),
        )
        .map(|g| g as u32)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(Identity {
        uid,
        gid,
        groups,
        capabilities: capabilities(ctx),
        no_new_privs: ctx.and_then(|c| c.allow_privilege_escalation) == Some(false),
        read_only_root: ctx.and_then(|c| c.read_only_root_filesystem) == Some(true),
    })
}

/// The runtime's default set, minus `drop` (`ALL` drops everything), plus `add`; all of
/// them for a privileged container.
fn capabilities(ctx: Option<&SecurityContext>) -> Vec<String> {
    if ctx.and_then(|c| c.privileged) == Some(true) {
        return vec!["ALL".into()];
    }
    let caps = ctx.and_then(|c| c.capabilities.as_ref());
    let norm = |c: &String| c.trim_start_matches("CAP_").to_ascii_uppercase();
    let drop: Vec<String> = caps
        .and_then(|c| c.drop.as_ref())
        .map(|d| d.iter().map(norm).collect())
        .unwrap_or_default();
    let mut set: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for add in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        let add = norm(add);
        if !set.contains(&add) {
            set.push(add);
        }
    }
    set
}

/// A bind mount into the container.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The directory (or file) on this machine.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything needed to start one container.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The pod's name, as the container's hostname.
    pub hostname: String,
    /// The image.
    pub image: Image,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The environment, complete.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The volume mounts.
    pub mounts: Vec<Mount>,
    /// The termination-message file on this machine, and its path in the container.
    pub termination_log: (PathBuf, String),
    /// Who the process runs as.
    pub identity: Identity,
}

/// The `bwrap … setpriv … command` command line.
pub fn command(launch: &Launch) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.env_clear().envs(launch.env.iter().cloned());
    cmd.args([
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--as-pid-1",
    ])
    .args(["--die-with-parent", "--hostname", &launch.hostname])
    // bwrap keeps root's capabilities so that setpriv can switch ids; setpriv drops them.
    .args(["--cap-add", "ALL"]);
    match &launch.image.rootfs {
        // A pulled image: its own root, shared by every container of that image, under a
        // writable overlay layer of this container's own, as a runtime's snapshotter
        // gives it; mount points are made in that layer (see `image_root`).
        Some(_) => {
            cmd.arg("--bind").arg(layer(launch).join("root")).arg("/");
            cmd.args(["--proc", "/proc", "--dev", "/dev"]);
        }
        None => {
            let split_etc = launch
                .mounts
                .iter()
                .any(|m| Path::new(&m.path).starts_with("/etc"));
            host_root(&mut cmd, split_etc);
            cmd.args(["--proc", "/proc", "--dev", "/dev"]);
            // An image whose binary is a host tool at its own path is already there.
            if launch.image.binary != Path::new(&launch.image.path) {
                bind(&mut cmd, &launch.image.binary, &launch.image.path, true);
            }
        }
    }
    // In an image's own root a mount's path may cross the image's symlinks (Debian's
    // /var/run -> /run): resolved inside that root first, as a runtime does, since bwrap
    // would follow an absolute link out of it while setting up.
    let destination = |path: &str| match &launch.image.rootfs {
        Some(rootfs) => in_root(rootfs, path),
        None => path.to_string(),
    };
    let mut mounts = launch.mounts.clone();
    for m in &mut mounts {
        m.path = destination(&m.path);
    }
    // Parents before children, so a nested mount is not hidden by its parent's.
    mounts.sort_by_key(|m| m.path.matches('/').count());
    for m in &mounts {
        bind(&mut cmd, &m.host, &m.path, m.read_only);
    }
    let (log_host, log_path) = &launch.termination_log;
    bind(&mut cmd, log_host, &destination(log_path), false);
    if launch.identity.read_only_root {
        cmd.args(["--remount-ro", "/"]);
    }
    cmd.args(["--chdir", launch.working_dir.as_deref().unwrap_or("/")]);
    cmd.arg("--").args(setpriv(&launch.identity)).arg("--");
    cmd.args(&launch.argv);
    match &launch.image.rootfs {
        Some(rootfs) => image_root(cmd, rootfs, &layer(launch)),
        None => cmd,
    }
}

/// `path` as it lands inside the image's `root`: each symlink of the image's own tree on
/// the way is followed within `root` (an absolute target starts again at the image's root,
/// `..` stops there), as runc's securejoin resolves a mount destination. The parts that
/// do not exist yet are kept as given (they are made in the container's layer).
fn in_root(root: &Path, path: &str) -> String {
    /// Links followed at most, as the kernel's limit (a loop ends, unresolved).
    const MAX_LINKS: usize = 40;
    let mut resolved = PathBuf::from("/");
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = Path::new(path)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.to_str() {
            Some("/" | "." | "") => continue,
            Some("..") => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let next = resolved.join(&part);
        let inside = root.join(next.strip_prefix("/").unwrap_or(&next));
        match std::fs::read_link(&inside) {
            Ok(target) if links < MAX_LINKS => {
                links += 1;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    pending.push_front(c.as_os_str().to_owned());
                }
            }
            _ => resolved = next,
        }
    }
    resolved.to_string_lossy().into_owned()
}

/// The container's writable layer over its image: next to its termination-log file, in
/// the pod's directory.
fn layer(launch: &Launch) -> PathBuf {
    launch.termination_log.0.with_extension("layer")
}

/// Starts `bwrap` in a mount namespace of its own in which the image's `rootfs`
/// (read-only, shared by every container of the image) under the container's writable
/// `layer` is an overlay at `layer/root` (bwrap 0.8 has no overlay of its own). The
/// namespace is made and the overlay mounted between fork and exec, so the mount lives
/// and dies with the container, nothing stays mounted on the host, and no helper process
/// sits between the node and bwrap.
fn image_root(mut bwrap: Command, rootfs: &Path, layer: &Path) -> Command {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let cstring = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
    for dir in ["upper", "work", "root"] {
        let _ = std::fs::create_dir_all(layer.join(dir));
    }
    let target = cstring(&layer.join("root"));
    let options = CString::new(format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.display(),
        layer.join("upper").display(),
        layer.join("work").display()
    ))
    .unwrap_or_default();
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: between fork and exec the closure makes only system calls (unshare, mount)
    // on strings made before the fork; it allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut bwrap, move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            // Private, so the overlay does not propagate back to the host's namespace.
            let none = c"none".as_ptr();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                none,
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            let overlay = c"overlay".as_ptr();
            let data = options.as_ptr().cast();
            if libc::mount(overlay, target.as_ptr(), overlay, 0, data) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    bwrap
}

fn setpriv(id: &Identity) -> Vec<String> {
    let mut args = vec![
        "/usr/bin/setpriv".to_string(),
        format!("--reuid={}", id.uid),
        format!("--regid={}", id.gid),
    ];
    if id.groups.is_empty() {
        args.push("--clear-groups".into());
    } else {
        let groups: Vec<String> = id.groups.iter().map(u32::to_string).collect();
        args.push(format!("--groups={}", groups.join(",")));
    }
    let caps = if id.capabilities.iter().any(|c| c == "ALL") {
        "+all".to_string()
    } else {
        std::iter::once("-all".to_string())
            .chain(
                id.capabilities
                    .iter()
                    .map(|c| format!("+{}", c.to_ascii_lowercase())),
            )
            .collect::<Vec<_>>()
            .join(",")
    };
    args.push(format!("--bounding-set={caps}"));
    args.push("--inh-caps=-all".into());
    if id.no_new_privs {
        args.push("--no-new-privs".into());
    }
    args
}

fn bind(cmd: &mut Command, host: &Path, path: &str, read_only: bool) {
    // bwrap would create missing parents 0700, unusable by a non-root container; an
    // image's directories are 0755.
    let ancestors: Vec<&Path> = Path::new(path).ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev().filter(|d| *d != Path::new("/")) {
        cmd.args(["--perms", "0755", "--dir"]).arg(dir);
    }
    cmd.arg(if read_only { "--ro-bind" } else { "--bind" })
        .arg(host)
        .arg(path);
}

/// The host's system directories, read-only: what dynamically linked tools (rsync,
/// stunnel, sh) need. /usr/local stays out, so an image's binary can appear there.
fn host_root(cmd: &mut Command, split_etc: bool) {
    let tops: &[&str] = if split_etc {
        &["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
    } else {
        &["bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"]
    };
    for top in tops {
        let host = Path::new("/").join(top);
        if let Ok(target) = std::fs::read_link(&host) {
            cmd.arg("--symlink").arg(target).arg(&host);
        } else if host.is_dir() {
            bind(cmd, &host, &host.to_string_lossy(), true);
        }
    }
    // /etc entry by entry too when a volume is mounted below it (/etc/ferrosync): its
    // mount point must be made in a directory of the sandbox's own, not in the read-only
    // host /etc. Only then: a hundred more binds make the sandbox slower to start.
    let dirs: &[&str] = if split_etc {
        &["/usr", "/etc"]
    } else {
        &["/usr"]
    };
    let entries = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten();
    for entry in entries.flatten() {
        if entry.path() == Path::new("/usr/local") {
            continue;
        }
        let host = entry.path();
        if let Ok(target) = std::fs::read_link(&host) {
            cmd.arg("--symlink").arg(target).arg(&host);
        } else {
            bind(cmd, &host, &host.to_string_lossy(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_follow_the_images_links_inside_its_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("run")).expect("run");
        std::fs::create_dir_all(r.join("var/lib")).expect("var/lib");
        std::os::unix::fs::symlink("/run", r.join("var/run")).expect("absolute link");
        std::os::unix::fs::symlink("../run", r.join("var/lock")).expect("relative link");
        std::os::unix::fs::symlink("/../../etc", r.join("escape")).expect("escaping link");
        let token = "/var/run/secrets/kubernetes.io/serviceaccount";
        assert_eq!(
            in_root(r, token),
            "/run/secrets/kubernetes.io/serviceaccount"
        );
        assert_eq!(in_root(r, "/var/lock/x"), "/run/x");
        assert_eq!(in_root(r, "/var/lib/data"), "/var/lib/data");
        assert_eq!(in_root(r, "/escape/ferrosync"), "/etc/ferrosync");
        assert_eq!(in_root(r, "/data"), "/data");
    }
}
