use chrono::{Datelike, Duration, TimeZone, Timelike, Weekday};

use super::*;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid instant")
}

fn next(expr: &str, after: DateTime<Utc>) -> DateTime<Utc> {
    let schedule = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    schedule.next_after(after).expect("fires again")
}

/// The next `n` fire times after `after`.
fn upcoming(expr: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = after;
    for _ in 0..n {
        t = next(expr, t);
        out.push(t);
    }
    out
}

// 2024-01-01 is a Monday.
const JAN1: (i32, u32, u32) = (2024, 1, 1);

fn jan(d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    at(JAN1.0, JAN1.1, d, h, mi)
}

#[test]
fn table_of_next_times() {
    // (expression, after, expected next)
    let cases = [
        ("0 0 * * 1", jan(1, 12, 0), jan(8, 0, 0)),
        ("0 0 * * MON", jan(2, 0, 0), jan(8, 0, 0)),
        ("0 0 * * 0", jan(1, 0, 0), jan(7, 0, 0)),
        ("0 0 * * 7", jan(1, 0, 0), jan(7, 0, 0)),
        ("0 0 * * sun", jan(1, 0, 0), jan(7, 0, 0)),
        ("*/5 * * * *", jan(1, 0, 0), jan(1, 0, 5)),
        ("*/5 * * * *", jan(1, 0, 3), jan(1, 0, 5)),
        ("*/5 * * * *", jan(1, 23, 57), jan(2, 0, 0)),
        (
            "* * * * *",
            jan(1, 0, 0) + Duration::milliseconds(1),
            jan(1, 0, 1),
        ),
        ("5/15 * * * *", jan(1, 0, 50), jan(1, 1, 5)),
        ("10-20/5 3 * * *", jan(1, 3, 15), jan(1, 3, 20)),
        ("10-20/5 3 * * *", jan(1, 3, 20), jan(2, 3, 10)),
        ("0 9 * * 1-5", at(2024, 1, 5, 10, 0), jan(8, 9, 0)),
        ("0 9 * * MON-FRI", at(2024, 1, 5, 10, 0), jan(8, 9, 0)),
        ("0 9 * * 0,6", jan(1, 0, 0), jan(6, 9, 0)),
        ("0 9 * * 6,7", jan(6, 10, 0), jan(7, 9, 0)),
        ("0 9 * * 5-7", jan(6, 10, 0), jan(7, 9, 0)),
        ("0 0 * * */2", jan(1, 0, 0), jan(2, 0, 0)), // Sun, Tue, Thu, Sat
        ("0 0 * * 1/2", jan(5, 0, 0), jan(8, 0, 0)), // Mon, Wed, Fri: not Sunday
        ("0 0 1 * MON", jan(2, 0, 0), jan(8, 0, 0)),
        ("0 0 1 * MON", at(2024, 1, 29, 0, 0), at(2024, 2, 1, 0, 0)),
        ("0 0 */10 * 0", jan(1, 0, 0), jan(7, 0, 0)),
        ("0 0 1-31 * MON", jan(1, 0, 0), jan(2, 0, 0)), // both restricted: OR, every day
        ("0 0 * * *", jan(1, 0, 0), jan(2, 0, 0)),
        ("0 0 ? * 1", jan(1, 0, 0), jan(8, 0, 0)),
        ("0 0 29 2 *", jan(1, 0, 0), at(2024, 2, 29, 0, 0)),
        ("0 0 29 2 *", at(2024, 3, 1, 0, 0), at(2028, 2, 29, 0, 0)),
        ("0 0 31 * *", at(2024, 4, 1, 0, 0), at(2024, 5, 31, 0, 0)),
        (
            "0 12 * JAN,jul *",
            at(2024, 2, 1, 0, 0),
            at(2024, 7, 1, 12, 0),
        ),
        ("@annually", jan(1, 0, 0), at(2025, 1, 1, 0, 0)),
        ("@yearly", at(2024, 6, 1, 0, 0), at(2025, 1, 1, 0, 0)),
        ("@monthly", jan(1, 0, 0), at(2024, 2, 1, 0, 0)),
        ("@weekly", jan(1, 0, 0), jan(7, 0, 0)),
        ("@daily", jan(1, 0, 0), jan(2, 0, 0)),
        ("@midnight", jan(1, 5, 0), jan(2, 0, 0)),
        ("@hourly", jan(1, 5, 0), jan(1, 6, 0)),
        ("  0   3  * *  *  ", jan(1, 5, 0), jan(2, 3, 0)),
    ];
    for (expr, after, want) in cases {
        assert_eq!(next(expr, after), want, "{expr} after {after}");
    }
}

