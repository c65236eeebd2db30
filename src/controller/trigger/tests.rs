use chrono::{Duration, TimeZone};

use super::*;

/// 2024-01-01 (a Monday) at h:m.
fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
        + Duration::minutes(i64::from(h * 60 + m))
}

fn schedule(expr: &str) -> Option<Trigger> {
    Some(Trigger {
        schedule: Some(expr.to_owned()),
        manual: None,
    })
}

fn manual(value: &str) -> Option<Trigger> {
    Some(Trigger {
        schedule: None,
        manual: Some(value.to_owned()),
    })
}

/// One object's spec and status, driven pass by pass the way a reconciler would.
struct Obj {
    trigger: Option<Trigger>,
    paused: bool,
    status: SyncTimes,
    in_progress: bool,
}

impl Obj {
    fn new(trigger: Option<Trigger>) -> Self {
        Self {
            trigger,
            paused: false,
            status: SyncTimes::default(),
            in_progress: false,
        }
    }

    fn apply(&mut self, d: Decision) -> Decision {
        self.status = d.status.clone();
        self.in_progress = d.condition.is_true();
        d
    }

    fn pass(&mut self, now: DateTime<Utc>) -> Decision {
        let input = Input {
            trigger: self.trigger.as_ref(),
            paused: self.paused,
            status: &self.status,
            in_progress: self.in_progress,
            now,
        };
        let d = decide(&input);
        self.apply(d)
    }

    fn succeed(&mut self, now: DateTime<Utc>) -> Decision {
        assert!(self.in_progress, "succeed() without a running iteration");
        let input = Input {
            trigger: self.trigger.as_ref(),
            paused: self.paused,
            status: &self.status,
            in_progress: true,
            now,
        };
        let d = iteration_succeeded(&input);
        self.apply(d)
    }

    fn fail(&mut self, now: DateTime<Utc>) -> Decision {
        let input = Input {
            trigger: self.trigger.as_ref(),
            paused: self.paused,
            status: &self.status,
            in_progress: true,
            now,
        };
        let d = iteration_failed(&input);
        self.apply(d)
    }

