//! Compatibility with the reference protocol, for trees without newlines in names: a
//! source that behaves like the reference's client (newline list, any `complete`) against
//! our destination, and our source against a destination set up as the reference's.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::symlink},
    process::{Child, Command, Stdio},
    time::Duration,
};

use ferrosync::mover::ErrorClass;
use nix::sys::signal::Signal;

use crate::{
    harness::{Env, KEY_B, Mover, free_port},
    tree::{Check, assert_same, p, set_mtime, walk, write},
};

/// Newline-free names; none at the top starts with `#` or `;`, which the reference's
/// `--files-from` list would drop as comments.
fn reference_tree(env: &Env) {
    write(&env.src, b"file one", b"1\n");
    write(&env.src, b"dir#/-dash", b"2\n");
    fs::create_dir_all(env.src.join("links")).expect("mkdir");
    symlink("../file one", env.src.join("links/rel")).expect("symlink");
    symlink("/etc/hostname", env.src.join("abs")).expect("symlink");
    write(&env.dst, b"extra", b"to be deleted\n");
    // rsync compares times at whole seconds for entries it does not transfer data for
    // (directories, links), so a tree created in the sync's own second would look synced.
    for (i, (rel, _)) in walk(&env.src).iter().rev().enumerate() {
        set_mtime(&p(&env.src, rel), 1_600_000_000 + i as i64, 0);
    }
}

