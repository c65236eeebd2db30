//! The load-balancer simulator: what a cloud controller manager's service controller does
//! for `type: LoadBalancer` Services of the default class. It gives each one an ingress IP
//! from its site's load-balancer range (`east`: 127.66.0.0/16); the routing simulator then
//! listens there, for every client, as a cloud load balancer answers the whole network.
//!
//! The Service annotation [`ANNOTATION`] sets when: a delay (`3s`) or `never`, as a cloud
//! provider's annotations tune its load balancers; without it the address comes at once.
//!
//! Not modelled: node ports, health checks, hostnames, IP families, and release of the
//! address when a Service changes type.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::watcher,
};
use serde_json::json;
use tokio::sync::Notify;

use super::{
    addresses,
    watch::{cache, next_change},
};

/// `never`, or how long (humantime) to wait before assigning an address.
pub const ANNOTATION: &str = "sim.ferrosync.test/load-balancer";

/// Starts the load-balancer controller on the current runtime, handing out addresses
/// from `pool`.
pub fn start(client: Client, pool: &'static addresses::Pool) {
    let changed = Arc::new(Notify::new());
    let services = cache(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    tokio::spawn(async move {
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        let mut assigned: HashMap<String, Ipv4Addr> = HashMap::new();
        loop {
            for svc in services.state() {
                let spec = svc.spec.clone().unwrap_or_default();
                let wants = spec.type_.as_deref() == Some("LoadBalancer")
                    && spec.load_balancer_class.is_none()
                    && svc.metadata.deletion_timestamp.is_none();
                let has = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty());
                let Some(uid) = svc.uid() else { continue };
                if !wants || has {
                    continue;
                }
                let delay = match svc.annotations().get(ANNOTATION).map(String::as_str) {
                    Some("never") => continue,
                    Some(d) => humantime::parse_duration(d).unwrap_or(Duration::ZERO),
                    None => Duration::ZERO,
                };
                let seen = *first_seen.entry(uid.clone()).or_insert_with(Instant::now);
                if seen.elapsed() < delay {
                    continue;
                }
                let ip = *assigned.entry(uid).or_insert_with(|| pool.allocate());
                let body = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
                let api: Api<Service> =
                    Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
                if let Err(err) = api
                    .patch_status(
                        &svc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await
                {
                    eprintln!("load-balancer simulator: {}: {err}", svc.name_any());
                }
            }
            next_change(&changed).await;
        }
    });
}
