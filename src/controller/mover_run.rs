//! Observing a mover Job: whether it runs, succeeded or failed, and what the mover said in
//! its termination message.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, PropagationPolicy},
};

use k8s_openapi::jiff::Timestamp;

use super::retry;
use crate::{
    api::{MoverResult, MoverStatus},
    mover::summary::{Progress, Summary},
    resources::{Side, job::CONTAINER},
};

/// The longest `latestMoverStatus.logs` kept in status.
const MAX_LOGS: usize = 2048;

/// Where a mover Job stands.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// No Job exists.
    Absent,
    /// The Job exists and has not finished.
    Running(JobMeta),
    /// The Job completed: the transfer is done.
    Succeeded(MoverReport),
    /// The Job exhausted its backoff limit.
    Failed(MoverReport, JobMeta),
    /// A Job of that name that ferrosync did not build: VolSync's, left from before a
    /// takeover. It is replaced, never awaited.
    Foreign,
}

/// What the retry and start checks need of a Job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobMeta {
    /// When it was created.
    pub created: Option<Timestamp>,
    /// When it failed (its Failed condition's transition).
    pub failed_at: Option<Timestamp>,
    /// Its [`retry::FAILURES`] label.
    pub failures_before: u32,
    /// Its [`retry::DEPENDS_ON`] annotation.
    pub depended_on: Option<String>,
}

impl JobMeta {
    /// The facts of `job`.
    pub fn of(job: &Job) -> JobMeta {
        let failed_at = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
            })
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0);
        JobMeta {
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            failed_at,
            failures_before: job
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(retry::FAILURES))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            depended_on: job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(retry::DEPENDS_ON))
                .cloned(),
        }
    }
}

/// Where the Job stands, from the Job and its pods (for a finished Job, the last pod's
/// termination message). Pure: the pods come from the mover-pod cache or, when it lacks
/// the finished pod ([`lacks_result`]), from a LIST.
pub fn state(job: Option<&Job>, pods: &[Pod]) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    if !super::takeover::is_ours(job) {
        return JobState::Foreign;
    }
    let result = if finished(job, "Complete") {
        MoverResult::Successful
    } else if finished(job, "Failed") {
        MoverResult::Failed
    } else {
        return JobState::Running(JobMeta::of(job));
    };
    let report = mover_report(result, last_termination_message(pods).as_deref());
    match result {
        MoverResult::Successful => JobState::Succeeded(report),
        MoverResult::Failed => JobState::Failed(report, JobMeta::of(job)),
    }
}

/// Whether `job` finished while `pods` (as cached) show no terminated mover: the pod
/// watch may lag behind the Job's, so its pods are listed before its result is judged.
pub fn lacks_result(job: &Job, pods: &[Pod]) -> bool {
    !is_running(job) && terminated(pods).next().is_none()
}

/// Whether the Job has a condition `kind` (Complete, Failed) that is True.
fn finished(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether the Job has neither completed nor failed.
pub fn is_running(job: &Job) -> bool {
    !finished(job, "Complete") && !finished(job, "Failed")
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

/// The latest progress line of the Job's running mover (one of `pods`), through the
/// `pods/log` API (the apiserver proxies it to the node's kubelet). `None` when there is
/// no running pod or its log cannot be read: progress is informative, never a reason to
/// fail a pass.
pub async fn progress(client: &Client, namespace: &str, pods: &[Pod]) -> Option<Progress> {
    let running = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))?;
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(20),
        ..LogParams::default()
    };
    let name = running.metadata.name.as_deref()?;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.logs(name, &params).await {
        Ok(text) => text.lines().rev().find_map(Progress::parse),
        Err(err) => {
            tracing::debug!(pod = name, %err, "reading mover progress failed");
            None
        }
    }
}

/// The pods of a Job, listed (when the mover-pod cache lacks them).
pub async fn pods(client: &Client, namespace: &str, job: &str) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await?
        .items)
}

