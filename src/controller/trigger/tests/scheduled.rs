//! The schedule side of the machine: due times, missed intervals, edits, bad
//! expressions and the cron semantics seen through `decide`.

use chrono::{Datelike, Duration, Weekday};

use super::*;

#[test]
fn success_on_a_schedule_sets_times_and_waits_for_the_next() {
    let mut obj = Obj::new(schedule("0 * * * *"));
    obj.pass(t(10, 20));
    let d = obj.succeed(t(10, 21) + Duration::milliseconds(5_200));
    assert_eq!(
        d.status.last_sync_time,
        Some(t(10, 21) + Duration::milliseconds(5_200))
    );
    assert_eq!(d.status.last_sync_duration.as_deref(), Some("1m5.2s"));
    assert_eq!(d.status.last_sync_start_time, None);
    assert_eq!(d.status.next_sync_time, Some(t(11, 0)));
    assert_eq!(d.action, Action::WaitUntil(t(11, 0)));
    assert_eq!(
        d.condition,
        Condition::new(Reason::WaitingForSchedule, false)
    );
    assert_eq!(
        d.condition.message,
        "Waiting for next scheduled synchronization"
    );
    assert!(!d.condition.is_true());
    assert_eq!(
        d.action.requeue_after(t(10, 30)),
        Some(std::time::Duration::from_secs(30 * 60))
    );
    assert_eq!(
        d.action.requeue_after(t(11, 30)),
        Some(std::time::Duration::ZERO),
        "never negative"
    );
}

#[test]
fn schedule_due_and_not_due() {
    let mut obj = Obj::new(schedule("*/15 * * * *"));
    obj.sync(t(10, 0), t(10, 2));
    assert_eq!(obj.pass(t(10, 14)).action, Action::WaitUntil(t(10, 15)));
    let d = obj.pass(t(10, 15));
    assert_eq!(d.action, Action::Start, "due exactly at nextSyncTime");
    assert_eq!(d.status.next_sync_time, Some(t(10, 15)));
    assert!(!d.missed_interval);
    let d = obj.succeed(t(10, 16));
    assert_eq!(d.action, Action::WaitUntil(t(10, 30)));
}

#[test]
fn missed_intervals_and_out_of_sync() {
    let mut obj = Obj::new(schedule("0 * * * *"));
    obj.sync(t(10, 0), t(10, 0));
    // next = 11:00, next(next) = 12:00: late only once 12:00 has passed.
    obj.in_progress = true;
    let d = obj.pass(t(11, 30));
    assert_eq!(d.action, Action::Continue);
    assert!(!d.out_of_sync);
    let d = obj.pass(t(12, 0));
    assert!(!d.out_of_sync, "next(next(last)) < now is strict");
    let d = obj.pass(t(12, 1));
    assert!(
        d.out_of_sync,
        "a long-running iteration leaves the volume out of sync"
    );
    assert!(!d.missed_interval, "only a start counts");
    obj.in_progress = false;
    let d = obj.pass(t(12, 1));
    assert_eq!(d.action, Action::Start);
    assert!(d.missed_interval && d.out_of_sync);
    // A retry of the same late iteration does not count again.
    let d = obj.fail(t(12, 5));
    assert_eq!(d.action, Action::Start);
    assert!(!d.missed_interval && d.out_of_sync);
    let d = obj.succeed(t(12, 10));
    assert!(!d.out_of_sync && !d.missed_interval, "clears after success");
    assert_eq!(
        d.status.last_sync_duration.as_deref(),
        Some("5m0s"),
        "measured from the retry's start"
    );
    assert_eq!(d.action, Action::WaitUntil(t(13, 0)));
}

#[test]
fn schedule_edits_take_effect_at_once() {
    let mut obj = Obj::new(schedule("@daily"));
    obj.sync(t(10, 0), t(10, 0));
    assert_eq!(obj.pass(t(10, 30)).action, Action::WaitUntil(t(24, 0)));
    // Sooner: the next time after lastSyncTime is already past, so start now.
    obj.trigger = schedule("*/5 * * * *");
    let d = obj.pass(t(10, 30));
    assert_eq!(d.action, Action::Start);
    assert_eq!(d.status.next_sync_time, Some(t(10, 5)));
    obj.succeed(t(10, 31));
    // Later: the old, sooner time is forgotten.
    obj.trigger = schedule("0 18 * * *");
    let d = obj.pass(t(10, 32));
    assert_eq!(d.action, Action::WaitUntil(t(18, 0)));
    assert_eq!(d.status.next_sync_time, Some(t(18, 0)));
}

