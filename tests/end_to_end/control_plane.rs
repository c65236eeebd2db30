//! The end-to-end control plane itself works: the controllers the simulators rely on run,
//! the scheduler considers Pods, and the audit log records requests by user.

use std::time::Duration;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Namespace, Pod, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams, PropagationPolicy},
};
use serde_json::json;

use crate::{
    cluster,
    support::{controller::RunningController, deploy, wait},
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "example.invalid/noop:1", "command": ["true"]}],
            }},
        },
    }))
    .expect("a Job")
}

#[tokio::test]
async fn job_controller_creates_pods_and_the_scheduler_considers_them() {
    let ns = cluster().namespace("e2e-job").await;
    // The serviceaccount controller gives every namespace its `default` account.
    let accounts = ns.api::<ServiceAccount>();
    wait::eventually("the default ServiceAccount", TIMEOUT, || {
        accounts.get("default")
    })
    .await
    .unwrap();
    ns.api::<Job>()
        .create(&PostParams::default(), &job("noop"))
        .await
        .expect("create job");
    let pods = ns.api::<Pod>();
    let params = ListParams::default().labels("job-name=noop");
    // With no Node yet, the scheduler marks the Pod unschedulable: proof that it saw it.
    let pod = wait::until("a Pod of the Job, marked unschedulable", TIMEOUT, || {
        let pods = pods.clone();
        let params = params.clone();
        async move {
            let list = pods.list(&params).await.map_err(|e| e.to_string())?;
            Ok(list.items.into_iter().find(|pod| {
                let conditions = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                conditions.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            }))
        }
    })
    .await
    .unwrap();
    let pod_name = pod.metadata.name.expect("pod name");

    // The garbage collector deletes the Pod with its Job.
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    ns.api::<Job>()
        .delete("noop", &background)
        .await
        .expect("delete job");
    wait::until(
        "the garbage collector to delete the Job's Pod",
        TIMEOUT,
        || {
            let pods = pods.clone();
            let pod_name = pod_name.clone();
            async move {
                Ok(pods
                    .get_opt(&pod_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();

    // The namespace controller finishes deleting a namespace.
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .expect("delete namespace");
    wait::until("the namespace to be deleted", TIMEOUT, || {
        let namespaces = namespaces.clone();
        let name = ns.name.clone();
        async move {
            Ok(namespaces
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                .then_some(()))
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_audit_log_records_requests_by_user() {
    let cp = cluster();
    let kubeconfig = cp.service_account_kubeconfig("e2e-audit", "auditor");
    let client = cp.client_for(&kubeconfig).await;
    // Forbidden (no RBAC for this account), but audited all the same.
    let err = Api::<Pod>::namespaced(client, "e2e-audit")
        .list(&Default::default())
        .await
        .expect_err("forbidden");
    assert!(err.to_string().contains("forbidden"), "{err}");
    let user = "system:serviceaccount:e2e-audit:auditor";
    let event = wait::until("the audit event of the forbidden list", TIMEOUT, || {
        let found = cp
            .audit_events()
            .into_iter()
            .find(|e| e["user"]["username"] == user && e["verb"] == "list");
        async move { Ok(found) }
    })
    .await
    .unwrap();
    assert_eq!(event["objectRef"]["resource"], "pods");
    assert_eq!(event["responseStatus"]["code"], 403);
    assert_eq!(
        event["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}

#[tokio::test]
async fn the_controller_runs_as_its_service_account() {
    let cp = cluster();
    let kubeconfig = deploy::controller_identity(cp);
    let mut controller = RunningController::start(cp, &kubeconfig, &[]);
    controller
        .wait_for_status("/readyz", 200, TIMEOUT)
        .await
        .unwrap();
    // Its requests are audited under its ServiceAccount's name, which is what the
    // least-privilege check of the end-to-end suite relies on.
    let user = "system:serviceaccount:ferrosync-system:ferrosync";
    wait::until(
        "an audit event of the controller's requests",
        TIMEOUT,
        || {
            let found = cp
                .audit_events()
                .iter()
                .any(|e| e["user"]["username"] == user);
            async move { Ok(found.then_some(())) }
        },
    )
    .await
    .unwrap();
}