/// The terminated mover containers of `pods`: when they finished, and their message.
fn terminated(pods: &[Pod]) -> impl Iterator<Item = (Option<Timestamp>, Option<String>)> + '_ {
    pods.iter().filter_map(|pod| {
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
        Some((state.finished_at.map(|t| t.0), state.message))
    })
}

/// The termination message of the mover that finished last.
fn last_termination_message(pods: &[Pod]) -> Option<String> {
    let mut all: Vec<_> = terminated(pods).collect();
    all.sort_by_key(|(finished, _)| *finished);
    all.pop().and_then(|(_, message)| message)
}

/// What a finished mover reported.
#[derive(Clone, Debug, PartialEq)]
pub struct MoverReport {
    /// What goes into `latestMoverStatus`.
    pub status: MoverStatus,
    /// The parsed summary, when the mover wrote one (a crash may leave only a log tail).
    pub summary: Option<Summary>,
}

impl MoverReport {
    /// The data bytes this side moved, for metrics: sent by a source, received by a
    /// destination.
    pub fn bytes(&self, side: Side) -> u64 {
        self.summary.as_ref().map_or(0, |s| match side {
            Side::Source => s.bytes_sent,
            Side::Destination => s.bytes_received,
        })
    }

    /// Whether the failure was a TLS-PSK authentication failure.
    pub fn auth_failure(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.auth_failure)
    }
}

/// The report of a finished mover: its summary's error and statistics lines, bounded.
pub fn mover_report(result: MoverResult, message: Option<&str>) -> MoverReport {
    let summary = message.and_then(|m| serde_json::from_str::<Summary>(m).ok());
    let text = match (&summary, message) {
        (Some(summary), _) => summary_logs(summary),
        (None, Some(raw)) => raw.trim().to_string(),
        (None, None) => String::new(),
    };
    let logs = Some(truncate(text, MAX_LOGS)).filter(|l| !l.is_empty());
    MoverReport {
        status: MoverStatus {
            result: Some(result.into()),
            logs,
        },
        summary,
    }
}

