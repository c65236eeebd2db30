//! The decide fixture table: every state of an iteration, for both kinds, without a
//! cluster. Each case is built from builder functions (an object's spec and status, what
//! the pipeline observed) and run through the pure decisions in the pipeline's order
//! (`pipeline::iterate`): a kind's hook result, the trigger machine, the mover decision,
//! publication, the record of the iteration, the condition. A fake clock (`Clock`) drives
//! the time-dependent cases.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

use super::*;
use crate::{
    api::{MoverResult, MoverStatus},
    controller::{
        image,
        mover_run::{self, JobMeta},
    },
    resources::{Side, names},
};

/// The fake clock: seconds after an arbitrary epoch (2026-01-01T00:00:00Z).
#[derive(Clone, Copy)]
struct Clock(i64);

impl Clock {
    fn now(self) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + self.0).expect("valid")
    }
    fn later(self, secs: i64) -> Clock {
        Clock(self.0 + secs)
    }
}

/// What a kind's hooks (prepare, data, publish) found, in pure terms.
#[derive(Clone, Debug)]
enum Hook {
    /// Ready.
    Ready,
    /// An error from the hook (a missing PVC: NotReady; a bad spec: Invalid).
    Fails(fn() -> Error),
    /// The hook waits and reports this message with SyncInProgress.
    Waits(&'static str),
}

/// One case of the table.
struct Case {
    name: &'static str,
    side: Side,
    trigger: Option<Trigger>,
    paused: bool,
    deleting: bool,
    sync: SyncStatus,
    /// `prepare` (key, volume, Service address; the source PVC).
    prepare: Hook,
    /// `data` (the source's copy).
    data: Hook,
    /// The mover Job as observed.
    job: JobState,
    start_problem: Option<String>,
    /// `publish` (the destination's image).
    publish: Hook,
    clock: Clock,
}

/// What the pipeline would do with the case.
#[derive(Debug)]
struct Planned {
    reason: Option<Reason>,
    message: String,
    requeue: Option<Duration>,
    job: JobAct,
    events: Vec<&'static str>,
    sync: SyncStatus,
    /// The mover's report went to publication (and the iteration was recorded).
    published: bool,
}

const POLL: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(3600);
const ERROR_MIN: Duration = Duration::from_secs(1);
const BACKOFF: Duration = Duration::from_secs(7);

fn rules() -> MoverRules {
    MoverRules {
        backoff: retry::Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        },
        poll: POLL,
        idle: IDLE,
        retry: ERROR_MIN,
    }
}

// ---- builders ----

fn source() -> Case {
    Case {
        name: "",
        side: Side::Source,
        trigger: None,
        paused: false,
        deleting: false,
        sync: SyncStatus::default(),
        prepare: Hook::Ready,
        data: Hook::Ready,
        job: JobState::Absent,
        start_problem: None,
        publish: Hook::Ready,
        clock: Clock(0),
    }
}

fn destination() -> Case {
    Case {
        side: Side::Destination,
        ..source()
    }
}