#[test]
fn monday_fires_only_on_mondays() {
    for t in upcoming("0 0 * * 1", jan(1, 0, 0), 20) {
        assert_eq!(t.weekday(), Weekday::Mon, "{t}");
    }
}

#[test]
fn sunday_is_zero_and_seven() {
    for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "@weekly"] {
        let times = upcoming(expr, jan(1, 0, 0), 10);
        assert!(
            times.iter().all(|t| t.weekday() == Weekday::Sun),
            "{expr}: {times:?}"
        );
        assert_eq!(times[1] - times[0], Duration::days(7), "{expr}");
    }
}

#[test]
fn restricted_day_fields_are_ored() {
    let times = upcoming("0 0 1 * MON", jan(1, 0, 0), 30);
    assert!(
        times
            .iter()
            .all(|t| t.day() == 1 || t.weekday() == Weekday::Mon)
    );
    assert!(
        times
            .iter()
            .any(|t| t.day() == 1 && t.weekday() != Weekday::Mon),
        "fires on the 1st: {times:?}"
    );
    assert!(
        times
            .iter()
            .any(|t| t.day() != 1 && t.weekday() == Weekday::Mon),
        "fires on Mondays: {times:?}"
    );
    let schedule = Schedule::parse("0 0 1 * MON").expect("valid");
    assert_eq!(schedule.translated(), ["0 0 0 1 * *", "0 0 0 * * MON"]);
}

#[test]
fn star_day_field_is_anded() {
    // `*` in either day field means "no restriction from this field" (AND).
    let schedule = Schedule::parse("0 0 * * 1-5").expect("valid");
    assert_eq!(schedule.translated(), ["0 0 0 * * MON,TUE,WED,THU,FRI"]);
    // A stepped star is a restriction, as in robfig: OR.
    let schedule = Schedule::parse("0 0 */2 * MON").expect("valid");
    assert_eq!(schedule.translated().len(), 2);
    // `*/1` keeps the star meaning.
    let schedule = Schedule::parse("0 0 */1 * MON").expect("valid");
    assert_eq!(schedule.translated(), ["0 0 0 * * MON"]);
}

#[test]
fn translation_is_explicit() {
    let cases = [
        ("*/5 * * * *", "0 0,5,10,15,20,25,30,35,40,45,50,55 * * * *"),
        ("*/60 * * * *", "0 0 * * * *"),
        ("0 0 * * 0,7", "0 0 0 * * SUN"),
        ("0 0 * * 0-7", "0 0 0 * * *"),
        ("0 0 * * */2", "0 0 0 * * SUN,TUE,THU,SAT"),
        ("@annually", "0 0 0 1 1 *"),
        ("@weekly", "0 0 0 * * SUN"),
    ];
    for (expr, want) in cases {
        assert_eq!(
            Schedule::parse(expr).expect("valid").translated(),
            [want],
            "{expr}"
        );
    }
}

#[test]
fn invalid_expressions_say_why() {
    let cases = [
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "found 6 field(s)"),
        ("", "found 0 field(s)"),
        (
            "61 * * * *",
            "minute field \"61\": 61 is out of range (allowed: 0-59)",
        ),
        ("* 24 * * *", "hour field"),
        (
            "* * 0 * *",
            "day-of-month field \"0\": 0 is out of range (allowed: 1-31)",
        ),
        (
            "* * * 13 *",
            "month field \"13\": 13 is out of range (allowed: 1-12 or JAN-DEC)",
        ),
        (
            "* * * * 8",
            "day-of-week field \"8\": 8 is out of range (allowed: 0-7 or SUN-SAT)",
        ),
        ("* * * * MONDAY", "is not a number"),
        ("* * * * 5-1", "range start 5 is after its end 1"),
        ("*/0 * * * *", "step \"0\" must be a positive whole number"),
        ("*/x * * * *", "step \"x\""),
        ("1,,2 * * * *", "\"\" is not a number"),
        ("MON * * * *", "\"MON\" is not a number (allowed: 0-59)"),
        ("@every 5m", "@every is not supported"),
        ("@daily extra", "unknown descriptor"),
        ("@reboot", "unknown descriptor"),
        ("@DAILY", "unknown descriptor"),
        (
            "CRON_TZ=UTC 0 0 * * *",
            "time zone prefixes are not supported",
        ),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ];
    for (expr, want) in cases {
        let err = Schedule::parse(expr).expect_err(expr).to_string();
        assert!(err.contains(want), "{expr:?}: {err:?} lacks {want:?}");
        assert!(
            err.contains(&format!("{expr:?}")),
            "{err:?} names the expression"
        );
    }
}

