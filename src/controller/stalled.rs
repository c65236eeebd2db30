//! Whether a mover Job's pods never started, and why: an image that cannot be pulled, no
//! node that fits, a missing Secret. Pure: the caller passes the pods and `now`.
//!
//! Without this a Job whose pods stay Pending leaves the object in SyncInProgress forever,
//! with the reason only in the pods' status.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

/// Why the Job's pods have not started, once `timeout` has passed since it was created;
/// `None` while it may still start or once any pod did.
pub fn start_problem(
    job_created: Timestamp,
    pods: &[Pod],
    now: Timestamp,
    timeout: Duration,
) -> Option<String> {
    if pods.iter().any(started) {
        return None;
    }
    let age = now.duration_since(job_created);
    if age.is_negative() || age.unsigned_abs() < timeout {
        return None;
    }
    let mut why: Vec<String> = pods.iter().filter_map(pod_problem).collect();
    if why.is_empty() {
        why.push(if pods.is_empty() {
            "the Job created no pod (see its events: a quota or an admission webhook may refuse it)"
                .into()
        } else {
            "its pods are pending (see their events)".into()
        });
    }
    why.sort();
    why.dedup();
    Some(format!(
        "the mover has not started within {}: {}",
        humantime::format_duration(timeout),
        why.join("; ")
    ))
}

/// Whether a pod ever got its container going.
fn started(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    if matches!(
        status.phase.as_deref(),
        Some("Running" | "Succeeded" | "Failed")
    ) {
        return true;
    }
    status.container_statuses.iter().flatten().any(|c| {
        c.state
            .as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    })
}

/// What keeps one pending pod from starting, if its status says.
fn pod_problem(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return Some(format!(
            "pod {name} cannot be scheduled: {}{}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            Some(format!(
                "pod {name}: container {} is waiting: {reason}{}",
                c.name,
                waiting
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIMEOUT: Duration = Duration::from_secs(300);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "mover-x"}, "status": status}))
            .expect("pod")
    }

    fn image_pull() -> Pod {
        pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "rsync-tls", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}},
            }],
        }))
    }

    #[test]
    fn nothing_is_reported_before_the_timeout() {
        assert_eq!(
            start_problem(at(0), &[image_pull()], at(299), TIMEOUT),
            None
        );
        assert_eq!(start_problem(at(0), &[], at(10), TIMEOUT), None);
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named_after_the_timeout() {
        let why = start_problem(at(0), &[image_pull()], at(300), TIMEOUT).expect("a problem");
        assert!(why.contains("within 5m"), "{why}");
        assert!(why.contains("ImagePullBackOff"), "{why}");
        assert!(why.contains("Back-off pulling image"), "{why}");
    }

    #[test]
    fn an_unschedulable_pod_is_named() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient cpu."}],
        }));
        let why = start_problem(at(0), &[p], at(400), TIMEOUT).expect("a problem");
        assert!(
            why.contains(
                "cannot be scheduled: Unschedulable (0/1 nodes are available: 1 Insufficient cpu.)"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_job_that_started_once_is_not_stalled() {
        let ran = pod(json!({"phase": "Failed"}));
        assert_eq!(
            start_problem(at(0), &[image_pull(), ran], at(1000), TIMEOUT),
            None
        );
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(start_problem(at(0), &[running], at(1000), TIMEOUT), None);
    }

    #[test]
    fn a_job_without_pods_says_where_to_look() {
        let why = start_problem(at(0), &[], at(301), TIMEOUT).expect("a problem");
        assert!(why.contains("created no pod"), "{why}");
    }
}
