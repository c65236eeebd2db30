//! Observing a mover Job: whether it runs, succeeded or failed, and what the mover said in
//! its termination message.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PropagationPolicy},
};

use crate::{
    api::{MoverResult, MoverStatus},
    resources::job::CONTAINER,
};

/// The longest `latestMoverStatus.logs` kept in status.
const MAX_LOGS: usize = 2048;

/// Where a mover Job stands.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// No Job exists.
    Absent,
    /// The Job exists and has not finished.
    Running,
    /// The Job completed: the transfer is done.
    Succeeded(MoverStatus),
    /// The Job exhausted its backoff limit.
    Failed(MoverStatus),
}

/// Reads the Job and, once it has finished, its last pod's termination message.
pub async fn observe(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<JobState, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let Some(job) = jobs.get_opt(name).await? else {
        return Ok(JobState::Absent);
    };
    let finished = |kind: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    let result = if finished("Complete") {
        MoverResult::Successful
    } else if finished("Failed") {
        MoverResult::Failed
    } else {
        return Ok(JobState::Running);
    };
    let message = last_termination_message(client, namespace, name).await?;
    let status = mover_status(result, message.as_deref());
    Ok(match result {
        MoverResult::Successful => JobState::Succeeded(status),
        MoverResult::Failed => JobState::Failed(status),
    })
}

/// Deletes a Job and, through garbage collection, its pods.
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn last_termination_message(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await?;
    let mut terminated: Vec<_> = list
        .items
        .iter()
        .filter_map(|pod| {
            let state = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .clone()?;
            Some((state.finished_at.clone().map(|t| t.0), state.message))
        })
        .collect();
    terminated.sort_by_key(|(finished, _)| *finished);
    Ok(terminated.pop().and_then(|(_, message)| message))
}

/// The status a finished mover reports: its summary's statistics or error, bounded.
pub fn mover_status(result: MoverResult, message: Option<&str>) -> MoverStatus {
    let logs = message.map(summary_logs).filter(|l| !l.is_empty());
    MoverStatus {
        result: Some(result),
        logs,
    }
}

/// The human part of a mover's termination message. The mover writes a JSON summary;
/// anything else (a crash's log tail) is kept as text.
fn summary_logs(message: &str) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(message) {
        Ok(summary) => {
            let mut lines: Vec<String> = Vec::new();
            if let Some(err) = summary.get("error").and_then(|e| e.as_str()) {
                let class = summary
                    .get("error_class")
                    .and_then(|c| c.as_str())
                    .unwrap_or("error");
                lines.push(format!("{class}: {err}"));
            }
            if let Some(stats) = summary.get("stats").and_then(|s| s.as_array()) {
                lines.extend(stats.iter().filter_map(|l| l.as_str().map(str::to_string)));
            }
            lines.join("\n")
        }
        Err(_) => message.trim().to_string(),
    };
    truncate(text, MAX_LOGS)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_becomes_readable_logs() {
        let msg = r#"{"result":"Failed","error_class":"auth","error":"TLS handshake failed: wrong key","stats":["sent 10 bytes  received 20 bytes"]}"#;
        let status = mover_status(MoverResult::Failed, Some(msg));
        assert_eq!(
            status.logs.as_deref(),
            Some("auth: TLS handshake failed: wrong key\nsent 10 bytes  received 20 bytes")
        );
    }

    #[test]
    fn plain_text_is_kept_and_bounded() {
        let status = mover_status(MoverResult::Successful, Some(&"é".repeat(3000)));
        let logs = status.logs.expect("logs");
        assert!(logs.len() <= MAX_LOGS && logs.starts_with('é'));
        assert_eq!(mover_status(MoverResult::Successful, None).logs, None);
    }
}
