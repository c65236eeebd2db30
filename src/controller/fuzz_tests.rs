//! Arbitrary-input tests of the controller's parsers of outside input: a mover's
//! termination message (a summary, or the log tail the kubelet substitutes when the mover
//! wrote none) and `trigger.schedule`. None may panic; an invalid schedule's error names
//! the expression, and a bad field's error names the field and the token. Bounded runs.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::{mover_run::mover_report, schedule::Schedule};
use crate::{
    api::MoverResult,
    mover::{
        ErrorClass,
        summary::{Outcome, Role, Summary},
    },
};

/// The longest `latestMoverStatus.logs`, as `mover_run` bounds it.
const MAX_LOGS: usize = 2048;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

prop_compose! {
    /// A summary as a hostile or broken mover might write it: any counts, any lines.
    fn wild_summary()(
        failed in any::<bool>(),
        auth_failure in any::<bool>(),
        class in prop::option::of(prop::sample::select(ErrorClass::ALL.to_vec())),
        message in prop::option::of(".{0,2500}"),
        stats in prop::collection::vec(".{0,400}", 0..8),
        errors in prop::collection::vec(".{0,600}", 0..12),
        errors_omitted in prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()],
    ) -> Summary {
        Summary {
            role: Role::Source,
            result: if failed { Outcome::Failed } else { Outcome::Succeeded },
            exit_code: 15,
            error_class: class,
            transient: None,
            auth_failure,
            message,
            bytes_sent: 0,
            bytes_received: 0,
            files_transferred: 0,
            files_deleted: 0,
            attempts: 1,
            duration_seconds: 1.0,
            stats,
            errors,
            errors_omitted,
        }
    }
}

/// One field of a cron expression that is certainly wrong, with its name and the token.
fn bad_field() -> impl Strategy<Value = (usize, &'static str, String)> {
    const NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const OVER: [u32; 5] = [60, 24, 32, 13, 8];
    (0usize..5, 0u8..5, 0u32..1000, "[g-z]{1,6}").prop_map(|(i, kind, n, word)| {
        let token = match kind {
            0 => (OVER[i] + n).to_string(),
            1 => format!("x{word}"),
            2 => format!("{}-{}", 5 + n % 3, n % 3),
            3 => "*/0".to_owned(),
            _ => format!("1/{word}"),
        };
        (i, NAMES[i], token)
    })
}

fn good_field(i: usize) -> BoxedStrategy<String> {
    const MAX: [u32; 5] = [59, 23, 28, 12, 6];
    const MIN: [u32; 5] = [0, 0, 1, 1, 0];
    let (lo, hi) = (MIN[i], MAX[i]);
    prop_oneof![
        Just("*".to_owned()),
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1u32..10).prop_map(|s| format!("*/{s}")),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_termination_message_gives_bounded_logs(text in ".{0,3000}|\\{\"role\":.{0,200}", failed in any::<bool>()) {
        let result = if failed { MoverResult::Failed } else { MoverResult::Successful };
        let report = mover_report(result, Some(&text));
        prop_assert!(report.status.logs.as_ref().is_none_or(|l| l.len() <= MAX_LOGS));
        prop_assert_eq!(report.status.result, Some(result));
    }

    #[test]
    fn any_summary_gives_bounded_logs_without_overflow(summary in wild_summary()) {
        let json = serde_json::to_string(&summary).expect("serialises");
        let report = mover_report(MoverResult::Failed, Some(&json));
        prop_assert_eq!(report.summary.as_ref(), Some(&summary));
        let logs = report.status.logs.unwrap_or_default();
        prop_assert!(logs.len() <= MAX_LOGS, "{} bytes", logs.len());
    }

    #[test]
    fn any_schedule_text_is_parsed_or_refused_naming_itself(expr in "([0-9*/,?@A-Za-z-]{0,6}[ \t]{0,2}){0,7}|.{0,60}") {
        match Schedule::parse(&expr) {
            Ok(s) => {
                let from: DateTime<Utc> = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("instant");
                if let Some(next) = s.next_after(from) {
                    prop_assert!(next > from);
                    prop_assert!(s.matches(next), "{expr}: {next} does not match");
                }
            }
            Err(e) => prop_assert!(e.to_string().contains(&format!("{expr:?}")), "{e}"),
        }
    }

    #[test]
    fn a_bad_field_is_named_with_its_token(
        (i, name, token) in bad_field(),
        fields in (good_field(0), good_field(1), good_field(2), good_field(3), good_field(4)),
    ) {
        let mut parts = [fields.0, fields.1, fields.2, fields.3, fields.4];
        parts[i] = token.clone();
        let expr = parts.join(" ");
        let err = Schedule::parse(&expr).expect_err("a bad field is refused").to_string();
        prop_assert!(err.contains(&format!("{name} field")), "{expr}: {err}");
        prop_assert!(err.contains(&format!("{token:?}")), "{expr}: {err}");
    }

    #[test]
    fn valid_schedules_fire_on_matching_minutes(
        fields in (good_field(0), good_field(1), good_field(2), good_field(3), good_field(4)),
        start in 0i64..2_000_000_000,
    ) {
        let expr = [fields.0, fields.1, fields.2, fields.3, fields.4].join(" ");
        let s = Schedule::parse(&expr).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from = Utc.timestamp_opt(start, 0).single().expect("instant");
        let next = s.next_after(from).expect("fires before 2100");
        prop_assert!(next > from);
        prop_assert!(s.matches(next), "{expr}: {next}");
    }
}
