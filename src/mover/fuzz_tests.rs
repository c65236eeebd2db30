//! Arbitrary-input tests of every mover parser that reads what others wrote: rsync's
//! output, the rsync daemon's log, the summary and progress lines, the session gate's
//! inputs, the control module's lists and limits. None may panic; where a parser returns
//! an error, the error names what was wrong. Runs are bounded (a few hundred cases each)
//! so the suite stays fast.

use proptest::prelude::*;

use super::{
    control, rsync_out,
    session::{self, State, Token},
    summary::{MAX_SUMMARY_BYTES, Outcome, Progress, Role, Summary},
    symlinks,
};
use crate::mover::exit::ErrorClass;

fn config() -> ProptestConfig {
    config_with(256)
}

fn config_with(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that looks like rsync's: its prefixes, digits, commas, quotes, escapes and any
/// Unicode, so the parsers' interesting branches are reached.
fn rsync_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Total bytes sent: ".to_owned()),
        Just("Total bytes received:".to_owned()),
        Just("Number of regular files transferred:".to_owned()),
        Just("Number of deleted files: ".to_owned()),
        Just("sent ".to_owned()),
        Just(" received ".to_owned()),
        Just("total size is ".to_owned()),
        Just("rsync: ".to_owned()),
        Just("rsync warning: ".to_owned()),
        Just("file has vanished: ".to_owned()),
        Just("(code ".to_owned()),
        Just("xfr#".to_owned()),
        Just("%".to_owned()),
        Just("\"".to_owned()),
        Just("*deleting".to_owned()),
        Just(",".to_owned()),
        "[0-9,]{0,30}",
        "[<>ch.][fdLDS][.+a-z]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn any_class() -> impl Strategy<Value = Option<ErrorClass>> {
    prop::option::of(prop::sample::select(ErrorClass::ALL.to_vec()))
}

