//! Hostile plugins, built in this run: each is contained within its limits, the
//! configured failure mode applies, the reason is reported, and a good plugin next to it
//! keeps deciding.

use std::time::{Duration, Instant};

use ferrosync::{
    api::CopyMethod,
    policy::{DecidedBy, FailureKind, FailureMode, Limits, PolicyConfig, PolicyError, Side},
};
use serde_json::json;

use super::common::*;

/// An engine serving copy-method with `hostile-copy-method` in `mode`, next to the good
/// multi-cluster plugin.
pub(super) async fn hostile_copy(
    mode: &str,
    limits: Limits,
    on_failure: FailureMode,
) -> ferrosync::policy::PolicyEngine {
    let mut s = spec("hostile-copy-method", json!({ "mode": mode }));
    s.limits = limits;
    let config = PolicyConfig {
        copy_method: point(s, on_failure),
        ..config_with_good_neighbour()
    };
    engine(&config).await
}

pub(super) fn small() -> Limits {
    Limits {
        fuel: 5_000_000,
        timeout: Duration::from_secs(5),
        memory_mib: 16,
    }
}

/// Falls back to the built-in decision and says why.
async fn expect_fallback(mode: &str, limits: Limits, kind: FailureKind, says: &str) {
    let engine = hostile_copy(mode, limits, FailureMode::Fallback).await;
    let d = engine
        .copy_method(&copy_input())
        .await
        .expect("fallback decides");
    let failure = d.provenance.failure.clone().expect("failure reported");
    assert_eq!(failure.kind, kind, "{mode}: {failure}");
    assert!(failure.message.contains(says), "{mode}: {failure}");
    assert_eq!(d.provenance.decided_by, DecidedBy::Fallback);
    // The built-in default: the requested Clone.
    assert_eq!(d.decision.method, CopyMethod::Clone);
    assert!(d.decision.reason.starts_with("built-in"));
    let event = d.provenance.event(&d.decision.reason);
    assert!(event.warning);
    assert_eq!(event.reason, kind.event_reason());
    assert!(event.message.contains("failed"), "{}", event.message);
    assert_good_neighbour_works(&engine).await;
    // The hostile plugin's point still answers on the next decision, too.
    let again = engine
        .copy_method(&copy_input())
        .await
        .expect("fallback again");
    assert_eq!(again.provenance.failure.map(|f| f.kind), Some(kind));
}

/// Fails the decision (the reconcile's Error condition) and says why.
pub(super) async fn expect_fail(
    mode: &str,
    limits: Limits,
    kind: FailureKind,
    says: &str,
) -> PolicyError {
    let engine = hostile_copy(mode, limits, FailureMode::Fail).await;
    let err = engine.copy_method(&copy_input()).await.expect_err("fails");
    assert_eq!(err.kind(), kind, "{mode}: {err}");
    assert!(err.to_string().contains(says), "{mode}: {err}");
    assert_good_neighbour_works(&engine).await;
    err
}

#[tokio::test]
async fn infinite_loop_stopped_by_fuel() {
    let t = Instant::now();
    expect_fallback("spin", small(), FailureKind::OutOfFuel, "ran out of fuel").await;
    expect_fail(
        "spin",
        small(),
        FailureKind::OutOfFuel,
        "ran out of fuel after 5000000",
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn infinite_loop_stopped_by_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(50),
        memory_mib: 16,
    };
    let err = expect_fail("spin", limits, FailureKind::Timeout, "time limit of 50ms").await;
    let PolicyError::PluginFailed { provenance, .. } = err;
    assert!(
        provenance.latency >= Duration::from_millis(50),
        "{:?}",
        provenance.latency
    );
    assert!(
        provenance.latency < Duration::from_secs(2),
        "{:?}",
        provenance.latency
    );
}

#[tokio::test]
async fn memory_bomb_denied_at_the_limit() {
    // Fuel high enough that memory, not fuel, is what stops it.
    let limits = Limits {
        fuel: 2_000_000_000,
        ..small()
    };
    expect_fallback(
        "memory",
        limits,
        FailureKind::MemoryLimit,
        "memory limit of 16777216 bytes",
    )
    .await;
}

