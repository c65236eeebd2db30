//! `deploy/` renders with the built kubectl's kustomize, applies to the real apiserver,
//! and its RBAC lets the controller run as its ServiceAccount, and no more.

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::Deployment,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{ConfigMap, Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{Api, api::PostParams};

use crate::support::{
    control_plane,
    controller::RunningController,
    deploy::{NAMESPACE as NS, apply, render},
};

/// Whether `client` may do `verb` on `resource` (optionally a subresource or a name).
async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("access review");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn deploy_manifests_apply_and_grant_least_privilege() {
    let cp = control_plane();
    apply(cp, &render(cp));
    let client = cp.client().await;

    Api::<Namespace>::all(client.clone())
        .get(NS)
        .await
        .expect("namespace");
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .get("ferrosync")
        .await
        .expect("service account");
    Api::<ClusterRole>::all(client.clone())
        .get("ferrosync-controller")
        .await
        .expect("cluster role");
    Api::<ClusterRoleBinding>::all(client.clone())
        .get("ferrosync-controller")
        .await
        .expect("binding");
    Api::<Role>::namespaced(client.clone(), NS)
        .get("ferrosync-leader-election")
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client.clone(), NS)
        .get("ferrosync-leader-election")
        .await
        .expect("role binding");
    // The stricter checks ship as admission policies that warn by default.
    for name in [
        "ferrosync-replicationsource",
        "ferrosync-replicationdestination",
    ] {
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .get(name)
            .await
            .expect("admission policy");
        let binding = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .get(name)
            .await
            .expect("admission policy binding");
        assert_eq!(
            binding.spec.and_then(|s| s.validation_actions),
            Some(vec!["Warn".to_string()])
        );
    }

    let deployment = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("ferrosync-controller")
        .await
        .expect("deployment");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(pod.service_account_name.as_deref(), Some("ferrosync"));
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let security = container
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        container.ports.as_ref().map(|p| p[0].container_port),
        Some(8080)
    );

    // The generated ConfigMap holds a configuration the controller accepts.
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await
        .expect("list");
    let config_map = config_maps
        .items
        .iter()
        .find(|cm| {
            cm.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("ferrosync-config-"))
        })
        .expect("the generated ferrosync-config ConfigMap");
    let toml = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("config.toml"))
        .expect("config.toml");
    let file = cp.dir.join("deploy-config.toml");
    std::fs::write(&file, toml).expect("writing config");
    let config = ferrosync::config::Config::load(Some(&file)).expect("deploy config loads");
    assert_eq!(config.server.listen.port(), 8080);
    assert!(
        config.metrics.secure,
        "deployed /metrics is HTTPS and authenticated"
    );
    assert_eq!(
        container
            .ports
            .as_ref()
            .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some("https")))
            .map(|p| p.container_port),
        Some(config.metrics.listen.port() as i32)
    );

    // As the ServiceAccount: what the controller needs, and not more.
    let sa = cp
        .client_for(&cp.service_account_kubeconfig(NS, "ferrosync"))
        .await;
    let volsync = "volsync.backube";
    for (verb, group, resource, namespace, name) in [
        ("watch", volsync, "replicationsources", None, None),
        (
            "patch",
            volsync,
            "replicationdestinations/status",
            Some("any"),
            None,
        ),
        ("create", "batch", "jobs", Some("any"), None),
        ("delete", "", "persistentvolumeclaims", Some("any"), None),
        (
            "create",
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            Some("any"),
            None,
        ),
        ("get", "", "pods/log", Some("any"), None),
        // Mover pods and snapshots are watched into shared caches.
        ("watch", "", "pods", None, None),
        (
            "watch",
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            None,
            None,
        ),
        ("create", "events.k8s.io", "events", Some("any"), None),
        ("watch", "", "namespaces", None, None),
        ("patch", volsync, "replicationsources", Some("any"), None),
        (
            "patch",
            "coordination.k8s.io",
            "leases",
            Some(NS),
            Some("ferrosync-controller"),
        ),
        ("get", "", "serviceaccounts", Some("any"), None),
    ] {
        assert!(
            can(&sa, verb, group, resource, namespace, name).await,
            "should be allowed: {verb} {group}/{resource}"
        );
    }
    for (verb, group, resource, namespace, name) in [
        ("delete", volsync, "replicationsources", Some("any"), None),
        (
            "create",
            volsync,
            "replicationdestinations",
            Some("any"),
            None,
        ),
        ("create", "", "pods", Some("any"), None),
        // A pod is never read whole: only the movers' logs, and pods through the caches.
        ("get", "", "pods", Some("any"), None),
        ("update", "", "nodes", None, Some("any")),
        ("get", "", "namespaces", None, Some("any")),
        ("delete", "", "namespaces", None, Some("any")),
        ("create", "", "serviceaccounts", Some("any"), None),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some("kube-system"),
            Some("ferrosync-controller"),
        ),
        (
            "patch",
            "coordination.k8s.io",
            "leases",
            Some(NS),
            Some("someone-else"),
        ),
        // Finalizers are merge-patched (the pair release); a whole-object update never.
        ("update", volsync, "replicationsources", Some("any"), None),
        (
            "list",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            None,
        ),
        (
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            Some("replicationsources.volsync.backube"),
        ),
    ] {
        assert!(
            !can(&sa, verb, group, resource, namespace, name).await,
            "should be denied: {verb} {group}/{resource}"
        );
    }

    // The controller starts as its ServiceAccount, and nothing it does is forbidden.
    let sa_kubeconfig = cp.service_account_kubeconfig(NS, "ferrosync");
    let mut controller = RunningController::start(cp, &sa_kubeconfig, &[]);
    controller
        .wait_for_status("/readyz", 200, Duration::from_secs(30))
        .await
        .unwrap();
    let log = controller.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

