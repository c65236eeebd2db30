//! The apiserver's audit log, read as "which requests did this user make between two
//! moments", split by verb and resource.
//!
//! A moment is a byte offset of the log ([`Mark`]): the apiserver writes in blocking mode,
//! so an event is in the file before its response reaches the client, and everything a
//! client saw answered before a mark is before it. Each request is counted once: a watch
//! when it starts (`ResponseStarted`; it may stay open past the window), anything else when
//! it completes (`ResponseComplete`; the policy omits `RequestReceived`).

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// A position in the audit log.
#[derive(Clone, Copy, Debug)]
pub struct Mark(u64);

/// The audit log of one control plane.
pub struct AuditLog {
    path: PathBuf,
}

/// One verb on one resource, and how often.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub verb: String,
    /// `resource[.group][/subresource]`, or the path of a non-resource request.
    pub resource: String,
}

/// Requests of one [`Key`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Count {
    pub requests: u64,
    /// Answered with a status >= 400 (conflicts, throttling, not-found...).
    pub failed: u64,
}

/// Requests between two marks, by verb and resource.
#[derive(Clone, Debug, Default)]
pub struct Breakdown {
    pub by_key: BTreeMap<Key, Count>,
}

impl Breakdown {
    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.by_key.values().map(|c| c.requests).sum()
    }

    /// The rows, most requests first.
    pub fn rows(&self) -> Vec<(&Key, &Count)> {
        let mut rows: Vec<_> = self.by_key.iter().collect();
        rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        rows
    }
}

#[derive(Deserialize)]
struct Event {
    stage: String,
    verb: String,
    user: User,
    #[serde(rename = "requestURI")]
    request_uri: String,
    #[serde(rename = "objectRef")]
    object_ref: Option<ObjectRef>,
    #[serde(rename = "responseStatus")]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    resource: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "apiGroup")]
    api_group: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct ResponseStatus {
    code: Option<u16>,
}

/// Which requests of a window to count.
pub struct Filter<'a> {
    /// Only this user's (e.g. `system:serviceaccount:ferrosync-system:ferrosync`); `None`:
    /// everyone's.
    pub user: Option<&'a str>,
    /// Only requests on objects in this namespace.
    pub namespace: Option<&'a str>,
}

impl AuditLog {
    pub fn new(path: &Path) -> AuditLog {
        AuditLog { path: path.into() }
    }

    /// The current end of the log.
    pub fn mark(&self) -> Mark {
        Mark(std::fs::metadata(&self.path).map_or(0, |m| m.len()))
    }

    /// The requests written between `from` and `to` that pass `filter`.
    pub fn requests(&self, from: Mark, to: Mark, filter: &Filter<'_>) -> Breakdown {
        let mut breakdown = Breakdown::default();
        let Ok(mut file) = File::open(&self.path) else {
            return breakdown;
        };
        if file.seek(SeekFrom::Start(from.0)).is_err() {
            return breakdown;
        }
        let reader = BufReader::new(file.take(to.0.saturating_sub(from.0)));
        for line in reader.lines() {
            // A line cut by a mark is not valid JSON and is skipped: marks fall between
            // events unless the apiserver was writing at that instant.
            let Ok(line) = line else { continue };
            let Ok(event) = serde_json::from_str::<Event>(&line) else {
                continue;
            };
            if let Some((key, failed)) = counted(&event, filter) {
                let count = breakdown.by_key.entry(key).or_default();
                count.requests += 1;
                count.failed += u64::from(failed);
            }
        }
        breakdown
    }
}

/// The key of an event that counts as one request of `filter`, and whether it failed.
fn counted(event: &Event, filter: &Filter<'_>) -> Option<(Key, bool)> {
    let first_sight = if event.verb == "watch" {
        event.stage == "ResponseStarted"
    } else {
        event.stage == "ResponseComplete"
    };
    if !first_sight || filter.user.is_some_and(|u| u != event.user.username) {
        return None;
    }
    let namespace = event
        .object_ref
        .as_ref()
        .and_then(|o| o.namespace.as_deref());
    if filter.namespace.is_some() && filter.namespace != namespace {
        return None;
    }
    let resource = match &event.object_ref {
        Some(ObjectRef {
            resource: Some(resource),
            api_group,
            subresource,
            ..
        }) => {
            let mut name = resource.clone();
            if let Some(group) = api_group.as_deref().filter(|g| !g.is_empty()) {
                name = format!("{name}.{group}");
            }
            if let Some(sub) = subresource {
                name = format!("{name}/{sub}");
            }
            name
        }
        _ => event
            .request_uri
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    let failed = event
        .response_status
        .as_ref()
        .and_then(|s| s.code)
        .is_some_and(|c| c >= 400);
    Some((
        Key {
            verb: event.verb.clone(),
            resource,
        },
        failed,
    ))
}
