//! Pulling a container image from an OCI registry, as a kubelet and its runtime do: the
//! pod's imagePullSecrets that name the image's registry are tried in turn (anonymous when
//! none does), the registry resolves the reference to a manifest digest, and the image is
//! downloaded and unpacked once per digest into a root filesystem the containers then run
//! in (`sandbox`), instead of the host's.
//!
//! skopeo talks to the registry (the containers project's client, as CRI-O uses it) and
//! umoci unpacks the layers (whiteouts, ownership and modes as the image records them).
//! Only registries the harness started are reachable (`trust_registry`, with their CA):
//! an image from anywhere else stays unknown, as on a node without network.
//!
//! Not modelled: pull policy (every start asks the registry, like `Always`, which is also
//! what makes a wrong pull secret fail even when the image is already on the node),
//! platform selection from an index, and image garbage collection.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::images::Image;

/// Registries the node can reach: host (`127.0.0.1:<port>`) to the directory with its CA
/// certificate.
fn registries() -> &'static Mutex<HashMap<String, PathBuf>> {
    static REGISTRIES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    REGISTRIES.get_or_init(Default::default)
}

/// Lets the node pull from `host`, whose certificate `cert_dir/ca.crt` signed.
pub fn trust_registry(host: &str, cert_dir: &Path) {
    registries()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(host.into(), cert_dir.into());
}

/// The registry host of an image reference, when the node can reach it.
pub fn reachable(reference: &str) -> Option<(String, PathBuf)> {
    let host = reference.split_once('/')?.0;
    let cert_dir = registries()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(host)
        .cloned()?;
    Some((host.to_string(), cert_dir))
}

/// A username and password from a pull secret.
type Credentials = (String, String);

/// Pulls `reference` for a container of `pod` from a reachable registry.
/// `Err((reason, message))` in the kubelet's words.
pub async fn pull(
    client: &Client,
    pod: &Pod,
    reference: &str,
    (host, cert_dir): (String, PathBuf),
) -> Result<Image, (String, String)> {
    let candidates = credentials(client, pod, &host).await;
    let attempts: Vec<Option<Credentials>> = if candidates.is_empty() {
        vec![None]
    } else {
        candidates.into_iter().map(Some).collect()
    };
    let reference = reference.to_string();
    tokio::task::spawn_blocking(move || {
        let failed = |why: String| {
            (
                "ErrImagePull".to_string(),
                format!("failed to pull and unpack image {reference:?}: {why}"),
            )
        };
        let mut last = String::new();
        for creds in attempts {
            match resolve(&reference, creds.as_ref(), &cert_dir) {
                Ok(digest) => {
                    return unpacked(&reference, &digest, creds.as_ref(), &cert_dir)
                        .and_then(|root| image_of(&root))
                        .map_err(failed);
                }
                Err(e) => last = e,
            }
        }
        Err(failed(last))
    })
    .await
    .unwrap_or_else(|e| Err(("ErrImagePull".into(), e.to_string())))
}

/// The pod's pull secrets' credentials for `host`, in the pod's order.
async fn credentials(client: &Client, pod: &Pod, host: &str) -> Vec<Credentials> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let mut found = Vec::new();
    for r in refs {
        // A missing secret is skipped, as the kubelet does (with a warning Event).
        if let Ok(Some(secret)) = secrets.get_opt(&r.name).await
            && let Some(creds) = docker_config_credentials(&secret, host)
        {
            found.push(creds);
        }
    }
    found
}

/// The username and password a `kubernetes.io/dockerconfigjson` Secret holds for `host`:
/// from `username`/`password`, or from `auth` (base64 of `user:password`).
pub fn docker_config_credentials(secret: &Secret, host: &str) -> Option<Credentials> {
    let json: serde_json::Value = secret
        .data
        .as_ref()?
        .get(".dockerconfigjson")
        .and_then(|b| serde_json::from_slice(&b.0).ok())?;
    let entry = &json["auths"][host];
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Some((u.into(), p.into()));
    }
    let auth: k8s_openapi::ByteString = serde_json::from_value(entry["auth"].clone()).ok()?;
    let text = String::from_utf8(auth.0).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.into(), p.into()))
}

/// `skopeo <args>` with the credentials, or with none at all: no stored login of this
/// machine's user may stand in for a missing secret. `flags`: (with, without).
fn skopeo(args: &[&str], creds: Option<&Credentials>, flags: (&str, &str)) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.args(args);
    match creds {
        Some((u, p)) => cmd.arg(flags.0).arg(format!("{u}:{p}")),
        None => cmd.arg(flags.1),
    };
    cmd
}

