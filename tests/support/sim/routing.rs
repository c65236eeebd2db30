//! The routing simulator: kube-proxy's duty, in its old userspace mode. For every port of
//! every Service it listens on the ClusterIP (the Service CIDR is loopback, 127.64.0.0/16)
//! and on each load-balancer ingress IP, and forwards each TCP connection to a ready
//! endpoint from the Service's EndpointSlices, which the real EndpointSlice controller
//! fills from pod IPs and readiness. Every address involved is a loopback address, so no
//! traffic ever leaves the machine.
//!
//! Not modelled: UDP/SCTP, NodePorts, session affinity, traffic policies, topology hints,
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

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
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
    port_name: String,
}

/// Starts the proxy on the current runtime.
pub fn start(client: Client) {
    let changed = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let services = cache(Api::<Service>::all(client.clone()), cfg(), changed.clone());
    let slices = cache(Api::<EndpointSlice>::all(client), cfg(), changed.clone());
    tokio::spawn(async move {
        let mut listeners: HashMap<Frontend, JoinHandle<()>> = HashMap::new();
        loop {
            let wanted = frontends(&services);
            listeners.retain(|f, task| {
                let keep = wanted.contains(f) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for f in wanted {
                if !listeners.contains_key(&f) {
                    let task = tokio::spawn(serve(f.clone(), slices.clone()));
                    listeners.insert(f, task);
                }
            }
            next_change(&changed).await;
        }
    });
}

fn frontends(services: &Store<Service>) -> Vec<Frontend> {
    let mut out = Vec::new();
    for svc in services.state() {
        let Some(spec) = svc.spec.as_ref() else {
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
            for ip in &ips {
                let Ok(ip) = ip.parse::<IpAddr>() else {
                    continue;
                };
                // Only ever loopback: anything else would leave the machine.
                if !ip.is_loopback() {
                    continue;
                }
                out.push(Frontend {
                    addr: SocketAddr::new(ip, port.port as u16),
                    namespace: svc.namespace().unwrap_or_default(),
                    service: svc.name_any(),
                    port_name: port.name.clone().unwrap_or_default(),
                });
            }
        }
    }
    out
}

async fn serve(f: Frontend, slices: Store<EndpointSlice>) {
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
        let backends = endpoints(&slices, &f);
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

/// Ready endpoints of the frontend's Service port.
fn endpoints(slices: &Store<EndpointSlice>, f: &Frontend) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices.state() {
        let owned = slice.namespace().as_deref() == Some(&f.namespace)
            && slice.labels().get("kubernetes.io/service-name") == Some(&f.service);
        if !owned {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == f.port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // An unset `ready` means ready, per the EndpointSlice API.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, port as u16));
                }
            }
        }
    }
    out
}
