//! `ferrosync mover destination`: a TLS-PSK stunnel server that runs an rsync daemon per
//! connection, until the source signals completion; then it restores the munged symlinks,
//! stops stunnel and syncs the filesystem.
//!
//! Completion handshake: the source's upload of `control/complete` succeeds only once the
//! daemon has the file in place. Seeing it, the destination waits until stunnel has no
//! daemon child left (the upload's connection has closed), instead of the reference's fixed
//! 5 s sleep, then stops stunnel so nothing can write during the restore. This module must
//! never exit 0 unless `complete` arrived and the restore and sync succeeded.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

use super::{
    Tally, control,
    exit::{ErrorClass, Failure},
    keyfile, procs, rsyncd, say, session,
    settings::{self, DestinationArgs},
    source::COMPLETE_MARKER,
    stunnel::{self, LogEvent},
    symlinks,
};

/// How often the control file is looked for.
const POLL: Duration = Duration::from_millis(25);
/// How often stunnel's children are counted for the idle timeout.
const ACTIVITY_POLL: Duration = Duration::from_millis(500);
/// Longest wait for in-flight connections once `complete` arrived.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for stunnel to bind its port.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// Runs the destination side; counters go into `tally`.
pub async fn run(
    args: &DestinationArgs,
    term: &mut watch::Receiver<bool>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let common = &args.common;
    settings::check_common(common)?;
    let listen = settings::listen_endpoint(args, ipv6_enabled())?;
    let key = keyfile::check(&common.key_dir)?;
    if !common.data_dir.is_dir() {
        return Err(Failure::new(
            ErrorClass::DataDirMissing,
            format!(
                "target location not found: {} is not a directory",
                common.data_dir.display()
            ),
        ));
    }
    let setup = |e: &dyn std::fmt::Display| Failure::new(ErrorClass::SetupFailed, e.to_string());
    let rsync = procs::which("rsync").map_err(|e| setup(&e))?;
    let stunnel_bin = procs::which("stunnel").map_err(|e| setup(&e))?;

    // A restarted container keeps /tmp (an emptyDir): start from a clean work directory so
    // a stale `complete` can never end this run early.
    let work = common.tmp_dir.join("ferrosync-destination");
    let control = work.join("control");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&control)
        .map_err(|e| setup(&format!("creating {}: {e}", control.display())))?;
    let sessions = work.join("session");
    fs::create_dir_all(&sessions)
        .map_err(|e| setup(&format!("creating {}: {e}", sessions.display())))?;
    let daemon_is_nobody = !common.privileged && nix::unistd::geteuid().is_root();
    if daemon_is_nobody {
        // An unprivileged daemon started by root runs as "nobody" and must still be able
        // to receive the control files and run the session gate.
        for dir in [&control, &sessions] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o1777))
                .map_err(|e| setup(&format!("chmod {}: {e}", dir.display())))?;
        }
    }
    let store = session::Store::new(&sessions);
    store.init(daemon_is_nobody).map_err(|e| setup(&e))?;
    let gate_binary = std::env::current_exe().map_err(|e| setup(&e))?;
    if !rsyncd::is_plain(&gate_binary) {
        return Err(setup(&format!(
            "the mover binary's path {} cannot go into the rsync daemon's config",
            gate_binary.display()
        )));
    }
    let rsyncd_conf = work.join("rsyncd.conf");
    let rsyncd_log = work.join("rsyncd.log");
    let stunnel_conf = work.join("stunnel.conf");
    let write = |path: &Path, text: String| {
        fs::write(path, text)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o600)))
            .map_err(|e| setup(&format!("writing {}: {e}", path.display())))
    };
    write(
        &rsyncd_conf,
        rsyncd::render(&rsyncd::Daemon {
            data_dir: common.data_dir.clone(),
            control_dir: control.clone(),
            log_file: rsyncd_log.clone(),
            privileged: common.privileged,
            gate_binary,
            session_dir: sessions.clone(),
        }),
    )?;
    write(
        &stunnel_conf,
        stunnel::render_server(&listen, &key, &common.ssl_version_min, &rsync, &rsyncd_conf),
    )?;

    let mut cmd = Command::new(&stunnel_bin);
    cmd.arg(&stunnel_conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tunnel = procs::spawn(&mut cmd, "stunnel").map_err(|e| setup(&e))?;
    let auth_failures = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready) = watch::channel(None::<bool>);
    let stderr = tunnel.stderr.take().expect("stderr is piped");
    let log_task = tokio::spawn(follow_stunnel(stderr, ready_tx, auth_failures.clone()));

    let tail_offset = Arc::new(AtomicU64::new(0));
    let tail_task = tokio::spawn(follow_daemon_log(rsyncd_log.clone(), tail_offset.clone()));
    let mut watch = control::Watch::new(&control, args.control_limit, store, args.greeting_timeout);
    let result = serve(args, &listen, &mut tunnel, &mut ready, term, &mut watch).await;
    let result = match result {
        Ok(()) => finish(&common.data_dir, &control, &mut tunnel).await,
        Err(f) => {
            stop_tunnel(&mut tunnel, Duration::from_secs(5)).await;
            Err(f)
        }
    };
    // The control files live in the pod's memory, which outlives this process.
    let _ = fs::remove_dir_all(&control);
    let _ = log_task.await;
    tail_task.abort();
    print_daemon_errors(&rsyncd_log, &tail_offset);
    let (sent, received) = daemon_bytes(&rsyncd_log);
    tally.bytes_sent = sent;
    tally.bytes_received = received;
    let failures = auth_failures.load(Ordering::Relaxed);
    tally.auth_failure = failures > 0;
    if failures > 0 {
        say::info(
            "destination",
            &format!("{failures} connection(s) failed authentication (wrong pre-shared key)"),
        );
    }
    result
}

