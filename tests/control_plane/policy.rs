//! ferrosync's stricter checks, shipped as ValidatingAdmissionPolicies in
//! `deploy/admission/`, on the real apiserver: by default they warn (the object is admitted
//! and the response carries a Warning header naming the field), and bound with `Deny`
//! they refuse the object with the same message.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
    client::Body,
    core::Request,
};
use serde_json::{Value, json};

use crate::{
    fixtures::{Obj, destination, source},
    support::{ControlPlane, control_plane, deploy, wait},
};

/// Installs `deploy/admission/` as `kubectl apply -k` would.
fn install_policies(cp: &ControlPlane) {
    deploy::apply(cp, &deploy::render_dir(cp, "deploy/admission"));
}

/// What the apiserver answered a create: the HTTP status, the Warning headers, the body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

async fn create(client: &kube::Client, namespace: &str, obj: &Obj, dry_run: bool) -> Answer {
    let plural = match obj.kind() {
        "ReplicationSource" => "replicationsources",
        _ => "replicationdestinations",
    };
    let path = format!("/apis/volsync.backube/v1alpha1/namespaces/{namespace}/{plural}");
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let request = Request::new(path)
        .create(&params, serde_json::to_vec(&obj.0).expect("json"))
        .expect("a request");
    let response = client
        .send(request.map(Body::from))
        .await
        .expect("a response");
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let bytes = response.into_body().collect_bytes().await.expect("a body");
    Answer {
        code,
        warnings,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Policies take effect once the apiserver has loaded and type-checked them.
async fn wait_until_policies_answer(client: &kube::Client, namespace: &str) {
    let probe = source("probe").remove("spec.rsyncTLS.address");
    wait::until(
        "the admission policies to take effect",
        Duration::from_secs(60),
        || {
            let (client, probe) = (client.clone(), probe.clone());
            async move {
                let answer = create(&client, namespace, &probe, true).await;
                Ok((!answer.warnings.is_empty() || answer.code >= 400).then_some(()))
            }
        },
    )
    .await
    .expect("policies active");
}

/// Objects VolSync admits that ferrosync cannot serve, with the field each warning names.
fn stricter_rows() -> Vec<(&'static str, Obj, &'static str)> {
    let rd = |n: &str| destination(n);
    let rs = |n: &str| source(n);
    vec![
        (
            "no address",
            rs("w-address").remove("spec.rsyncTLS.address"),
            "spec.rsyncTLS.address",
        ),
        (
            "port 0",
            rs("w-port").set("spec.rsyncTLS.port", json!(0)),
            "spec.rsyncTLS.port",
        ),
        (
            "no sourcePVC",
            rs("w-pvc").remove("spec.sourcePVC"),
            "spec.sourcePVC",
        ),
        (
            "an access mode that is not one",
            rs("w-modes").set("spec.rsyncTLS.accessModes", json!(["RWO"])),
            "spec.rsyncTLS.accessModes",
        ),
        (
            "six schedule fields",
            rs("w-cron").set("spec.trigger.schedule", json!("0 */5 * * * *")),
            "spec.trigger.schedule",
        ),
        (
            "two movers",
            rs("w-movers").set("spec.restic", json!({"repository": "r"})),
            "spec.rsyncTLS, rsync, restic",
        ),
        (
            "no capacity",
            rd("w-capacity").remove("spec.rsyncTLS.capacity"),
            "spec.rsyncTLS.capacity",
        ),
        (
            "no accessModes",
            rd("w-access").remove("spec.rsyncTLS.accessModes"),
            "spec.rsyncTLS.accessModes",
        ),
        (
            "destination Clone",
            rd("w-clone").set("spec.rsyncTLS.copyMethod", json!("Clone")),
            "spec.rsyncTLS.copyMethod",
        ),
        (
            "cleanupTempPVC with Direct",
            rd("w-cleanup")
                .set("spec.rsyncTLS.copyMethod", json!("Direct"))
                .set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
            "spec.rsyncTLS.cleanupTempPVC",
        ),
        (
            "serviceType ExternalName",
            rd("w-service").set("spec.rsyncTLS.serviceType", json!("ExternalName")),
            "spec.rsyncTLS.serviceType",
        ),
        (
            "Block",
            rd("w-block").set("spec.rsyncTLS.volumeMode", json!("Block")),
            "spec.rsyncTLS.volumeMode",
        ),
        (
            "a descriptor with words after it",
            rd("w-words").set("spec.trigger.schedule", json!("@daily at noon")),
            "spec.trigger.schedule",
        ),
    ]
}

#[tokio::test]
async fn the_policies_warn_and_admit_by_default() {
    let cp = control_plane();
    install_policies(cp);
    let ns = cp.namespace("policy-warn").await;
    wait_until_policies_answer(&ns.client, &ns.name).await;

    let mut failures = Vec::new();
    for (what, obj, field) in stricter_rows() {
        let answer = create(&ns.client, &ns.name, &obj, false).await;
        let named = answer.warnings.iter().any(|w| w.contains(field));
        println!("| {what} | {} | {:?} |", answer.code, answer.warnings);
        if answer.code != 201 || !named {
            failures.push(format!(
                "{what}: HTTP {} with warnings {:?} (expected 201 and a warning naming {field}): {}",
                answer.code, answer.warnings, answer.body
            ));
        }
    }
    // Admitted means stored: each object is there to read.
    let stored = ns
        .api::<ferrosync::api::ReplicationSource>()
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len()
        + ns.api::<ferrosync::api::ReplicationDestination>()
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len();
    assert_eq!(
        stored,
        stricter_rows().len(),
        "every warned object was stored"
    );
    // A servable pair draws no warning.
    for obj in [source("quiet"), destination("quiet")] {
        let answer = create(&ns.client, &ns.name, &obj, true).await;
        if answer.code != 201 || !answer.warnings.is_empty() {
            failures.push(format!(
                "a valid {}: {} {:?}",
                obj.kind(),
                answer.code,
                answer.warnings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn bound_with_deny_the_policies_refuse() {
    let cp = control_plane();
    install_policies(cp);
    let ns = cp.namespace("policy-deny").await;
    let elsewhere = cp.namespace("policy-deny-other").await;
    // An admin's Deny binding, limited to one namespace so the rest of the suite (which
    // shares this apiserver) keeps the default.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ns.client.clone());
    let mut names = Vec::new();
    for policy in [
        "ferrosync-replicationsource",
        "ferrosync-replicationdestination",
    ] {
        let name = format!("{policy}-deny-{}", ns.name);
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": ns.name}}},
            },
        }))
        .expect("a binding");
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("create binding");
        names.push(name);
    }
    wait::until(
        "the Deny binding to take effect",
        Duration::from_secs(60),
        || {
            let client = ns.client.clone();
            let ns = ns.name.clone();
            async move {
                let probe = source("probe").remove("spec.rsyncTLS.address");
                Ok((create(&client, &ns, &probe, true).await.code == 422).then_some(()))
            }
        },
    )
    .await
    .expect("deny active");

    let mut failures = Vec::new();
    for (what, obj, field) in stricter_rows() {
        let denied = create(&ns.client, &ns.name, &obj, false).await;
        let message = denied.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if denied.code != 422 || !message.contains(field) {
            failures.push(format!(
                "{what}: HTTP {} {message:?} does not refuse naming {field}",
                denied.code
            ));
        }
        // The same object elsewhere is still only warned about.
        let warned = create(&elsewhere.client, &elsewhere.name, &obj, true).await;
        if warned.code != 201 || warned.warnings.is_empty() {
            failures.push(format!("{what} in another namespace: HTTP {}", warned.code));
        }
    }
    // Nothing the policies refuse was stored.
    let left = ns
        .api::<ferrosync::api::ReplicationSource>()
        .list(&Default::default())
        .await
        .expect("list")
        .items;
    for name in names {
        bindings
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete binding");
    }
    assert!(left.is_empty(), "refused objects were stored: {left:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
