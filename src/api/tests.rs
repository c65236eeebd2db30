use serde_json::Value;

use super::*;

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(&crd.spec.versions[0].schema).expect("schema serialises")["openAPIV3Schema"].clone()
}

fn at<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(schema, |node, key| &node["properties"][*key])
}

#[test]
fn committed_crds_are_fresh() {
    let dir = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("deploy/crds");
    for crd in crds() {
        let path = dir.join(crd_file_name(&crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == crd_yaml(&crd).expect("renders"),
            "{} is stale: run `cargo run -- crd --output-dir deploy/crds`",
            path.display()
        );
    }
}

#[test]
fn no_schema_defaults_for_controller_defaulted_fields() {
    let rendered = serde_json::to_string(&crds()).expect("serialises");
    assert!(
        !rendered.contains("\"default\""),
        "the schema must not default anything"
    );
}

#[test]
fn every_property_has_a_description() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let here = format!("{path}.{name}");
                // metadata and apiVersion/kind are described by Kubernetes itself.
                let ours = !matches!(here.as_str(), ".metadata" | ".apiVersion" | ".kind");
                if ours && child.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(path, items, missing);
        }
    }
    for crd in crds() {
        let mut missing = Vec::new();
        walk("", &at(&schema_of(&crd), &["spec"]).clone(), &mut missing);
        walk("", &at(&schema_of(&crd), &["status"]).clone(), &mut missing);
        assert!(
            missing.is_empty(),
            "{}: undocumented {missing:?}",
            crd.metadata.name.as_deref().unwrap_or("")
        );
    }
}

#[test]
fn open_strings_stay_open_and_patterns_are_volsyncs() {
    let rd = schema_of(&ReplicationDestination::crd());
    let tls = at(&rd, &["spec", "rsyncTLS"]);
    let names = |v: &Value| v["enum"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(names(&tls["properties"]["copyMethod"]), 4);
    // VolSync admits any string for these; so do we (the controller reports the rest).
    for open in [
        &tls["properties"]["serviceType"],
        &tls["properties"]["volumeMode"],
        &tls["properties"]["accessModes"]["items"],
        &at(&rd, &["status", "latestMoverStatus", "result"]).clone(),
    ] {
        assert_eq!(open["type"], "string", "{open}");
        assert!(
            open.get("enum").is_none() && open.get("pattern").is_none(),
            "{open}"
        );
    }
    assert_eq!(tls["properties"]["accessModes"]["minItems"], 1);
    assert_eq!(tls["properties"]["capacity"]["pattern"], QUANTITY_PATTERN);
    assert_eq!(
        at(&rd, &["spec", "trigger", "schedule"])["pattern"],
        CRON_PATTERN
    );
    let rs = schema_of(&ReplicationSource::crd());
    let port = at(&rs, &["spec", "rsyncTLS", "port"]);
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(0.0), Some(65535.0))
    );
    let rendered = serde_json::to_string(&crds()).expect("serialises");
    assert!(
        !rendered.contains("x-kubernetes-validations"),
        "stricter checks live in deploy/admission/, not in the CRDs"
    );
}

#[test]
fn other_movers_are_opaque_and_kept_in_spec_and_status() {
    let opaque = serde_json::json!(true);
    for (crd, spec_movers, status_movers) in [
        (
            ReplicationSource::crd(),
            &["rsync", "restic", "rclone", "syncthing", "external"][..],
            &["rsync", "restic", "syncthing", "external"][..],
        ),
        (
            ReplicationDestination::crd(),
            &["rsync", "restic", "rclone", "external"][..],
            &["rsync", "external"][..],
        ),
    ] {
        let schema = schema_of(&crd);
        for (part, movers) in [("spec", spec_movers), ("status", status_movers)] {
            for mover in movers {
                let node = at(&schema, &[part, mover]);
                assert_eq!(
                    node["x-kubernetes-preserve-unknown-fields"], opaque,
                    "{part}.{mover}: {node}"
                );
                assert_eq!(node["type"], "object");
            }
        }
    }
}

#[test]
fn cron_pattern_is_volsyncs_with_its_quirks() {
    let re = regex_lite::Regex::new(CRON_PATTERN).expect("compiles");
    for ok in [
        "*/5 * * * *",
        "0 0 * * 0",
        "15,45 8-17 * 1-3 1-5",
        "@hourly",
        "@annually",
        // The quirks: each alternative is anchored at one end only.
        "@hourly and then some",
        "every day at 0 0 * * *",
        "12345",
    ] {
        assert!(re.is_match(ok), "{ok} should match");
    }
    for bad in [
        "* * * *",
        "0 0 1 * MON",
        "15,45 8-17 * JAN-MAR 1-5",
        "@midnight",
        "@every 5m",
        "",
        "@fortnightly",
    ] {
        assert!(!re.is_match(bad), "{bad:?} should not match");
    }
}

#[test]
fn the_admission_policy_checks_the_strict_schedule_pattern() {
    let dir = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("deploy/admission");
    for file in [
        "replicationsource-policy.yaml",
        "replicationdestination-policy.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("policy file");
        assert!(
            text.contains(STRICT_CRON_PATTERN),
            "{file} drifted from STRICT_CRON_PATTERN"
        );
    }
    let re = regex_lite::Regex::new(STRICT_CRON_PATTERN).expect("compiles");
    assert!(re.is_match("0 0 1 * MON") && !re.is_match("@hourly and then some"));
}

#[test]
fn quantity_pattern_rejects_words() {
    let re = regex_lite::Regex::new(QUANTITY_PATTERN).expect("compiles");
    for ok in ["10Gi", "1", "500M", "1.5Ti", "1e3"] {
        assert!(re.is_match(ok), "{ok}");
    }
    for bad in ["ten gigs", "10 Gi", "10GB", ""] {
        assert!(!re.is_match(bad), "{bad:?}");
    }
}

#[test]
fn printer_columns_match_the_reference() {
    let cols = |crd: CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        cols(ReplicationSource::crd())[..4],
        ["Source", "Last sync", "Duration", "Next sync"]
    );
    assert_eq!(
        cols(ReplicationDestination::crd())[..3],
        ["Last sync", "Duration", "Next sync"]
    );
}

#[test]
fn none_normalises_to_direct() {
    assert_eq!(CopyMethod::None.normalized(), CopyMethod::Direct);
    assert_eq!(CopyMethod::Snapshot.normalized(), CopyMethod::Snapshot);
}
