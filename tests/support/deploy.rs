//! `deploy/` on a test control plane: rendered with the built kubectl's kustomize and
//! server-side applied, whole or just the parts the controller's identity needs.

use std::{io::Write, process::Stdio};

use super::{ControlPlane, bins};

/// The controller's namespace and ServiceAccount, as in `deploy/`.
pub const NAMESPACE: &str = "ferrosync-system";
/// The controller's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "ferrosync";

/// `kubectl kustomize deploy/`.
pub fn render(cp: &ControlPlane) -> String {
    render_dir(cp, "deploy")
}

/// `kubectl kustomize <dir>`, `dir` relative to the repository.
pub fn render_dir(cp: &ControlPlane, dir: &str) -> String {
    let out = cp
        .kubectl()
        .arg("kustomize")
        .arg(bins::repo_root().join(dir))
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Server-side applies `manifests` (YAML) as admin.
pub fn apply(cp: &ControlPlane, manifests: &str) {
    let mut child = cp
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ferrosync-test-harness",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests.as_bytes())
        .expect("writing manifests");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies the namespace, ServiceAccount and RBAC of `deploy/` (not the Deployment: tests
/// run the controller as a local process) and returns a kubeconfig with the
/// ServiceAccount's identity, so the controller runs with exactly the deployed rights.
pub fn controller_identity(cp: &ControlPlane) -> std::path::PathBuf {
    let dir = bins::repo_root().join("deploy/base");
    let mut manifests = String::new();
    for file in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("deploy manifest");
        manifests.push_str("---\n");
        manifests.push_str(&text);
        manifests.push('\n');
    }
    apply(cp, &manifests);
    cp.service_account_kubeconfig(NAMESPACE, SERVICE_ACCOUNT)
}

/// The ClusterRole that lets Prometheus read /metrics, as in `deploy/base/user-roles.yaml`.
pub const METRICS_READER: &str = "ferrosync-metrics-reader";

/// Applies `deploy/base/user-roles.yaml` (the aggregated view/edit roles and
/// [`METRICS_READER`]).
pub fn user_roles(cp: &ControlPlane) {
    let path = bins::repo_root().join("deploy/base/user-roles.yaml");
    apply(
        cp,
        &std::fs::read_to_string(path).expect("deploy/base/user-roles.yaml"),
    );
}

/// Creates ServiceAccount `namespace/name` (bound to [`METRICS_READER`] when `reader`) and
/// returns a bearer token for it from the TokenRequest API, as a Prometheus pod's
/// projected token would be.
pub fn service_account_token(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    reader: bool,
) -> String {
    let mut manifests = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
    );
    if reader {
        manifests.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
             metadata:\n  name: {namespace}-{name}-metrics\nroleRef:\n  \
             apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {METRICS_READER}\n\
             subjects:\n- kind: ServiceAccount\n  name: {name}\n  namespace: {namespace}\n"
        ));
    }
    apply(cp, &manifests);
    let out = cp
        .kubectl()
        .args(["create", "token", name, "-n", namespace, "--duration=2h"])
        .output()
        .expect("kubectl create token");
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}
