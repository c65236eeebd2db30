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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
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
fn enums_and_patterns_are_in_the_schema() {
    let rd = schema_of(&ReplicationDestination::crd());
    let tls = at(&rd, &["spec", "rsyncTLS"]);
    let names = |v: &Value| v["enum"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(names(&tls["properties"]["copyMethod"]), 4);
    assert_eq!(names(&tls["properties"]["serviceType"]), 3);
    assert_eq!(names(&tls["properties"]["volumeMode"]), 2);
    assert_eq!(names(&tls["properties"]["accessModes"]["items"]), 4);
    assert_eq!(tls["properties"]["accessModes"]["minItems"], 1);
    assert_eq!(tls["properties"]["capacity"]["pattern"], QUANTITY_PATTERN);
    assert_eq!(
        at(&rd, &["spec", "trigger", "schedule"])["pattern"],
        CRON_PATTERN
    );
    assert!(
        tls["x-kubernetes-validations"]
            .as_array()
            .is_some_and(|r| r.len() >= 3)
    );
}

#[test]
fn cron_pattern_admits_five_fields_or_a_descriptor() {
    let re = regex_lite::Regex::new(CRON_PATTERN).expect("compiles");
    for ok in [
        "*/5 * * * *",
        "0 0 1 * MON",
        "0 0 * * 0",
        "15,45 8-17 * JAN-MAR 1-5",
        "@hourly",
        "@annually",
    ] {
        assert!(re.is_match(ok), "{ok} should match");
    }
    for bad in [
        "* * * *",
        "0 * * * * *",
        "@every 5m",
        " */5 * * * *",
        "*/5 * * * * ",
        "",
        "@fortnightly",
    ] {
        assert!(!re.is_match(bad), "{bad:?} should not match");
    }
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
