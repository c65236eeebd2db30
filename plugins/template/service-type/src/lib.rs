//! A service-type plugin to start from (`ferrosync policy new service-type <dir>` writes it
//! into a crate of its own, with this directory's `tests.json` and `policy.toml` as its
//! bundle). It keeps the requested Service type; otherwise it chooses a LoadBalancer where
//! the cluster has shown one working, and a ClusterIP elsewhere, adding the configured
//! annotations to a LoadBalancer.
//!
//! A plugin must stay a pure function of its input: no state between calls, no reliance
//! on time or randomness it was not granted.

use std::collections::BTreeMap;

use ferrosync_plugin::service_type::{Guest, ServiceType, ServiceTypeDecision, ServiceTypeInput};
use serde::Deserialize;

/// Settings, from the bundle's `policy.toml` (`[plugin.settings]`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Annotations for a LoadBalancer Service (the user's `serviceAnnotations` win).
    #[serde(default)]
    load_balancer_annotations: BTreeMap<String, String>,
}

struct Plugin;

impl Guest for Plugin {
    fn decide(input: ServiceTypeInput) -> Result<ServiceTypeDecision, String> {
        let settings: Settings = ferrosync_plugin::settings(&input.settings)?;
        let (service_type, reason) = match input.requested {
            Some(t) => (t, "the requested type"),
            None if input.topology.load_balancer_ingress_seen => (
                ServiceType::LoadBalancer,
                "a load balancer in this cluster has an address",
            ),
            None => (ServiceType::ClusterIp, "no working load balancer seen"),
        };
        let annotations = match service_type {
            ServiceType::LoadBalancer => settings.load_balancer_annotations.into_iter().collect(),
            ServiceType::ClusterIp => Vec::new(),
        };
        Ok(ServiceTypeDecision {
            service_type,
            annotations,
            reason: reason.to_owned(),
        })
    }
}

ferrosync_plugin::service_type::export_service_type!(Plugin);
