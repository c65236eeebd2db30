//! A plugin need not be written in Rust (issue 16): the plugin template in C
//! (`plugins/c-copy-method`, built by `scripts/build-plugins.sh` with clang, wasi-libc,
//! wit-bindgen's C generator and wasm-tools) is a component within the size limit, and
//! passes the very golden table its Rust twin passes, through `ferrosync policy test`.

use ferrosync::policy::{golden::run_bundle, plugin::MAX_COMPONENT_BYTES};

use super::common::{build, digest, root, wasm};

const TWINS: [(&str, &str); 2] = [
    ("examples/template-c", "c-copy-method"),
    ("examples/template-rust", "plugin-template"),
];

#[tokio::test]
async fn the_c_plugin_passes_its_rust_twins_golden_table() {
    assert!(build().success, "{}", build().output);
    let c = root().join("policies/examples/template-c");
    let rust = root().join("policies/examples/template-rust");
    assert_eq!(
        std::fs::read(c.join("tests.json")).expect("C table"),
        std::fs::read(rust.join("tests.json")).expect("Rust table"),
        "one table for both"
    );
    let mut outcomes = Vec::new();
    for (bundle, package) in TWINS {
        let dir = root().join("policies").join(bundle);
        let committed = dir.join(format!("{package}.wasm"));
        assert_eq!(digest(&wasm(package)), digest(&committed), "{bundle} reproduces");
        let size = std::fs::metadata(&committed).expect("component").len();
        assert!(size < MAX_COMPONENT_BYTES, "{bundle}: {size} bytes");
        eprintln!("{bundle}: {size} bytes");
        let report = run_bundle(&dir).await.expect("bundle loads");
        assert_eq!(report.cases.len(), 5, "{bundle}");
        for case in &report.cases {
            assert!(case.passed, "{bundle}/{}: {}", case.name, case.detail);
        }
        outcomes.push(
            report
                .cases
                .iter()
                .map(|c| (c.name.clone(), c.passed))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

#[test]
fn cli_policy_test_runs_both_twins() {
    assert!(build().success, "{}", build().output);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .args(["policy", "test"])
        .args(TWINS.map(|(b, _)| root().join("policies").join(b)))
        .output()
        .expect("ferrosync policy test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("c-copy-method") || text.contains("template-c"), "{text}");
}