impl Case {
    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
    fn schedule(mut self, cron: &str) -> Self {
        self.trigger = Some(Trigger {
            schedule: Some(cron.into()),
            manual: None,
        });
        self
    }
    fn manual(mut self, value: &str) -> Self {
        self.trigger = Some(Trigger {
            schedule: None,
            manual: Some(value.into()),
        });
        self
    }
    fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
    fn deleting(mut self) -> Self {
        self.deleting = true;
        self
    }
    fn at(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// An iteration started at `started` and still owed a success.
    fn in_flight_since(mut self, started: Clock) -> Self {
        self.sync.last_sync_start_time = Some(Time(started.now()));
        self
    }
    fn synced_at(mut self, done: Clock) -> Self {
        self.sync.last_sync_time = Some(Time(done.now()));
        self
    }
    fn last_manual(mut self, value: &str) -> Self {
        self.sync.last_manual_sync = Some(value.into());
        self
    }
    fn prepare(mut self, hook: Hook) -> Self {
        self.prepare = hook;
        self
    }
    fn data(mut self, hook: Hook) -> Self {
        self.data = hook;
        self
    }
    fn publish(mut self, hook: Hook) -> Self {
        self.publish = hook;
        self
    }
    fn job(mut self, job: JobState) -> Self {
        self.job = job;
        self
    }
    fn not_starting(mut self, why: &str) -> Self {
        self.start_problem = Some(why.into());
        self
    }
}

fn running(created: Clock) -> JobState {
    JobState::Running(JobMeta {
        created: Some(created.now()),
        ..JobMeta::default()
    })
}

fn summary(ok: bool, class: Option<&str>, exit: u8) -> String {
    serde_json::json!({
        "role": "source",
        "result": if ok { "succeeded" } else { "failed" },
        "exitCode": exit,
        "errorClass": class,
        "authFailure": false,
        "bytesSent": 4096,
        "bytesReceived": 0,
        "filesTransferred": 3,
        "filesDeleted": 0,
        "attempts": 1,
        "durationSeconds": 1.5,
    })
    .to_string()
}

fn job_succeeded() -> JobState {
    JobState::Succeeded(mover_run::mover_report(
        MoverResult::Successful,
        Some(&summary(true, None, 0)),
    ))
}

/// A failed Job; `class` is the mover's error class (by name, as in its summary).
fn job_failed(class: &str, exit: u8, at: Clock, depended_on: &str) -> JobState {
    JobState::Failed(
        mover_run::mover_report(
            MoverResult::Failed,
            Some(&summary(false, Some(class), exit)),
        ),
        JobMeta {
            created: Some(at.now()),
            failed_at: Some(at.now()),
            failures_before: 0,
            depended_on: Some(depended_on.into()),
        },
    )
}

const DEPS: &str = "generation=1;key=k@1";

fn not_found() -> Error {
    Error::NotReady("spec.sourcePVC \"data\" does not exist".into())
}
fn key_not_yet() -> Error {
    Error::NotReady("waiting for the pre-shared key: the destination has not stored it".into())
}
fn bad_spec() -> Error {
    Error::Invalid("spec.rsyncTLS.address is required".into())
}

// ---- the pure pipeline, in `pipeline::iterate`'s order ----

fn run(case: &Case) -> Planned {
    let mut sync = case.sync.clone();
    let now = case.clock.now();
    let meta = ObjectMeta {
        deletion_timestamp: case.deleting.then_some(Time(now)),
        ..ObjectMeta::default()
    };
    let mut planned = Planned {
        reason: None,
        message: String::new(),
        requeue: None,
        job: JobAct::Keep,
        events: Vec::new(),
        sync: SyncStatus::default(),
        published: false,
    };
    if leave_alone(&meta) {
        planned.sync = sync;
        return planned;
    }
    let result = iterate(case, &mut sync, &mut planned, now);
    let (requeue, event) = settle(result, &mut sync.conditions, Some(1), now, IDLE, || BACKOFF)
        .expect("not an API error");
    planned.events.extend(event.map(|e| e.reason));
    let condition = synchronizing(sync.conditions.as_deref().unwrap_or_default())
        .expect("a condition")
        .clone();
    planned.reason = Some(reason_of(&condition.reason));
    planned.message = condition.message;
    planned.requeue = Some(requeue);
    planned.sync = sync;
    planned
}

fn hook(h: &Hook, poll: Duration) -> Result<Option<Progress>, Error> {
    match h {
        Hook::Ready => Ok(None),
        Hook::Fails(err) => Err(err()),
        Hook::Waits(what) => Ok(Some(
            Progress::new(Reason::SyncInProgress, poll).with_message(*what),
        )),
    }
}

fn iterate(
    case: &Case,
    sync: &mut SyncStatus,
    planned: &mut Planned,
    now: Timestamp,
) -> Result<Progress, Error> {
    if let Some(waiting) = hook(&case.prepare, POLL)? {
        return Ok(waiting);
    }
    let pass = Pass {
        trigger: case.trigger.as_ref(),
        paused: case.paused,
        now,
    };
    let decision = decide(pass, sync)?;
    if !runs_mover(&decision) {
        return Ok(idle_progress(&decision, &requeue_config(), now));
    }
    if let Some(waiting) = hook(&case.data, POLL)? {
        return Ok(waiting);
    }
    let seen = MoverSnapshot {
        job: names::job(case.side, "pair"),
        state: case.job.clone(),
        start_problem: case.start_problem.clone(),
        progress: None,
        depends_on_now: Some(DEPS.into()),
        failures: 0,
    };
    let plan = mover(&seen, sync, pass, rules())?;
    planned.job = plan.job;
    planned.events.extend(plan.events.iter().map(|e| e.reason));
    let report = match mover_progress(plan.outcome, rules()) {
        Ok(report) => report,
        Err(progress) => return Ok(progress),
    };
    if let Some(waiting) = hook(&case.publish, POLL)? {
        return Ok(waiting);
    }
    planned.published = true;
    sync.latest_mover_status = Some(report.status);
    let next = succeeded(pass, sync)?;
    planned.job = JobAct::Delete;
    Ok(idle_progress(&next, &requeue_config(), now))
}

fn requeue_config() -> crate::config::RequeueConfig {
    crate::config::RequeueConfig {
        idle: IDLE,
        poll: POLL,
        error_min: ERROR_MIN,
        error_max: Duration::from_secs(300),
    }
}

fn reason_of(text: &str) -> Reason {
    [
        Reason::SyncInProgress,
        Reason::WaitingForSchedule,
        Reason::WaitingForManual,
        Reason::Paused,
        Reason::Waiting,
        Reason::CleaningUp,
        Reason::Error,
        Reason::Unsupported,
    ]
    .into_iter()
    .find(|r| r.as_str() == text)
    .expect("a known reason")
}

// ---- the table ----

/// What a case must come to.
struct Expect {
    reason: Option<Reason>,
    job: JobAct,
    events: &'static [&'static str],
    published: bool,
    requeue: Option<Duration>,
    message_has: &'static str,
}

