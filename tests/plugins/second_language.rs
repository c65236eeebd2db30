//! A plugin need not be written in Rust (issue 16): copy-method-by-driver written in C
//! (`plugins/copy-method-by-driver-c`, built from source by `scripts/build-c-plugins.sh`)
//! is a component within the size limit, passes its Rust twin's golden table, and gives
//! the same decision as the twin, reason included, over the table and a wider grid, on the
//! real host with failures surfacing (so the host's validation rejects neither).

use ferrosync::{
    api::CopyMethod,
    policy::{
        CopyMethodInput, DecidedBy, FailureKind, FailureMode, PolicyConfig, PolicyEngine,
        PolicyError, PvcInfo, StorageClassInfo,
        golden::{read_table, run_bundle},
        plugin::{BundleFile, MAX_COMPONENT_BYTES},
    },
};
use serde_json::{Value, json};

use super::common::{build, bundle_point, digest, engine, point, root, spec, wasm};

const RUST: (&str, &str) = ("aws-ebs", "copy-method-by-driver");
const C: (&str, &str) = ("aws-ebs-c", "copy-method-by-driver-c");

#[test]
fn the_c_plugin_is_built_from_source_small_and_pinned() {
    assert!(build().success, "{}", build().output);
    let mut sizes = Vec::new();
    for (bundle, package) in [C, RUST] {
        let committed = root().join(format!("policies/{bundle}/{package}.wasm"));
        assert_eq!(digest(&wasm(package)), digest(&committed), "{bundle}");
        let size = std::fs::metadata(&committed).expect("component").len();
        assert!(size < MAX_COMPONENT_BYTES, "{bundle}: {size} bytes");
        sizes.push(size);
    }
    eprintln!("component bytes: C {}, Rust {}", sizes[0], sizes[1]);

    // Built without the WASI adapter, it imports nothing outside the contract.
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::from_file(&engine, wasm(C.1)).expect("a valid component");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        imports.iter().all(|i| i.starts_with("ferrosync:policy/")),
        "{imports:?}"
    );
}

#[tokio::test]
async fn the_c_plugin_passes_its_rust_twins_golden_table() {
    assert!(build().success, "{}", build().output);
    let dir = |bundle: &str| root().join("policies").join(bundle);
    let (c, rust) = (
        BundleFile::read(&dir(C.0)).expect("C bundle"),
        BundleFile::read(&dir(RUST.0)).expect("Rust bundle"),
    );
    // One bundle in two languages: same table, same settings, same limits.
    assert_eq!(
        std::fs::read(&c.tests).expect("C table"),
        std::fs::read(&rust.tests).expect("Rust table")
    );
    assert_eq!(c.plugin.settings, rust.plugin.settings);
    assert_eq!(c.plugin.limits, rust.plugin.limits);

    let mut reports = Vec::new();
    for (bundle, package) in [C, RUST] {
        let report = run_bundle(&dir(bundle)).await.expect("bundle loads");
        assert_eq!(report.plugin, package);
        assert!(report.cases.len() >= 6, "{bundle}");
        for case in &report.cases {
            assert!(case.passed, "{bundle}/{}: {}", case.name, case.detail);
            assert!(case.fuel_used > 0, "{bundle}/{}: did not run", case.name);
        }
        reports.push(report);
    }
    let outcomes = |i: usize| -> Vec<(String, String)> {
        reports[i]
            .cases
            .iter()
            .map(|c| (c.name.clone(), c.detail.clone()))
            .collect()
    };
    assert_eq!(outcomes(0), outcomes(1), "case by case, the same reasons");
}

/// Both plugins, from their bundles or with `settings`, failing rather than falling back.
async fn twins(settings: Option<Value>) -> [PolicyEngine; 2] {
    let config = |(bundle, package): (&str, &str)| PolicyConfig {
        copy_method: match &settings {
            None => bundle_point(&root().join("policies").join(bundle), FailureMode::Fail),
            Some(s) => point(spec(package, s.clone()), FailureMode::Fail),
        },
        ..PolicyConfig::default()
    };
    [engine(&config(C)).await, engine(&config(RUST)).await]
}

