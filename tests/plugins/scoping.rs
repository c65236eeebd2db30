//! Scoping and shadow mode with the real copy-method component: bindings choose the
//! bundle per namespace (by name, by label, or the default), overlaps are refused at load
//! while the old set keeps serving, and a shadow candidate is compared and counted but
//! never decides.

use std::{collections::BTreeMap, sync::Arc};

use ferrosync::{
    api::CopyMethod,
    policy::{
        EngineOptions, FailureMode, PolicyConfig, PolicyEngine,
        namespaces::StaticNamespaceLabels,
        scope::{BindingConfig, LabelSelector},
        shadow::{ShadowConfig, ShadowOutcome},
    },
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use serde_json::json;

use super::common::*;

/// EBS volumes snapshot and cannot clone: the plugin chooses Snapshot.
fn ebs_settings() -> serde_json::Value {
    json!({
        "default": {"clone": true, "snapshot": true},
        "drivers": {"ebs.csi.aws.com": {
            "clone": false, "snapshot": true, "prefer": "snapshot",
            "snapshot_class": "ebs-snapclass", "pit_storage_class": "gp3"
        }}
    })
}

/// Every driver clones: the plugin keeps the requested Clone.
fn clone_settings() -> serde_json::Value {
    json!({"default": {"clone": true, "snapshot": true}})
}

fn binding(name: &str, settings: serde_json::Value) -> BindingConfig {
    BindingConfig {
        name: name.into(),
        copy_method: point(spec("copy-method-by-driver", settings), FailureMode::Fail),
        ..BindingConfig::default()
    }
}

fn labels_of(pairs: &[(&str, &[(&str, &str)])]) -> StaticNamespaceLabels {
    StaticNamespaceLabels(
        pairs
            .iter()
            .map(|(ns, l)| {
                let labels: BTreeMap<String, String> = l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (ns.to_string(), labels)
            })
            .collect(),
    )
}

async fn engine_with_labels(config: &PolicyConfig, labels: StaticNamespaceLabels) -> PolicyEngine {
    PolicyEngine::new(
        config,
        EngineOptions {
            namespaces: Arc::new(labels),
            ..EngineOptions::default()
        },
    )
    .await
    .expect("engine loads")
}

fn in_namespace(ns: &str) -> ferrosync::policy::CopyMethodInput {
    let mut input = copy_input();
    input.pvc.namespace = ns.into();
    input
}

fn two_teams() -> PolicyConfig {
    let mut team_a = binding("team-a", ebs_settings());
    team_a.namespaces = vec!["team-a".into()];
    let mut team_b = binding("team-b", clone_settings());
    team_b.namespace_selector = Some(LabelSelector {
        match_labels: [("team".to_owned(), "b".to_owned())].into(),
        ..LabelSelector::default()
    });
    PolicyConfig {
        bindings: vec![team_a, team_b],
        ..PolicyConfig::default()
    }
}

#[tokio::test]
async fn two_namespaces_with_different_bundles_decide_differently() {
    assert!(build().success, "{}", build().output);
    let labels = labels_of(&[("team-b-apps", &[("team", "b")]), ("team-a", &[])]);
    let engine = engine_with_labels(&two_teams(), labels).await;

    let a = engine.copy_method(&in_namespace("team-a")).await.unwrap();
    let b = engine
        .copy_method(&in_namespace("team-b-apps"))
        .await
        .unwrap();
    let other = engine.copy_method(&in_namespace("other")).await.unwrap();
    assert_eq!(a.decision.method, CopyMethod::Snapshot, "{a:?}");
    assert_eq!(a.provenance.binding, "team-a");
    assert_eq!(b.decision.method, CopyMethod::Clone, "{b:?}");
    assert_eq!(b.provenance.binding, "team-b");
    // Both answered by the plugin, each under its own binding, as status.policy shows.
    for d in [&a.provenance, &b.provenance] {
        assert_eq!(d.plugin.as_deref(), Some("copy-method-by-driver"));
        assert!(
            d.decided_by()
                .ends_with(&format!("(binding {})", d.binding))
        );
    }
    // No binding selects "other": the cluster-wide default (here the built-in) answers.
    assert_eq!(other.provenance.binding, "default");
    assert_eq!(other.provenance.plugin, None);
    assert_eq!(other.provenance.decided_by(), "built-in");
}

#[tokio::test]
async fn a_namespace_selected_twice_follows_the_fixed_precedence_and_says_so() {
    assert!(build().success, "{}", build().output);
    // team-a is listed by name; its labels now also match team-b's selector.
    let labels = labels_of(&[("team-a", &[("team", "b")])]);
    let engine = engine_with_labels(&two_teams(), labels).await;
    let d = engine.copy_method(&in_namespace("team-a")).await.unwrap();
    assert_eq!(d.provenance.binding, "team-a", "by name beats by label");
    assert_eq!(d.decision.method, CopyMethod::Snapshot);
    assert_eq!(d.provenance.overruled, vec!["team-b".to_owned()]);
    let warning = d.provenance.overruled_message().expect("a warning");
    assert!(
        warning.contains("team-b") && warning.contains("precedence"),
        "{warning}"
    );
}

#[tokio::test]
async fn overlapping_bindings_are_refused_and_the_old_set_keeps_serving() {
    assert!(build().success, "{}", build().output);
    let labels = labels_of(&[]);
    let mut overlapping = two_teams();
    let mut also_a = binding("also-a", clone_settings());
    also_a.namespaces = vec!["team-a".into()];
    overlapping.bindings.push(also_a);
    let err = PolicyEngine::new(&overlapping, EngineOptions::default())
        .await
        .err()
        .expect("refused at start");
    assert!(err.to_string().contains("overlap"), "{err}");

    let engine = engine_with_labels(&two_teams(), labels).await;
    let err = engine.reload(&overlapping).await.expect_err("refused");
    assert!(err.to_string().contains("team-a"), "{err}");
    let a = engine.copy_method(&in_namespace("team-a")).await.unwrap();
    assert_eq!(
        (a.provenance.binding.as_str(), a.decision.method),
        ("team-a", CopyMethod::Snapshot),
        "the old set serves"
    );
}

#[tokio::test]
async fn a_shadow_candidate_is_compared_and_counted_never_acted_on() {
    assert!(build().success, "{}", build().output);
    let mut team_a = binding("team-a", clone_settings());
    team_a.namespaces = vec!["team-a".into()];
    team_a.shadow = ShadowConfig {
        copy_method: point(
            spec("copy-method-by-driver", ebs_settings()),
            FailureMode::Fail,
        ),
        ..ShadowConfig::default()
    };
    let config = PolicyConfig {
        bindings: vec![team_a],
        ..PolicyConfig::default()
    };
    let engine = engine(&config).await;
    let mut registry = Registry::default();
    engine.metrics().register(&mut registry);

    let first = engine.copy_method(&in_namespace("team-a")).await.unwrap();
    assert_eq!(
        first.decision.method,
        CopyMethod::Clone,
        "the active decides"
    );
    let shadow = first.provenance.shadow.clone().expect("the candidate ran");
    assert_eq!(shadow.outcome, ShadowOutcome::Differ, "{shadow:?}");
    assert!(shadow.candidate.starts_with("Snapshot"), "{shadow:?}");
    assert!(shadow.first_difference, "announced once");
    let again = engine.copy_method(&in_namespace("team-a")).await.unwrap();
    assert_eq!(again.decision.method, CopyMethod::Clone);
    assert!(!again.provenance.shadow.unwrap().first_difference);
    // A namespace no binding selects has no candidate.
    let other = engine.copy_method(&in_namespace("other")).await.unwrap();
    assert!(other.provenance.shadow.is_none());

    let log = engine.shadow_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .all(|r| r.binding == "team-a" && r.namespace == "team-a")
    );
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("ferrosync_policy_shadow_decisions_total{")
                && l.contains("outcome=\"differ\"")
        })
        .unwrap_or_else(|| panic!("a differ series:\n{text}"));
    assert!(line.contains("point=\"copy-method\"") && line.contains("binding=\"team-a\""));
    assert!(line.ends_with(" 2"), "{line}");
}
