//! Where the control-plane binaries and the VolumeSnapshot CRDs come from.
//!
//! Both are built or downloaded once per machine and cached by version (see
//! `tests/cluster/build-binaries.sh`); this module only finds them, building or
//! downloading on the first use.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The external-snapshotter client module whose `config/crd/` holds the
/// `snapshot.storage.k8s.io/v1` CRDs. Keep in step with `scripts/install-deps.sh`.
pub const SNAPSHOTTER_MODULE: &str =
    "github.com/kubernetes-csi/external-snapshotter/client/v8@v8.7.0";

/// The repository root (where Cargo.toml is), read at run time: cargo sets
/// `CARGO_MANIFEST_DIR` for tests and `cargo run`, and `scripts/cluster.sh` sets it for the
/// `cluster` example. The compile-time path can belong to another checkout: cargo reuses a
/// binary from a shared target dir when its sources are older, path and all.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (CI keeps it outside the clone), else
/// `target/` in the repository.
pub fn cargo_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// The directory with `etcd`, `k8s` and its multicall links (`kube-apiserver`,
/// `kube-controller-manager`, `kube-scheduler`, `kubectl`). `FERROSYNC_K8S_BIN_DIR`
/// overrides it; otherwise `build-binaries.sh` builds what is missing (minutes, once).
pub fn bin_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("FERROSYNC_K8S_BIN_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let script = repo_root().join("tests/cluster/build-binaries.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        Ok(PathBuf::from(dir))
    })
    .clone()
}

/// The path of one control-plane binary.
pub fn bin(name: &str) -> Result<PathBuf, String> {
    Ok(bin_dir()?.join(name))
}

/// The prometheus-operator module whose `example/prometheus-operator-crd/` holds the
/// `monitoring.coreos.com` CRDs (ServiceMonitor, PrometheusRule). Keep in step with
/// `scripts/install-deps.sh`.
pub const PROMETHEUS_OPERATOR_MODULE: &str =
    "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/// The directory of Go module `module` (`path@version`) in Go's module cache; `go mod
/// download` fetches it on first use.
pub fn go_module_dir(module: &str) -> Result<PathBuf, String> {
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        // Outside any module, so the repository's go.mod files are not consulted.
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|e| format!("running go mod download: {e}"))?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "go mod download {module}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    info["Dir"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| format!("go mod download {module}: {info}"))
}

/// The ServiceMonitor and PrometheusRule CRD files of the Prometheus Operator.
pub fn monitoring_crd_files() -> Result<Vec<PathBuf>, String> {
    let dir = go_module_dir(PROMETHEUS_OPERATOR_MODULE)?.join("example/prometheus-operator-crd");
    Ok(["servicemonitors", "prometheusrules"]
        .iter()
        .map(|kind| dir.join(format!("monitoring.coreos.com_{kind}.yaml")))
        .collect())
}

/// A release tool (`helm`, `promtool`) built from its pinned Go module by
/// `scripts/build-tools.sh`, cached by version (minutes, once per machine).
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let script = repo_root().join("scripts/build-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(name)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {name} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(PathBuf::from))
        .ok_or_else(|| format!("{} printed no path for {name}", script.display()))
}

/// The `snapshot.storage.k8s.io` CRD files (classes, contents, snapshots), from the Go
/// module cache; `go mod download` fetches the module on first use.
pub fn snapshot_crd_files() -> Result<Vec<PathBuf>, String> {
    let crds = go_module_dir(SNAPSHOTTER_MODULE)?.join("config/crd");
    Ok([
        "volumesnapshotclasses",
        "volumesnapshotcontents",
        "volumesnapshots",
    ]
    .iter()
    .map(|kind| crds.join(format!("snapshot.storage.k8s.io_{kind}.yaml")))
    .collect())
}

/// Our CRD files, as committed in `deploy/crds/` (what `kubectl apply -k deploy/` installs).
pub fn ferrosync_crd_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/crds");
    ["replicationdestinations", "replicationsources"]
        .iter()
        .map(|plural| dir.join(format!("{plural}.volsync.backube.yaml")))
        .collect()
}
