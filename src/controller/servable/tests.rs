use serde_json::{Value, json};

use super::*;

fn rs(spec: Value) -> ReplicationSourceSpec {
    serde_json::from_value(spec).expect("a source spec")
}

fn rd(spec: Value) -> ReplicationDestinationSpec {
    serde_json::from_value(spec).expect("a destination spec")
}

fn good_rs() -> Value {
    json!({"sourcePVC": "data", "trigger": {"schedule": "*/5 * * * *"},
           "rsyncTLS": {"address": "10.0.0.1", "keySecret": "k"}})
}

fn good_rd() -> Value {
    json!({"rsyncTLS": {"copyMethod": "Snapshot", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]}})
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    base.pointer_mut(parent).expect("parent")[key] = value;
    base
}

fn without(mut base: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    base.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent")
        .remove(key);
    base
}

fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::CannotServe(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn valid_pairs_are_served() {
    assert_eq!(source(&rs(good_rs())), Verdict::Serve);
    assert_eq!(destination(&rd(good_rd())), Verdict::Serve);
    let by_pvc = json!({"rsyncTLS": {"destinationPVC": "mine", "serviceType": "LoadBalancer",
                        "volumeMode": "Filesystem"}, "trigger": {"schedule": "@hourly"}});
    assert_eq!(destination(&rd(by_pvc)), Verdict::Serve);
    // A schedule is not read while manual is set, as the trigger machine ignores it.
    let manual = with(
        good_rs(),
        "/trigger",
        json!({"manual": "1", "schedule": "@hourlyx"}),
    );
    assert_eq!(source(&rs(manual)), Verdict::Serve);
}

#[test]
fn other_movers_are_announced_not_refused() {
    let restic = json!({"sourcePVC": "data", "restic": {"repository": "r"}});
    assert_eq!(source(&rs(restic)), Verdict::OtherMover(vec!["restic"]));
    let two = json!({"rclone": {}, "external": {"provider": "x"}});
    assert_eq!(
        destination(&rd(two)),
        Verdict::OtherMover(vec!["rclone", "external"])
    );
    let syncthing = json!({"syncthing": {"peers": []}});
    assert_eq!(
        source(&rs(syncthing)),
        Verdict::OtherMover(vec!["syncthing"])
    );
}

#[test]
fn every_refusal_names_the_field_and_what_to_do() {
    let sources = [
        (
            without(good_rs(), "/rsyncTLS/address"),
            "spec.rsyncTLS.address",
            "status.rsyncTLS.address",
        ),
        (
            with(good_rs(), "/rsyncTLS/address", json!(" ")),
            "spec.rsyncTLS.address",
            "set it",
        ),
        (
            with(good_rs(), "/rsyncTLS/port", json!(0)),
            "spec.rsyncTLS.port 0",
            "1 to 65535",
        ),
        (
            without(good_rs(), "/sourcePVC"),
            "spec.sourcePVC",
            "name the",
        ),
        (
            with(good_rs(), "/trigger/schedule", json!("@hourly and more")),
            "spec.trigger.schedule",
            "five cron fields",
        ),
        (
            with(good_rs(), "/trigger/schedule", json!("99 * * * *")),
            "minute",
            "five cron fields",
        ),
        (
            with(
                good_rs(),
                "/rsyncTLS/accessModes",
                json!(["ReadWriteOnce", "RWX"]),
            ),
            "accessModes[1] \"RWX\"",
            "ReadWriteMany",
        ),
        (
            with(good_rs(), "/restic", json!({})),
            "rsyncTLS and restic",
            "remove restic",
        ),
        (json!({}), "no replication method", "set spec.rsyncTLS"),
    ];
    for (spec, field, remedy) in sources {
        let Refusal::Invalid(message) = refusal(source(&rs(spec.clone()))) else {
            panic!("{spec}: not Invalid");
        };
        assert!(
            message.contains(field) && message.contains(remedy),
            "{spec}: {message}"
        );
    }
    let destinations = [
        (
            with(good_rd(), "/rsyncTLS/volumeMode", json!("Block")),
            "volumeMode Block",
            "use Filesystem",
            true,
        ),
        (
            with(good_rd(), "/rsyncTLS/volumeMode", json!("Raw")),
            "volumeMode \"Raw\"",
            "use Filesystem",
            false,
        ),
        (
            with(good_rd(), "/rsyncTLS/serviceType", json!("ExternalName")),
            "serviceType ExternalName",
            "ClusterIP or LoadBalancer",
            true,
        ),
        (
            with(good_rd(), "/rsyncTLS/serviceType", json!("Tunnel")),
            "\"Tunnel\" is not a Service type",
            "ClusterIP or LoadBalancer",
            false,
        ),
        (
            with(good_rd(), "/rsyncTLS/copyMethod", json!("Clone")),
            "copyMethod Clone",
            "Direct or Snapshot",
            false,
        ),
        (
            without(good_rd(), "/rsyncTLS/capacity"),
            "spec.rsyncTLS.capacity",
            "destinationPVC",
            false,
        ),
        (
            without(good_rd(), "/rsyncTLS/accessModes"),
            "spec.rsyncTLS.accessModes",
            "destinationPVC",
            false,
        ),
        (
            with(good_rd(), "/trigger", json!({"schedule": "1 2 3 4 5 6"})),
            "spec.trigger.schedule",
            "@hourly",
            false,
        ),
        (
            with(good_rd(), "/rsync", json!({})),
            "rsyncTLS and rsync",
            "remove rsync",
            false,
        ),
    ];
    for (spec, field, remedy, unsupported) in destinations {
        let message = match refusal(destination(&rd(spec.clone()))) {
            Refusal::Unsupported(m) if unsupported => m,
            Refusal::Invalid(m) if !unsupported => m,
            other => panic!("{spec}: wrong kind of refusal {other:?}"),
        };
        assert!(
            message.contains(field) && message.contains(remedy),
            "{spec}: {message}"
        );
    }
}

#[test]
fn other_movers_are_announced_once_per_object() {
    let seen = NotServed::default();
    assert!(seen.first_time("uid-1"));
    assert!(!seen.first_time("uid-1"));
    assert!(seen.first_time("uid-2"));
    assert!(NotServed::note(&["restic"]).contains("restic"));
}