#[tokio::test]
async fn panic_and_trap_are_contained() {
    // The panic message reaches the report through the captured stderr.
    expect_fallback(
        "panic",
        small(),
        FailureKind::Trap,
        "hostile plugin panics on purpose",
    )
    .await;
    expect_fail("trap", small(), FailureKind::Trap, "trapped").await;
}

#[tokio::test]
async fn invalid_names_are_refused() {
    expect_fallback(
        "bad-name",
        small(),
        FailureKind::InvalidOutput,
        "not a valid DNS-1123",
    )
    .await;
    expect_fail(
        "missing-class",
        small(),
        FailureKind::InvalidOutput,
        "StorageClass \"no-such-class\" does not exist",
    )
    .await;
}

#[tokio::test]
async fn invalid_annotation_is_refused() {
    let config = PolicyConfig {
        service_type: point(
            spec("hostile-service-type", json!({})),
            FailureMode::Fallback,
        ),
        ..PolicyConfig::default()
    };
    let engine = engine(&config).await;
    let d = engine
        .service_type(&service_input())
        .await
        .expect("fallback");
    let f = d.provenance.failure.expect("failure");
    assert_eq!(f.kind, FailureKind::InvalidOutput);
    assert!(
        f.message.contains("\"bad key with spaces\" is not a valid"),
        "{f}"
    );
    assert!(d.decision.annotations.is_empty());
}

#[tokio::test]
async fn short_key_is_refused_without_leaking_it() {
    let config = PolicyConfig {
        psk: point(
            spec("hostile-psk", json!({ "mode": "short-key" })),
            FailureMode::Fail,
        ),
        ..config_with_good_neighbour()
    };
    let engine = engine(&config).await;
    let err = engine
        .psk(&psk_input(Side::Destination, None))
        .await
        .expect_err("fails");
    assert_eq!(err.kind(), FailureKind::InvalidOutput);
    let msg = err.to_string();
    assert!(
        msg.contains("16 hex digits; at least 32 (128 bits)"),
        "{msg}"
    );
    assert!(!msg.contains("0123456789abcdef"), "{msg}");
    assert_good_neighbour_works(&engine).await;
}

#[tokio::test]
async fn output_of_64_mib_is_contained() {
    // Within a small memory limit it cannot even be built.
    expect_fallback(
        "big-output",
        small(),
        FailureKind::MemoryLimit,
        "memory limit",
    )
    .await;
    // With room to build it, the host refuses it at validation.
    let roomy = Limits {
        memory_mib: 200,
        ..small()
    };
    let roomy_fuel = Limits {
        fuel: 2_000_000_000,
        ..roomy
    };
    expect_fallback(
        "big-output",
        roomy_fuel.clone(),
        FailureKind::InvalidOutput,
        "reason is 67108864 bytes",
    )
    .await;
    // A 64 MiB error message is truncated before it reaches logs and Events.
    let err = expect_fail(
        "big-error",
        roomy_fuel,
        FailureKind::PluginError,
        "(truncated)",
    )
    .await;
    assert!(
        err.to_string().len() < 2048,
        "{} bytes",
        err.to_string().len()
    );
}

#[tokio::test]
async fn failures_are_counted_in_metrics() {
    let engine = hostile_copy("panic", small(), FailureMode::Fallback).await;
    let _ = engine.copy_method(&copy_input()).await;
    let mut registry = prometheus_client::registry::Registry::default();
    engine.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"ferrosync_policy_failures_total{point="copy-method",plugin="hostile-copy-method",kind="trap"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferrosync_policy_decisions_total{point="copy-method",plugin="hostile-copy-method",outcome="fallback"} 1"#),
        "{text}"
    );
    assert!(text.contains("ferrosync_policy_fuel_used_bucket"), "{text}");
}