/// Waits for stunnel to listen, then for the completion signal.
async fn serve(
    args: &DestinationArgs,
    listen: &str,
    tunnel: &mut Child,
    ready: &mut watch::Receiver<Option<bool>>,
    term: &mut watch::Receiver<bool>,
    control: &mut control::Watch,
) -> Result<(), Failure> {
    let setup = |m: String| Failure::new(ErrorClass::SetupFailed, m);
    tokio::select! {
        r = ready.wait_for(Option::is_some) => {
            if r.map(|v| *v != Some(true)).unwrap_or(true) {
                return Err(setup(format!("stunnel could not listen on {listen}")));
            }
        }
        _ = tunnel.wait() => return Err(setup(format!("stunnel exited before listening on {listen}"))),
        _ = tokio::time::sleep(READY_LIMIT) => return Err(setup(format!("stunnel did not listen on {listen} within {READY_LIMIT:?}"))),
        _ = term.wait_for(|t| *t) => return Err(interrupted()),
    }
    say::info(
        "destination",
        &format!("listening on {listen} (TLS-PSK); waiting for the source"),
    );

    let idle = args.idle_timeout.filter(|d| !d.is_zero());
    let stunnel_pid = tunnel.id().unwrap_or(0);
    let mut last_activity = Instant::now();
    let mut last_count = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            status = tunnel.wait() => {
                return Err(setup(format!("stunnel exited unexpectedly ({})",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))));
            }
            _ = term.wait_for(|t| *t) => return Err(interrupted()),
        }
        if control.poll(|| procs::children_of(stunnel_pid))? {
            return Ok(());
        }
        if let Some(idle) = idle
            && last_count.elapsed() >= ACTIVITY_POLL
        {
            last_count = Instant::now();
            if !procs::children_of(stunnel_pid).is_empty() {
                last_activity = Instant::now();
            } else if last_activity.elapsed() >= idle {
                return Err(Failure::new(
                    ErrorClass::IdleTimeout,
                    format!(
                        "no source connected for {} (IDLE_TIMEOUT); giving up",
                        humantime::format_duration(idle)
                    ),
                ));
            }
        }
    }
}

