//! The built-in TLS-PSK tunnel: it interoperates with the stunnel fallback in both
//! directions, ignores connections that never authenticate, stops its rsync daemons with
//! the destination, and lets rsync's I/O timeout end a stalled transfer.

use std::{
    fs,
    io::Read,
    net::TcpStream,
    time::{Duration, Instant},
};

use ferrosync::mover::ErrorClass;
use nix::sys::signal::Signal;

use crate::{
    harness::{Env, Mover, Running, free_port, sync_with},
    tree::{Check, assert_same, build_tricky, noise, write},
};

#[test]
fn builtin_and_stunnel_movers_interoperate_both_ways() {
    for (dst_tunnel, src_tunnel) in [("stunnel", "builtin"), ("builtin", "stunnel")] {
        let env = Env::new();
        build_tricky(&env.src, false);
        let (source, dest) = sync_with(
            &env,
            |d| d.var("TLS_TUNNEL", dst_tunnel),
            |s| s.var("TLS_TUNNEL", src_tunnel),
        );
        assert_same(&env.src, &env.dst, Check { owners: true });
        assert!(
            source.summary.files_transferred > 0,
            "{src_tunnel} -> {dst_tunnel}: {:?}",
            source.summary
        );
        assert!(dest.log.contains("from a ferrosync source"), "{}", dest.log);
    }
}

/// Child pids of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
                rest.split_whitespace().nth(1) == Some(&pid.to_string())
            })
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        !matches!(rest.split_whitespace().next(), Some("Z" | "X"))
    })
}

#[test]
fn a_silent_connection_neither_delays_completion_nor_keeps_the_destination_alive() {
    let env = Env::new();
    write(&env.src, b"file", b"data\n");
    let port = free_port();
    let mut dest = Mover::destination(&env, port)
        .var("IDLE_TIMEOUT", "2s")
        .spawn()
        .listening();
    // Connects and never says anything: no handshake, no daemon.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    dest.wait_until(
        "counted the silent connection as idle",
        Duration::from_secs(30),
        |d| !d.is_running(),
    );
    let done = dest.wait(Duration::from_secs(10));
    done.assert_code(23);
    assert_eq!(done.summary.error_class, Some(ErrorClass::IdleTimeout));
    // The destination closed it on its way out.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));

    // With a silent connection open, a real source still completes promptly.
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let _silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let start = Instant::now();
    Mover::source(&env, port)
        .run(Duration::from_secs(60))
        .assert_code(0);
    dest.wait(Duration::from_secs(20)).assert_code(0);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the destination waited for the silent connection: {:?}",
        start.elapsed()
    );
    assert_same(&env.src, &env.dst, Check { owners: true });
}

/// Starts a rate-limited transfer and waits until the destination holds a partial file.
fn transfer_in_progress(env: &Env, port: u16, source: Mover) -> (Running, Running) {
    write(&env.src, b"big.bin", &noise(24 << 20, 11));
    let dest = Mover::destination(env, port).spawn().listening();
    let mut source = source.var("RSYNC_BWLIMIT", "4m").spawn();
    source.wait_until("started transferring", Duration::from_secs(30), |_| {
        fs::read_dir(&env.dst)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(".big.bin.")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    });
    (dest, source)
}

#[test]
fn sigterm_ends_the_destinations_daemons_mid_transfer() {
    let env = Env::new();
    let port = free_port();
    let (dest, source) = transfer_in_progress(&env, port, Mover::source(&env, port));
    let daemons = children(dest.child.id());
    assert!(!daemons.is_empty(), "no rsync daemon under the destination");
    dest.signal(Signal::SIGTERM);
    let done = dest.wait(Duration::from_secs(20));
    done.assert_code(22);
    assert_eq!(done.summary.error_class, Some(ErrorClass::Interrupted));
    crate::harness::eventually("the daemons exited", Duration::from_secs(10), || {
        daemons.iter().all(|p| !alive(*p))
    });
    let source = source.wait(Duration::from_secs(120));
    assert!(source.code != 0, "{}", source.log);
    assert_eq!(source.summary.transient, Some(true), "{:?}", source.summary);
    assert!(
        !env.dst.join("big.bin").exists(),
        "an unfinished file was put in place"
    );
}

#[test]
fn a_stalled_destination_is_ended_by_the_io_timeout() {
    let env = Env::new();
    let port = free_port();
    let source = Mover::source(&env, port)
        .var("RSYNC_IO_TIMEOUT", "2s")
        .var("MAX_ATTEMPTS", "1");
    let (dest, source) = transfer_in_progress(&env, port, source);
    // Freezes the destination mover and its daemons: the connection stays open, silent.
    dest.signal_group(Signal::SIGSTOP);
    let start = Instant::now();
    let source = source.wait(Duration::from_secs(60));
    dest.signal_group(Signal::SIGCONT);
    assert_eq!(
        source.summary.error_class,
        Some(ErrorClass::ConnectionLost),
        "{:?}\n{}",
        source.summary,
        source.log
    );
    assert_eq!(source.summary.transient, Some(true));
    assert!(
        start.elapsed() < Duration::from_secs(45),
        "took {:?}",
        start.elapsed()
    );
}