#[tokio::test]
async fn wasm_runs_off_the_executor_with_bounded_concurrency() {
    let mut s = spec("hostile-copy-method", json!({ "mode": "spin" }));
    s.limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(100),
        memory_mib: 16,
    };
    let mut config = PolicyConfig {
        copy_method: point(s, FailureMode::Fallback),
        ..config_with_good_neighbour()
    };
    config.engine.max_concurrency = 1;
    let engine = engine(&config).await;
    let input = copy_input();
    let start = Instant::now();
    let spins = futures::future::join_all((0..3).map(|_| engine.copy_method(&input)));
    // This test's runtime has a single thread: it keeps running other work only if no
    // plugin runs on it.
    let other_work = async {
        let mut ticks = 0;
        while start.elapsed() < Duration::from_millis(250) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticks += 1;
        }
        ticks
    };
    let (results, ticks) = tokio::join!(spins, other_work);
    for r in results {
        let kind = r.expect("fallback").provenance.failure.map(|f| f.kind);
        assert_eq!(kind, Some(FailureKind::Timeout));
    }
    // One at a time: three 100 ms runs cannot finish sooner than 300 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // Blocked by wasm it would tick once or twice; free, about 25 times (fewer under load).
    assert!(ticks >= 5, "the executor was blocked: {ticks} ticks");
}

#[tokio::test]
async fn a_plugin_stopped_by_its_deadline_is_reported_with_the_fuel_it_used() {
    // What instantiating and deciding costs when the plugin does nothing much.
    let quick = hostile_copy("hashmap", small(), FailureMode::Fail).await;
    let baseline = quick
        .copy_method(&copy_input())
        .await
        .expect("decides")
        .provenance
        .fuel_used;
    assert!(baseline > 0);

    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(200),
        memory_mib: 16,
    };
    let err = expect_fail("spin", limits, FailureKind::Timeout, "time limit of 200ms").await;
    let PolicyError::PluginFailed {
        provenance,
        failure,
        ..
    } = err;
    // 200 ms of a tight loop is tens of millions of units even on a loaded machine; the
    // count of the loop's entry (what compiled code had written back) is a few thousand.
    assert!(
        provenance.fuel_used > 1_000_000 && provenance.fuel_used > 100 * baseline,
        "reported {} units after {:?} (a quick decision costs {baseline})",
        provenance.fuel_used,
        provenance.latency
    );
    assert!(
        failure.message.contains(&format!(
            "after using {} units of fuel",
            provenance.fuel_used
        )),
        "{failure}"
    );
}

#[tokio::test]
async fn a_direct_decision_naming_classes_is_refused_with_the_reason() {
    expect_fallback(
        "direct-with-classes",
        small(),
        FailureKind::InvalidOutput,
        "a Direct decision uses no VolumeSnapshotClass or StorageClass, but the plugin named \
         VolumeSnapshotClass \"ebs-snapclass\" and StorageClass \"gp3\"",
    )
    .await;
}

/// Characters that reorder or hide text, and a line break.
const DISGUISES: [char; 9] = [
    '\u{202E}', '\u{202C}', '\u{2066}', '\u{2067}', '\u{2069}', '\u{200B}', '\u{FEFF}', '\n', '\r',
];

fn assert_undisguised(text: &str) {
    for c in DISGUISES {
        assert!(!text.contains(c), "U+{:04X} in {text:?}", c as u32);
    }
}

#[tokio::test]
async fn direction_and_zero_width_characters_never_reach_events_or_status() {
    let engine = hostile_copy("bidi-reason", small(), FailureMode::Fail).await;
    let d = engine.copy_method(&copy_input()).await.expect("decides");
    // The reason goes to status.policy; the Event carries it after the summary.
    assert_eq!(d.decision.reason, "fineexe.txt xab next");
    let event = d.provenance.event(&d.decision.reason);
    assert_undisguised(&d.decision.reason);
    assert_undisguised(&event.message);
    assert!(
        event.message.ends_with("fineexe.txt xab next"),
        "{}",
        event.message
    );

    // A plugin's own error reaches the Error condition and a Warning Event just as clean.
    let err = expect_fail(
        "bidi-error",
        small(),
        FailureKind::PluginError,
        "deniedgnp.exe!",
    )
    .await;
    assert_undisguised(&err.to_string());
    assert_undisguised(&err.event().message);
}

#[tokio::test]
async fn deep_recursion_is_reported_as_a_stack_overflow() {
    let err = expect_fail(
        "recurse",
        small(),
        FailureKind::StackOverflow,
        "stack overflow",
    )
    .await;
    let msg = err.to_string();
    assert!(!msg.contains("out of bounds"), "{msg}");
    assert_eq!(err.event().reason, "PolicyPluginStackOverflow");
    expect_fallback(
        "recurse",
        small(),
        FailureKind::StackOverflow,
        "its stack in linear memory ran out",
    )
    .await;
}
