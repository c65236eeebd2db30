//! Capabilities a plugin was not granted stay closed: no network beyond its allow-list
//! (and no connection at all to anything else), no files, environment or arguments, no
//! secure randomness, no timers; and a granted request cannot outlive its decision.

use std::{
    net::TcpListener,
    sync::Arc,
    time::{Duration, Instant},
};

use ferrosync::policy::{
    FailureKind, FailureMode, HttpGrant, PolicyConfig, PskAnswer, Side, credentials::NoCredentials,
};
use serde_json::json;

use super::{
    common::*,
    hostile::{expect_fail, hostile_copy, small},
};

#[tokio::test]
async fn timers_trap_instead_of_parking_the_host() {
    let t = Instant::now();
    expect_fail("sleep", small(), FailureKind::CapabilityDenied, "timers").await;
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn forbidden_host_is_refused_before_any_connection() {
    // A listener on the forbidden origin: it must never see a connection.
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let url = format!("http://{}/v1/secret", forbidden.local_addr().unwrap());
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();

    for grant in [
        None,
        Some(HttpGrant {
            allow: vec![format!("http://{}", allowed.local_addr().unwrap())],
            timeout: Duration::from_secs(1),
            max_response_kib: 64,
            max_requests: 4,
            credentials: None,
        }),
    ] {
        let has_grant = grant.is_some();
        let mut s = spec("hostile-psk", json!({ "mode": "http", "url": url }));
        s.grants.http = grant;
        let config = PolicyConfig {
            psk: point(s, FailureMode::Fallback),
            ..config_with_good_neighbour()
        };
        let engine = engine_with(&config, Arc::new(NoCredentials), None).await;
        let d = engine
            .psk(&psk_input(Side::Source, None))
            .await
            .expect("fallback");
        let f = d.provenance.failure.clone().expect("failure");
        assert_eq!(f.kind, FailureKind::PluginError);
        let why = if has_grant {
            "is not on the allow-list"
        } else {
            "no HTTP grant"
        };
        assert!(f.message.contains(why), "{f}");
        assert_eq!(d.provenance.denials.len(), 1, "{:?}", d.provenance.denials);
        assert_eq!(d.decision.answer, PskAnswer::GenerateLocally);
        assert_good_neighbour_works(&engine).await;
    }
    assert!(
        matches!(forbidden.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the forbidden origin"
    );
}

#[tokio::test]
async fn no_file_or_environment_capability() {
    // SAFETY: a variable the plugin must not see; set before the engine exists.
    unsafe { std::env::set_var("FERROSYNC_TEST_SECRET", "hunter2") };
    let engine = hostile_copy("snoop", small(), FailureMode::Fail).await;
    let d = engine
        .copy_method(&copy_input())
        .await
        .expect("snoop decides");
    let r = &d.decision.reason;
    assert!(r.contains("file=error"), "{r}");
    assert!(r.contains("env=[]"), "{r}");
    assert!(r.contains("args=[]"), "{r}");
    assert!(
        !r.contains("hunter2") && !r.contains("FERROSYNC_TEST_SECRET"),
        "{r}"
    );
}

#[tokio::test]
async fn secure_random_traps_without_the_grant() {
    let mut s = spec("hostile-psk", json!({ "mode": "random" }));
    let config = PolicyConfig {
        psk: point(s.clone(), FailureMode::Fail),
        ..config_with_good_neighbour()
    };
    let engine = engine(&config).await;
    let err = engine
        .psk(&psk_input(Side::Destination, None))
        .await
        .expect_err("traps");
    assert_eq!(err.kind(), FailureKind::CapabilityDenied, "{err}");
    assert!(err.to_string().contains("secure random"), "{err}");
    assert_good_neighbour_works(&engine).await;

    // Granted, it gets real entropy: two keys differ.
    s.grants.random = true;
    let config = PolicyConfig {
        psk: point(s, FailureMode::Fail),
        ..PolicyConfig::default()
    };
    let granted = super::common::engine(&config).await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        match granted
            .psk(&psk_input(Side::Destination, None))
            .await
            .unwrap()
            .decision
            .answer
        {
            PskAnswer::UseKey(k) => keys.push(k.key_hex().to_owned()),
            other => panic!("{other:?}"),
        }
    }
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn a_silent_server_cannot_hold_a_decision_past_its_deadline() {
    // Accepts connections (the kernel's backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", silent.local_addr().unwrap());
    let mut s = spec(
        "hostile-psk",
        json!({ "mode": "http", "url": format!("{origin}/v1/x") }),
    );
    s.limits.timeout = Duration::from_millis(300);
    s.grants.http = Some(HttpGrant {
        allow: vec![origin],
        timeout: Duration::from_secs(30),
        max_response_kib: 64,
        max_requests: 4,
        credentials: None,
    });
    let config = PolicyConfig {
        psk: point(s, FailureMode::Fail),
        ..PolicyConfig::default()
    };
    let engine = engine(&config).await;
    let start = Instant::now();
    let err = engine
        .psk(&psk_input(Side::Source, None))
        .await
        .expect_err("fails");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Either the request timed out at the decision's deadline and the plugin reported it,
    // or the epoch deadline trapped the plugin right after the call returned.
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") || msg.contains("time limit of 300ms"),
        "{msg}"
    );
}

#[tokio::test]
async fn hashmap_works_without_the_grant_and_is_deterministic() {
    let mut orders = Vec::new();
    for _ in 0..2 {
        let engine = hostile_copy("hashmap", small(), FailureMode::Fail).await;
        let d = engine.copy_method(&copy_input()).await.expect("decides");
        assert!(
            d.decision.reason.starts_with("order="),
            "{}",
            d.decision.reason
        );
        orders.push(d.decision.reason);
    }
    assert_eq!(orders[0], orders[1]);
}
