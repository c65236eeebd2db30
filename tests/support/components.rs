//! Command lines of the control-plane components, with the reason for each flag.
//!
//! Everything listens on 127.0.0.1 only, on ports chosen per run.

use std::{path::Path, process::Command};

use super::pki::Pki;

/// The Service CIDR. The apiserver accepts a loopback range (measured with v1.35.4:
/// `kubernetes.default` gets 127.64.0.1), so ClusterIPs are addresses that the routing
/// simulator can listen on locally, and a connection to one never leaves the machine.
pub const SERVICE_CIDR: &str = "127.64.0.0/16";

/// kube-controller-manager's controllers: the ones the tests need, plus every controller
/// that the default admission plugins depend on. Without the latter, new Nodes keep their
/// `not-ready` taint and deleted PVCs/PVs stay Terminating.
pub const CONTROLLERS: &[&str] = &[
    // ownerReference cascades (mover Jobs, Services and Secrets owned by our objects).
    "garbage-collector-controller",
    "namespace-controller",
    // mover Jobs create Pods.
    "job-controller",
    "ttl-after-finished-controller",
    // binds PVCs to the PVs the storage simulator provisions.
    "persistentvolume-binder-controller",
    // removes the not-ready taint that TaintNodesByCondition puts on new Nodes.
    "node-lifecycle-controller",
    "taint-eviction-controller",
    // remove the finalizers that StorageObjectInUseProtection adds.
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    // the `default` ServiceAccount of each namespace, and token Secrets.
    "serviceaccount-controller",
    // folds ClusterRoles labelled aggregate-to-view/edit/admin into the built-in roles
    // (deploy/base/user-roles.yaml).
    "clusterrole-aggregation-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    // No endpoints/endpointslice controllers: pod addresses here are loopback, which the
    // apiserver refuses in endpoints, so the routing simulator selects pods itself.
    // the controller's own Deployment, when the demo runs it in-cluster.
    "deployment-controller",
    "replicaset-controller",
    // deletes Pods of deleted Nodes and terminated Pods beyond the threshold.
    "pod-garbage-collector-controller",
];

/// Ports of one control plane.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// etcd's client port.
    pub etcd_client: u16,
    /// etcd's peer port (unused by a single member, but it must not collide).
    pub etcd_peer: u16,
    /// The apiserver's secure port.
    pub apiserver: u16,
}

/// etcd with its data on `data_dir` (tmpfs) and no fsync: the data is thrown away.
pub fn etcd(bin: &Path, data_dir: &Path, ports: Ports) -> Command {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    cmd
}

/// Where the apiserver writes audit events, and which.
#[derive(Clone, Debug)]
pub struct Audit<'a> {
    /// The audit Policy file.
    pub policy: &'a Path,
    /// The JSON-lines log.
    pub log: &'a Path,
}

/// kube-apiserver with the flags envtest uses: secure port on loopback, client-cert
/// authentication, RBAC authorisation, service-account tokens, no ServiceAccount
/// admission unless `extra` asks for it, a Service CIDR.
pub fn apiserver(
    bin: &Path,
    pki: &Pki,
    ports: Ports,
    audit: Option<Audit<'_>>,
    extra: &[String],
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "--etcd-servers=http://127.0.0.1:{}",
        ports.etcd_client
    ))
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports.apiserver))
    .arg(format!(
        "--cert-dir={}",
        pki.dir.join("apiserver").display()
    ))
    .arg(format!("--tls-cert-file={}", pki.serving.0.display()))
    .arg(format!(
        "--tls-private-key-file={}",
        pki.serving.1.display()
    ))
    .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
    // Node for kubelet-style identities (the node simulator), RBAC for everyone else,
    // so least-privilege rules are really enforced.
    .arg("--authorization-mode=Node,RBAC")
    .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
    .arg(format!(
        "--service-account-key-file={}",
        pki.service_account_key.display()
    ))
    .arg(format!(
        "--service-account-signing-key-file={}",
        pki.service_account_key.display()
    ))
    .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
    // Privileged movers are an opt-in of the API; the apiserver must not forbid them.
    .arg("--allow-privileged=true");
    if let Some(audit) = audit {
        cmd.arg(format!("--audit-policy-file={}", audit.policy.display()))
            .arg(format!("--audit-log-path={}", audit.log.display()))
            .arg("--audit-log-format=json")
            // Never rotate: the default rotates at 100 MB, and the least-privilege check
            // reads one file holding every end-to-end binary's events.
            .arg("--audit-log-maxsize=1000000")
            // Written before the response, so a test that has its answer can read the event.
            .arg("--audit-log-mode=blocking");
    }
    // Off unless a test binary turns it on (the in-cluster tier, tests/incluster.rs, with
    // [`SERVICE_ACCOUNT_ADMISSION`]): with it every pod gets a projected token volume.
    if !extra.iter().any(|a| a == SERVICE_ACCOUNT_ADMISSION) {
        cmd.arg("--disable-admission-plugins=ServiceAccount");
    }
    cmd.args(extra);
    cmd
}

/// The apiserver flag that turns the ServiceAccount admission plugin on: pods get their
/// ServiceAccount's projected token volume (`kube-api-access-*`), as in a real cluster.
pub const SERVICE_ACCOUNT_ADMISSION: &str = "--enable-admission-plugins=ServiceAccount";

/// Flags shared by kube-controller-manager and kube-scheduler: talk to the apiserver as
/// `kubeconfig`, serve /healthz on `port` with a self-signed certificate, no leader
/// election (there is one instance).
fn component(bin: &Path, kubeconfig: &Path, port: u16, cert_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--authentication-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg("--leader-elect=false")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", cert_dir.display()));
    cmd
}

/// kube-controller-manager with the explicit [`CONTROLLERS`] list.
pub fn controller_manager(
    bin: &Path,
    kubeconfig: &Path,
    pki: &Pki,
    port: u16,
    extra: &[String],
) -> Command {
    let mut cmd = component(bin, kubeconfig, port, &pki.dir.join("controller-manager"));
    cmd.arg(format!("--controllers={}", CONTROLLERS.join(",")))
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ))
        .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .args(extra);
    cmd
}

/// kube-scheduler, with its default profile.
pub fn scheduler(bin: &Path, kubeconfig: &Path, pki: &Pki, port: u16) -> Command {
    component(bin, kubeconfig, port, &pki.dir.join("scheduler"))
}
