//! `ferrosync mover destination`: a TLS-PSK server ([`tunnel`]: built in, or stunnel) that
//! runs an rsync daemon per connection, until the source signals completion; then it
//! restores the munged symlinks, stops the server and syncs the filesystem.
//!
//! Completion handshake: the source's upload of `control/complete` succeeds only once the
//! daemon has the file in place. Seeing it, the destination waits until no connection is
//! open (the upload's connection has closed), instead of the reference's fixed 5 s sleep,
//! then stops the server so nothing can write during the restore. This module must never
//! exit 0 unless `complete` arrived and the restore and sync succeeded.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    Tally, control,
    exit::{ErrorClass, Failure},
    keyfile, procs, rsyncd, say, session,
    settings::{self, DestinationArgs},
    source::COMPLETE_MARKER,
    symlinks,
    tunnel::{ServerSpec, ServerTunnel},
};

/// How often the control file is looked for.
const POLL: Duration = Duration::from_millis(25);
/// How often the last connection is looked at once `complete` arrived.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// How often open connections are counted for the idle timeout.
const ACTIVITY_POLL: Duration = Duration::from_millis(500);
/// Longest wait for in-flight connections once `complete` arrived.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the destination side; counters go into `tally`.
pub async fn run(
    args: &DestinationArgs,
    term: &mut watch::Receiver<bool>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let common = &args.common;
    settings::check_common(common)?;
    let listen = settings::listen_endpoint(args, ipv6_enabled())?;
    let (key_file, key) = keyfile::load(&common.key_dir)?;
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

    let mut tunnel = ServerTunnel::start(
        ServerSpec {
            kind: common.tunnel,
            listen: &listen,
            key_file: &key_file,
            key: &key,
            ssl_version_min: &common.ssl_version_min,
            rsync,
            rsyncd_conf,
            work: &work,
        },
        term,
    )
    .await?;
    say::info(
        "destination",
        &format!("listening on {listen} (TLS-PSK); waiting for the source"),
    );

    let tail_offset = Arc::new(AtomicU64::new(0));
    let tail_task = tokio::spawn(follow_daemon_log(rsyncd_log.clone(), tail_offset.clone()));
    let mut watch = control::Watch::new(&control, args.control_limit, store, args.greeting_timeout);
    let result = serve(args, &mut tunnel, term, &mut watch).await;
    let result = match result {
        Ok(()) => finish(&common.data_dir, &control, &mut tunnel).await,
        Err(f) => {
            tunnel.stop(Duration::from_secs(5)).await;
            Err(f)
        }
    };
    // The control files live in the pod's memory, which outlives this process.
    let _ = fs::remove_dir_all(&control);
    tail_task.abort();
    print_daemon_errors(&rsyncd_log, &tail_offset);
    let (sent, received) = daemon_bytes(&rsyncd_log);
    tally.bytes_sent = sent;
    tally.bytes_received = received;
    let failures = tunnel.auth_failures();
    tally.auth_failure = failures > 0;
    if failures > 0 {
        say::info(
            "destination",
            &format!("{failures} connection(s) failed authentication (wrong pre-shared key)"),
        );
    }
    result
}

/// Waits for the completion signal.
async fn serve(
    args: &DestinationArgs,
    tunnel: &mut ServerTunnel,
    term: &mut watch::Receiver<bool>,
    control: &mut control::Watch,
) -> Result<(), Failure> {
    let setup = |m: String| Failure::new(ErrorClass::SetupFailed, m);
    let idle = args.idle_timeout.filter(|d| !d.is_zero());
    let mut last_activity = Instant::now();
    let mut last_count = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            why = tunnel.died() => return Err(setup(why)),
            _ = term.wait_for(|t| *t) => return Err(interrupted()),
        }
        if control.poll(|| tunnel.daemons())? {
            return Ok(());
        }
        if let Some(idle) = idle
            && last_count.elapsed() >= ACTIVITY_POLL
        {
            last_count = Instant::now();
            if tunnel.busy() {
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

/// After `complete`: drain connections, stop the server, restore symlinks, sync.
async fn finish(data: &Path, control: &Path, tunnel: &mut ServerTunnel) -> Result<(), Failure> {
    let marker = fs::read_to_string(control.join("complete")).unwrap_or_default();
    let ours = marker.starts_with(COMPLETE_MARKER);
    say::info(
        "destination",
        &format!(
            "completion signal received from a {} source",
            if ours { "ferrosync" } else { "reference" }
        ),
    );
    let deadline = Instant::now() + DRAIN_LIMIT;
    while tunnel.busy() && Instant::now() < deadline {
        // Short: the upload's daemon is only running its post-transfer gate by now.
        tokio::time::sleep(DRAIN_POLL).await;
    }
    tunnel.stop(Duration::from_secs(5)).await;

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
