//! Admission parity with VolSync on the real apiserver: an object of every VolSync mover
//! (`tests/fixtures/volsync-movers/`), applied as written, comes back field for field, its
//! status too (written through the status subresource). Nothing is rejected and nothing
//! is pruned, though ferrosync serves only rsyncTLS.

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::Value;

use crate::{fixtures, support::control_plane};

/// Every fixture, parsed: (file name, object).
fn mover_fixtures() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/fixtures/volsync-movers");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the fixtures directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let obj: Value = serde_yaml_ng::from_str(&text).expect("fixture parses");
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                obj,
            )
        })
        .collect()
}

/// The mover sections an object sets (in spec).
fn movers(obj: &Value) -> Vec<String> {
    [
        "rsyncTLS",
        "rsync",
        "restic",
        "rclone",
        "syncthing",
        "external",
    ]
    .into_iter()
    .filter(|m| obj["spec"].get(*m).is_some())
    .map(String::from)
    .collect()
}

/// Paths where `got` differs from `want`, recursively.
fn differences(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for key in w.keys().chain(g.keys().filter(|k| !w.contains_key(*k))) {
                let (wv, gv) = (
                    w.get(key).unwrap_or(&Value::Null),
                    g.get(key).unwrap_or(&Value::Null),
                );
                differences(&format!("{path}.{key}"), wv, gv, out);
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                differences(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ if want == got => {}
        _ => out.push(format!("{path}: applied {want}, read back {got}")),
    }
}

#[tokio::test]
async fn every_movers_objects_round_trip_field_for_field() {
    let ns = control_plane().namespace("parity").await;
    let fixtures = mover_fixtures();
    // Every mover of VolSync's API, on both kinds where VolSync has it.
    let mut kinds: Vec<(String, String)> = fixtures
        .iter()
        .flat_map(|(_, o)| {
            movers(o)
                .into_iter()
                .map(|m| (o["kind"].as_str().unwrap().to_string(), m))
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    for mover in ["rsyncTLS", "rsync", "restic", "rclone", "external"] {
        for kind in ["ReplicationSource", "ReplicationDestination"] {
            assert!(
                kinds.contains(&(kind.into(), mover.into())),
                "no {kind} fixture for {mover}"
            );
        }
    }
    assert!(kinds.contains(&("ReplicationSource".into(), "syncthing".into())));

    let mut failures = Vec::new();
    for (file, obj) in fixtures {
        let mut spec_only = obj.clone();
        let status = spec_only
            .as_object_mut()
            .unwrap()
            .remove("status")
            .expect("a status");
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let api = fixtures::api_for(&ns.client, &ns.name, &obj).await;
        let mut dynamic: kube::api::DynamicObject = serde_json::from_value(spec_only).unwrap();
        dynamic.metadata.namespace = Some(ns.name.clone());
        if let Err(err) = api.create(&PostParams::default(), &dynamic).await {
            failures.push(format!("{file}: rejected: {err}"));
            continue;
        }
        let body = serde_json::json!({"status": status});
        if let Err(err) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            failures.push(format!("{file}: status rejected: {err}"));
            continue;
        }
        let stored = serde_json::to_value(api.get(&name).await.expect("get")).unwrap();
        let mut diffs = Vec::new();
        differences("spec", &obj["spec"], &stored["spec"], &mut diffs);
        differences("status", &obj["status"], &stored["status"], &mut diffs);
        failures.extend(diffs.into_iter().map(|d| format!("{file}: {d}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn ferrosyncs_typed_client_keeps_other_movers_sections() {
    // The controller reads objects through its typed API: another mover's object must
    // deserialise, and writing it back must not lose a field.
    for (file, obj) in mover_fixtures() {
        let back = match obj["kind"].as_str().unwrap() {
            "ReplicationSource" => serde_json::to_value(
                serde_json::from_value::<ferrosync::api::ReplicationSource>(obj.clone())
                    .unwrap_or_else(|e| panic!("{file}: {e}")),
            ),
            _ => serde_json::to_value(
                serde_json::from_value::<ferrosync::api::ReplicationDestination>(obj.clone())
                    .unwrap_or_else(|e| panic!("{file}: {e}")),
            ),
        }
        .unwrap();
        let mut diffs = Vec::new();
        differences("spec", &obj["spec"], &back["spec"], &mut diffs);
        differences("status", &obj["status"], &back["status"], &mut diffs);
        assert!(diffs.is_empty(), "{file}: {diffs:#?}");
    }
}
