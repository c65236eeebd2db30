//! How tests reach a control plane: clients, per-test namespaces, kubeconfigs for any
//! user or ServiceAccount (client certificates signed by the apiserver's client CA), the
//! built kubectl, and the audit log.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{ControlPlane, kubeconfig};

/// A namespace made for one test, with a client of that test's runtime.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    /// An admin client.
    pub client: kube::Client,
    /// The built kubectl and the admin kubeconfig, for the dump on failure.
    kubectl: (PathBuf, PathBuf),
}

/// What a failed test's namespace dump lists.
const DUMP_KINDS: &str = "replicationsources,replicationdestinations,persistentvolumeclaims,volumesnapshots,jobs,pods,services,secrets";

impl TestNamespace {
    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        kube::Api::namespaced(self.client.clone(), &self.name)
    }

    /// What the namespace holds, as `kubectl get` and its events show it.
    pub fn dump(&self) -> String {
        let mut text = String::new();
        for args in [
            vec!["get", DUMP_KINDS, "-o", "wide"],
            vec!["get", DUMP_KINDS, "-o", "yaml"],
            vec!["get", "events", "--sort-by=.lastTimestamp"],
        ] {
            let (kubectl, kubeconfig) = &self.kubectl;
            let out = Command::new(kubectl)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["-n", &self.name])
                .args(&args)
                .output();
            match out {
                Ok(out) => {
                    text.push_str(&String::from_utf8_lossy(&out.stdout));
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                }
                Err(err) => text.push_str(&format!("kubectl: {err}\n")),
            }
        }
        text
    }
}

impl Drop for TestNamespace {
    /// A failing test leaves its namespace's state in its output, which libtest shows.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- state of namespace {} at the failure ---\n{}",
                self.name,
                self.dump()
            );
        }
    }
}

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

impl ControlPlane {
    /// A fresh admin client, bound to the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        kubeconfig::client(&self.kubeconfig)
            .await
            .expect("admin client")
    }

    /// A client for another kubeconfig (e.g. from [`ControlPlane::service_account_kubeconfig`]).
    pub async fn client_for(&self, kubeconfig: &Path) -> kube::Client {
        kubeconfig::client(kubeconfig).await.expect("client")
    }

    /// Creates a namespace named `<prefix>-<n>` for one test.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        use k8s_openapi::api::core::v1::Namespace;
        let client = self.client().await;
        let name = format!("{prefix}-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels =
            Some([("ferrosync.test/harness".to_string(), "true".to_string())].into());
        kube::Api::<Namespace>::all(client.clone())
            .create(&Default::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            client,
            kubectl: (self.bin_dir.join("kubectl"), self.kubeconfig.clone()),
        }
    }

    /// Mints a client certificate for `user` in `groups`, signed by the apiserver's client
    /// CA, and returns a kubeconfig that uses it.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let stem = format!("user-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let cert = self
            .pki
            .client_cert(&stem, user, groups)
            .expect("minting a client certificate");
        let path = self.dir.join(format!("{stem}.kubeconfig"));
        kubeconfig::write(&path, &self.server, &self.pki.ca_cert, &cert)
            .expect("writing a kubeconfig");
        path
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`, with the groups
    /// the apiserver gives ServiceAccount tokens; RBAC treats it exactly like the token.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.user_kubeconfig(&user, &["system:serviceaccounts", &ns_group])
    }

    /// The built kubectl, pointed at this control plane as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd
    }

    /// Every audit event written so far (empty without [`Options::audit_policy`]).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let Some(path) = &self.audit_log else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}
