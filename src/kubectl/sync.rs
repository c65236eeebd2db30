//! `sync`, `pause` and `resume`: what a person does to a running pair.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{Error, Site, Sites, contexts, keys, status::progress_text, wait::POLL};
use crate::api::ReplicationSource;

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The pair (the ReplicationSource's name).
    pub name: String,
    #[command(flatten)]
    pub sites: Sites,
    /// Wait for the sync to finish, with a progress bar; exit 7 if it fails.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// The pair's name.
    pub name: String,
    #[command(flatten)]
    pub sites: Sites,
}

/// The prefix of the manual trigger values `sync` sets.
const TOKEN_PREFIX: &str = "kubectl-ferrosync-";

/// A manual trigger value no earlier sync has used.
pub fn manual_token(now: k8s_openapi::jiff::Timestamp) -> String {
    format!("{TOKEN_PREFIX}{}", now.as_millisecond())
}

/// Whether `value` is a manual trigger `sync` set.
pub fn is_sync_token(value: &str) -> bool {
    value.starts_with(TOKEN_PREFIX)
}

/// Where a manual sync stands, from the source's status.
#[derive(Debug, PartialEq)]
pub enum SyncState {
    Done,
    Failed(String),
    Running {
        bytes: Option<i64>,
        rate: Option<i64>,
    },
}

/// Pure: the state of the sync triggered with `token`.
pub fn sync_state(rs: &ReplicationSource, token: &str) -> SyncState {
    let Some(status) = rs.status.as_ref() else {
        return SyncState::Running {
            bytes: None,
            rate: None,
        };
    };
    if status.sync.last_manual_sync.as_deref() == Some(token) {
        return SyncState::Done;
    }
    let condition = status
        .sync
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Synchronizing");
    if let Some(c) = condition.filter(|c| c.reason == "Error") {
        return SyncState::Failed(c.message.clone());
    }
    let progress = status.sync.progress.as_ref();
    SyncState::Running {
        bytes: progress.and_then(|p| p.bytes_transferred),
        rate: progress.and_then(|p| p.bytes_per_second),
    }
}

async fn source_site(sites: &Sites) -> Result<Site, Error> {
    contexts::connect(
        "source",
        sites.source_context.as_deref(),
        sites.source_namespace.as_deref(),
    )
    .await
}

/// Triggers a manual sync of `name` and, when `wait`, follows it to the end. Returns the
/// finished source.
pub async fn trigger(
    site: &Site,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> Result<Option<ReplicationSource>, Error> {
    let api = site.sources();
    let rs = site.get_opt(&api, name).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "{} does not exist",
            site.describe("ReplicationSource", name)
        ))
    })?;
    if rs.spec.paused == Some(true) {
        return Err(Error::Conflict(format!(
            "{} is paused; `kubectl ferrosync resume {name}` first",
            site.describe("ReplicationSource", name)
        )));
    }
    let had_schedule = rs
        .spec
        .trigger
        .as_ref()
        .and_then(|t| t.schedule.as_ref())
        .is_some();
    let token = manual_token(k8s_openapi::jiff::Timestamp::now());
    site.merge(
        &api,
        name,
        json!({ "spec": { "trigger": { "manual": token } } }),
    )
    .await?;
    eprintln!(
        "sync of {} triggered ({token})",
        site.describe("ReplicationSource", name)
    );
    if !wait {
        return Ok(None);
    }
    let rs = follow(site, name, &token, timeout).await?;
    // A manual trigger replaces a schedule; give the schedule back once the sync is done.
    if had_schedule {
        site.merge(
            &api,
            name,
            json!({ "spec": { "trigger": { "manual": null } } }),
        )
        .await?;
    }
    Ok(Some(rs))
}