struct Stunnel(Child);
impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stunnel(conf_path: &std::path::Path, conf: &str) -> Stunnel {
    fs::write(conf_path, conf).expect("write conf");
    Stunnel(
        Command::new("stunnel")
            .arg(conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel"),
    )
}

fn wait_port(port: u16) {
    crate::harness::eventually("stunnel listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// The reference's client side: a stunnel section (`PSK`, the source's key) listening on
/// a local port that it tunnels to `port`. Returns the tunnel and the local port.
fn reference_client(env: &Env, port: u16) -> (Stunnel, u16) {
    let local = free_port();
    let tunnel = stunnel(
        &env.path("ref-client.conf"),
        &format!(
            "foreground = yes\npid =\n[rsync]\nciphers = PSK\nPSKsecrets = {}/psk.txt\n\
             accept = 127.0.0.1:{local}\nclient = yes\nconnect = 127.0.0.1:{port}\n",
            env.path("keys-src").display()
        ),
    );
    wait_port(local);
    (tunnel, local)
}

/// A reference server on `port`: stunnel with `kPSK`, TLS 1.3 only, an rsync daemon per
/// connection writing to the destination tree. Returns the tunnel and the daemon's
/// `control` directory.
fn reference_destination(env: &Env, port: u16) -> (Stunnel, std::path::PathBuf) {
    let control = env.tmp("ref-control");
    let rsyncd = env.path("ref-rsyncd.conf");
    fs::write(
        &rsyncd,
        format!(
            "address = 127.0.0.1\nuse chroot = false\nnumeric ids = true\nmunge symlinks = true\n\
             read only = false\nopen noatime = true\nreverse lookup = false\nuid = 0\ngid = *\n\
             [data]\npath = {}\n[control]\npath = {}\n",
            env.dst.display(),
            control.display()
        ),
    )
    .expect("rsyncd.conf");
    let tunnel = stunnel(
        &env.path("ref-server.conf"),
        &format!(
            "foreground = yes\npid =\n[rsync]\nciphers = kPSK\nPSKsecrets = {}/psk.txt\n\
             sslVersionMin = TLSv1.3\naccept = 127.0.0.1:{port}\nexec = /usr/bin/rsync\n\
             execArgs = rsync --server --daemon --config={} .\n",
            env.path("keys-dst").display(),
            rsyncd.display()
        ),
    );
    wait_port(port);
    (tunnel, control)
}

#[test]
fn a_reference_style_source_with_a_newline_list_completes_our_destination() {
    let env = Env::new();
    reference_tree(&env);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();

    // The reference client: a stunnel section listening locally, rsync to it.
    let (_tunnel, local) = reference_client(&env, port);
    let script = format!(
        r#"set -e
cd "$SRC"
ls -A | grep -v '^lost+found$' > "$WORK/list"
rsync -aAhHSxz -r --exclude=lost+found --itemize-changes --info=stats2,misc2 --files-from="$WORK/list" ./ rsync://127.0.0.1:{local}/data > "$WORK/pass1"
rsync -rx --exclude=lost+found --ignore-existing --ignore-non-existing --delete --itemize-changes --info=stats2,misc2 ./ rsync://127.0.0.1:{local}/data
grep '^cL' "$WORK/pass1" | sed -e 's/^cL[^ ]* //' -e 's/ -> .*$//' > "$WORK/symlink-munging-file"
rsync "$WORK/symlink-munging-file" rsync://127.0.0.1:{local}/control/
echo '#!/bin/bash' > "$WORK/client.sh"
rsync "$WORK/client.sh" rsync://127.0.0.1:{local}/control/complete
"#
    );
    let work = env.tmp("ref-work");
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("SRC", &env.src)
        .env("WORK", &work)
        .status()
        .expect("bash");
    assert!(status.success(), "reference-style source failed");
    let dest = dest.wait(Duration::from_secs(30));
    dest.assert_code(0);
    assert!(dest.log.contains("from a reference source"), "{}", dest.log);
    assert_same(&env.src, &env.dst, Check { owners: true });
}

#[test]
fn our_source_completes_a_reference_style_destination() {
    let env = Env::new();
    reference_tree(&env);
    let port = free_port();
    let (_tunnel, control) = reference_destination(&env, port);
    Mover::source(&env, port)
        .run(Duration::from_secs(60))
        .assert_code(0);

    // What the reference destination does once `complete` exists.
    assert!(control.join("complete").exists());
    let list = fs::read(control.join("symlink-munging-file")).expect("newline list");
    let mut paths: Vec<&[u8]> = list
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    paths.sort();
    assert_eq!(paths, [&b"abs"[..], b"links/rel"]);
    for path in paths {
        let status = Command::new("/usr/share/rsync/scripts/munge-symlinks")
            .arg("--unmunge")
            .arg(std::ffi::OsStr::from_bytes(path))
            .current_dir(&env.dst)
            .output()
            .expect("munge-symlinks");
        assert!(status.status.success());
    }
    assert_eq!(
        fs::read_link(env.dst.join("links/rel")).expect("readlink"),
        std::path::PathBuf::from("../file one")
    );
    assert!(!env.dst.join("extra").exists());
    assert_eq!(fs::read(env.dst.join("dir#/-dash")).expect("read"), b"2\n");
}

#[test]
fn our_source_with_another_key_is_refused_by_a_reference_destination() {
    let env = Env::new();
    reference_tree(&env);
    env.write_key("keys-src", KEY_B, 0o600);
    let port = free_port();
    let (_tunnel, control) = reference_destination(&env, port);
    let source = Mover::source(&env, port)
        .var("MAX_ATTEMPTS", "3")
        .run(Duration::from_secs(60));
    source.assert_code(13);
    assert_eq!(source.summary.error_class, Some(ErrorClass::AuthFailed));
    assert_eq!(
        source.summary.attempts, 1,
        "a permanent failure is not retried"
    );
    assert!(!control.join("complete").exists());
    assert_eq!(
        fs::read_dir(&env.dst).expect("read_dir").count(),
        1,
        "only the pre-existing file"
    );
}

#[test]
fn a_reference_client_with_another_key_is_refused_by_our_destination() {
    let env = Env::new();
    reference_tree(&env);
    env.write_key("keys-src", KEY_B, 0o600);
    let port = free_port();
    let mut dest = Mover::destination(&env, port).spawn().listening();
    let (_tunnel, local) = reference_client(&env, port);
    let status = Command::new("rsync")
        .args(["-a", "--timeout=20"])
        .arg(format!("{}/", env.src.display()))
        .arg(format!("rsync://127.0.0.1:{local}/data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("rsync");
    assert!(!status.success(), "rsync succeeded with another key");
    dest.wait_until(
        "logged the authentication failure",
        Duration::from_secs(10),
        |d| d.log().contains("authentication failed"),
    );
    assert!(!env.dst.join("file one").exists(), "data arrived");
    dest.signal(Signal::SIGTERM);
    let done = dest.wait(Duration::from_secs(20));
    done.assert_code(22);
    assert!(done.summary.auth_failure, "{:?}", done.summary);
}
