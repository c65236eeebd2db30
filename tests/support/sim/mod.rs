//! Simulated cluster parts for the end-to-end tier (DESIGN.md §4): stand-ins for what a
//! real cluster has and this machine cannot run. Each does only its real counterpart's
//! job, through the API, next to the real kube-controller-manager and kube-scheduler:
//!
//! - `node`: a kubelet (Node, Lease, pods as sandboxed processes, pod status);
//! - `storage`: a CSI driver with its provisioner and snapshotter sidecars;
//! - `loadbalancer`: a cloud provider's load-balancer controller;
//! - `routing`: kube-proxy.
//!
//! [`Cluster::start`] starts them once per test binary on a runtime of their own (tests
//! each have their own runtime, which ends with the test), and they stop when the binary
//! exits. Their state lives in one tmpfs directory, removed at exit.

pub mod addresses;
pub mod kubernetes_service;
pub mod loadbalancer;
pub mod node;
pub mod routing;
pub mod storage;
pub mod watch;

use std::{
    path::PathBuf,
    sync::{OnceLock, mpsc},
    time::Duration,
};

use k8s_openapi::api::core::v1::Node;

use super::{ControlPlane, process, wait};

/// The simulated node's name.
pub const NODE: &str = "sim-node-0";
/// A second node, tainted with [`SECOND_NODE_TAINT`] so that only pods that tolerate it
/// (or follow a pod that does) run there: the tests of placement use it, and every other
/// pod stays on [`NODE`] as before.
pub const SECOND_NODE: &str = "sim-node-1";
/// The taint key of [`SECOND_NODE`] (value "true", effect NoSchedule).
pub const SECOND_NODE_TAINT: &str = "sim.ferrosync.test/second-node";

/// The running simulators.
pub struct Cluster {
    /// Their working directory (volumes, snapshots, pod sandboxes).
    pub dir: PathBuf,
    /// The node's name.
    pub node: &'static str,
}

impl Cluster {
    /// Starts the simulators against `cp` (an end-to-end control plane) once per test
    /// binary, and waits until the node is Ready and schedulable.
    pub fn start(cp: &'static ControlPlane) -> &'static Cluster {
        static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| start(cp))
            .as_ref()
            .unwrap_or_else(|e| panic!("the cluster simulators did not start: {e}"))
    }

    /// Where a PV's data lives on this machine: a volume as its workload would see it.
    pub fn volume_dir(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Option<PathBuf> {
        storage::volume_dir(pv)
    }
}

fn start(cp: &'static ControlPlane) -> Result<Cluster, String> {
    assert!(
        cp.options.controllers,
        "the simulators need kube-controller-manager and kube-scheduler"
    );
    let dir = tempfile::Builder::new()
        .prefix("ferrosync-sim-")
        .tempdir_in("/dev/shm")
        .map_err(|e| format!("creating the simulators' directory: {e}"))?
        .keep();
    process::remove_on_exit(&dir);
    // Each node's client certificate makes it `system:node:<name>`, so the Node authorizer
    // and NodeRestriction hold it to a kubelet's rights.
    let node_kubeconfigs: Vec<PathBuf> = [NODE, SECOND_NODE]
        .iter()
        .map(|n| cp.user_kubeconfig(&format!("system:node:{n}"), &["system:nodes"]))
        .collect();
    let (tx, rx) = mpsc::channel();
    let thread_dir = dir.clone();
    std::thread::Builder::new()
        .name("cluster-simulators".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("simulator")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("simulator runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = launch(cp, &node_kubeconfigs, thread_dir).await;
                let _ = tx.send(started);
                // The simulators run on this runtime for the rest of the process.
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| format!("spawning the simulator thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the simulator thread ended".to_string())??;
    Ok(Cluster { dir, node: NODE })
}

async fn launch(
    cp: &ControlPlane,
    node_kubeconfigs: &[PathBuf],
    dir: PathBuf,
) -> Result<(), String> {
    let admin = super::kubeconfig::client(&cp.kubeconfig).await?;
    storage::start(admin.clone(), dir.join("storage")).await?;
    loadbalancer::start(admin.clone());
    routing::start(admin.clone());
    let configs = [
        node::NodeConfig {
            name: NODE.into(),
            ..node::NodeConfig::default()
        },
        node::NodeConfig {
            name: SECOND_NODE.into(),
            taints: vec![serde_json::json!({
                "key": SECOND_NODE_TAINT, "value": "true", "effect": "NoSchedule"})],
            external_ip: Some(addresses::NODES.allocate()),
        },
    ];
    for (config, kubeconfig) in configs.iter().zip(node_kubeconfigs) {
        let node_client = super::kubeconfig::client(kubeconfig).await?;
        let name = config.name.as_str();
        let cert = cp.pki.serving_cert(
            &format!("kubelet-{name}"),
            name,
            &["IP:127.0.0.1", &format!("DNS:{name}")],
        )?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("the kubelet endpoint of {name}: {e}"))?;
        let endpoint = node::Endpoint {
            listener,
            cert: cert.cert,
            key: cert.key,
        };
        let pods = if name == NODE {
            dir.join("pods")
        } else {
            dir.join(format!("pods-{name}"))
        };
        node::start_node(node_client, config, &cp.version, pods, endpoint).await?;
    }
    // Schedulable once the node-lifecycle controller has seen it Ready and lifted the
    // `not-ready` taint that admission puts on every new Node.
    let nodes: kube::Api<Node> = kube::Api::all(admin);
    for name in [NODE, SECOND_NODE] {
        wait::until(
            &format!("the simulated node {name} to become schedulable"),
            Duration::from_secs(60),
            || async {
                let node = nodes.get(name).await.map_err(|e| e.to_string())?;
                let tainted = node
                    .spec
                    .and_then(|s| s.taints)
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key.starts_with("node.kubernetes.io/"));
                Ok((!tainted).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}
