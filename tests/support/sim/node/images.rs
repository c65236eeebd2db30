//! Container images, as far as the node simulator knows them: a table from image name to
//! a local binary and the path it has inside the "image", and, for names not in the
//! table, real images pulled from a registry the harness started (`pull`).
//!
//! A table image has no layers and no filesystem of its own: its container sees the
//! host's read-only /usr, /etc and friends (see `sandbox`), plus the image's one binary
//! bound at its path. A pulled image brings its own root filesystem, and its container
//! sees nothing of the host's. An image missing from the table fails to pull, as on a real node,
//! and so does a private image (one registered with [`Image::private`]) unless one of the
//! pod's imagePullSecrets holds its registry's credentials, as a kubelet checks them.

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
    /// The image's CMD, used when the container has neither `command` nor `args`.
    pub cmd: Vec<String>,
    /// The image's USER (uid, gid), used when the security context sets none.
    pub user: (u32, u32),
    /// For a private image: the registry host and the username and password it wants.
    pub auth: Option<RegistryAuth>,
    /// A pulled image's unpacked root filesystem; `None`: the host's (a table image).
    pub rootfs: Option<PathBuf>,
    /// The image's ENV, under the container's own.
    pub env: Vec<(String, String)>,
    /// The image's WORKDIR, used when the container sets no `workingDir`.
    pub working_dir: Option<String>,
}

/// The credentials a private registry asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry host, as `.dockerconfigjson` keys it.
    pub registry: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

impl Image {
    /// An image whose entrypoint is its binary at `path`, running as root.
    pub fn binary(binary: impl Into<PathBuf>, path: &str) -> Image {
        Image {
            binary: binary.into(),
            path: path.into(),
            entrypoint: vec![path.into()],
            cmd: Vec::new(),
            user: (0, 0),
            auth: None,
            rootfs: None,
            env: Vec::new(),
            working_dir: None,
        }
    }

    /// The same image, pullable only with `auth`.
    pub fn private(mut self, auth: RegistryAuth) -> Image {
        self.auth = Some(auth);
        self
    }
}

/// Whether `secret` (of type kubernetes.io/dockerconfigjson, as `kubectl create secret
/// docker-registry` writes it) holds `auth`'s username and password for its registry.
pub fn grants(secret: &k8s_openapi::api::core::v1::Secret, auth: &RegistryAuth) -> bool {
    let Some(json) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
    else {
        return false;
    };
    let entry = &json["auths"][&auth.registry];
    entry["username"].as_str() == Some(auth.username.as_str())
        && entry["password"].as_str() == Some(auth.password.as_str())
}

/// Pulls the image of a container of `pod`: `Err((reason, message))` in the kubelet's
/// words when it is unknown or its registry refuses the pod's pull secrets. The table
/// first (host-rootfs images), then a registry the harness started.
pub async fn pull(
    client: &kube::Client,
    pod: &k8s_openapi::api::core::v1::Pod,
    image_name: &str,
) -> Result<Image, (String, String)> {
    if lookup(image_name).is_none()
        && let Some(registry) = super::pull::reachable(image_name)
    {
        return super::pull::pull(client, pod, image_name, registry).await;
    }
    let image = lookup(image_name).ok_or_else(|| {
        (
            "ErrImagePull".to_string(),
            format!("image {image_name:?} is not in the node simulator's image table"),
        )
    })?;
    let Some(auth) = &image.auth else {
        return Ok(image);
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in refs {
        if let Ok(Some(secret)) = secrets.get_opt(&r.name).await
            && grants(&secret, auth)
        {
            return Ok(image);
        }
    }
    Err((
        "ErrImagePull".to_string(),
        format!(
            "failed to pull image {image_name:?}: {}: unauthorized: authentication required",
            auth.registry
        ),
    ))
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
