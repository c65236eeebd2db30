//! `ferrosync version` names the commit and the build date (build.rs).

use std::process::Command;

#[test]
fn version_prints_the_commit_and_the_build_date() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrosync"))
        .arg("version")
        .output()
        .expect("running ferrosync version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let re = regex_lite::Regex::new(
        r"^ferrosync (\S+) \(commit ([0-9a-f]{40}|unknown), built (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)$",
    )
    .expect("regex");
    let caps = re
        .captures(&text)
        .unwrap_or_else(|| panic!("unexpected output {text:?}"));
    assert_eq!(&caps[1], env!("CARGO_PKG_VERSION"));
    // In a checkout (CI clones one), the commit is the one built: HEAD when the build ran.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(&caps[2], head, "the commit of the checkout");
    }
}