/// The human part of a summary: the error (named as an authentication failure when it
/// was one), the per-file errors (the files rsync could not transfer) as far as they fit
/// in [`MAX_LOGS`] beside the rest, then the rsync statistics lines.
fn summary_logs(summary: &Summary) -> String {
    let mut head: Vec<String> = Vec::new();
    if summary.auth_failure {
        head.push("authentication failed: the source and destination keys differ".into());
    }
    if let Some(message) = &summary.message {
        match summary.error_class {
            Some(class) => head.push(format!("{class:?}: {message}")),
            None => head.push(message.clone()),
        }
    }
    let fixed: usize = head.iter().chain(&summary.stats).map(|l| l.len() + 1).sum();
    // Room for a "… more" line, so the statistics lines are never cut off by the errors.
    let mut room = MAX_LOGS.saturating_sub(fixed + 40);
    let mut omitted = summary.errors_omitted;
    for (i, line) in summary.errors.iter().enumerate() {
        if line.len() + 1 > room {
            // A summary comes from the mover pod: its count is not trusted to be small.
            omitted = omitted.saturating_add((summary.errors.len() - i) as u64);
            break;
        }
        room -= line.len() + 1;
        head.push(line.clone());
    }
    if omitted > 0 {
        head.push(format!("… and {omitted} more file error(s)"));
    }
    head.extend(summary.stats.iter().cloned());
    head.join("\n")
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
    use crate::mover::{
        exit::ErrorClass,
        summary::{Outcome, Role},
    };

    fn summary(auth: bool) -> Summary {
        Summary {
            role: Role::Source,
            result: Outcome::Failed,
            exit_code: 13,
            error_class: Some(ErrorClass::AuthFailed),
            transient: Some(false),
            auth_failure: auth,
            message: Some("TLS handshake refused".into()),
            bytes_sent: 0,
            bytes_received: 0,
            files_transferred: 0,
            files_deleted: 0,
            attempts: 1,
            duration_seconds: 0.5,
            stats: vec!["sent 10 bytes  received 20 bytes".into()],
            errors: Vec::new(),
            errors_omitted: 0,
        }
    }

    #[test]
    fn summaries_become_readable_logs_naming_authentication() {
        let json = serde_json::to_string(&summary(true)).expect("ser");
        let report = mover_report(MoverResult::Failed, Some(&json));
        assert!(report.auth_failure());
        let logs = report.status.logs.expect("logs");
        assert!(logs.starts_with("authentication failed"), "{logs}");
        assert!(logs.contains("AuthFailed: TLS handshake refused"), "{logs}");
        assert!(logs.ends_with("sent 10 bytes  received 20 bytes"), "{logs}");
    }

    #[test]
    fn per_file_errors_are_named_without_crowding_out_the_statistics() {
        let mut s = summary(false);
        s.error_class = Some(ErrorClass::RsyncFailed);
        s.message = Some("pass 1 (copy): rsync exited with code 23".into());
        s.errors = (0..20)
            .map(|i| {
                format!(
                    "rsync: [sender] send_files failed to open \"f{i}-{}\"",
                    "x".repeat(120)
                )
            })
            .collect();
        s.errors_omitted = 3;
        let json = serde_json::to_string(&s).expect("ser");
        let logs = mover_report(MoverResult::Failed, Some(&json))
            .status
            .logs
            .expect("logs");
        assert!(logs.len() <= MAX_LOGS, "{}", logs.len());
        assert!(logs.contains("failed to open \"f0-"), "{logs}");
        assert!(logs.contains("more file error(s)"), "{logs}");
        assert!(logs.ends_with("sent 10 bytes  received 20 bytes"), "{logs}");
    }

    fn job(ours: bool, condition: Option<&str>) -> Job {
        let labels = if ours {
            serde_json::json!({crate::resources::meta::MANAGED_BY: "ferrosync"})
        } else {
            serde_json::json!({})
        };
        let conditions: Vec<_> = condition
            .map(|c| serde_json::json!({"type": c, "status": "True"}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "labels": labels},
            "status": {"conditions": conditions},
        }))
        .expect("job fixture")
    }

    fn finished_pod(message: &str, at: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{at}")},
            "status": {"containerStatuses": [{
                "name": CONTAINER, "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": message, "finishedAt": at}},
            }]},
        }))
        .expect("pod fixture")
    }

    #[test]
    fn a_cached_job_is_judged_with_its_last_pods_message() {
        assert_eq!(state(None, &[]), JobState::Absent);
        assert_eq!(state(Some(&job(false, None)), &[]), JobState::Foreign);
        assert!(matches!(
            state(Some(&job(true, None)), &[]),
            JobState::Running(_)
        ));
        let pods = [
            finished_pod("new", "2026-01-01T00:00:02Z"),
            finished_pod("old", "2026-01-01T00:00:01Z"),
        ];
        let JobState::Succeeded(report) = state(Some(&job(true, Some("Complete"))), &pods) else {
            panic!("succeeded");
        };
        assert_eq!(report.status.logs.as_deref(), Some("new"));
        assert!(matches!(
            state(Some(&job(true, Some("Failed"))), &pods),
            JobState::Failed(..)
        ));
    }

    #[test]
    fn a_finished_job_without_a_finished_pod_in_the_cache_lacks_its_result() {
        let done = job(true, Some("Complete"));
        assert!(lacks_result(&done, &[]));
        assert!(!lacks_result(
            &done,
            &[finished_pod("m", "2026-01-01T00:00:00Z")]
        ));
        assert!(!lacks_result(&job(true, None), &[]), "still running");
    }

    #[test]
    fn plain_text_is_kept_and_bounded() {
        let report = mover_report(MoverResult::Successful, Some(&"é".repeat(3000)));
        let logs = report.status.logs.expect("logs");
        assert!(logs.len() <= MAX_LOGS && logs.starts_with('é'));
        assert!(report.summary.is_none());
        assert_eq!(
            mover_report(MoverResult::Successful, None).status.logs,
            None
        );
    }
}