#[test]
fn impossible_day_of_month_is_fine_when_weekdays_are_ored() {
    // Feb 30 never exists, but the OR with Mondays still fires.
    let times = upcoming("0 0 30 2 MON", jan(1, 0, 0), 4);
    assert!(
        times
            .iter()
            .all(|t| t.month() == 2 && t.weekday() == Weekday::Mon),
        "{times:?}"
    );
}

/// Reference semantics, independent of the `cron` crate: the first whole minute after `t`
/// that `matches`, skipping days and hours that cannot match.
fn brute_next(s: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let f = &s.fields;
    let day_ok = |c: DateTime<Utc>| {
        let (dom, dow) = (
            f.dom.has(c.day()),
            f.dow.has(c.weekday().num_days_from_sunday()),
        );
        f.month.has(c.month())
            && if f.dom.star || f.dow.star {
                dom && dow
            } else {
                dom || dow
            }
    };
    let mut c = t.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
    let limit = t + Duration::days(366 * 9);
    while c < limit {
        if !day_ok(c) {
            c = (c + Duration::days(1)).with_hour(0)?.with_minute(0)?;
        } else if !f.hour.has(c.hour()) {
            c = c.with_minute(0)? + Duration::hours(1);
        } else if s.matches(c) {
            return Some(c);
        } else {
            c += Duration::minutes(1);
        }
    }
    None
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }

    fn field(&mut self, min: u32, max: u32) -> String {
        let span = max - min + 1;
        let parts = 1 + self.below(2);
        let mut out = Vec::new();
        for _ in 0..parts {
            let a = min + self.below(span);
            let b = a + self.below(max - a + 1);
            out.push(match self.below(7) {
                0 | 1 => "*".to_owned(),
                2 => format!("*/{}", 1 + self.below(span)),
                3 => a.to_string(),
                4 => format!("{a}-{b}"),
                5 => format!("{a}-{b}/{}", 1 + self.below(4)),
                _ => format!("{a}/{}", 1 + self.below(5)),
            });
        }
        out.join(",")
    }
}

#[test]
fn property_next_is_the_first_matching_minute_after_now() {
    let mut rng = Lcg(42);
    let mut checked = 0;
    while checked < 400 {
        let expr = format!(
            "{} {} {} {} {}",
            rng.field(0, 59),
            rng.field(0, 23),
            rng.field(1, 31),
            rng.field(1, 12),
            rng.field(0, 7),
        );
        let Ok(schedule) = Schedule::parse(&expr) else {
            continue;
        };
        let now = at(
            2023 + rng.below(4) as i32,
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
        ) + Duration::seconds(i64::from(rng.below(60)));
        let got = schedule.next_after(now).expect("fires");
        assert!(got > now, "{expr}: {got} <= {now}");
        assert!(schedule.matches(got), "{expr}: {got} does not match");
        assert_eq!(
            Some(got),
            brute_next(&schedule, now),
            "{expr} after {now} ({:?})",
            schedule.translated()
        );
        checked += 1;
    }
}

#[test]
fn property_fixed_schedules_over_many_instants() {
    let exprs = [
        "0 0 1 * MON",
        "*/7 */5 * * 0,7",
        "30 2 15 * 5",
        "0 0 * * 1-5",
        "@weekly",
        "0 0 31 * *",
    ];
    for expr in exprs {
        let schedule = Schedule::parse(expr).expect("valid");
        let mut now = at(2024, 1, 1, 0, 0);
        for _ in 0..300 {
            let got = schedule.next_after(now).expect("fires");
            assert!(
                got > now && schedule.matches(got),
                "{expr} after {now}: {got}"
            );
            assert_eq!(Some(got), brute_next(&schedule, now), "{expr} after {now}");
            now += Duration::minutes(1_777) + Duration::seconds(13);
        }
    }
}
