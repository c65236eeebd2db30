//! Tier 5: end to end. The real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler), the cluster simulators of
//! `support::sim` in place of a node, storage, load balancers and kube-proxy, and the real
//! `ferrosync controller` with real movers moving real bytes.
//!
//! Everything is started once for this binary; each test works in namespaces of its own.

mod support;

#[path = "e2e/behaviours_copy.rs"]
mod behaviours_copy;
#[path = "e2e/behaviours_mover.rs"]
mod behaviours_mover;
#[path = "e2e/behaviours_nodeport.rs"]
mod behaviours_nodeport;
#[path = "e2e/behaviours_populator.rs"]
mod behaviours_populator;
#[path = "e2e/behaviours_support.rs"]
mod behaviours_support;
#[path = "e2e/containment.rs"]
mod containment;
#[path = "e2e/env.rs"]
mod env;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/failures.rs"]
mod failures;
#[path = "e2e/fixtures.rs"]
mod fixtures;
#[path = "e2e/images.rs"]
mod images;
#[path = "e2e/keys.rs"]
mod keys;
#[path = "e2e/kubectl_plugin.rs"]
mod kubectl_plugin;
#[path = "e2e/lifecycle_changes.rs"]
mod lifecycle_changes;
#[path = "e2e/lifecycle_combinations.rs"]
mod lifecycle_combinations;
#[path = "e2e/lifecycle_errors.rs"]
mod lifecycle_errors;
#[path = "e2e/lifecycle_examples.rs"]
mod lifecycle_examples;
#[path = "e2e/lifecycle_faults.rs"]
mod lifecycle_faults;
#[path = "e2e/lifecycle_images.rs"]
mod lifecycle_images;
#[path = "e2e/lifecycle_support.rs"]
mod lifecycle_support;
#[path = "e2e/lifecycle_triggers.rs"]
mod lifecycle_triggers;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/not_served.rs"]
mod not_served;
#[path = "e2e/replication.rs"]
mod replication;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/simulators.rs"]
mod simulators;
#[path = "e2e/tree.rs"]
mod tree;
#[path = "e2e/tuning.rs"]
mod tuning;
#[path = "e2e/user_roles.rs"]
mod user_roles;
#[path = "e2e/volsync.rs"]
mod volsync;