/// The golden table's inputs, and a grid over provisioners (listed, unlisted, none, and one
/// whose name needs quoting), requests, snapshot and storage classes and clone failures.
fn inputs() -> Vec<CopyMethodInput> {
    let table = read_table(&root().join("policies/aws-ebs/tests.json")).expect("table");
    let mut all: Vec<CopyMethodInput> = table
        .cases
        .into_iter()
        .map(|c| serde_json::from_value(c.input).expect("table input"))
        .collect();
    let provisioners = [
        Some("ebs.csi.aws.com"),
        Some("efs.csi.aws.com"),
        Some("csi.vsphere.vmware.com"),
        Some("rbd.csi.ceph.com"),
        Some("odd\"driver\\\t\u{1}\u{1b}"),
        None,
    ];
    let requests = [
        None,
        Some(CopyMethod::Direct),
        Some(CopyMethod::Clone),
        Some(CopyMethod::Snapshot),
    ];
    let snapshot_classes: [&[&str]; 3] = [&[], &["ebs-snapclass"], &["other", "ebs-snapclass"]];
    let storage_classes: [&[&str]; 2] = [&["gp2", "gp3"], &["gp2"]];
    for provisioner in provisioners {
        for requested in requests {
            for snaps in snapshot_classes {
                for classes in storage_classes {
                    for failed in [false, true] {
                        all.push(CopyMethodInput {
                            pvc: PvcInfo {
                                name: "data".into(),
                                namespace: "app".into(),
                                ..Default::default()
                            },
                            storage_class: provisioner.map(|p| StorageClassInfo {
                                name: "gp2".into(),
                                provisioner: p.into(),
                                parameters: Default::default(),
                            }),
                            requested,
                            snapshot_classes: snaps.iter().map(|s| (*s).into()).collect(),
                            storage_classes: classes.iter().map(|s| (*s).into()).collect(),
                            clone_failure: failed.then(|| "clone failed".into()),
                        });
                    }
                }
            }
        }
    }
    all
}

#[tokio::test]
async fn the_c_plugin_decides_as_its_rust_twin() {
    assert!(build().success, "{}", build().output);
    let settings = [
        None,
        Some(json!({})),
        Some(json!({
            "default": { "clone": false, "snapshot": true, "prefer": "clone",
                         "pit_storage_class": "gp3" },
            "drivers": {
                "rbd.csi.ceph.com": { "clone": true, "prefer": "snapshot",
                                      "snapshot_class": "missing", "pit_storage_class": null },
                "odd\"driver\\\t\u{1}\u{1b}": { "snapshot": true, "prefer": "snapshot",
                                     "snapshot_class": "other" }
            }
        })),
    ];
    let inputs = inputs();
    let mut methods = std::collections::BTreeSet::new();
    for s in settings {
        let [c, rust] = twins(s.clone()).await;
        for input in &inputs {
            let (a, b) = (c.copy_method(input).await, rust.copy_method(input).await);
            let (a, b) = match (a, b) {
                (Ok(a), Ok(b)) => (a, b),
                (a, b) => panic!("settings {s:?}, input {input:?}: C {a:?}, Rust {b:?}"),
            };
            assert_eq!(a.provenance.decided_by, DecidedBy::Plugin);
            assert_eq!(b.provenance.decided_by, DecidedBy::Plugin);
            assert_eq!(
                serde_json::to_value(&a.decision).unwrap(),
                serde_json::to_value(&b.decision).unwrap(),
                "settings {s:?}, input {input:?}"
            );
            methods.insert(format!("{:?}", a.decision.method));
        }
    }
    assert_eq!(
        methods.len(),
        3,
        "the grid reaches every method: {methods:?}"
    );
}

#[tokio::test]
async fn the_c_plugin_refuses_the_settings_its_twin_refuses() {
    assert!(build().success, "{}", build().output);
    let input = &inputs()[0];
    for bad in [
        json!({ "drivers": { "x": { "clone": "yes" } } }),
        json!({ "drivers": {}, "extra": true }),
        json!({ "default": { "snapshots": true } }),
        json!({ "drivers": [] }),
    ] {
        for (engine, package) in twins(Some(bad.clone())).await.iter().zip([C.1, RUST.1]) {
            match engine.copy_method(input).await {
                Err(PolicyError::PluginFailed { failure, .. }) => {
                    assert_eq!(failure.kind, FailureKind::PluginError, "{package} {bad}");
                    assert!(
                        failure.message.contains("invalid settings"),
                        "{package} {bad}: {}",
                        failure.message
                    );
                }
                Ok(d) => panic!("{package} accepted {bad}: {:?}", d.decision),
            }
        }
    }
}
