//! Tier 5, the issue-6 lifecycle tests that need a controller of their own: the controller
//! killed during iterations, and policy bundles (aws-ebs, vault) in its configuration,
//! among them the keys-across-tenants tests of issue 14.
//! Same control plane options and simulators as `e2e`, but no shared controller; the
//! tests run one at a time (`env::SERIAL`).

mod support;

#[allow(dead_code)]
#[path = "e2e/lifecycle_own_env.rs"]
mod env;
#[allow(dead_code)]
#[path = "e2e/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "e2e/lifecycle_support.rs"]
mod lifecycle_support;
#[allow(dead_code)]
#[path = "e2e/tree.rs"]
mod tree;
#[allow(dead_code)]
#[path = "e2e/volsync.rs"]
mod volsync;

#[allow(dead_code)]
#[path = "e2e/behaviours_support.rs"]
mod behaviours_support;

#[path = "e2e/lifecycle_own_aws_ebs.rs"]
mod lifecycle_own_aws_ebs;
#[path = "e2e/lifecycle_own_bindings.rs"]
mod lifecycle_own_bindings;
#[path = "e2e/lifecycle_own_kill.rs"]
mod lifecycle_own_kill;
#[path = "e2e/lifecycle_own_oci.rs"]
mod lifecycle_own_oci;
#[path = "e2e/lifecycle_own_overlap.rs"]
mod lifecycle_own_overlap;
#[path = "e2e/lifecycle_own_pull.rs"]
mod lifecycle_own_pull;
#[path = "e2e/lifecycle_own_release.rs"]
mod lifecycle_own_release;
#[path = "e2e/lifecycle_own_rotation.rs"]
mod lifecycle_own_rotation;
#[path = "e2e/lifecycle_own_signatures.rs"]
mod lifecycle_own_signatures;
#[allow(dead_code)]
#[path = "e2e/lifecycle_own_support.rs"]
mod lifecycle_own_support;
#[path = "e2e/lifecycle_own_takeover.rs"]
mod lifecycle_own_takeover;
#[path = "e2e/lifecycle_own_tenancy.rs"]
mod lifecycle_own_tenancy;
#[path = "e2e/lifecycle_own_vault.rs"]
mod lifecycle_own_vault;
#[path = "e2e/lifecycle_own_vault_pair.rs"]
mod lifecycle_own_vault_pair;