const fn expect(reason: Reason) -> Expect {
    Expect {
        reason: Some(reason),
        job: JobAct::Keep,
        events: &[],
        published: false,
        requeue: None,
        message_has: "",
    }
}

fn create() -> JobAct {
    JobAct::Create {
        failures_before: 0,
        depends_on: DEPS.into(),
    }
}

fn table() -> Vec<(Case, Expect)> {
    let t0 = Clock(0);
    let mut rows = Vec::new();
    for kind in [source, destination] {
        rows.extend([
            (
                kind().named("a new object starts its first iteration at once"),
                Expect {
                    job: create(),
                    events: &["TransferStarted"],
                    requeue: Some(POLL),
                    ..expect(Reason::SyncInProgress)
                },
            ),
            (
                kind()
                    .named("waiting for a PVC: Waiting, a Normal Event, backoff")
                    .prepare(Hook::Fails(not_found)),
                Expect {
                    events: &["Waiting"],
                    requeue: Some(BACKOFF),
                    message_has: "does not exist",
                    ..expect(Reason::Waiting)
                },
            ),
            (
                kind()
                    .named("waiting for a key the other side has not stored")
                    .prepare(Hook::Fails(key_not_yet)),
                Expect {
                    events: &["Waiting"],
                    requeue: Some(BACKOFF),
                    message_has: "pre-shared key",
                    ..expect(Reason::Waiting)
                },
            ),
            (
                kind()
                    .named("a permanent failure: Error until the spec changes")
                    .prepare(Hook::Fails(bad_spec)),
                Expect {
                    events: &["InvalidSpec"],
                    requeue: Some(IDLE),
                    message_has: "address is required",
                    ..expect(Reason::Error)
                },
            ),
            (
                kind()
                    .named("a running mover is polled")
                    .in_flight_since(t0)
                    .job(running(t0))
                    .at(t0.later(30)),
                Expect {
                    requeue: Some(POLL),
                    ..expect(Reason::SyncInProgress)
                },
            ),
            (
                kind()
                    .named("a mover whose pods cannot start needs a person")
                    .in_flight_since(t0)
                    .job(running(t0))
                    .not_starting("image cannot be pulled")
                    .at(t0.later(600)),
                Expect {
                    events: &["MoverNotStarted"],
                    requeue: Some(POLL),
                    message_has: "image cannot be pulled",
                    ..expect(Reason::Error)
                },
            ),
            (
                kind()
                    .named("a transiently failed mover is retried now")
                    .in_flight_since(t0)
                    .job(job_failed("Unreachable", 20, t0.later(5), DEPS))
                    .at(t0.later(6)),
                Expect {
                    job: JobAct::Delete,
                    events: &["TransferFailed"],
                    requeue: Some(ERROR_MIN),
                    message_has: "retrying",
                    ..expect(Reason::Error)
                },
            ),
            (
                kind()
                    .named("a permanently failed mover waits for its backoff")
                    .in_flight_since(t0)
                    .job(job_failed("AuthFailed", 13, t0.later(5), DEPS))
                    .at(t0.later(6)),
                Expect {
                    events: &["TransferFailed"],
                    requeue: Some(Duration::from_secs(59) + Duration::from_millis(100)),
                    message_has: "the next attempt starts at",
                    ..expect(Reason::Error)
                },
            ),
            (
                kind()
                    .named("a permanent failure retries at once when the key changed")
                    .in_flight_since(t0)
                    .job(job_failed(
                        "AuthFailed",
                        13,
                        t0.later(5),
                        "generation=1;key=k@0",
                    ))
                    .at(t0.later(6)),
                Expect {
                    job: JobAct::Delete,
                    events: &["TransferFailed"],
                    requeue: Some(ERROR_MIN),
                    ..expect(Reason::Error)
                },
            ),
            (
                kind()
                    .named("completion: published, recorded, the Job goes; continuous starts again")
                    .in_flight_since(t0)
                    .job(job_succeeded())
                    .at(t0.later(40)),
                Expect {
                    job: JobAct::Delete,
                    published: true,
                    requeue: Some(Duration::from_millis(10)),
                    ..expect(Reason::SyncInProgress)
                },
            ),
            (
                kind()
                    .named("paused: nothing starts")
                    .manual("first")
                    .paused(),
                Expect {
                    requeue: Some(IDLE),
                    message_has: "paused",
                    ..expect(Reason::Paused)
                },
            ),
            (
                kind()
                    .named("manual, already satisfied: waits for a new value")
                    .manual("first")
                    .last_manual("first")
                    .synced_at(t0),
                Expect {
                    requeue: Some(IDLE),
                    ..expect(Reason::WaitingForManual)
                },
            ),
            (
                kind()
                    .named("manual, a new value: an iteration starts")
                    .manual("second")
                    .last_manual("first")
                    .synced_at(t0),
                Expect {
                    job: create(),
                    events: &["TransferStarted"],
                    ..expect(Reason::SyncInProgress)
                },
            ),
            (
                kind()
                    .named("schedule, between times: comes back at the next one")
                    .schedule("*/5 * * * *")
                    .synced_at(t0)
                    .at(t0.later(10)),
                Expect {
                    requeue: Some(Duration::from_secs(290) + Duration::from_millis(100)),
                    ..expect(Reason::WaitingForSchedule)
                },
            ),
            (
                kind()
                    .named("schedule, its time came: an iteration starts")
                    .schedule("*/5 * * * *")
                    .synced_at(t0)
                    .at(t0.later(301)),
                Expect {
                    job: create(),
                    events: &["TransferStarted"],
                    ..expect(Reason::SyncInProgress)
                },
            ),
            (
                kind()
                    .named("the owner deleted mid-iteration: left alone")
                    .in_flight_since(t0)
                    .job(running(t0))
                    .deleting(),
                Expect {
                    reason: None,
                    ..expect(Reason::SyncInProgress)
                },
            ),
        ]);
    }
    rows.extend([
        (
            destination()
                .named("destination waiting for its Service address")
                .prepare(Hook::Waits("Waiting for the Service address")),
            Expect {
                requeue: Some(POLL),
                message_has: "Service address",
                ..expect(Reason::SyncInProgress)
            },
        ),
        (
            source()
                .named("source waiting for its point-in-time copy")
                .data(Hook::Waits("VolumeSnapshot x is not ready yet")),
            Expect {
                requeue: Some(POLL),
                message_has: "not ready yet",
                ..expect(Reason::SyncInProgress)
            },
        ),
        (
            destination()
                .named("destination publication waits for its snapshot; the Job stays")
                .in_flight_since(t0)
                .job(job_succeeded())
                .publish(Hook::Waits("VolumeSnapshot d is not bound and ready yet"))
                .at(t0.later(40)),
            Expect {
                message_has: "not bound and ready",
                requeue: Some(POLL),
                ..expect(Reason::SyncInProgress)
            },
        ),
    ]);
    rows
}

