//! What `kubectl exec` gives a person, as far as tests need it: a look inside a running
//! container. The node records the process of each running container; a test reads the
//! container's own view of its filesystem through `/proc/<pid>/root` and its mounts
//! through `/proc/<pid>/mountinfo` (the test runs as root on the same machine).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

type Key = (String, String, String);

fn table() -> &'static Mutex<HashMap<Key, u32>> {
    static TABLE: OnceLock<Mutex<HashMap<Key, u32>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Records the sandbox (bwrap) process of a started container.
pub fn register(namespace: &str, pod: &str, container: &str, sandbox_pid: u32) {
    table().lock().unwrap_or_else(|e| e.into_inner()).insert(
        (namespace.into(), pod.into(), container.into()),
        sandbox_pid,
    );
}

/// Forgets a container that exited.
pub fn forget(namespace: &str, pod: &str, container: &str) {
    table().lock().unwrap_or_else(|e| e.into_inner()).remove(&(
        namespace.into(),
        pod.into(),
        container.into(),
    ));
}

/// The container's main process (PID 1 inside it), while it runs.
pub fn main_pid(namespace: &str, pod: &str, container: &str) -> Option<u32> {
    let sandbox = *table().lock().unwrap_or_else(|e| e.into_inner()).get(&(
        namespace.into(),
        pod.into(),
        container.into(),
    ))?;
    std::fs::read_to_string(format!("/proc/{sandbox}/task/{sandbox}/children"))
        .ok()?
        .split_whitespace()
        .find_map(|p| p.parse().ok())
}

/// The container's root directory as the container sees it.
pub fn root(namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
    main_pid(namespace, pod, container).map(|pid| PathBuf::from(format!("/proc/{pid}/root")))
}

/// One mount point inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted, in the container.
    pub path: String,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// The container's mount points, from its mountinfo.
pub fn mounts(namespace: &str, pod: &str, container: &str) -> Option<Vec<MountPoint>> {
    let pid = main_pid(namespace, pod, container)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    Some(
        text.lines()
            .filter_map(|line| {
                // id parent major:minor root mount-point options ...
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (path, options) = (fields.get(4)?, fields.get(5)?);
                Some(MountPoint {
                    path: path.replace("\\040", " "),
                    read_only: options.split(',').any(|o| o == "ro"),
                })
            })
            .collect(),
    )
}
