//! Arbitrary-input tests of the configuration file: any text is loaded or refused without
//! a panic, and a wrong value is refused with an error that names its key. Bounded runs;
//! the process environment is not read (an unused prefix stands in for it).

use std::io::Write as _;

use figment::providers::Env;
use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn load_text(text: &str) -> Result<Config, Error> {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    Config::figment(Some(file.path()), Env::prefixed("FERROSYNC_FUZZ_UNSET_"))
}

/// What a key holds, to make a value of the wrong kind for it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Duration,
    Integer,
    Bool,
    Text,
    Address,
    Format,
}

const KEYS: [(&str, &str, Kind); 20] = [
    ("server", "listen", Kind::Address),
    ("log", "format", Kind::Format),
    ("log", "level", Kind::Text),
    ("mover", "image", Kind::Text),
    ("mover", "backoff_limit", Kind::Integer),
    ("mover", "progress_interval", Kind::Duration),
    ("reconcile", "concurrency", Kind::Integer),
    ("requeue", "idle", Kind::Duration),
    ("requeue", "poll", Kind::Duration),
    ("requeue", "error_min", Kind::Duration),
    ("requeue", "error_max", Kind::Duration),
    ("leader_election", "enabled", Kind::Bool),
    ("leader_election", "lease_name", Kind::Text),
    ("leader_election", "lease_duration", Kind::Duration),
    ("leader_election", "renew_before", Kind::Duration),
    ("policy.engine", "max_concurrency", Kind::Integer),
    ("policy.engine", "epoch_tick", Kind::Duration),
    ("policy.engine", "cache_entries", Kind::Integer),
    ("policy.engine", "pooling", Kind::Bool),
    ("policy.engine", "reload_interval", Kind::Duration),
];

/// A TOML value that is certainly wrong for `kind`.
fn wrong_value(kind: Kind) -> BoxedStrategy<String> {
    let word = "[a-z]{1,8}";
    match kind {
        Kind::Duration => prop_oneof![
            word.prop_map(|w| format!("\"{w}\"")),
            (1u32..1000).prop_map(|n| format!("\"{n}parsecs\"")),
            Just("[]".to_owned()),
            Just("true".to_owned()),
        ]
        .boxed(),
        Kind::Integer => prop_oneof![
            word.prop_map(|w| format!("\"{w}\"")),
            Just("1.5".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just("{}".to_owned()),
        ]
        .boxed(),
        Kind::Bool => prop_oneof![
            word.prop_map(|w| format!("\"{w}\"")),
            (0i64..10).prop_map(|n| n.to_string()),
        ]
        .boxed(),
        Kind::Text => prop_oneof![
            (0i64..10).prop_map(|n| n.to_string()),
            Just("[1, 2]".to_owned()),
            Just("false".to_owned()),
        ]
        .boxed(),
        Kind::Address => prop_oneof![
            word.prop_map(|w| format!("\"{w}\"")),
            (65536u32..1_000_000).prop_map(|p| format!("\"0.0.0.0:{p}\"")),
            Just("8080".to_owned()),
        ]
        .boxed(),
        Kind::Format => word
            .prop_filter("not a format", |w| w != "text" && w != "json")
            .prop_map(|w| format!("\"{w}\""))
            .boxed(),
    }
}

fn bad_key() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    (0..KEYS.len()).prop_flat_map(|i| {
        let (section, key, kind) = KEYS[i];
        wrong_value(kind).prop_map(move |v| (section, key, v))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_file_is_loaded_or_refused_with_a_message(text in "([a-z_.\\[\\]=\" 0-9]{0,20}\n){0,8}|.{0,200}") {
        if let Err(e) = load_text(&text) {
            prop_assert!(e.to_string().starts_with("invalid configuration: "), "{e}");
            prop_assert!(e.to_string().len() > "invalid configuration: ".len());
        }
    }

    #[test]
    fn a_wrong_value_is_refused_naming_its_key((section, key, value) in bad_key()) {
        let text = format!("[{section}]\n{key} = {value}\n");
        let err = load_text(&text).expect_err("a wrong value loads").to_string();
        prop_assert!(err.contains(key), "{text}: {err}");
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it(section in prop::sample::select(KEYS.map(|k| k.0).to_vec()), key in "zz[a-z_]{1,10}") {
        let text = format!("[{section}]\n{key} = 1\n");
        let err = load_text(&text).expect_err("an unknown key loads").to_string();
        prop_assert!(err.contains(&key), "{text}: {err}");
    }
}
