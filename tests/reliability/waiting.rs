//! 500 ReplicationSources whose sourcePVC does not exist: each shows the Waiting condition,
//! and while they wait the controller's status writes and Events per object per minute stay
//! bounded, counted in the apiserver's audit log.

use std::time::Duration;

use ferrosync::api::ReplicationSource;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use crate::{CONTROLLER_USER, env, support::wait};

const SOURCES: usize = 500;
/// How long the writes are counted once every source waits.
const WINDOW: Duration = Duration::from_secs(30);
/// At most this many status writes per waiting object per minute.
const MAX_STATUS_WRITES_PER_MINUTE: f64 = 1.0;
/// At most this many Events per waiting object over the window.
const MAX_EVENTS: f64 = 1.0;

fn waiting(rs: &ReplicationSource) -> bool {
    rs.status
        .as_ref()
        .and_then(|s| s.sync.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Synchronizing" && c.reason == "Waiting")
}

/// The controller's requests in `namespace` between `from` and `to`, by what they did.
fn counted(
    events: &[Value],
    namespace: &str,
    from: Timestamp,
    to: Timestamp,
) -> (usize, usize, usize) {
    let mut status = 0;
    let mut event_writes = 0;
    let mut all = 0;
    for e in events {
        if e["user"]["username"] != CONTROLLER_USER
            || e["objectRef"]["namespace"] != namespace
            || e["stage"] != "ResponseComplete"
        {
            continue;
        }
        let Some(at) = e["stageTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if at < from || at > to {
            continue;
        }
        all += 1;
        let object = &e["objectRef"];
        if object["resource"] == "replicationsources"
            && object["subresource"] == "status"
            && e["verb"] == "patch"
        {
            status += 1;
        }
        if object["resource"] == "events" {
            event_writes += 1;
        }
    }
    (status, event_writes, all)
}

#[tokio::test]
async fn many_sources_waiting_for_their_pvc_keep_status_writes_and_events_bounded() {
    let (cp, controller) = env();
    let ns = cp.namespace("waiting").await;
    let api = ns.api::<ReplicationSource>();
    let created = Timestamp::now();
    futures::stream::iter(0..SOURCES)
        .map(|i| {
            let api = api.clone();
            async move {
                let rs: ReplicationSource = serde_json::from_value(json!({
                    "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
                    "metadata": {"name": format!("wait-{i}")},
                    "spec": {"sourcePVC": format!("absent-{i}"), "trigger": {"manual": "once"},
                             "rsyncTLS": {"address": "127.0.0.1", "copyMethod": "Direct"}},
                }))
                .expect("fixture");
                api.create(&PostParams::default(), &rs).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating the sources");
    let started = std::time::Instant::now();
    wait::until(
        "every source to show Waiting",
        Duration::from_secs(300),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let n = list.items.iter().filter(|rs| waiting(rs)).count();
            Ok((n == SOURCES).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; controller log:\n{}", controller.log_text()));
    eprintln!(
        "{SOURCES} sources waiting after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // A measurement window: the rate is what is asserted.
    let from = Timestamp::now();
    tokio::time::sleep(WINDOW).await;
    let to = Timestamp::now();
    let audit = cp.audit_events();
    // The count can see the controller's writes at all: each source got its Waiting
    // condition by a status write before the window (else a zero below proves nothing).
    let (first_writes, _, _) = counted(&audit, &ns.name, created, from);
    assert!(
        first_writes >= SOURCES,
        "the audit log shows {first_writes} status writes of the controller for {SOURCES} sources that each show Waiting"
    );
    let (status, events, all) = counted(&audit, &ns.name, from, to);
    let per_minute = |n: usize| n as f64 / SOURCES as f64 / (WINDOW.as_secs_f64() / 60.0);
    eprintln!(
        "while {SOURCES} sources waited for {WINDOW:?}: {status} status writes ({:.2}/object/min), {events} Event writes, {all} requests ({:.2}/object/min)",
        per_minute(status),
        per_minute(all)
    );
    assert!(
        per_minute(status) <= MAX_STATUS_WRITES_PER_MINUTE,
        "{status} status writes in {WINDOW:?}: {:.2} per object per minute",
        per_minute(status)
    );
    assert!(
        events as f64 / SOURCES as f64 <= MAX_EVENTS,
        "{events} Event writes in {WINDOW:?} for {SOURCES} waiting sources"
    );
    // Still every one of them waits, and says why.
    let list = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.iter().filter(|rs| waiting(rs)).count(), SOURCES);
}
