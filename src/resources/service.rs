//! The destination Service, and reading its address back.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
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
