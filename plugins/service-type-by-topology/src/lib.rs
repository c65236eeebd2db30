//! `service-type-by-topology`: exposes a destination through a LoadBalancer where the
//! cluster runs on a cloud whose load balancers work, and through a ClusterIP where
//! multi-cluster networking (ServiceExport) exists. Adds per-provider Service annotations
//! to load balancers. An explicitly requested type is always kept.

use std::collections::BTreeMap;

use ferrosync_plugin::service_type::{Guest, ServiceType, ServiceTypeDecision, ServiceTypeInput};
use serde::Deserialize;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// providerID prefixes (for example "aws") whose load balancers are trusted to work
    /// even before one was seen with an address.
    #[serde(default)]
    load_balancer_providers: Vec<String>,
    /// Annotations added to a LoadBalancer Service, by providerID prefix.
    #[serde(default)]
    annotations: BTreeMap<String, BTreeMap<String, String>>,
}

struct Plugin;

impl Guest for Plugin {
    fn decide(input: ServiceTypeInput) -> Result<ServiceTypeDecision, String> {
        let settings: Settings = ferrosync_plugin::settings(&input.settings)?;
        let topo = &input.topology;
        let provider = topo
            .provider_id_prefixes
            .iter()
            .find(|p| settings.load_balancer_providers.contains(p));
        let (service_type, reason) = match (input.requested, provider) {
            (Some(t), _) => (t, "the requested type".to_owned()),
            (None, _) if topo.service_export_crd => (
                ServiceType::ClusterIp,
                "ClusterIP: multi-cluster networking (ServiceExport) exists".to_owned(),
            ),
            (None, Some(p)) => (
                ServiceType::LoadBalancer,
                format!("LoadBalancer: nodes run on {p}, whose load balancers work"),
            ),
            (None, None) if topo.load_balancer_ingress_seen => (
                ServiceType::LoadBalancer,
                "LoadBalancer: a LoadBalancer Service here has an address".to_owned(),
            ),
            (None, None) => (
                ServiceType::ClusterIp,
                "ClusterIP: no working load balancer or multi-cluster networking seen".to_owned(),
            ),
        };
        let annotations = match (service_type, provider) {
            (ServiceType::LoadBalancer, Some(p)) => settings
                .annotations
                .get(p)
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(ServiceTypeDecision {
            service_type,
            annotations,
            reason,
        })
    }
}

ferrosync_plugin::service_type::export_service_type!(Plugin);
