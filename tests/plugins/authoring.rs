//! The authoring tools with the real toolchain and components: `policy new` scaffolds a
//! crate outside the checkout that cargo builds for wasm32-wasip2 and that passes its own
//! `policy test` once `policy pin` put the component in; every decision point's template
//! passes its table; `policy inspect` and `policy bench` report real figures of the
//! sample bundles.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use ferrosync::policy::{DecisionPoint, authoring::scaffold, golden::run_bundle};
use serde_json::Value;

use super::common::{build, root, wasm};

fn ferrosync(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .arg("policy")
        .args(args)
        .args(paths)
        .output()
        .expect("run ferrosync")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// sha256 by coreutils, not by the code under test.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Where scripts/build-plugins.sh builds; reusing it (and its RUSTFLAGS) lets the
/// scaffold's build reuse the dependencies already compiled there.
fn plugins_target() -> PathBuf {
    std::env::var_os("FERROSYNC_PLUGINS_TARGET_DIR")
        .map_or_else(|| root().join("plugins/target"), PathBuf::from)
}

fn build_plugins_rustflags() -> String {
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    format!(
        "--remap-path-prefix={}/plugins=/plugins --remap-path-prefix={cargo_home}=/cargo \
         -C debuginfo=0 -C link-arg=-zstack-size=65536",
        root().display()
    )
}

#[test]
fn a_scaffolded_plugin_builds_outside_the_tree_and_passes_its_own_tests() {
    assert!(build().success, "{}", build().output);
    let started = Instant::now();
    // A temporary directory: outside the checkout, no workspace above it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("my-copy-method");
    let out = ferrosync(&["new", "copy-method"], &[&dir]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("cargo build --target wasm32-wasip2 --release")
            && printed.contains("ferrosync policy pin")
            && printed.contains("ferrosync policy test"),
        "{printed}"
    );
    // Before the pin the bundle cannot load, and says why.
    let bundle = dir.join("bundle");
    let out = ferrosync(&["test"], &[&bundle]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--offline",
            "--target",
            "wasm32-wasip2",
            "--release",
        ])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", plugins_target())
        .env("RUSTFLAGS", build_plugins_rustflags())
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("run cargo");
    assert!(built.status.success(), "{}", text(&built));
    let component = plugins_target().join("wasm32-wasip2/release/my_copy_method.wasm");
    let out = ferrosync(&["pin", "--wasm"], &[&component, &bundle]);
    assert!(out.status.success(), "{}", text(&out));

    let out = ferrosync(&["test", "-o", "json"], &[&bundle]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let report = &report[0];
    assert_eq!(report["plugin"], "my-copy-method");
    assert_eq!(report["sha256"], sha256sum(&component));
    let cases = report["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3, "{report:#}");
    assert!(
        cases
            .iter()
            .all(|c| c["passed"] == true && c["fuel_used"].as_u64() > Some(0))
    );
    eprintln!(
        "scaffold, build, pin and test: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The psk and service-type templates (built by scripts/build-plugins.sh as
/// `template-<point>`) pass the tables their scaffolds ship.
#[tokio::test]
async fn every_decision_points_template_passes_the_table_its_scaffold_ships() {
    for point in [
        DecisionPoint::CopyMethod,
        DecisionPoint::ServiceType,
        DecisionPoint::Psk,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let s = scaffold::write(point, &dir, None).expect("scaffold");
        let built = wasm(&format!("template-{point}"));
        ferrosync::policy::authoring::pin::pin(&s.bundle(), Some(&built)).expect("pin");
        let report = run_bundle(&s.bundle()).await.expect("bundle loads");
        assert_eq!(report.point, point);
        assert!(report.cases.len() >= 2, "{point}");
        for case in &report.cases {
            assert!(case.passed, "{point}/{}: {}", case.name, case.detail);
        }
    }
}

#[test]
fn inspect_shows_world_imports_digest_and_grants_as_the_host_sees_them() {
    assert!(build().success, "{}", build().output);
    let bundle = root().join("policies/vault");
    let out = ferrosync(&["inspect", "-o", "json"], &[&bundle]);
    assert!(out.status.success(), "{}", text(&out));
    let i: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let component = bundle.join("psk-from-vault.wasm");
    assert_eq!(i["sha256"], sha256sum(&component));
    assert_eq!(
        i["size"].as_u64(),
        Some(std::fs::metadata(&component).unwrap().len())
    );
    assert_eq!(i["fits"], true);
    assert_eq!(
        i["worlds"],
        serde_json::json!(["ferrosync:policy/psk@0.1.0"])
    );
    let names = |key: &str| -> Vec<String> {
        i[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let imports = names("imports");
    assert!(
        imports.contains(&"ferrosync:policy/http@0.1.0".to_owned())
            && imports.contains(&"ferrosync:policy/types@0.1.0".to_owned()),
        "{imports:?}"
    );
    let http = i["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "ferrosync:policy/http@0.1.0")
        .unwrap();
    assert!(http["items"].as_array().unwrap().contains(&"send".into()));
    assert_eq!(names("exports"), vec!["decide", "release"]);
    assert_eq!(i["bundle"]["pin_matches"], true);
    assert_eq!(i["bundle"]["world_matches"], true);
    assert_eq!(i["bundle"]["grants"]["random"], true);
    assert_eq!(
        i["bundle"]["grants"]["http"]["allow"],
        serde_json::json!(["https://vault.vault.svc:8200"])
    );

    // A component of another world in a copy-method bundle: named, and a finding.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("policies/aws-ebs/policy.toml"),
        tmp.path().join("policy.toml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("policies/multi-cluster/service-type-by-topology.wasm"),
        tmp.path().join("copy-method-by-driver.wasm"),
    )
    .unwrap();
    let out = ferrosync(&["inspect"], &[tmp.path()]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("world      ferrosync:policy/service-type@0.1.0"),
        "{shown}"
    );
    assert!(shown.contains("NOT this component"), "{shown}");
    assert!(
        shown.contains("does NOT implement the bundle's copy-method world"),
        "{shown}"
    );
}

#[test]
fn bench_times_every_case_of_a_bundle_warm_and_cold() {
    assert!(build().success, "{}", build().output);
    let bundle = root().join("policies/multi-cluster");
    let out = ferrosync(
        &["bench", "-o", "json", "--iterations", "20", "--cold", "1"],
        &[&bundle],
    );
    assert!(out.status.success(), "{}", text(&out));
    let b: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let table: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("tests.json")).unwrap()).unwrap();
    let cases = b["cases"].as_array().unwrap();
    let names: Vec<&Value> = table["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(cases.iter().map(|c| &c["name"]).collect::<Vec<_>>(), names);
    assert_eq!(b["iterations"], 20);
    assert_eq!(
        b["sha256"],
        sha256sum(&bundle.join("service-type-by-topology.wasm"))
    );
    for c in cases {
        assert_eq!(c["decided"], true, "{c}");
        assert!(c["fuel"].as_u64() > Some(0), "{c}");
        for run in ["warm", "cold"] {
            let (p50, p99, max) = (
                c[run]["p50_us"].as_f64().unwrap(),
                c[run]["p99_us"].as_f64().unwrap(),
                c[run]["max_us"].as_f64().unwrap(),
            );
            assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{run}: {c}");
        }
    }
    assert!(b["load"]["p50_us"].as_f64() > Some(0.0));
}
