//! The node simulator: a kubelet's duties for one Node.
//!
//! It registers a Ready Node with capacity, renews its Lease, and runs the pods the real
//! scheduler binds to it (the real Job controller makes them) as sandboxed local processes
//! (`sandbox`), with their volumes (`volumes`, `projected`, kept up to date by `refresh`),
//! environment (`env`) and images (`images`, pulled from a registry by `pull`),
//! writing pod status like a kubelet (`status`) and completing graceful deletion (`pod`).
//! Its HTTPS endpoint serves container logs to the API server (`kubelet_api`).
//! It talks to the API as `system:node:<name>`, so the Node authorizer and NodeRestriction
//! limit it as they limit a kubelet.
//!
//! Not modelled: node status beyond Ready (no pressure, no resource accounting),
//! eviction, volume attach/detach, static pods, image pull policy, and what `pod`,
//! `sandbox`, `volumes`, `env` and `kubelet_api` list.

pub mod env;
pub mod exec;
pub mod images;
pub mod kubelet_api;
pub mod pod;
pub mod projected;
pub mod pull;
pub mod pull_backoff;
pub mod refresh;
pub mod sandbox;
pub mod status;
pub mod volumes;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::watch::{cache, next_change};

/// How often the Lease is renewed (the kubelet's default).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration (the kubelet's default).
const LEASE_SECONDS: i32 = 40;

/// The kubelet endpoint's listener and serving certificate (PEM files).
pub struct Endpoint {
    /// Bound on 127.0.0.1.
    pub listener: tokio::net::TcpListener,
    /// Certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// What distinguishes one simulated node from another.
#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    /// The Node's name (and `kubernetes.io/hostname`).
    pub name: String,
    /// Taints it registers with (`--register-with-taints`), as Node `spec.taints` JSON.
    pub taints: Vec<serde_json::Value>,
    /// An ExternalIP address, besides the InternalIP 127.0.0.1.
    pub external_ip: Option<std::net::Ipv4Addr>,
}

/// Registers node `name` and keeps it alive; runs its pods under `dir` and serves their
/// logs on `endpoint`. Returns once the Node is registered; the rest runs in the
/// background on the current runtime.
pub async fn start(
    client: Client,
    name: &str,
    version: &str,
    dir: PathBuf,
    endpoint: Endpoint,
) -> Result<(), String> {
    let config = NodeConfig {
        name: name.into(),
        ..NodeConfig::default()
    };
    start_node(client, &config, version, dir, endpoint).await
}

/// [`start`] for a node with taints or an external address.
pub async fn start_node(
    client: Client,
    config: &NodeConfig,
    version: &str,
    dir: PathBuf,
    endpoint: Endpoint,
) -> Result<(), String> {
    let name = config.name.as_str();
    let port = endpoint
        .listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    kubelet_api::serve(endpoint.listener, &endpoint.cert, &endpoint.key)?;
    register(&client, config, version, port).await?;
    let (c, n) = (client.clone(), name.to_string());
    tokio::spawn(async move {
        loop {
            if let Err(err) = renew_lease(&c, &n).await {
                eprintln!("node simulator: renewing the lease of {n}: {err}");
            }
            tokio::time::sleep(LEASE_RENEW).await;
        }
    });
    let n = name.to_string();
    tokio::spawn(async move { run_pods(client, n, dir).await });
    Ok(())
}

async fn register(
    client: &Client,
    config: &NodeConfig,
    version: &str,
    port: u16,
) -> Result<(), String> {
    let name = config.name.as_str();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "spec": {"taints": config.taints},
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        },
    }))
    .map_err(|e| e.to_string())?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(format!("registering node {name}: {e}")),
    }
    let now = status::now();
    let condition = |type_: &str, ok: bool, reason: &str| {
        json!({"type": type_, "status": if ok { "True" } else { "False" }, "reason": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let mut addresses = vec![json!({"type": "InternalIP", "address": "127.0.0.1"})];
    if let Some(ip) = config.external_ip {
        addresses.push(json!({"type": "ExternalIP", "address": ip.to_string()}));
    }
    let capacity = json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "10Gi"});
    let body = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", false, "KubeletHasSufficientMemory"),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure"),
            condition("PIDPressure", false, "KubeletHasSufficientPID"),
            condition("Ready", true, "KubeletReady"),
        ],
        // No Hostname address: the API server would prefer it and fail to resolve it.
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": name, "systemUUID": name, "bootID": name,
            "kernelVersion": "", "osImage": "ferrosync node simulator",
            "containerRuntimeVersion": "sim://1", "kubeletVersion": version,
            "kubeProxyVersion": version, "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| format!("node {name} status: {e}"))?;
    Ok(())
}

async fn renew_lease(client: &Client, name: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let node = Api::<Node>::all(client.clone()).get(name).await?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                 "uid": node.metadata.uid}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
    }))
    .expect("static lease");
    match leases.create(&PostParams::default(), &lease).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let body = json!({"spec": {"renewTime": now, "holderIdentity": name}});
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Watches the pods bound to this node and gives each its own task.
async fn run_pods(client: Client, node: String, dir: PathBuf) {
    let changed = Arc::new(Notify::new());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let store = cache(Api::<Pod>::all(client.clone()), config, changed.clone());
    let mut tasks: HashMap<String, watch::Sender<Option<i64>>> = HashMap::new();
    loop {
        let pods = store.state();
        let mut seen = Vec::with_capacity(pods.len());
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            seen.push(uid.clone());
            let deletion = pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|_| pod.metadata.deletion_grace_period_seconds.unwrap_or(30));
            let sender = tasks.entry(uid.clone()).or_insert_with(|| {
                let (tx, rx) = watch::channel(None);
                let pod_dir = dir.join(&uid);
                let pod = (*pod).clone();
                tokio::spawn(pod::run(client.clone(), pod, pod_dir, rx));
                tx
            });
            if deletion.is_some() && sender.borrow().is_none() {
                let _ = sender.send(deletion);
            }
        }
        // Gone from the API (deleted with no grace by someone else): stop what runs.
        tasks.retain(|uid, sender| {
            let keep = seen.contains(uid);
            if !keep && sender.borrow().is_none() {
                let _ = sender.send(Some(0));
            }
            keep
        });
        next_change(&changed).await;
    }
}