/// Follows the sync triggered with `token` to its end, with a progress bar.
pub async fn follow(
    site: &Site,
    name: &str,
    token: &str,
    timeout: Duration,
) -> Result<ReplicationSource, Error> {
    let api = site.sources();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let deadline = tokio::time::Instant::now() + timeout;
    let result = loop {
        let rs = site.get_opt(&api, name).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "{} was deleted while syncing",
                site.describe("ReplicationSource", name)
            ))
        })?;
        match sync_state(&rs, token) {
            SyncState::Done => break Ok(rs),
            SyncState::Failed(message) => {
                break Err(Error::SyncFailed(format!(
                    "the sync of {name} failed: {message}"
                )));
            }
            SyncState::Running { bytes, rate } => {
                bar.set_message(format!("syncing {name}: {}", progress_text(bytes, rate)))
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(Error::NotReady(format!(
                "the sync of {name} did not finish within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    result
}

pub async fn sync(args: SyncArgs) -> Result<(), Error> {
    let site = source_site(&args.sites).await?;
    if let Some(rs) = trigger(&site, &args.name, args.wait, args.timeout).await? {
        let status = rs.status.unwrap_or_default().sync;
        let stats = status.last_sync_stats.unwrap_or_default();
        println!(
            "synced {} in {}: {} sent",
            args.name,
            status.last_sync_duration.unwrap_or_else(|| "?".into()),
            indicatif::HumanBytes(stats.bytes_sent.unwrap_or(0).max(0) as u64)
        );
    }
    Ok(())
}

/// Pauses or resumes both sides that answer. A fenced destination is never resumed: its
/// copy was promoted, and a listener would let the old source overwrite it.
pub async fn set_paused(args: PauseArgs, paused: bool) -> Result<(), Error> {
    let (source, dest) = contexts::reachable(&args.sites).await?;
    let patch = json!({ "spec": { "paused": paused } });
    let mut touched = 0;
    if let Some(site) = &dest
        && let Some(rd) = site.get_opt(&site.destinations(), &args.name).await?
    {
        let fenced = rd
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(keys::FENCED));
        if !paused && fenced {
            return Err(Error::Conflict(format!(
                "{} was failed over (fenced); use `kubectl ferrosync failback {}` to replicate back",
                site.describe("ReplicationDestination", &args.name),
                args.name
            )));
        }
        site.merge(&site.destinations(), &args.name, patch.clone())
            .await?;
        touched += 1;
    }
    if let Some(site) = &source
        && site.get_opt(&site.sources(), &args.name).await?.is_some()
    {
        site.merge(&site.sources(), &args.name, patch).await?;
        touched += 1;
    }
    if touched == 0 {
        return Err(Error::NotFound(format!(
            "no pair named {} in the reachable sites",
            args.name
        )));
    }
    println!(
        "{} {} ({touched} object(s))",
        args.name,
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn with(manual: Option<&str>, reason: Option<&str>) -> ReplicationSource {
        let mut rs = ReplicationSource::new("db", Default::default());
        let mut status = crate::api::ReplicationSourceStatus::default();
        status.sync.last_manual_sync = manual.map(str::to_string);
        status.sync.conditions = reason.map(|r| {
            vec![Condition {
                type_: "Synchronizing".into(),
                reason: r.into(),
                message: "wrong key".into(),
                status: "False".into(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }]
        });
        rs.status = Some(status);
        rs
    }

    #[test]
    fn a_sync_is_done_only_when_its_own_token_is_acknowledged() {
        assert_eq!(sync_state(&with(Some("t2"), None), "t2"), SyncState::Done);
        assert!(matches!(
            sync_state(&with(Some("t1"), None), "t2"),
            SyncState::Running { .. }
        ));
    }

    #[test]
    fn an_error_condition_fails_the_sync_with_its_message() {
        assert_eq!(
            sync_state(&with(None, Some("Error")), "t"),
            SyncState::Failed("wrong key".into())
        );
        assert!(matches!(
            sync_state(&with(None, Some("SyncInProgress")), "t"),
            SyncState::Running { .. }
        ));
    }

    #[test]
    fn tokens_differ_over_time() {
        let a = manual_token(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let b = manual_token(k8s_openapi::jiff::Timestamp::from_second(2).unwrap());
        assert_ne!(a, b);
    }
}
