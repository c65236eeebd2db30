//! Every sample plugin, rebuilt from source, reproduces its bundle's pin and passes its
//! bundle's golden table through the same host path as `ferrosync policy test`.

use ferrosync::policy::golden::run_bundle;

use super::common::{build, digest, root, wasm};

#[test]
fn sample_plugins_reproduce_their_pins() {
    let b = build();
    assert!(b.success, "scripts/build-plugins.sh failed:\n{}", b.output);
    for (bundle, package) in [
        ("aws-ebs", "copy-method-by-driver"),
        ("multi-cluster", "service-type-by-topology"),
        ("vault", "psk-from-vault"),
    ] {
        let committed = root().join(format!("policies/{bundle}/{package}.wasm"));
        assert_eq!(digest(&wasm(package)), digest(&committed), "{bundle}");
    }
}

async fn golden(bundle: &str) {
    assert!(build().success, "{}", build().output);
    let report = run_bundle(&root().join("policies").join(bundle))
        .await
        .expect("bundle loads");
    for case in &report.cases {
        assert!(case.passed, "{bundle}/{}: {}", case.name, case.detail);
        assert!(
            case.fuel_used > 0,
            "{bundle}/{}: plugin did not run",
            case.name
        );
    }
    assert!(
        report.cases.len() >= 6,
        "{bundle}: only {} cases",
        report.cases.len()
    );
}

#[tokio::test]
async fn aws_ebs_golden_table() {
    golden("aws-ebs").await;
}

#[tokio::test]
async fn multi_cluster_golden_table() {
    golden("multi-cluster").await;
}

#[tokio::test]
async fn vault_golden_table_replayed() {
    golden("vault").await;
}

#[test]
fn cli_policy_test_reports_cases_and_exit_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .args(["policy", "test"])
        .arg(root().join("policies/aws-ebs"))
        .output()
        .expect("run ferrosync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok   ebs-clone-becomes-snapshot"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fuel") && stdout.contains("time"),
        "{stdout}"
    );
    assert!(stdout.contains("8/8 cases passed"), "{stdout}");

    // A table whose expectation is wrong fails the command.
    let dir = tempfile::tempdir().unwrap();
    for f in ["policy.toml", "copy-method-by-driver.wasm"] {
        std::fs::copy(root().join("policies/aws-ebs").join(f), dir.path().join(f)).unwrap();
    }
    let table = std::fs::read_to_string(root().join("policies/aws-ebs/tests.json")).unwrap();
    std::fs::write(
        dir.path().join("tests.json"),
        table.replacen("\"method\": \"Snapshot\"", "\"method\": \"Clone\"", 1),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL ebs-clone-becomes-snapshot"),
        "{stdout}"
    );
    assert!(stdout.contains("7/8 cases passed"), "{stdout}");
}

/// Every bundle given is run and reported, even after one that cannot load; JSON and
/// JUnit XML carry all of them.
#[test]
fn cli_policy_test_reports_every_bundle_as_json_and_junit() {
    let missing = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
            .args(["policy", "test", "-o", format])
            .arg(missing.path())
            .arg(root().join("policies/aws-ebs"))
            .arg(root().join("policies/multi-cluster"))
            .output()
            .expect("run ferrosync")
    };
    let out = run("json");
    assert_eq!(out.status.code(), Some(2), "a bundle could not be loaded");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let bundles = json.as_array().expect("one entry per bundle");
    assert_eq!(bundles.len(), 3, "{json:#}");
    assert!(
        bundles[0]["error"]
            .as_str()
            .unwrap()
            .contains("policy.toml")
    );
    assert_eq!(bundles[1]["plugin"], "copy-method-by-driver");
    assert_eq!(bundles[1]["cases"].as_array().unwrap().len(), 8);
    assert_eq!(bundles[2]["plugin"], "service-type-by-topology");

    let out = run("junit");
    let xml = String::from_utf8_lossy(&out.stdout);
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert!(xml.contains("errors=\"1\""), "{xml}");
    assert!(xml.contains("name=\"ebs-clone-becomes-snapshot\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn kustomization_ships_every_bundle_file_under_a_mebibyte() {
    let text = std::fs::read_to_string(root().join("policies/kustomization.yaml")).unwrap();
    let k: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let listed: Vec<String> = k["configMapGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["files"].as_sequence().unwrap().iter())
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    for bundle in ["aws-ebs", "multi-cluster", "vault"] {
        let dir = root().join("policies").join(bundle);
        let mut total = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{bundle}/{}", entry.file_name().to_string_lossy());
            assert!(
                listed.contains(&name),
                "{name} is not in the configMapGenerator"
            );
            total += entry.metadata().unwrap().len();
        }
        // base64 grows binaryData by a third; the ConfigMap must stay under 1 MiB.
        assert!(total * 4 / 3 < 1 << 20, "{bundle}: {total} bytes");
    }
}
