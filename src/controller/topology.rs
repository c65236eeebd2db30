//! The cluster topology summary that the service-type policy sees, gathered from Nodes,
//! Services and discovery, and cached briefly: it changes slowly and every destination
//! pass would otherwise list the whole cluster.

use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, Service};
use kube::{Api, Client, api::ListParams};

use crate::policy::Topology;

/// How long a gathered topology is reused.
pub const TOPOLOGY_TTL: Duration = Duration::from_secs(30);

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";

/// A topology with the time it was gathered.
#[derive(Default)]
pub struct TopologyCache {
    cached: Mutex<Option<(Instant, Topology)>>,
}

impl TopologyCache {
    /// The current topology, gathered again when older than [`TOPOLOGY_TTL`].
    pub async fn get(&self, client: &Client) -> Result<Topology, kube::Error> {
        if let Some((at, topology)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < TOPOLOGY_TTL
        {
            return Ok(topology.clone());
        }
        let topology = gather(client).await?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), topology.clone()));
        Ok(topology)
    }
}

async fn gather(client: &Client) -> Result<Topology, kube::Error> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let service_export_crd = match client
        .list_api_group_resources("multicluster.x-k8s.io/v1alpha1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "serviceexports"),
        Err(_) => false,
    };
    Ok(summarise(&nodes, &services, service_export_crd))
}

/// The pure part: what the nodes and services say.
pub fn summarise(nodes: &[Node], services: &[Service], service_export_crd: bool) -> Topology {
    let label = |node: &Node, key: &str| {
        node.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
    };
    let regions: BTreeSet<String> = nodes.iter().filter_map(|n| label(n, REGION)).collect();
    let zones: BTreeSet<String> = nodes.iter().filter_map(|n| label(n, ZONE)).collect();
    let providers: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.provider_id.clone())
        .filter_map(|id| id.split_once("://").map(|(p, _)| p.to_string()))
        .collect();
    let load_balancer_ingress_seen = services.iter().any(|s| {
        s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer")
            && s.status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| !i.is_empty())
    });
    Topology {
        node_count: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        regions: regions.into_iter().collect(),
        zones: zones.into_iter().collect(),
        provider_id_prefixes: providers.into_iter().collect(),
        load_balancer_ingress_seen,
        service_export_crd,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeSpec, ServiceSpec, ServiceStatus,
    };

    use super::*;

    fn node(provider: &str, zone: &str) -> Node {
        let mut n = Node::default();
        n.metadata.labels = Some(
            [
                (REGION.to_string(), "eu-west-1".to_string()),
                (ZONE.to_string(), zone.to_string()),
            ]
            .into(),
        );
        n.spec = Some(NodeSpec {
            provider_id: Some(format!("{provider}:///eu-west-1a/i-1")),
            ..Default::default()
        });
        n
    }

    #[test]
    fn summarises_providers_zones_and_load_balancers() {
        let lb = Service {
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("192.0.2.1".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = summarise(&[node("aws", "a"), node("aws", "b")], &[lb], true);
        assert_eq!(t.node_count, 2);
        assert_eq!(t.zones, ["a", "b"]);
        assert_eq!(t.regions, ["eu-west-1"]);
        assert_eq!(t.provider_id_prefixes, ["aws"]);
        assert!(t.load_balancer_ingress_seen && t.service_export_crd);
        let none = summarise(&[], &[Service::default()], false);
        assert!(!none.load_balancer_ingress_seen && none.node_count == 0);
    }
}
