//! The mover image cannot be built here (no docker), so its Dockerfile is checked against
//! what the mover expects: paths, tools, a non-root user, pinned packages.

use std::fs;

fn lines() -> Vec<String> {
    let text = fs::read_to_string(
        std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        )
        .join("deploy/images/mover.Dockerfile"),
    )
    .expect("mover.Dockerfile");
    // Join continuation lines so each instruction is one line.
    text.replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .collect()
}

fn instruction(name: &str) -> Vec<String> {
    lines()
        .into_iter()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .collect()
}

#[test]
fn the_final_stage_is_debian_with_rsync_stunnel_and_libssl_versions_recorded() {
    let from = instruction("FROM");
    let last = from.last().expect("FROM");
    assert!(last.contains("debian:") && last.contains("-slim"), "{last}");
    let run = instruction("RUN").join("\n");
    let installed = |pkg: &str| {
        run.split_whitespace()
            .any(|w| w == pkg || w.starts_with(&format!("{pkg}=")))
    };
    // rsync; stunnel4 for the TLS_TUNNEL=stunnel fallback; libssl3 for the built-in
    // tunnel's OpenSSL handshake.
    for pkg in ["rsync", "stunnel4", "libssl3"] {
        assert!(installed(pkg), "{pkg} must be installed: {run}");
    }
    // Unpinned (a pin breaks the build at the next security update), so the versions
    // resolved are recorded in the image.
    assert!(
        run.contains("dpkg-query") && run.contains("/usr/share/ferrosync/packages.txt"),
        "the resolved versions must be recorded: {run}"
    );
}

#[test]
fn the_user_is_non_root_and_the_paths_match_the_movers_defaults() {
    let user = instruction("USER");
    let user = user
        .last()
        .expect("USER")
        .split_whitespace()
        .nth(1)
        .expect("uid")
        .to_owned();
    let uid: u32 = user
        .split(':')
        .next()
        .expect("uid")
        .parse()
        .expect("numeric USER, for runAsNonRoot");
    assert_ne!(uid, 0);

    let help = std::process::Command::new(crate::harness::BIN)
        .args(["mover", "source", "--help"])
        .env_clear()
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    let text = lines().join("\n");
    for (var, default) in [
        ("DATA_DIR", "/data"),
        ("KEY_DIR", "/keys"),
        ("TMP_DIR", "/tmp"),
    ] {
        assert!(
            help.contains(&format!("[env: {var}="))
                && help.contains(&format!("[default: {default}]")),
            "{var}: {help}"
        );
        assert!(
            text.contains(default),
            "the image does not prepare {default}"
        );
    }
    let copy = instruction("COPY").join("\n");
    assert!(copy.contains("/usr/local/bin/ferrosync"), "{copy}");
    let entry = instruction("ENTRYPOINT").join("\n");
    assert!(
        entry.contains("/usr/local/bin/ferrosync") && entry.contains("mover"),
        "{entry}"
    );
    // The mover writes only to /tmp (an emptyDir) and /data, so a read-only root works; the
    // image must not need anything else writable.
    let volume = instruction("VOLUME").join(" ");
    for dir in ["/tmp", "/data"] {
        assert!(volume.contains(dir), "VOLUME must declare {dir}: {volume}");
    }
    assert!(
        text.contains("/usr/share/rsync/scripts/munge-symlinks"),
        "keep rsync's helper scripts"
    );
}
