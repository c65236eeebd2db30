//! kube-proxy's rule for the `default/kubernetes` Service: its ClusterIP (the first
//! address of the Service CIDR, what in-cluster clients reach through
//! KUBERNETES_SERVICE_HOST) forwards to the apiserver.
//!
//! The Service has no selector; the apiserver's endpoint reconciler publishes its own
//! address in the Service's Endpoints. Here the apiserver binds 127.0.0.1 only while it
//! publishes the host's address (the advertise address it derives), so the stand-in takes
//! the published port and forwards to 127.0.0.1 at that port.

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};

/// Starts forwarding on the current runtime, once the Service and its Endpoints exist.
pub fn start(client: Client) {
    tokio::spawn(async move {
        let (frontend, backend) = loop {
            if let Some(found) = addresses(&client).await {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let listener = match TcpListener::bind(frontend).await {
            Ok(l) => l,
            Err(err) => {
                eprintln!(
                    "routing simulator: listening on {frontend} for default/kubernetes: {err}"
                );
                return;
            }
        };
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

/// The ClusterIP:port to serve and the apiserver's loopback address to forward to.
async fn addresses(client: &Client) -> Option<(SocketAddr, SocketAddr)> {
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .ok()??;
    let spec = service.spec?;
    let ip: std::net::IpAddr = spec.cluster_ip?.parse().ok()?;
    let port = spec.ports?.first()?.port as u16;
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .ok()??;
    let target = endpoints.subsets?.first()?.ports.as_ref()?.first()?.port as u16;
    let frontend = SocketAddr::new(ip, port);
    // Only ever loopback: anything else would leave the machine.
    frontend
        .ip()
        .is_loopback()
        .then(|| (frontend, SocketAddr::from(([127, 0, 0, 1], target))))
}
