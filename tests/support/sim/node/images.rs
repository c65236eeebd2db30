//! Container images, as far as the node simulator knows them: a table from image name to
//! a local binary and the path it has inside the "image".
//!
//! There is no registry, no layers and no image filesystem: every container sees the
//! host's read-only /usr, /etc and friends (see `sandbox`), plus the image's one binary
//! bound at its path. An image missing from the table fails to pull, as on a real node.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

/// What a container image provides.
#[derive(Clone, Debug)]
pub struct Image {
    /// The binary on this machine.
    pub binary: PathBuf,
    /// Where the binary is inside the image (and so inside the container).
    pub path: String,
    /// The image's ENTRYPOINT, used when the container has no `command`.
    pub entrypoint: Vec<String>,
    /// The image's USER (uid, gid), used when the security context sets none.
    pub user: (u32, u32),
}

impl Image {
    /// An image whose entrypoint is its binary at `path`, running as root.
    pub fn binary(binary: impl Into<PathBuf>, path: &str) -> Image {
        Image {
            binary: binary.into(),
            path: path.into(),
            entrypoint: vec![path.into()],
            user: (0, 0),
        }
    }
}

fn table() -> &'static Mutex<HashMap<String, Image>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Image>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Makes `name` pullable. Registering a name again replaces it.
pub fn register(name: &str, image: Image) {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.into(), image);
}

/// The image called `name`, if it was registered.
pub fn lookup(name: &str) -> Option<Image> {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}