    /// One whole successful iteration from `start` to `end`.
    fn sync(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Decision {
        assert_eq!(self.pass(start).action, Action::Start);
        self.succeed(end)
    }
}

#[test]
fn a_new_object_syncs_once_immediately_whatever_its_trigger() {
    for trigger in [
        None,
        schedule("@daily"),
        manual("x"),
        Some(Trigger::default()),
    ] {
        let mut obj = Obj::new(trigger.clone());
        let d = obj.pass(t(10, 0));
        assert_eq!(d.action, Action::Start, "{trigger:?}");
        assert_eq!(d.condition.reason, Reason::SyncInProgress);
        assert_eq!(d.condition.message, "Synchronization in-progress");
        assert_eq!(d.status.last_sync_start_time, Some(t(10, 0)));
        assert_eq!(d.status.next_sync_time, None);
        assert!(!d.missed_interval && !d.out_of_sync);
        assert_eq!(
            obj.pass(t(10, 1)).action,
            Action::Continue,
            "no second start while running"
        );
    }
}

#[test]
fn manual_runs_exactly_one_sync_per_new_value() {
    let mut obj = Obj::new(manual("first"));
    let d = obj.sync(t(10, 0), t(10, 1));
    assert_eq!(d.status.last_manual_sync.as_deref(), Some("first"));
    assert_eq!(d.status.next_sync_time, None);
    assert_eq!(d.action, Action::WaitForManual);
    assert_eq!(d.condition.reason, Reason::WaitingForManual);
    assert_eq!(d.condition.message, "Waiting for manual trigger");
    assert_eq!(d.action.requeue_after(t(10, 1)), None);
    for h in 11..20 {
        assert_eq!(
            obj.pass(t(h, 0)).action,
            Action::WaitForManual,
            "same value: nothing"
        );
    }
    obj.trigger = manual("second");
    let d = obj.sync(t(20, 0), t(20, 2));
    assert_eq!(d.status.last_manual_sync.as_deref(), Some("second"));
    assert_eq!(obj.pass(t(21, 0)).action, Action::WaitForManual);
    // Back to an older value is a new request too.
    obj.trigger = manual("first");
    assert_eq!(obj.pass(t(22, 0)).action, Action::Start);
}

#[test]
fn manual_wins_over_schedule() {
    let mut obj = Obj::new(Some(Trigger {
        schedule: Some("* * * * *".into()),
        manual: Some("a".into()),
    }));
    obj.sync(t(10, 0), t(10, 0));
    let d = obj.pass(t(12, 0));
    assert_eq!(
        (d.action, d.status.next_sync_time, d.out_of_sync),
        (Action::WaitForManual, None, false)
    );
    // Even a broken schedule is ignored while manual is set.
    obj.trigger = Some(Trigger {
        schedule: Some("bad".into()),
        manual: Some("a".into()),
    });
    assert_eq!(obj.pass(t(12, 1)).action, Action::WaitForManual);
    // An empty manual value counts as unset: the schedule applies.
    obj.trigger = Some(Trigger {
        schedule: Some("0 * * * *".into()),
        manual: Some(String::new()),
    });
    assert_eq!(obj.pass(t(12, 2)).action, Action::Start);
}

#[test]
fn no_trigger_syncs_continuously() {
    for trigger in [None, Some(Trigger::default())] {
        let mut obj = Obj::new(trigger);
        obj.pass(t(10, 0));
        let d = obj.succeed(t(10, 3));
        // The next iteration (a destination's next listener) starts right away.
        assert_eq!(d.action, Action::Start);
        assert_eq!(d.status.last_sync_time, Some(t(10, 3)));
        assert_eq!(d.status.last_sync_duration.as_deref(), Some("3m0s"));
        assert_eq!(d.status.last_sync_start_time, Some(t(10, 3)));
        assert_eq!(d.status.next_sync_time, None);
        assert!(!d.out_of_sync && !d.missed_interval);
        assert_eq!(obj.pass(t(10, 4)).action, Action::Continue);
    }
}

#[test]
fn paused_starts_nothing_until_unpaused() {
    let mut obj = Obj::new(schedule("0 * * * *"));
    obj.paused = true;
    let d = obj.pass(t(10, 0));
    assert_eq!(
        d.action,
        Action::Paused { in_progress: false },
        "not even the first sync"
    );
    assert_eq!(d.status, SyncTimes::default());
    assert_eq!(d.condition.reason, Reason::WaitingForSchedule);
    assert!(d.condition.message.contains("Paused"));
    obj.paused = false;
    obj.sync(t(10, 5), t(10, 6));
    obj.paused = true;
    let d = obj.pass(t(15, 0));
    assert_eq!(
        d.action,
        Action::Paused { in_progress: false },
        "due but paused"
    );
    assert_eq!(
        d.status.next_sync_time,
        Some(t(11, 0)),
        "status still says when it is due"
    );
    assert!(d.out_of_sync, "a paused schedule falls behind");
    obj.paused = false;
    let d = obj.pass(t(15, 1));
    assert_eq!(d.action, Action::Start);
    // Pausing a running iteration keeps it, without a mover.
    obj.paused = true;
    let d = obj.pass(t(15, 2));
    assert_eq!(d.action, Action::Paused { in_progress: true });
    assert_eq!(d.condition.reason, Reason::SyncInProgress);
    obj.paused = false;
    assert_eq!(obj.pass(t(15, 3)).action, Action::Continue);
    // Manual, paused: the reason says what it waits for.
    let mut obj = Obj::new(manual("m"));
    obj.paused = true;
    assert_eq!(
        obj.pass(t(10, 0)).condition.reason,
        Reason::WaitingForManual
    );
}

#[test]
fn a_failed_iteration_keeps_last_sync_and_retries_per_trigger() {
    for trigger in [None, schedule("0 * * * *"), manual("a")] {
        let mut obj = Obj::new(trigger.clone());
        // The first iteration failing: still owed, so it retries.
        obj.pass(t(9, 0));
        assert_eq!(obj.fail(t(9, 1)).action, Action::Start, "{trigger:?}");
        obj.succeed(t(9, 2));
        if trigger.is_none() {
            obj.in_progress = true;
        } else {
            obj.trigger = trigger.clone().map(|tr| Trigger {
                manual: tr.manual.map(|_| "b".to_owned()),
                ..tr
            });
            assert_eq!(obj.pass(t(10, 0)).action, Action::Start, "{trigger:?}");
        }
        let before = obj.status.clone();
        let d = obj.fail(t(10, 5));
        assert_eq!(d.action, Action::Start, "{trigger:?}: retried");
        assert_eq!(d.status.last_sync_time, before.last_sync_time);
        assert_eq!(d.status.last_sync_duration, before.last_sync_duration);
        assert_eq!(
            d.status.last_manual_sync, before.last_manual_sync,
            "a failure satisfies no manual value"
        );
        assert_eq!(d.status.next_sync_time, before.next_sync_time);
        assert_eq!(d.status.last_sync_start_time, Some(t(10, 5)));
    }
    // Paused when the failure ends the iteration: no retry until unpaused.
    let mut obj = Obj::new(None);
    obj.pass(t(9, 0));
    obj.paused = true;
    assert_eq!(
        obj.fail(t(9, 1)).action,
        Action::Paused { in_progress: false }
    );
}

mod scheduled;