#[test]
fn a_bad_cron_is_an_error_until_fixed() {
    let mut obj = Obj::new(schedule("61 * * * *"));
    let d = obj.pass(t(10, 0));
    assert_eq!(
        d.action,
        Action::WaitForSpecChange,
        "no first sync with a bad schedule"
    );
    assert_eq!(d.condition.reason, Reason::Error);
    assert!(
        d.condition
            .message
            .contains("minute field \"61\": 61 is out of range"),
        "{}",
        d.condition.message
    );
    assert_eq!(d.status.last_sync_start_time, None);
    obj.paused = true;
    let d = obj.pass(t(10, 1));
    assert_eq!(
        (d.action, d.condition.reason),
        (Action::Paused { in_progress: false }, Reason::Error)
    );
    obj.paused = false;
    obj.trigger = schedule("0 * * * *");
    let d = obj.pass(t(10, 2));
    assert_eq!(
        (d.action, d.condition.reason),
        (Action::Start, Reason::SyncInProgress),
        "clears on the next good pass"
    );
    obj.succeed(t(10, 3));
    // Broken after syncs: next time cleared, error shown; fixed: back to waiting.
    obj.trigger = schedule("* * * *");
    let d = obj.pass(t(10, 4));
    assert_eq!(
        (d.action, d.condition.reason, d.status.next_sync_time),
        (Action::WaitForSpecChange, Reason::Error, None)
    );
    assert!(d.condition.message.contains("expected 5 fields"));
    obj.trigger = schedule("0 * * * *");
    assert_eq!(obj.pass(t(10, 5)).action, Action::WaitUntil(t(11, 0)));
}

#[test]
fn a_schedule_broken_mid_iteration_lets_it_finish_then_reports() {
    let mut obj = Obj::new(schedule("0 * * * *"));
    obj.pass(t(10, 0));
    obj.trigger = schedule("* * * * 8");
    assert_eq!(obj.pass(t(10, 1)).action, Action::Continue);
    let d = obj.succeed(t(10, 2));
    assert_eq!(d.status.last_sync_time, Some(t(10, 2)));
    assert_eq!(
        (d.action, d.condition.reason, d.status.next_sync_time),
        (Action::WaitForSpecChange, Reason::Error, None)
    );
}

#[test]
fn day_of_month_or_day_of_week_through_the_machine() {
    let mut obj = Obj::new(schedule("0 0 1 * MON"));
    let mut now = t(0, 30);
    obj.sync(now, now);
    let mut fired = Vec::new();
    for _ in 0..12 {
        let Action::WaitUntil(at) = obj.pass(now).action else {
            panic!("waits")
        };
        fired.push(at);
        now = at;
        obj.sync(now, now);
    }
    assert!(
        fired
            .iter()
            .all(|d| d.day() == 1 || d.weekday() == Weekday::Mon),
        "{fired:?}"
    );
    assert!(
        fired
            .iter()
            .any(|d| d.day() == 1 && d.weekday() != Weekday::Mon),
        "the 1st: {fired:?}"
    );
}

#[test]
fn sunday_as_zero_and_seven_through_the_machine() {
    for expr in ["0 6 * * 0", "0 6 * * 7"] {
        let mut obj = Obj::new(schedule(expr));
        obj.sync(t(0, 0), t(0, 0));
        let next = obj.status.next_sync_time.expect("scheduled");
        assert_eq!(
            (next.weekday(), next),
            (Weekday::Sun, t(6 * 24 + 6, 0)),
            "{expr}"
        );
    }
}

#[test]
fn property_simulated_days_never_start_early_or_twice_per_slot() {
    let mut seed = 7_u64;
    let mut rand = |n: i64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as i64 % n
    };
    for expr in ["*/15 * * * *", "0 */2 * * *", "5 0 1 * MON", "@hourly"] {
        let parsed = Schedule::parse(expr).expect("valid");
        let mut obj = Obj::new(schedule(expr));
        let mut now = t(0, 0) + Duration::seconds(rand(3600));
        let mut starts = Vec::new();
        for _ in 0..3_000 {
            let before = obj.status.clone();
            let d = obj.pass(now);
            match d.action {
                Action::Start => {
                    if let Some(last) = before.last_sync_time {
                        let due = parsed.next_after(last).expect("fires");
                        assert!(now >= due, "{expr}: started at {now}, due {due}");
                    }
                    starts.push(now);
                }
                Action::WaitUntil(at) => assert!(
                    at > now && parsed.matches(at),
                    "{expr}: waits for {at} at {now}"
                ),
                Action::Continue => {
                    if rand(3) == 0 {
                        let d = obj.succeed(now);
                        let next = d.status.next_sync_time.expect("scheduled");
                        assert!(
                            next > now && parsed.matches(next),
                            "{expr}: next {next} after {now}"
                        );
                    }
                }
                other => panic!("{expr}: unexpected {other:?}"),
            }
            now += Duration::seconds(1 + rand(50 * 60));
        }
        // Between two starts lies at least one fire time: no slot is served twice.
        for w in starts.windows(2) {
            let slot = parsed.next_after(w[0]).expect("fires");
            assert!(slot <= w[1], "{expr}: {} and {} in one slot", w[0], w[1]);
        }
        assert!(starts.len() > 5, "{expr}: only {} starts", starts.len());
    }
}