/// The aws-ebs overlay: the base plus the bundle as a ConfigMap (the component as
/// binaryData), mounted into the controller, and a configuration that enables it. The
/// mounted files, as the kubelet would lay them out, load in the real policy engine.
#[tokio::test]
async fn the_policy_overlay_mounts_a_loadable_bundle_and_enables_it() {
    let cp = control_plane();
    // Into a namespace of its own, so the base install of the test above is not disturbed.
    let ns = cp.namespace("overlay").await;
    let rendered = crate::support::deploy::render_dir(cp, "deploy/overlays/aws-ebs").replace(
        &format!("namespace: {NS}"),
        &format!("namespace: {}", ns.name),
    );
    // Not the ClusterRoleBinding: it is cluster-wide, and rebinding it to this namespace's
    // ServiceAccount would take the rights from the controller of the test above.
    let rendered: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: ClusterRoleBinding\n"))
        .collect();
    apply(cp, &rendered.join("\n---\n"));
    let client = ns.client.clone();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .list(&Default::default())
        .await
        .expect("list");
    let find = |prefix: &str| {
        config_maps
            .items
            .iter()
            .filter(|cm| {
                cm.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .max_by_key(|cm| cm.metadata.creation_timestamp.clone().map(|t| t.0))
            .cloned()
            .unwrap_or_else(|| panic!("a ConfigMap {prefix}*"))
    };
    let bundle = find("ferrosync-policy-aws-ebs-");
    let wasm = bundle
        .binary_data
        .as_ref()
        .and_then(|b| b.get("copy-method-by-driver.wasm"))
        .expect("the component as binaryData");
    assert!(wasm.0.starts_with(b"\0asm"), "a wasm component");
    assert!(wasm.0.len() < 1 << 20, "binaryData stays under 1 MiB");

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("ferrosync-controller")
        .await
        .expect("deployment");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let mounted = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find_map(|v| v.config_map.map(|c| c.name));
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/etc/ferrosync-policies/aws-ebs"),
        "the bundle is mounted"
    );
    assert_eq!(
        mounted.as_deref(),
        bundle.metadata.name.as_deref(),
        "the Deployment mounts the generated (hashed) ConfigMap"
    );

    // Lay the ConfigMap out as files and load the overlay's configuration against them.
    let dir = cp.dir.join("overlay-bundle");
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in bundle.data.iter().flatten() {
        std::fs::write(dir.join(name), text).expect("file");
    }
    std::fs::write(dir.join("copy-method-by-driver.wasm"), &wasm.0).expect("wasm");
    let config_toml = find("ferrosync-config-")
        .data
        .and_then(|d| d.get("config.toml").cloned())
        .expect("config.toml");
    assert!(
        config_toml.contains("/etc/ferrosync-policies/aws-ebs"),
        "{config_toml}"
    );
    let file = cp.dir.join("overlay-config.toml");
    std::fs::write(
        &file,
        config_toml.replace("/etc/ferrosync-policies/aws-ebs", &dir.to_string_lossy()),
    )
    .expect("config");
    let config =
        ferrosync::config::Config::load(Some(&file)).expect("the overlay's configuration loads");
    let engine = ferrosync::policy::PolicyEngine::new(&config.policy, Default::default())
        .await
        .expect("the bundle loads");
    let plugins = engine.plugins();
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    assert_eq!(plugins[0].name, "copy-method-by-driver");
}
