//! The routing simulator: kube-proxy's duty, in its old userspace mode. For every port of
//! every Service it listens on the ClusterIP (the Service CIDR is loopback, 127.64.0.0/16)
//! and on each load-balancer ingress IP, and forwards each TCP connection to a ready pod
//! behind the Service. Every address involved is a loopback address, so no traffic ever
//! leaves the machine.
//!
//! Endpoints are chosen the way the EndpointSlice controller chooses them (pods matching
//! the selector, Ready, with an IP; named target ports resolved from container ports), not
//! read from EndpointSlices: the API rejects loopback endpoint addresses ("may not be in
//! the loopback range"), so the real controller cannot publish these pods' IPs.
//!
//! A NodePort Service's node ports are served on every node address (InternalIP and
//! ExternalIP) that is a loopback address, as kube-proxy serves them on every node.
//!
//! Not modelled: UDP/SCTP, session affinity, traffic policies, topology hints,
//! and kube-proxy's reject of connections to Services without endpoints (a connection is
//! accepted, then closed, as in userspace mode).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use k8s_openapi::{
    api::core::v1::{Node, Pod, Service, ServicePort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{reflector::Store, watcher},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

use super::watch::{cache, next_change};

/// One listening address and what it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Frontend {
    addr: SocketAddr,
    namespace: String,
    service: String,
    selector: Vec<(String, String)>,
    target: Target,
}

/// A Service port's targetPort.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    Number(u16),
    Name(String),
}

/// Starts the proxy on the current runtime.
pub fn start(client: Client) {
    super::kubernetes_service::start(client.clone());
    let changed = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let services = cache(Api::<Service>::all(client.clone()), cfg(), changed.clone());
    let pods = cache(Api::<Pod>::all(client.clone()), cfg(), changed.clone());
    let nodes = cache(Api::<Node>::all(client), cfg(), changed.clone());
    tokio::spawn(async move {
        let mut listeners: HashMap<Frontend, JoinHandle<()>> = HashMap::new();
        loop {
            let wanted = frontends(&services, &node_addresses(&nodes));
            listeners.retain(|f, task| {
                let keep = wanted.contains(f) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for f in wanted {
                listeners
                    .entry(f.clone())
                    .or_insert_with(|| tokio::spawn(serve(f, pods.clone())));
            }
            next_change(&changed).await;
        }
    });
}

/// Every address of every node.
fn node_addresses(nodes: &Store<Node>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = nodes
        .state()
        .iter()
        .filter_map(|n| n.status.as_ref()?.addresses.clone())
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn frontends(services: &Store<Service>, node_ips: &[IpAddr]) -> Vec<Frontend> {
    let mut out = Vec::new();
    for svc in services.state() {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        // Without a selector, endpoints are someone else's business (not simulated).
        let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
            continue;
        };
        let mut ips: Vec<String> = spec
            .cluster_ip
            .iter()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .cloned()
            .collect();
        if let Some(ingress) = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
        {
            ips.extend(ingress.iter().filter_map(|i| i.ip.clone()));
        }
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let service_addrs = ips
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, port.port as u16));
            // (LoadBalancer Services have node ports too; their traffic comes in on the
            // load balancer's address here, so only NodePort Services are served on nodes.)
            let node_port = port
                .node_port
                .filter(|p| *p > 0 && spec.type_.as_deref() == Some("NodePort"))
                .map(|p| p as u16);
            let node_addrs = node_port
                .into_iter()
                .flat_map(|p| node_ips.iter().map(move |ip| SocketAddr::new(*ip, p)));
            for addr in service_addrs.chain(node_addrs) {
                // Only ever loopback: anything else would leave the machine.
                if !addr.ip().is_loopback() {
                    continue;
                }
                out.push(Frontend {
                    addr,
                    namespace: svc.namespace().unwrap_or_default(),
                    service: svc.name_any(),
                    selector: selector.clone().into_iter().collect(),
                    target: target(port),
                });
            }
        }
    }
    out
}

fn target(port: &ServicePort) -> Target {
    match &port.target_port {
        Some(IntOrString::Int(n)) => Target::Number(*n as u16),
        Some(IntOrString::String(name)) => match name.parse() {
            Ok(n) => Target::Number(n),
            Err(_) => Target::Name(name.clone()),
        },
        None => Target::Number(port.port as u16),
    }
}

async fn serve(f: Frontend, pods: Store<Pod>) {
    let listener = match TcpListener::bind(f.addr).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!(
                "routing simulator: listening on {} for {}/{}: {err}",
                f.addr, f.namespace, f.service
            );
            return;
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    while let Ok((inbound, _)) = listener.accept().await {
        let backends = endpoints(&pods, &f);
        if backends.is_empty() {
            continue; // dropped: closed without a backend
        }
        let pick = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(pick).await {
                let mut inbound = inbound;
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Ready pods behind the frontend's Service, with the target port.
fn endpoints(pods: &Store<Pod>, f: &Frontend) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for pod in pods.state() {
        let labels = pod.labels();
        let selected = pod.namespace().as_deref() == Some(&f.namespace)
            && f.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            && pod.metadata.deletion_timestamp.is_none();
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if !(selected && ready) {
            continue;
        }
        let port = match &f.target {
            Target::Number(n) => Some(*n),
            Target::Name(name) => pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port as u16),
        };
        if let Some(port) = port {
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}
