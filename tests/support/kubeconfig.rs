//! Kubeconfig files for the test control plane, and `kube::Client`s built from them.
//!
//! Clients are built per test (per tokio runtime): a client's connection pool belongs to
//! the runtime that created it, so only paths are shared across tests.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::pki::Cert;

/// Writes a kubeconfig that reaches `server` (trusting `ca`) as the owner of `cert`.
pub fn write(path: &Path, server: &str, ca: &Path, cert: &Cert) -> Result<(), String> {
    let yaml = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: ferrosync-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: user\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
         contexts:\n\
         - name: ferrosync-test\n  context:\n    cluster: ferrosync-test\n    user: user\n\
         current-context: ferrosync-test\n",
        ca = ca.display(),
        cert = cert.cert.display(),
        key = cert.key.display(),
    );
    std::fs::write(path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A client for the kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("client for {}: {e}", path.display()))
}

/// One kubeconfig with a context per site: `sites` pairs a context name with an admin
/// kubeconfig written by [`write`]; each becomes cluster, user and context `name`. The
/// certificate paths stay paths, so the file is only good while the clusters run.
pub fn merge_sites(path: &Path, sites: &[(&str, &Path)]) -> Result<(), String> {
    let mut merged = Kubeconfig::default();
    for (name, from) in sites {
        let one = Kubeconfig::read_from(from).map_err(|e| format!("{}: {e}", from.display()))?;
        let user = format!("{name}-admin");
        for mut c in one.clusters {
            c.name = (*name).to_string();
            merged.clusters.push(c);
        }
        for mut u in one.auth_infos {
            u.name = user.clone();
            merged.auth_infos.push(u);
        }
        for mut c in one.contexts {
            c.name = (*name).to_string();
            if let Some(ctx) = c.context.as_mut() {
                ctx.cluster = (*name).to_string();
                ctx.user = Some(user.clone());
            }
            merged.contexts.push(c);
        }
    }
    merged.api_version = Some("v1".into());
    merged.kind = Some("Config".into());
    merged.current_context = sites.first().map(|(n, _)| (*n).to_string());
    let yaml = serde_yaml_ng::to_string(&merged).map_err(|e| format!("kubeconfig: {e}"))?;
    std::fs::write(path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))
}