/// After `complete`: drain connections, stop stunnel, restore symlinks, sync.
async fn finish(data: &Path, control: &Path, tunnel: &mut Child) -> Result<(), Failure> {
    let marker = fs::read_to_string(control.join("complete")).unwrap_or_default();
    let ours = marker.starts_with(COMPLETE_MARKER);
    say::info(
        "destination",
        &format!(
            "completion signal received from a {} source",
            if ours { "ferrosync" } else { "reference" }
        ),
    );
    let pid = tunnel.id().unwrap_or(0);
    let deadline = Instant::now() + DRAIN_LIMIT;
    while !procs::children_of(pid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    stop_tunnel(tunnel, Duration::from_secs(5)).await;

    let (list_name, sep) = if ours {
        (symlinks::NUL_LIST, 0)
    } else {
        (symlinks::NEWLINE_LIST, b'\n')
    };
    let list = match fs::read(control.join(list_name)) {
        Ok(bytes) => symlinks::decode_list(&bytes, sep),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !ours => Vec::new(),
        Err(e) => {
            return Err(Failure::new(
                ErrorClass::Internal,
                format!("reading {list_name}: {e}"),
            ));
        }
    };
    let data = data.to_owned();
    let restored = tokio::task::spawn_blocking(move || -> Result<_, Failure> {
        let counts = symlinks::unmunge_all(&data, &list)
            .map_err(|e| Failure::new(ErrorClass::RsyncFailed, e.to_string()))?;
        let dir =
            fs::File::open(&data).map_err(|e| Failure::new(ErrorClass::Internal, e.to_string()))?;
        nix::unistd::syncfs(&dir).map_err(|e| {
            Failure::new(
                ErrorClass::Internal,
                format!("syncing {}: {e}", data.display()),
            )
        })?;
        Ok(counts)
    })
    .await
    .map_err(|e| Failure::new(ErrorClass::Internal, e.to_string()))??;
    say::info(
        "destination",
        &format!(
            "restored {} symlink(s) ({} listed entries needed nothing); data synced to disk",
            restored.restored, restored.skipped
        ),
    );
    Ok(())
}

/// Stops stunnel and any rsync daemon still serving a connection.
async fn stop_tunnel(tunnel: &mut Child, grace: Duration) {
    if let Some(pid) = tunnel.id() {
        for child in procs::children_of(pid) {
            procs::signal(child, nix::sys::signal::Signal::SIGTERM);
        }
    }
    procs::stop(tunnel, grace).await;
}

/// Forwards stunnel's noteworthy lines and tells when it is listening.
async fn follow_stunnel(
    stderr: tokio::process::ChildStderr,
    ready: watch::Sender<Option<bool>>,
    auth_failures: Arc<AtomicU64>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match stunnel::classify(&line) {
            LogEvent::Bound => {
                ready.send_replace(Some(true));
            }
            LogEvent::BindFailed => {
                ready.send_replace(Some(false));
            }
            LogEvent::AuthFailed => {
                auth_failures.fetch_add(1, Ordering::Relaxed);
                say::info(
                    "destination",
                    "authentication failed: a source presented a different pre-shared key",
                );
            }
            _ => {}
        }
        if stunnel::is_noteworthy(&line) {
            say::raw(&format!("stunnel: {line}"));
        }
    }
    ready.send_if_modified(|r| {
        let unset = r.is_none();
        if unset {
            *r = Some(false);
        }
        unset
    });
}

/// Forwards the rsync daemons' error lines (a full volume shows up only there).
async fn follow_daemon_log(log: std::path::PathBuf, offset: Arc<AtomicU64>) {
    loop {
        print_daemon_errors(&log, &offset);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_daemon_errors(log: &Path, offset: &AtomicU64) {
    let Ok(bytes) = fs::read(log) else { return };
    let start = usize::try_from(offset.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
    let Some(new) = bytes.get(start..) else {
        return;
    };
    // Only whole lines; a partial last line is read again next time.
    let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    for line in String::from_utf8_lossy(&new[..end]).lines() {
        if line.contains("rsync: ")
            || line.contains("rsync error")
            || line.contains("@ERROR")
            || line.contains(session::BUSY_MESSAGE)
        {
            say::raw(&format!("rsyncd: {line}"));
        }
    }
    offset.fetch_add(end as u64 + 1, Ordering::Relaxed);
}

/// Sums what the daemons logged: `sent X bytes  received Y bytes  total size Z`.
fn daemon_bytes(log: &Path) -> (u64, u64) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let num = |s: &str| s.replace(',', "").parse::<u64>().unwrap_or(0);
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find("] sent ")? + 7..];
            let mut w = rest.split_whitespace();
            let sent = num(w.next()?);
            let received = num(w.nth(2)?);
            Some((sent, received))
        })
        .fold((0, 0), |(a, b), (s, r)| (a + s, b + r))
}

fn ipv6_enabled() -> bool {
    fs::read_to_string("/sys/module/ipv6/parameters/disable").is_ok_and(|s| s.trim() == "0")
}

fn interrupted() -> Failure {
    Failure::new(
        ErrorClass::Interrupted,
        "interrupted by a termination signal before the source completed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_daemon_log_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("rsyncd.log");
        fs::write(
            &log,
            "2026/11/24 06:38:46 [388] connect from UNDETERMINED (127.0.0.1)\n\
             2026/11/24 06:38:46 [388] sent 50 bytes  received 156 bytes  total size 7\n\
             2026/11/24 06:38:47 [389] sent 1,000 bytes  received 2,000 bytes  total size 7\n",
        )
        .expect("write");
        assert_eq!(daemon_bytes(&log), (1050, 2156));
    }
}
