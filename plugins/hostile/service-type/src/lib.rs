//! A deliberately hostile `service-type` plugin: returns invalid annotations. Built in
//! the test run, never shipped.

use ferrosync_plugin::service_type::{Guest, ServiceType, ServiceTypeDecision, ServiceTypeInput};

struct Plugin;

impl Guest for Plugin {
    fn decide(input: ServiceTypeInput) -> Result<ServiceTypeDecision, String> {
        let key = if input.settings.contains("bad-prefix") {
            "Not_A_Domain/name"
        } else {
            "bad key with spaces"
        };
        Ok(ServiceTypeDecision {
            service_type: ServiceType::LoadBalancer,
            annotations: ferrosync_plugin::pairs([(key, "x")]),
            reason: "invalid annotation on purpose".into(),
        })
    }
}

ferrosync_plugin::service_type::export_service_type!(Plugin);