prop_compose! {
    fn any_summary()(
        source in any::<bool>(),
        ok in any::<bool>(),
        exit_code in any::<u8>(),
        error_class in any_class(),
        transient in any::<Option<bool>>(),
        auth_failure in any::<bool>(),
        message in prop::option::of(".{0,5000}"),
        counters in any::<[u64; 5]>(),
        attempts in any::<u32>(),
        duration_seconds in 0.0f64..1e12,
        stats in prop::collection::vec(".{0,300}", 0..20),
        errors in prop::collection::vec(".{0,300}", 0..25),
    ) -> Summary {
        Summary {
            role: if source { Role::Source } else { Role::Destination },
            result: if ok { Outcome::Succeeded } else { Outcome::Failed },
            exit_code,
            error_class,
            transient,
            auth_failure,
            message,
            bytes_sent: counters[0],
            bytes_received: counters[1],
            files_transferred: counters[2],
            files_deleted: counters[3],
            attempts,
            duration_seconds,
            stats,
            errors,
            errors_omitted: counters[4],
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rsync_output_parsers_never_panic(line in rsync_like(), max in 0usize..300) {
        let mut stats = rsync_out::Stats::default();
        let _ = stats.absorb(&line);
        let _ = rsync_out::parse_progress2(&line);
        let _ = rsync_out::is_itemized(line.as_bytes());
        let _ = rsync_out::is_file_error(&line);
        let _ = rsync_out::is_out_of_space(&line);
        let _ = rsync_out::is_summary_line(&line);
        let relative = rsync_out::relative_names(&line, &["/data/".to_owned(), String::new()]);
        prop_assert!(relative.len() <= line.len());
        let cut = rsync_out::bounded(&line, max);
        // At most `max` bytes (or just the ellipsis when `max` cannot hold it), a prefix.
        prop_assert!(cut.len() <= max.max('…'.len_utf8()), "{} > {max}", cut.len());
        prop_assert!(line.starts_with(cut.trim_end_matches('…')));
    }

    #[test]
    fn stats_and_progress_numbers_are_read_back(n in any::<u64>(), pct in 0u8..=100, files in any::<u32>()) {
        let with_commas = |n: u64| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        };
        let mut stats = rsync_out::Stats::default();
        let absorbed = stats.absorb(&format!("Total bytes sent: {}", with_commas(n)));
        prop_assert!(absorbed);
        prop_assert_eq!(stats.bytes_sent, n);
        let line = format!("  {}  {pct}%  1.00MB/s  0:00:01 (xfr#{files}, to-chk=1/2)", with_commas(n));
        prop_assert_eq!(rsync_out::parse_progress2(&line), Some((n, pct, u64::from(files))));
    }

    #[test]
    fn arbitrary_termination_messages_are_rejected_with_a_reason(text in ".{0,300}") {
        if let Err(e) = serde_json::from_str::<Summary>(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn progress_lines_parse_only_when_whole(line in ".{0,200}", p in any::<(u64, u64, u8, u64, u64)>()) {
        let _ = Progress::parse(&line);
        let progress = Progress { bytes: p.0, rate: p.1, percent: p.2, files: p.3, elapsed: p.4 };
        let printed = format!("{line} {progress}");
        prop_assert_eq!(Progress::parse(&printed), Some(progress));
        // A cut line is not mistaken for a whole one.
        let shown = progress.to_string();
        let cut = &shown[..shown.rfind(' ').unwrap_or(0)];
        prop_assert_eq!(Progress::parse(cut), None);
    }

    #[test]
    fn session_inputs_never_panic_and_bad_tokens_are_named(text in ".{0,200}", args in prop::collection::vec(".{0,80}", 0..6)) {
        let _ = State::parse(&text);
        let _ = Token::from_server_args(args.iter().map(String::as_str));
        match Token::parse(&text) {
            Ok(t) => prop_assert_eq!(Token::parse(&text).ok(), Some(t)),
            Err(e) => prop_assert!(e.to_string().contains("32 lowercase hex digits"), "{e}"),
        }
        let claimed = State { owner: Some(Token::generate()), claimed: true, ..State::default() };
        // Random contents never name a freshly drawn token.
        prop_assert!(session::check_complete(&claimed, text.as_bytes()).is_err());
    }

    #[test]
    fn state_files_round_trip(owner in any::<bool>(), claimed in any::<bool>(), seen in any::<u64>(), active in any::<Option<u32>>(), revoked in 0usize..5) {
        let revoked = (0..revoked).map(|_| Token::generate()).collect();
        let s = State { owner: owner.then(Token::generate), claimed, seen, active, revoked };
        prop_assert_eq!(State::parse(&s.render()), s);
    }

    #[test]
    fn control_limits_parse_or_say_what_is_expected(text in "[0-9]{0,22}(Ki|Mi|Gi|MB|)|.{0,20}") {
        match control::parse_limit(&text) {
            Ok(n) => prop_assert!(n > 0),
            Err(e) => {
                prop_assert!(e.contains("positive byte count"), "{e}");
                prop_assert!(e.contains(&format!("{text:?}")), "{e}");
            }
        }
    }

    #[test]
    fn symlink_lists_split_into_non_empty_entries(bytes in prop::collection::vec(any::<u8>(), 0..400), sep in prop::sample::select(vec![0u8, b'\n'])) {
        let list = symlinks::decode_list(&bytes, sep);
        prop_assert!(list.iter().all(|p| !p.is_empty() && !p.contains(&sep)));
        let total: usize = list.iter().map(Vec::len).sum();
        prop_assert_eq!(total, bytes.iter().filter(|b| **b != sep).count());
        if sep == 0 {
            prop_assert_eq!(symlinks::decode_list(&symlinks::encode_nul_list(&list), 0), list);
        }
    }
}

proptest! {
    // Large summaries: fewer cases keep the run short.
    #![proptest_config(config_with(48))]

    #[test]
    fn any_summary_serialises_within_the_kubelets_limit_and_reads_back(s in any_summary()) {
        let json = s.to_bounded_json();
        prop_assert!(json.len() <= MAX_SUMMARY_BYTES, "{} bytes", json.len());
        let back: Summary = serde_json::from_str(&json).expect("a bounded summary parses");
        prop_assert_eq!(back.role, s.role);
        prop_assert_eq!(back.exit_code, s.exit_code);
        prop_assert_eq!(back.error_class, s.error_class);
        prop_assert!(back.errors.len() <= s.errors.len());
    }
}
