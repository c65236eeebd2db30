//! Arbitrary-input tests of what the policy host reads from others: plugin outputs (every
//! field of every decision, and the psk world's `release` answer), a bundle's
//! `policy.toml` and its `tests.json`. None may panic; a refusal names what was wrong (the
//! field, key, value or file). Bounded runs.

use std::{fs, path::Path};

use proptest::prelude::*;

use super::{
    bindings::wit,
    golden::read_table,
    plugin::{BundleFile, POLICY_FILE},
    release::validate_release,
    types::CopyMethodInput,
    validate::{self, InvalidOutput, MAX_ANNOTATIONS, MAX_REASON_BYTES},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Names a plugin might return: valid ones, near misses, and anything.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?",
        "[A-Za-z0-9._ -]{0,30}",
        ".{0,300}",
    ]
}

fn reason() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        ".{1020,1100}",
        "[\\x00-\\x1f\\u{202e}\\u{200b}a]{0,50}"
    ]
}

fn method() -> impl Strategy<Value = wit::Method> {
    prop::sample::select(vec![
        wit::Method::Direct,
        wit::Method::Clone,
        wit::Method::Snapshot,
    ])
}

prop_compose! {
    fn copy_case()(
        method in method(),
        vsc in prop::option::of(name()),
        sc in prop::option::of(name()),
        reason in reason(),
        snapshot_classes in prop::collection::vec(name(), 0..3),
        storage_classes in prop::collection::vec(name(), 0..3),
    ) -> (wit::CopyMethodDecision, CopyMethodInput) {
        let input = CopyMethodInput { snapshot_classes, storage_classes, ..CopyMethodInput::default() };
        (wit::CopyMethodDecision { method, volume_snapshot_class: vsc, storage_class: sc, reason }, input)
    }
}

