//! Failures: wrong key, bad key files, unreachable destination, movers killed
//! mid-transfer, SIGTERM and the idle timeout.

use std::{fs, net::TcpListener, time::Duration};

use ferrosync::mover::{ErrorClass, Outcome};
use nix::sys::signal::Signal;

use crate::{
    harness::{Env, KEY_B, Mover, Running, free_port, sync_with},
    tree::{Check, assert_same, build_tricky, noise, write},
};

#[test]
fn a_wrong_key_fails_authentication_and_writes_nothing() {
    let env = Env::new();
    build_tricky(&env.src, false);
    env.write_key("keys-src", KEY_B, 0o600);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let source = Mover::source(&env, port)
        .var("MAX_ATTEMPTS", "3")
        .run(Duration::from_secs(60));
    source.assert_code(13);
    let s = &source.summary;
    assert_eq!(s.error_class, Some(ErrorClass::AuthFailed));
    assert_eq!(s.transient, Some(false));
    assert!(s.auth_failure);
    assert_eq!(s.attempts, 1, "a permanent failure is not retried");
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("authentication failed")),
        "{s:?}"
    );
    assert_eq!(
        fs::read_dir(&env.dst).expect("read_dir").count(),
        0,
        "destination was written"
    );

    let mut dest = dest;
    dest.wait_until(
        "logged the authentication failure",
        Duration::from_secs(10),
        |d| d.log().contains("authentication failed"),
    );

    // The right key under another identity is refused the same way.
    let hex = crate::harness::KEY_A.split_once(':').expect("key").1;
    env.write_key("keys-src", &format!("other:{hex}"), 0o600);
    let source = Mover::source(&env, port)
        .var("MAX_ATTEMPTS", "3")
        .run(Duration::from_secs(60));
    source.assert_code(13);
    assert_eq!(source.summary.attempts, 1);

    dest.signal(Signal::SIGTERM);
    let dest = dest.wait(Duration::from_secs(20));
    dest.assert_code(22);
    assert_eq!(dest.summary.error_class, Some(ErrorClass::Interrupted));
    assert!(dest.summary.auth_failure, "{:?}", dest.summary);
    assert_eq!(fs::read_dir(&env.dst).expect("read_dir").count(), 0);
}

/// Breaks one input of both movers.
type Setup = Box<dyn Fn(&Env)>;

#[test]
fn bad_key_files_and_missing_data_are_refused_before_any_connection() {
    let env = Env::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let cases: [(&str, Setup, i32); 4] = [
        (
            "missing",
            Box::new(|e: &Env| {
                let _ = fs::remove_file(e.path("keys-src/psk.txt"));
                let _ = fs::remove_file(e.path("keys-dst/psk.txt"));
            }),
            11,
        ),
        (
            "world-readable",
            Box::new(|e: &Env| {
                e.write_key("keys-src", crate::harness::KEY_A, 0o644);
                e.write_key("keys-dst", crate::harness::KEY_A, 0o644);
            }),
            11,
        ),
        (
            "malformed",
            Box::new(|e: &Env| {
                e.write_key("keys-src", "volsync:abcdef", 0o600);
                e.write_key("keys-dst", "no separator at all", 0o600);
            }),
            11,
        ),
        (
            "no data directory",
            Box::new(|e: &Env| {
                e.write_key("keys-src", crate::harness::KEY_A, 0o600);
                e.write_key("keys-dst", crate::harness::KEY_A, 0o600);
                fs::remove_dir(&e.src).expect("rmdir");
                fs::remove_dir(&e.dst).expect("rmdir");
            }),
            12,
        ),
    ];
    for (what, setup, code) in cases {
        setup(&env);
        let source = Mover::source(&env, port).run(Duration::from_secs(20));
        source.assert_code(code);
        assert!(
            !source.log.contains("stunnel"),
            "{what}: source started stunnel:\n{}",
            source.log
        );
        let dest = Mover::destination(&env, free_port()).run(Duration::from_secs(20));
        dest.assert_code(code);
        assert!(
            !dest.log.contains("listening"),
            "{what}: destination listened:\n{}",
            dest.log
        );
        assert!(listener.accept().is_err(), "{what}: a connection was made");
        assert_eq!(source.summary.transient, Some(false));
        let message = source.summary.message.clone().unwrap_or_default();
        assert!(
            message.contains("psk.txt") || code == 12,
            "{what}: {message}"
        );
    }
}

#[test]
fn an_unreachable_destination_ends_after_bounded_retries() {
    let env = Env::new();
    write(&env.src, b"file", b"data\n");
    let source = Mover::source(&env, free_port())
        .var("MAX_ATTEMPTS", "3")
        .run(Duration::from_secs(60));
    source.assert_code(20);
    let s = &source.summary;
    assert_eq!(s.error_class, Some(ErrorClass::Unreachable));
    assert_eq!(s.transient, Some(true));
    assert_eq!(s.attempts, 3);
    let message = s.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("unreachable") && message.contains("after 3 attempts"),
        "{message}"
    );
    assert!(
        source.log.contains("Retry 1/3") && source.log.contains("Retry 2/3"),
        "{}",
        source.log
    );
}