#[test]
fn every_state_of_an_iteration_for_both_kinds() {
    let mut failures = Vec::new();
    for (case, want) in table() {
        let got = run(&case);
        let side = case.side.as_str();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("{side}: {}: {what}", case.name));
            }
        };
        check(
            got.reason == want.reason,
            format!("reason {:?}, want {:?}", got.reason, want.reason),
        );
        check(
            got.job == want.job,
            format!("job {:?}, want {:?}", got.job, want.job),
        );
        check(
            got.events == want.events,
            format!("events {:?}, want {:?}", got.events, want.events),
        );
        check(
            got.published == want.published,
            format!("published {}", got.published),
        );
        if let Some(requeue) = want.requeue {
            check(
                got.requeue == Some(requeue),
                format!("requeue {:?}, want {requeue:?}", got.requeue),
            );
        }
        check(
            got.message.contains(want.message_has),
            format!("message {:?} lacks {:?}", got.message, want.message_has),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn completion_records_the_iteration_and_a_failure_keeps_it_owed() {
    let t0 = Clock(0);
    let done = run(&source()
        .schedule("0 * * * *")
        .in_flight_since(t0)
        .job(job_succeeded())
        .at(t0.later(40)));
    assert_eq!(done.sync.last_sync_time, Some(Time(t0.later(40).now())));
    assert_eq!(
        done.sync.last_sync_start_time, None,
        "a success clears the start"
    );
    assert!(done.sync.next_sync_time.is_some());
    assert_eq!(
        done.sync.latest_mover_status.and_then(|s| s.result),
        Some(MoverResult::Successful.into())
    );
    let failed = run(&destination()
        .in_flight_since(t0)
        .job(job_failed("ConnectionLost", 21, t0.later(5), DEPS))
        .at(t0.later(6)));
    assert!(in_progress(&failed.sync), "the retry is the same iteration");
    assert_eq!(failed.sync.last_sync_time, None);
    assert!(matches!(
        failed.sync.latest_mover_status,
        Some(MoverStatus {
            result: Some(_),
            ..
        })
    ));
}

#[test]
fn a_shown_failure_is_not_announced_again() {
    let t0 = Clock(0);
    let case = || {
        source()
            .in_flight_since(t0)
            .job(job_failed("AuthFailed", 13, t0.later(5), DEPS))
    };
    let first = run(&case().at(t0.later(6)));
    assert_eq!(first.events, ["TransferFailed"]);
    let mut again = case().at(t0.later(20));
    again.sync = first.sync;
    assert!(
        run(&again).events.is_empty(),
        "the condition already says it"
    );
}

#[test]
fn retention_keeps_the_newest_the_latest_and_the_labelled() {
    let at = |secs: i64| Some(Time(Clock(secs).now()));
    let image = |name: &str, created, keep: bool| (name.to_string(), created, keep);
    let images = vec![
        image("d-1", at(10), false),
        image("d-2", at(20), true),
        image("d-3", at(30), false),
        image("d-4", at(40), false),
    ];
    assert_eq!(image::beyond_retention(&images, "d-4", 2), ["d-1"]);
    assert_eq!(image::beyond_retention(&images, "d-1", 1), ["d-3"]);
    assert!(image::beyond_retention(&images, "d-4", 9).is_empty());
}