/// The named thing must appear in the error, so people know what to fix.
fn names_culprit(err: &InvalidOutput, raw: &wit::CopyMethodDecision) -> bool {
    let text = err.to_string();
    match err {
        InvalidOutput::BadName { name, .. } | InvalidOutput::Missing { name, .. } => {
            text.contains(&format!("{name:?}"))
                && [&raw.volume_snapshot_class, &raw.storage_class]
                    .iter()
                    .any(|n| n.as_deref() == Some(name.as_str()))
        }
        InvalidOutput::ReasonTooLong(n) => *n == raw.reason.len() && text.contains("reason"),
        InvalidOutput::NoSnapshotClass => text.contains("VolumeSnapshotClass"),
        // Checks added later must still say which field or value is wrong.
        _ => {
            text.to_ascii_lowercase().contains("class")
                || [&raw.volume_snapshot_class, &raw.storage_class]
                    .into_iter()
                    .flatten()
                    .any(|n| text.contains(&format!("{n:?}")))
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn copy_method_outputs_are_validated_without_panics((raw, input) in copy_case()) {
        match validate::copy_method(raw.clone(), &input) {
            Ok(d) => {
                prop_assert!(d.reason.len() <= MAX_REASON_BYTES);
                prop_assert!(!d.reason.chars().any(char::is_control), "{:?}", d.reason);
                for n in [&d.volume_snapshot_class, &d.storage_class].into_iter().flatten() {
                    prop_assert!(validate::is_dns1123_subdomain(n));
                }
            }
            Err(e) => prop_assert!(names_culprit(&e, &raw), "{e} for {raw:?}"),
        }
    }

    #[test]
    fn service_type_outputs_are_validated_without_panics(
        lb in any::<bool>(),
        annotations in prop::collection::vec((prop_oneof!["[a-z.]{1,20}/[a-zA-Z0-9_.-]{1,20}", ".{0,70}"], ".{0,600}"), 0..40),
        reason in reason(),
    ) {
        let raw = wit::ServiceTypeDecision {
            service_type: if lb { wit::ServiceType::LoadBalancer } else { wit::ServiceType::ClusterIp },
            annotations: annotations.clone(),
            reason: reason.clone(),
        };
        match validate::service_type(raw) {
            Ok(d) => {
                prop_assert!(d.annotations.len() <= MAX_ANNOTATIONS);
                prop_assert!(d.annotations.keys().all(|k| validate::is_annotation_key(k)));
            }
            Err(e) => {
                let text = e.to_string();
                let named = match &e {
                    InvalidOutput::BadAnnotationKey(k) | InvalidOutput::DuplicateAnnotation(k) =>
                        annotations.iter().any(|(a, _)| a == k) && text.contains(&format!("{k:?}")),
                    InvalidOutput::TooManyAnnotations(n) => *n == annotations.len(),
                    InvalidOutput::AnnotationsTooLarge(_) => text.contains("annotations total"),
                    InvalidOutput::ReasonTooLong(n) => *n == reason.len(),
                    _ => false,
                };
                prop_assert!(named, "{text}");
            }
        }
    }

    #[test]
    fn psk_outputs_are_validated_without_panics_or_echoing_the_key(
        kind in 0u8..3,
        identity in prop_oneof!["[a-z]{1,10}", ".{0,300}"],
        key_hex in prop_oneof!["[0-9a-f]{0,300}", ".{0,100}"],
        reason in reason(),
    ) {
        let answer = match kind {
            0 => wit::PskAnswer::UseKey(wit::Key { identity, key_hex: key_hex.clone() }),
            1 => wit::PskAnswer::GenerateLocally,
            _ => wit::PskAnswer::NotAvailableYet,
        };
        if let Err(e) = validate::psk(wit::PskDecision { answer, reason: reason.clone() }) {
            let text = e.to_string();
            // It names what was wrong: the key (identity or hex digits) or the reason.
            let named = match &e {
                InvalidOutput::BadKey(_) => text.starts_with("invalid key: "),
                InvalidOutput::ReasonTooLong(n) => *n == reason.len(),
                _ => false,
            };
            prop_assert!(named, "{text}");
            if key_hex.len() >= 8 {
                prop_assert!(!text.contains(&key_hex), "the key leaked into {text}");
            }
        }
    }

    #[test]
    fn any_policy_toml_is_read_or_refused_naming_the_bundle(text in "([a-z_.\\[\\]=\" 0-9]{0,24}\n){0,8}|.{0,200}") {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(POLICY_FILE), &text).expect("write");
        if let Err(e) = BundleFile::read(dir.path()) {
            prop_assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
        }
    }

    #[test]
    fn a_wrong_value_in_policy_toml_is_refused_naming_its_key(
        (key, value) in prop::sample::select(vec![
            ("decision", "\"no-such-point\""),
            ("decision", "3"),
            ("tests", "[1]"),
            ("plugin.name", "7"),
            ("plugin.wasm", "false"),
            ("plugin.limits.fuel", "\"lots\""),
            ("plugin.limits.timeout", "\"soon\""),
            ("plugin.limits.memory_mib", "-1"),
            ("plugin.grants.random", "\"yes\""),
        ]),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fields = vec![
            ("decision".to_owned(), "\"copy-method\"".to_owned()),
            ("plugin.name".to_owned(), "\"p\"".to_owned()),
            ("plugin.wasm".to_owned(), "\"p.wasm\"".to_owned()),
            ("plugin.sha256".to_owned(), format!("\"{}\"", "0".repeat(64))),
        ];
        fields.retain(|(k, _)| k != key);
        fields.push((key.to_owned(), value.to_owned()));
        let text: String = fields.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        fs::write(dir.path().join(POLICY_FILE), &text).expect("write");
        let err = BundleFile::read(dir.path()).expect_err("a wrong value loads").to_string();
        let leaf = key.rsplit('.').next().unwrap_or(key);
        prop_assert!(err.contains(leaf), "{text}: {err}");
    }

    #[test]
    fn any_tests_json_is_read_or_refused_naming_the_file(text in ".{0,300}|\\{\"cases\":\\[.{0,100}\\]\\}") {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tests.json");
        fs::write(&path, &text).expect("write");
        if let Err(e) = read_table(&path) {
            prop_assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn a_wrong_field_in_tests_json_is_refused_naming_it(
        (field, value) in prop::sample::select(vec![
            ("name", "1"),
            ("name", "null"),
            ("input", "\"\""),
            ("http", "{}"),
            ("expect", "{\"verdict\": 1}"),
            ("expect", "[]"),
        ]),
        case in 0usize..3,
    ) {
        let good = r#"{"name": "ok", "input": {}, "expect": {"error": "x"}}"#;
        let mut cases = vec![good.to_owned(); 3];
        let mut bad: serde_json::Value = serde_json::from_str(good).expect("json");
        bad[field] = serde_json::from_str(value).expect("json");
        cases[case] = bad.to_string();
        let text = format!("{{\"cases\": [{}]}}", cases.join(","));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tests.json");
        fs::write(&path, &text).expect("write");
        match read_table(&path) {
            // `input` is free-form JSON: a string is a valid (if odd) input.
            Ok(_) => prop_assert_eq!(field, "input"),
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains(&format!("cases[{case}]")), "{text}");
                prop_assert!(text.contains(field) || field == "expect", "{text}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The psk world's `release` answer is a plugin output too (added after the others):
    /// any reason is bounded and cleaned, or refused naming its length.
    #[test]
    fn release_outputs_are_validated_without_panics(
        outcome in prop::sample::select(vec![
            wit::ReleaseOutcome::Left,
            wit::ReleaseOutcome::Deleted,
            wit::ReleaseOutcome::NoSuchPair,
        ]),
        reason in reason(),
    ) {
        match validate_release(wit::PskRelease { outcome, reason: reason.clone() }) {
            Ok(r) => {
                prop_assert!(r.reason.len() <= MAX_REASON_BYTES);
                prop_assert!(
                    !r.reason.chars().any(|c| c.is_control() || c == '\u{202e}' || c == '\u{200b}'),
                    "{:?}", r.reason
                );
            }
            Err(e) => {
                prop_assert_eq!(&e, &InvalidOutput::ReasonTooLong(reason.len()));
                prop_assert!(e.to_string().contains(&reason.len().to_string()), "{e}");
            }
        }
    }
}

#[test]
fn read_table_names_a_missing_file() {
    let err = read_table(Path::new("/nonexistent/tests.json")).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/tests.json"), "{err}");
}
