//! The destination Service, and reading its address back.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Node, Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    meta::{APP_NAME, Component, Owner, object_meta},
    names::{self, Side},
};
use crate::api::{ServiceType, Spelled};

/// The TCP port of the destination's TLS endpoint.
pub const RSYNC_TLS_PORT: i32 = 8000;
/// The name of the Service port, as the reference names it.
pub const PORT_NAME: &str = "rsync-tls";

/// The Service that exposes a destination's mover. `annotations` are the merged user and
/// policy annotations (the user's win; merging is the caller's decision).
pub fn destination_service(
    owner: &Owner,
    service_type: ServiceType,
    annotations: BTreeMap<String, String>,
) -> Service {
    let mut metadata = object_meta(
        owner,
        names::destination_service(&owner.name),
        Component::Service,
        false,
    );
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service_type.as_str().to_string()),
            selector: Some(BTreeMap::from([(
                APP_NAME.to_string(),
                names::mover_selector(Side::Destination, &owner.name),
            )])),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                protocol: Some("TCP".into()),
                port: RSYNC_TLS_PORT,
                target_port: Some(IntOrString::Int(RSYNC_TLS_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The address and port a source should connect to: for a NodePort Service, a node's
/// address (see [`node_address`]) and the node port; otherwise [`service_address`] and
/// port 8000. `None` while either is unknown.
pub fn endpoint(svc: &Service, nodes: &[Node]) -> Option<(String, i32)> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("NodePort") {
        let node_port = spec.ports.as_ref()?.first()?.node_port.filter(|p| *p > 0)?;
        return Some((node_address(nodes)?, node_port));
    }
    Some((service_address(svc)?, RSYNC_TLS_PORT))
}

/// The node address a NodePort is published at: of the Ready nodes in name order, the
/// first ExternalIP (reachable from outside the cluster), else the first InternalIP. The
/// order keeps the published address stable while the mover moves between nodes.
pub fn node_address(nodes: &[Node]) -> Option<String> {
    let mut ready: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    ready.sort_by_key(|n| n.metadata.name.clone());
    let of_type = |kind: &str| {
        ready.iter().find_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == kind && !a.address.is_empty())
                .map(|a| a.address.clone())
        })
    };
    of_type("ExternalIP").or_else(|| of_type("InternalIP"))
}

/// The address a source should connect to: the ClusterIP, or for a LoadBalancer its
/// first ingress hostname, else IP. `None` while no address has been assigned.
pub fn service_address(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?
            .first()?;
        return ingress
            .hostname
            .clone()
            .or_else(|| ingress.ip.clone())
            .filter(|a| !a.is_empty());
    }
    spec.cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    use super::*;
    use crate::resources::meta::fixtures::owner;

    #[test]
    fn selects_the_destination_mover_on_port_8000() {
        let svc = destination_service(
            &owner("ReplicationDestination", "db"),
            ServiceType::ClusterIP,
            BTreeMap::new(),
        );
        let spec = svc.spec.expect("spec");
        assert_eq!(
            svc.metadata.name.as_deref(),
            Some("volsync-rsync-tls-dst-db")
        );
        assert_eq!(spec.selector.expect("selector")[APP_NAME], "dst-db");
        let port = &spec.ports.expect("ports")[0];
        assert_eq!((port.port, port.name.as_deref()), (8000, Some("rsync-tls")));
        assert!(svc.metadata.annotations.is_none());
    }

    #[test]
    fn address_prefers_hostname_then_ip_for_load_balancers() {
        let mut svc = destination_service(
            &owner("ReplicationDestination", "db"),
            ServiceType::LoadBalancer,
            BTreeMap::new(),
        );
        svc.spec.as_mut().expect("spec").cluster_ip = Some("10.0.0.7".into());
        assert_eq!(
            service_address(&svc),
            None,
            "a LoadBalancer without ingress has no address yet"
        );
        let ingress = |hostname: Option<&str>, ip: Option<&str>| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    hostname: hostname.map(Into::into),
                    ip: ip.map(Into::into),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        svc.status = Some(ingress(None, Some("192.0.2.1")));
        assert_eq!(service_address(&svc).as_deref(), Some("192.0.2.1"));
        svc.status = Some(ingress(Some("lb.example"), Some("192.0.2.1")));
        assert_eq!(service_address(&svc).as_deref(), Some("lb.example"));
    }

    fn node(name: &str, ready: bool, addresses: &[(&str, &str)]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addresses.iter().map(|(t, a)| serde_json::json!({"type": t, "address": a})).collect::<Vec<_>>(),
            },
        }))
        .expect("node fixture")
    }

    #[test]
    fn a_node_port_is_published_at_a_ready_nodes_external_then_internal_address() {
        let mut svc = destination_service(
            &owner("ReplicationDestination", "db"),
            ServiceType::NodePort,
            BTreeMap::new(),
        );
        let nodes = [
            node(
                "b",
                true,
                &[("InternalIP", "10.0.0.2"), ("ExternalIP", "203.0.113.2")],
            ),
            node("a", true, &[("InternalIP", "10.0.0.1")]),
            node("0", false, &[("ExternalIP", "203.0.113.9")]),
        ];
        assert_eq!(endpoint(&svc, &nodes), None, "no node port allocated yet");
        svc.spec
            .as_mut()
            .expect("spec")
            .ports
            .as_mut()
            .expect("ports")[0]
            .node_port = Some(31234);
        assert_eq!(endpoint(&svc, &nodes), Some(("203.0.113.2".into(), 31234)));
        assert_eq!(
            endpoint(&svc, &nodes[1..]),
            Some(("10.0.0.1".into(), 31234))
        );
        assert_eq!(endpoint(&svc, &nodes[2..]), None, "no Ready node");
        let mut cluster = destination_service(
            &owner("ReplicationDestination", "db"),
            ServiceType::ClusterIP,
            BTreeMap::new(),
        );
        cluster.spec.as_mut().expect("spec").cluster_ip = Some("10.96.0.12".into());
        assert_eq!(
            endpoint(&cluster, &nodes),
            Some(("10.96.0.12".into(), 8000))
        );
    }

    #[test]
    fn cluster_ip_is_the_address() {
        let mut svc = destination_service(
            &owner("ReplicationDestination", "db"),
            ServiceType::ClusterIP,
            BTreeMap::new(),
        );
        assert_eq!(service_address(&svc), None);
        svc.spec.as_mut().expect("spec").cluster_ip = Some("10.96.0.12".into());
        assert_eq!(service_address(&svc).as_deref(), Some("10.96.0.12"));
    }
}
