//! `deploy/base/user-roles.yaml` on a real control plane: kube-controller-manager's
//! ClusterRole aggregation folds ferrosync's rules into the built-in `view`, `edit` and
//! `admin`, so a namespace viewer may read both kinds but not write them, and an editor
//! may write them.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    env::env,
    support::{deploy, wait},
};

/// Whether `user` may `verb` `resource` of volsync.backube in `namespace`.
async fn may(
    client: &kube::Client,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some("volsync.backube".into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("access review")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn namespace_viewers_and_editors_get_the_kinds_through_aggregation() {
    let env = env();
    deploy::user_roles(env.cp);
    let ns = env.cp.namespace("e2e-roles").await;
    let binding = |user: &str, role: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-{role}"), "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })
        .to_string()
    };
    deploy::apply(env.cp, &binding("viewer", "view"));
    deploy::apply(env.cp, &binding("editor", "edit"));
    let client = env.cp.client().await;

    // The aggregation controller works asynchronously.
    wait::until(
        "view and edit to aggregate ferrosync's rules",
        Duration::from_secs(60),
        || async {
            let viewer = may(&client, "viewer", "list", "replicationsources", &ns.name).await;
            let editor = may(
                &client,
                "editor",
                "create",
                "replicationdestinations",
                &ns.name,
            )
            .await;
            Ok((viewer && editor).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for resource in ["replicationsources", "replicationdestinations"] {
        for verb in ["get", "list", "watch"] {
            assert!(
                may(&client, "viewer", verb, resource, &ns.name).await,
                "view may {verb} {resource}"
            );
        }
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !may(&client, "viewer", verb, resource, &ns.name).await,
                "view may not {verb} {resource}"
            );
            assert!(
                may(&client, "editor", verb, resource, &ns.name).await,
                "edit may {verb} {resource}"
            );
        }
    }
    // Only in the bound namespace.
    assert!(!may(&client, "viewer", "list", "replicationsources", "default").await);
}
