//! A key holder who does not follow the protocol: a second source, a hostile client with
//! plain rsync, links restored by an earlier run. Whatever they do, the destination never
//! publishes a partial or mixed volume, its control module stays small and holds only the
//! control files, and nothing outside the volume is read or written.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use ferrosync::mover::ErrorClass;
use nix::sys::signal::Signal;

use crate::{
    harness::{Env, Mover, Running, eventually, free_port, sync},
    tree::{Check, assert_same, build_tricky, compare, noise, write},
};

/// A plain rsync client behind a stunnel TLS-PSK client, holding the right key: what a
/// hostile key holder (or a reference source) has.
struct Raw {
    tunnel: Child,
    port: u16,
}

impl Raw {
    fn connect(env: &Env, dest_port: u16) -> Self {
        let port = free_port();
        let conf = env.path(&format!("raw-client-{port}.conf"));
        fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[rsync]\nciphers = PSK\nPSKsecrets = {}/psk.txt\n\
                 accept = 127.0.0.1:{port}\nclient = yes\nconnect = 127.0.0.1:{dest_port}\n",
                env.path("keys-src").display()
            ),
        )
        .expect("write conf");
        let tunnel = Command::new("stunnel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel");
        eventually("the client tunnel listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { tunnel, port }
    }

    fn url(&self, path: &str) -> String {
        format!("rsync://127.0.0.1:{}/{path}", self.port)
    }

    /// Runs rsync with `args` (a trailing `@url` argument names a module path).
    fn rsync(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.strip_prefix('@') {
                Some(path) => self.url(path),
                None => (*a).to_owned(),
            })
            .collect();
        Command::new("rsync")
            .args(&args)
            .output()
            .expect("rsync runs")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.tunnel.kill();
        let _ = self.tunnel.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The destination's control directory, as the mover lays out its scratch space.
fn control_dir(env: &Env) -> PathBuf {
    env.path("tmp-dst/ferrosync-destination/control")
}

/// A source tree whose rate-limited transfer takes a few seconds.
fn slow_tree(root: &Path) {
    write(root, b"big.bin", &noise(12 << 20, 11));
    write(root, b"a/one", b"A one\n");
    write(root, b"shared", b"from A\n");
}

fn wait_for_partial(runner: &mut Running, dst: &Path) {
    runner.wait_until("started transferring", Duration::from_secs(30), |_| {
        fs::read_dir(dst).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".big.bin.")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    });
}

