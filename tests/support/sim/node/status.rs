//! Pod status as the kubelet writes it: phase, IPs, conditions and container states.
//! Built as JSON for a merge patch of `pods/status`; the conditions list is written whole,
//! so the scheduler's PodScheduled is carried along.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// Where one container stands.
#[derive(Clone, Debug)]
pub enum ContainerState {
    /// Not started; `reason` as the kubelet gives it (ContainerCreating, ErrImagePull,
    /// CreateContainerConfigError).
    Waiting { reason: String, message: String },
    /// Running since `started`.
    Running { started: String },
    /// Exited.
    Terminated {
        started: String,
        finished: String,
        exit_code: i32,
        message: String,
    },
}

/// One container's status inputs.
#[derive(Clone, Debug)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its state.
    pub state: ContainerState,
}

/// An RFC 3339 timestamp of now, at the API's one-second precision.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The status patch for `pod` with `containers`; `pod_ip` once the sandbox has one.
pub fn patch(pod: &Pod, pod_ip: Option<&str>, containers: &[Container], started: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let all_terminated = containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Terminated { .. }));
    let any_failed = containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Terminated { exit_code, .. } if exit_code != 0));
    let all_running = containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Running { .. }));
    let phase = if all_terminated {
        // restartPolicy Never (the only policy simulated): a failed container fails the pod.
        if any_failed { "Failed" } else { "Succeeded" }
    } else if containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Waiting { .. }))
    {
        "Pending"
    } else {
        "Running"
    };
    let ready = phase == "Running" && all_running;
    let not_ready_reason = if all_terminated {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let now = now();
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": now,
        });
        if let Some(reason) = reason.filter(|_| !ok) {
            c["reason"] = json!(reason);
        }
        c
    };
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| container_status(uid, c))
        .collect();
    let mut status = json!({
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": started,
        "conditions": [
            condition("PodReadyToStartContainers", pod_ip.is_some() && !all_terminated, None),
            condition("Initialized", true, None),
            condition("Ready", ready, Some(not_ready_reason)),
            condition("ContainersReady", ready, Some(not_ready_reason)),
            condition("PodScheduled", true, None),
        ],
        "containerStatuses": statuses,
    });
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    json!({ "status": status })
}

fn container_status(pod_uid: &str, c: &Container) -> Value {
    let (state, ready, started, id) = match &c.state {
        ContainerState::Waiting { reason, message } => (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
            false,
            None,
        ),
        ContainerState::Running { started } => (
            json!({"running": {"startedAt": started}}),
            true,
            true,
            Some(format!("sim://{pod_uid}/{}", c.name)),
        ),
        ContainerState::Terminated {
            started,
            finished,
            exit_code,
            message,
        } => {
            let mut t = json!({
                "exitCode": exit_code,
                "reason": if *exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": started,
                "finishedAt": finished,
                "containerID": format!("sim://{pod_uid}/{}", c.name),
            });
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            (
                json!({ "terminated": t }),
                false,
                false,
                Some(format!("sim://{pod_uid}/{}", c.name)),
            )
        }
    };
    let mut s = json!({
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    });
    if let Some(id) = id {
        s["containerID"] = json!(id);
    }
    s
}
