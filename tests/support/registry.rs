//! A real OCI registry on loopback, with the images `scripts/build-images.sh` builds pushed
//! to it: `registry` from github.com/distribution/distribution/v3 (built from its Go module
//! by `scripts/build-tools.sh`, pinned and cached by version), serving HTTPS with a
//! certificate from its own throwaway CA and asking every client for a password
//! (htpasswd, bcrypt). Images are pushed with skopeo, as a release pipeline would; the
//! node simulator pulls them with the pod's imagePullSecrets (`sim::node::pull`).
//!
//! One registry per test binary, started on first use; it serves every control plane the
//! binary starts, as a site's registry serves all its clusters.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::{bins, pki::Pki, process, sim::node::pull};

/// The user the registry accepts (and the only one).
pub const USERNAME: &str = "ferrosync-ci";
/// Where the images are pushed, under the registry's host.
pub const CONTROLLER_REPOSITORY: &str = "ferrosync/ferrosync";
/// The mover image's repository.
pub const MOVER_REPOSITORY: &str = "ferrosync/ferrosync-mover";

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:<port>`, as image references and `.dockerconfigjson` name it.
    pub host: String,
    /// The password of [`USERNAME`].
    pub password: String,
    /// A directory holding the CA certificate as `ca.crt` (skopeo's `--cert-dir`).
    pub cert_dir: PathBuf,
    /// The controller image, pushed: `<host>/ferrosync/ferrosync:<version>`.
    pub controller_image: String,
    /// The mover image, pushed: `<host>/ferrosync/ferrosync-mover:<version>`.
    pub mover_image: String,
    _child: Child,
}

/// The registry of this test binary, with both images pushed; started, built and pushed
/// by the first caller (the image build is cached by content, so usually seconds).
pub fn shared() -> &'static Registry {
    static SHARED: OnceLock<Result<Registry, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            std::thread::scope(|s| s.spawn(start).join())
                .unwrap_or_else(|_| Err("registry start-up panicked".into()))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("the test registry did not start: {e}"))
}

impl Registry {
    /// A `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`: the registry's
    /// credentials as `kubectl create secret docker-registry` writes them.
    pub fn docker_config_json(&self, password: &str) -> String {
        serde_json::json!({"auths": {&self.host: {"username": USERNAME, "password": password}}})
            .to_string()
    }

    /// Pushes the OCI image at `layout` (`<dir>:<tag>`) as `<host>/<repository>:<tag>`.
    pub fn push(&self, layout: &str, repository: &str, tag: &str) -> Result<String, String> {
        let reference = format!("{}/{repository}:{tag}", self.host);
        let creds = format!("{USERNAME}:{}", self.password);
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--insecure-policy"])
            .arg("--dest-cert-dir")
            .arg(&self.cert_dir)
            .args(["--dest-creds", &creds])
            .arg(format!("oci:{layout}"))
            .arg(format!("docker://{reference}")))?;
        Ok(reference)
    }
}

/// The `oci:` layouts `scripts/build-images.sh` built (or found cached) from the binaries
/// of this build: `(controller, mover)`.
pub fn built_images() -> Result<(String, String), String> {
    let script = bins::repo_root().join("scripts/build-images.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--controller")
        .arg(super::controller::ferrosync_binary())
        .arg("--mover")
        .arg(mover_binary())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let layout = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(str::to_string)
            .ok_or_else(|| format!("build-images.sh printed no {name} image:\n{stdout}"))
    };
    Ok((layout("controller")?, layout("mover")?))
}

/// The mover-only binary (`src/bin/ferrosync-mover.rs`) of this build.
pub fn mover_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_ferrosync-mover") {
        Some(path) => PathBuf::from(path),
        None => bins::cargo_target_dir().join("debug/ferrosync-mover"),
    }
}

/// A registry of this test binary with nothing pushed (for tests that push their own
/// artifacts, such as policy bundles): no image build, so it starts in well under a second.
pub fn bare() -> &'static Registry {
    static BARE: OnceLock<Result<Registry, String>> = OnceLock::new();
    BARE.get_or_init(|| {
        std::thread::scope(|s| s.spawn(launch).join())
            .unwrap_or_else(|_| Err("registry start-up panicked".into()))
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("the test registry did not start: {e}"))
}

fn start() -> Result<Registry, String> {
    let (controller_layout, mover_layout) = built_images()?;
    let mut registry = launch()?;
    let tag = ferrosync::VERSION;
    registry.controller_image = registry.push(&controller_layout, CONTROLLER_REPOSITORY, tag)?;
    registry.mover_image = registry.push(&mover_layout, MOVER_REPOSITORY, tag)?;
    Ok(registry)
}

/// Starts the registry itself, empty.
fn launch() -> Result<Registry, String> {
    let dir = tempfile::Builder::new()
        .prefix("ferrosync-registry-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    process::remove_on_exit(&dir);
    let pki = Pki::create(&dir.join("pki"))?;
    let serving = pki.serving_cert("registry", "registry", &["IP:127.0.0.1"])?;
    let cert_dir = dir.join("certs.d");
    std::fs::create_dir_all(&cert_dir).map_err(|e| e.to_string())?;
    std::fs::copy(&pki.ca_cert, cert_dir.join("ca.crt")).map_err(|e| e.to_string())?;

    let password = format!("{:032x}", rand::random::<u128>());
    // bcrypt is what the registry's htpasswd accepts (apache2-utils' htpasswd -B); the
    // lowest cost keeps each request cheap (the registry checks the password on every one).
    let htpasswd = dir.join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-B", "-C", "4", "-b", "-c"])
        .arg(&htpasswd)
        .args([USERNAME, &password]))?;

    let port = process::free_port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        config_yaml(&dir, &host, &serving.cert, &serving.key, &htpasswd),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary()?);
    cmd.arg("serve")
        .arg(&config)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let child = process::spawn(cmd).map_err(|e| format!("starting the registry: {e}"))?;
    wait_listening(port, &dir.join("registry.log"))?;
    pull::trust_registry(&host, &cert_dir);

    Ok(Registry {
        host,
        password,
        cert_dir,
        controller_image: String::new(),
        mover_image: String::new(),
        _child: child,
    })
}

fn config_yaml(dir: &Path, host: &str, cert: &Path, key: &Path, htpasswd: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n\
         http:\n  addr: {host}\n  tls:\n    certificate: {cert}\n    key: {key}\n\
         auth:\n  htpasswd:\n    realm: ferrosync-test-registry\n    path: {htpasswd}\n",
        storage = dir.join("storage").display(),
        cert = cert.display(),
        key = key.display(),
        htpasswd = htpasswd.display(),
    )
}

/// The registry binary, built from its Go module on first use (cached by version).
fn binary() -> Result<PathBuf, String> {
    let script = bins::repo_root().join("scripts/build-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("registry")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("registry ")) {
        Some(path) if out.status.success() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "{} registry failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn wait_listening(port: u16, log: &Path) -> Result<(), String> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the registry did not listen on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}