/// A source tree whose transfer takes seconds when rate-limited.
fn slow_tree(env: &Env) {
    write(&env.src, b"big.bin", &noise(24 << 20, 5));
    build_tricky(&env.src, false);
}

/// Waits until the destination holds a partly received file (rsync's `.name.XXXXXX`).
fn wait_for_partial_transfer(runner: &mut Running, dst: &std::path::Path) {
    runner.wait_until("started transferring", Duration::from_secs(30), |_| {
        fs::read_dir(dst).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".big.bin.")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    });
}

#[test]
fn a_source_killed_mid_transfer_never_makes_the_destination_succeed() {
    let env = Env::new();
    slow_tree(&env);
    let port = free_port();
    let mut dest = Mover::destination(&env, port).spawn().listening();
    let mut source = Mover::source(&env, port).var("RSYNC_BWLIMIT", "4m").spawn();
    wait_for_partial_transfer(&mut source, &env.dst);
    source.signal_group(Signal::SIGKILL);
    let _ = source.child.wait();

    // The daemon notices the lost connection and drops its temporary file.
    dest.wait_until(
        "cleaned up the partial file",
        Duration::from_secs(30),
        |_| {
            !fs::read_dir(&env.dst)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".big.bin."))
        },
    );
    assert!(dest.is_running(), "destination exited:\n{}", dest.log());
    assert!(
        !dest.summary_written(),
        "destination reported a result:\n{}",
        dest.log()
    );
    assert!(!dest.log().contains("completion signal"), "{}", dest.log());

    // A second run against the same destination completes.
    let source = Mover::source(&env, port).run(Duration::from_secs(120));
    source.assert_code(0);
    dest.wait(Duration::from_secs(30)).assert_code(0);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn a_destination_killed_mid_transfer_is_a_transient_failure_and_a_rerun_completes() {
    let env = Env::new();
    slow_tree(&env);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let mut source = Mover::source(&env, port)
        .var("RSYNC_BWLIMIT", "4m")
        .var("MAX_ATTEMPTS", "2")
        .spawn();
    wait_for_partial_transfer(&mut source, &env.dst);
    dest.signal_group(Signal::SIGKILL);
    drop(dest);
    let source = source.wait(Duration::from_secs(60));
    assert!(
        matches!(source.code, 20 | 21),
        "code {}; log:\n{}",
        source.code,
        source.log
    );
    assert_eq!(source.summary.transient, Some(true), "{:?}", source.summary);
    assert_eq!(source.summary.result, Outcome::Failed);

    sync_with(&env, |d| d, |s| s);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn sigterm_and_the_idle_timeout_end_a_waiting_destination_without_success() {
    let env = Env::new();
    let dest = Mover::destination(&env, free_port())
        .var("IDLE_TIMEOUT", "1s")
        .spawn()
        .listening();
    let done = dest.wait(Duration::from_secs(20));
    done.assert_code(23);
    assert_eq!(done.summary.error_class, Some(ErrorClass::IdleTimeout));
    assert!(
        done.summary
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no source connected"))
    );

    let dest = Mover::destination(&env, free_port()).spawn().listening();
    dest.signal(Signal::SIGTERM);
    let done = dest.wait(Duration::from_secs(20));
    done.assert_code(22);
    assert_eq!(done.summary.result, Outcome::Failed);
}

/// A tiny tmpfs mounted as the destination volume, unmounted on drop.
struct SmallVolume(std::path::PathBuf);
impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_destination_is_a_permanent_failure_named_as_such() {
    let env = Env::new();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&env.dst)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    let _volume = SmallVolume(env.dst.clone());
    write(&env.src, b"too-big.bin", &noise(6 << 20, 9));
    let port = free_port();
    let _dest = Mover::destination(&env, port).spawn().listening();
    let source = Mover::source(&env, port)
        .var("MAX_ATTEMPTS", "3")
        .run(Duration::from_secs(60));
    source.assert_code(14);
    assert_eq!(
        source.summary.error_class,
        Some(ErrorClass::DestinationFull)
    );
    assert_eq!(source.summary.transient, Some(false));
    assert_eq!(source.summary.attempts, 1, "a full volume is not retried");
}

#[test]
fn sigterm_stops_a_source_mid_transfer_with_a_transient_code() {
    let env = Env::new();
    slow_tree(&env);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let mut source = Mover::source(&env, port).var("RSYNC_BWLIMIT", "4m").spawn();
    wait_for_partial_transfer(&mut source, &env.dst);
    source.signal(Signal::SIGTERM);
    let source = source.wait(Duration::from_secs(30));
    source.assert_code(22);
    assert_eq!(source.summary.error_class, Some(ErrorClass::Interrupted));
    assert_eq!(source.summary.transient, Some(true));
    let mut dest = dest;
    assert!(
        dest.is_running() && !dest.summary_written(),
        "{}",
        dest.log()
    );
}