#[test]
fn a_second_source_with_the_same_key_cannot_complete_or_mix_into_another_sources_sync() {
    let env = Env::new();
    slow_tree(&env.src);
    let src_b = env.path("src-b");
    write(&src_b, b"b/two", b"B two\n");
    write(&src_b, b"shared", b"from B, which must not win\n");
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let mut a = Mover::source(&env, port).var("RSYNC_BWLIMIT", "3m").spawn();
    wait_for_partial(&mut a, &env.dst);

    // B runs to its end while A's first pass is in flight.
    let b = Mover::source(&env, port)
        .var("DATA_DIR", &src_b.display().to_string())
        .var("TMP_DIR", &env.tmp("tmp-src-b").display().to_string())
        .var(
            "TERMINATION_MESSAGE_PATH",
            &env.path("tmp-src-b/summary.json").display().to_string(),
        )
        .var("MAX_ATTEMPTS", "2")
        .run(Duration::from_secs(60));
    // B waited while A transferred, was refused, and gave up as "try again later" (or,
    // had A finished meanwhile, found no destination).
    assert_ne!(b.code, 0, "B completed during A's sync:\n{}", b.log);
    assert_eq!(b.summary.transient, Some(true), "{:?}", b.summary);

    a.wait(Duration::from_secs(120)).assert_code(0);
    let dest = dest.wait(Duration::from_secs(30));
    dest.assert_code(0);
    assert!(
        dest.log.contains("another source's session is in progress"),
        "{}",
        dest.log
    );
    assert_eq!(dest.log.matches("completion signal received").count(), 1);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn a_foreign_complete_mid_transfer_is_refused_and_the_sync_still_completes() {
    let env = Env::new();
    slow_tree(&env.src);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let mut a = Mover::source(&env, port).var("RSYNC_BWLIMIT", "3m").spawn();
    wait_for_partial(&mut a, &env.dst);

    // A hostile key holder sends `complete` (with and without a made-up session), as
    // plain rsync does: refused while A's session runs.
    let raw = Raw::connect(&env, port);
    let work = env.tmp("hostile");
    fs::write(work.join("complete"), "ferrosync-complete v1\n").expect("write");
    fs::write(
        work.join("forged"),
        format!("ferrosync-complete v1\nsession={}\n", "0".repeat(32)),
    )
    .expect("write");
    let complete = work.join("complete").display().to_string();
    let forged = work.join("forged").display().to_string();
    for args in [
        vec![complete.as_str(), "@control/"],
        vec![
            "-M--suffix=.ferrosync-session-00000000000000000000000000000000",
            forged.as_str(),
            "@control/complete",
        ],
    ] {
        // Refused: rsync's "requested action not supported" (exit 4) from the gate, or,
        // had A completed while this one waited its turn, no destination at all.
        let out = raw.rsync(&args);
        assert!(!out.status.success(), "accepted: {}", text(&out));
    }

    a.wait(Duration::from_secs(120)).assert_code(0);
    let dest = dest.wait(Duration::from_secs(30));
    dest.assert_code(0);
    assert!(
        dest.log.contains("ferrosync destination busy"),
        "{}",
        dest.log
    );
    assert_eq!(dest.log.matches("completion signal received").count(), 1);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn the_control_module_takes_only_its_files_is_write_only_and_is_capped() {
    let env = Env::new();
    let port = free_port();
    let mut dest = Mover::destination(&env, port)
        .var("CONTROL_LIMIT", "1Mi")
        .spawn()
        .listening();
    let raw = Raw::connect(&env, port);
    let work = env.tmp("hostile");
    write(&work, b"up/evil", b"not a control file\n");
    write(&work, b"up/nested/complete", b"not at the top\n");
    let up = format!("{}/", work.join("up").display());
    let out = raw.rsync(&["-r", &up, "@control/"]);
    let control = control_dir(&env);
    for name in ["evil", "nested"] {
        assert!(
            !control.join(name).exists(),
            "{name} was accepted: {}",
            text(&out)
        );
    }
    // Nothing can be read back from it.
    let pulled = env.tmp("pulled");
    let out = raw.rsync(&["-r", "@control/", &pulled.display().to_string()]);
    assert!(
        !out.status.success(),
        "control was readable: {}",
        text(&out)
    );
    assert!(dest.is_running(), "{}", dest.log());

    // A list far over the cap ends the run and frees the memory.
    write(&work, b"symlink-munging-file0", &noise(8 << 20, 3));
    let big = work.join("symlink-munging-file0").display().to_string();
    let _ = raw.rsync(&["--bwlimit=4m", &big, "@control/"]);
    let dest = {
        dest.wait_until("ended", Duration::from_secs(60), |d| !d.is_running());
        dest.wait(Duration::from_secs(10))
    };
    dest.assert_code(15);
    assert_eq!(dest.summary.error_class, Some(ErrorClass::RsyncFailed));
    let message = dest.summary.message.clone().unwrap_or_default();
    assert!(
        message.contains("over its limit of 1048576 bytes") && message.contains("CONTROL_LIMIT"),
        "{message}"
    );
    assert!(!control.exists(), "the control files were left in memory");
    assert_eq!(fs::read_dir(&env.dst).expect("dst").count(), 0);
}

#[test]
fn a_reference_style_client_is_refused_once_a_session_has_claimed_the_run() {
    let env = Env::new();
    write(&env.src, b"f", b"data\n");
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    // A source dies after its first connection: it claimed the run.
    let raw = Raw::connect(&env, port);
    let src = format!("{}/", env.src.display());
    let out = raw.rsync(&[
        "-r",
        "-M--suffix=.ferrosync-session-11111111111111111111111111111111",
        &src,
        "@data/",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // A client without a session can now neither write nor complete.
    let work = env.tmp("hostile");
    fs::write(work.join("complete"), "x").expect("write");
    for args in [
        vec![src.as_str(), "-r", "@data/"],
        vec![work.join("complete").to_str().expect("utf-8"), "@control/"],
    ] {
        let out = raw.rsync(&args);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    }
    let mut dest = dest;
    dest.wait_until("logged the refusals", Duration::from_secs(10), |d| {
        d.log().matches("ferrosync destination busy").count() >= 2
    });
    drop(raw);
    dest.signal(Signal::SIGTERM);
    let dest = dest.wait(Duration::from_secs(20));
    dest.assert_code(22);
}

/// Links a first run restores, pointing out of the volume: absolute and relative, to a
/// directory and to a file.
fn escaping_links(env: &Env) -> PathBuf {
    let outside = env.path("outside");
    write(&outside, b"secret", b"outside the volume\n");
    symlink(&outside, env.src.join("abs-dir")).expect("symlink");
    symlink("../outside", env.src.join("rel-dir")).expect("symlink");
    symlink(outside.join("secret"), env.src.join("abs-file")).expect("symlink");
    build_tricky(&env.src, false);
    outside
}

#[test]
fn links_restored_by_an_earlier_run_never_lead_a_later_run_out_of_the_volume() {
    let env = Env::new();
    let outside = escaping_links(&env);
    sync(&env);
    assert_eq!(
        fs::read_link(env.dst.join("abs-dir")).expect("restored"),
        outside
    );
    let snapshot = env.path("outside-before");
    let copy = Command::new("cp")
        .args(["-a"])
        .arg(&outside)
        .arg(&snapshot)
        .status()
        .expect("cp");
    assert!(copy.success());

    // The next run's daemon, and a key holder with plain rsync.
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let raw = Raw::connect(&env, port);
    let hostile = env.path("hostile");
    for rel in [&b"abs-dir/pwned"[..], b"rel-dir/pwned", b"abs-dir/secret"] {
        write(&hostile, rel, b"written through a link\n");
    }
    write(&hostile, b"abs-file", b"written over the link's target\n");
    let up = format!("{}/", hostile.display());
    let pulled = env.tmp("pulled");
    let down = pulled.display().to_string();
    let attempts: [&[&str]; 8] = [
        // Through the links as directories, with and without keep-dirlinks.
        &["-r", "-K", &up, "@data/"],
        &["-r", &up, "@data/"],
        &[
            "-r",
            "--relative",
            &format!("{}/./abs-dir/pwned", hostile.display()),
            "@data/",
        ],
        &[
            &format!("{}/abs-dir/pwned", hostile.display()),
            "@data/abs-dir/",
        ],
        // Reading through them.
        &["-rL", "@data/", &down],
        &["-r", "--copy-unsafe-links", "@data/", &down],
        &["-r", "@data/abs-dir/", &down],
        &["@data/abs-file", &down],
    ];
    let mut log = String::new();
    for args in attempts {
        let out = raw.rsync(args);
        log.push_str(&format!("{args:?}: {}\n", text(&out)));
    }
    if let Err(diff) = compare(&snapshot, &outside, Check { owners: true }) {
        panic!("the directory outside the volume changed:\n{diff}\n{log}");
    }
    let leaked = Command::new("grep")
        .args(["-rl", "outside the volume"])
        .arg(&pulled)
        .output()
        .expect("grep");
    assert!(
        leaked.stdout.is_empty(),
        "read from outside the volume: {}\n{log}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    drop(raw);
    dest.signal(Signal::SIGTERM);
    dest.wait(Duration::from_secs(20)).assert_code(22);
}

#[test]
fn a_connection_that_never_starts_a_transfer_is_closed_and_the_idle_timeout_still_ends_the_run() {
    let env = Env::new();
    let port = free_port();
    let dest = Mover::destination(&env, port)
        .var("GREETING_TIMEOUT", "1s")
        .var("IDLE_TIMEOUT", "3s")
        .spawn()
        .listening();
    // A key holder completes the TLS handshake and then says nothing, holding the
    // connection open: the rsync daemon alone would wait for it forever, and so would the
    // idle timeout, which only counted time without connections.
    let raw = Raw::connect(&env, port);
    let silent = std::net::TcpStream::connect(("127.0.0.1", raw.port)).expect("connect");
    let dest = dest.wait(Duration::from_secs(60));
    drop(silent);
    dest.assert_code(23);
    assert_eq!(dest.summary.error_class, Some(ErrorClass::IdleTimeout));
    assert!(
        dest.log
            .contains("closing a connection that started no transfer within 1s"),
        "{}",
        dest.log
    );
}