fn output(mut cmd: Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| {
        format!("running skopeo/umoci (scripts/install-deps.sh installs them): {e}")
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().trim_start_matches("Error: ").to_string())
    }
}

/// Asks the registry for the manifest of `reference`: its digest (`sha256:…`).
fn resolve(
    reference: &str,
    creds: Option<&Credentials>,
    cert_dir: &Path,
) -> Result<String, String> {
    let mut cmd = skopeo(&["inspect", "--raw"], creds, ("--creds", "--no-creds"));
    cmd.arg("--cert-dir")
        .arg(cert_dir)
        .arg(format!("docker://{reference}"));
    let manifest = output(cmd)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&manifest))))
}

/// Where images are unpacked, one directory per manifest digest: removed when the test
/// binary exits.
fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ferrosync-node-images-")
            .tempdir()
            .expect("a directory for unpacked images")
            .keep();
        crate::support::process::remove_on_exit(&dir);
        dir
    })
}

/// The unpacked bundle (`rootfs/` and the runtime's `config.json`) of `digest`, pulled
/// and unpacked on first use.
fn unpacked(
    reference: &str,
    digest: &str,
    creds: Option<&Credentials>,
    cert_dir: &Path,
) -> Result<PathBuf, String> {
    // One unpack at a time: two pods of one new image wait for the same download.
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one = UNPACKING.lock().unwrap_or_else(|e| e.into_inner());
    let bundle = store().join(digest.replace(':', "-"));
    if bundle.join("config.json").is_file() {
        return Ok(bundle);
    }
    let started = std::time::Instant::now();
    let work = tempfile::tempdir_in(store()).map_err(|e| e.to_string())?;
    let layout = work.path().join("layout");
    let repository = reference
        .rsplit_once('@')
        .map(|(r, _)| r)
        .unwrap_or(reference);
    let repository = match repository.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repository,
    };
    let mut copy = skopeo(
        &["copy", "--quiet", "--insecure-policy"],
        creds,
        ("--src-creds", "--src-no-creds"),
    );
    copy.arg("--src-cert-dir")
        .arg(cert_dir)
        .arg(format!("docker://{repository}@{digest}"))
        .arg(format!("oci:{}:image", layout.display()));
    output(copy)?;
    let staged = work.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack
        .args(["unpack", "--image"])
        .arg(format!("{}:image", layout.display()))
        .arg(&staged);
    output(unpack)?;
    // The image's own config (entrypoint, cmd, env), kept next to the bundle.
    let config = image_config(&layout)?;
    std::fs::write(staged.join("image-config.json"), config.to_string())
        .map_err(|e| e.to_string())?;
    std::fs::rename(&staged, &bundle).map_err(|e| e.to_string())?;
    eprintln!(
        "node simulator: pulled and unpacked {reference} ({digest}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(bundle)
}

/// The OCI image configuration of the one image in `layout`.
fn image_config(layout: &Path) -> Result<serde_json::Value, String> {
    let read = |digest: &str| -> Result<serde_json::Value, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("not a sha256 digest")?;
        let bytes =
            std::fs::read(layout.join("blobs/sha256").join(hex)).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let manifest = read(
        index["manifests"][0]["digest"]
            .as_str()
            .ok_or("empty layout")?,
    )?;
    read(
        manifest["config"]["digest"]
            .as_str()
            .ok_or("manifest without config")?,
    )
}

/// What the node needs of an unpacked image: its root, user, entrypoint, cmd, env and
/// working directory.
fn image_of(bundle: &Path) -> Result<Image, String> {
    let read = |name: &str| -> Result<serde_json::Value, String> {
        serde_json::from_slice(&std::fs::read(bundle.join(name)).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    // umoci resolved the image's USER (a name or numbers) against the image's /etc/passwd.
    let runtime = read("config.json")?;
    let user = &runtime["process"]["user"];
    let config = read("image-config.json")?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let c = &config["config"];
    let entrypoint = strings(&c["Entrypoint"]);
    Ok(Image {
        binary: PathBuf::new(),
        path: entrypoint.first().cloned().unwrap_or_default(),
        entrypoint,
        cmd: strings(&c["Cmd"]),
        user: (
            user["uid"].as_u64().unwrap_or(0) as u32,
            user["gid"].as_u64().unwrap_or(0) as u32,
        ),
        auth: None,
        rootfs: Some(bundle.join("rootfs")),
        env: strings(&c["Env"])
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect(),
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_string),
    })
}
