//! The harness keeps its promise: a control plane leaves no process and no directory
//! behind, whether it is dropped or its test binary is killed outright.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{ControlPlane, Options, wait};

/// Set in the child process of `a_killed_test_binary_leaves_nothing_behind`.
const CHILD_ENV: &str = "FERROSYNC_HARNESS_CHILD";

fn alive(pid: u32) -> bool {
    // Zombies count as gone: their group was killed, only the reaping is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

async fn wait_until_gone(pids: &[u32], dir: &Path) {
    wait::until(
        "the control plane's processes and directory to be gone",
        Duration::from_secs(20),
        || {
            let gone = !dir.exists() && pids.iter().all(|pid| !alive(*pid));
            async move { Ok(gone.then_some(())) }
        },
    )
    .await
    .unwrap();
}

/// Not a test of its own: the body of the child process that the next test kills.
#[test]
#[ignore = "run only as the child of a_killed_test_binary_leaves_nothing_behind"]
fn child_starts_a_control_plane_and_waits() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cp = ControlPlane::start(Options {
        install_crds: false,
        ..Options::default()
    })
    .expect("control plane");
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!("READY {} {}", cp.dir.display(), pids.join(" "));
    // Parked until killed; this thread never wakes otherwise.
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn a_killed_test_binary_leaves_nothing_behind() {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "harness::child_starts_a_control_plane_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the child test binary");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("READY "))
    });
    let line = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("the child starts a control plane in time")
        .expect("reader")
        .expect("a READY line");
    let mut fields = line.split_whitespace().skip(1);
    let dir = PathBuf::from(fields.next().expect("dir"));
    let pids: Vec<u32> = fields.map(|p| p.parse().expect("pid")).collect();
    assert!(
        dir.exists() && pids.len() == 2 && pids.iter().all(|pid| alive(*pid)),
        "{line}"
    );

    child.kill().expect("SIGKILL the child test binary");
    child.wait().expect("reap");
    wait_until_gone(&pids, &dir).await;
}

#[tokio::test]
async fn a_dropped_control_plane_leaves_nothing_behind() {
    let cp = ControlPlane::start(Options {
        install_crds: false,
        ..Options::default()
    })
    .expect("control plane");
    let (pids, dir) = (cp.pids(), cp.dir.clone());
    drop(cp);
    wait_until_gone(&pids, &dir).await;
}
