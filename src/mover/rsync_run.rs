//! Runs one rsync client through the TLS tunnel and digests its output as it streams:
//! statistics, progress, and the errors of rsync and of the per-connection TLS client
//! (both arrive on rsync's stderr).
//!
//! rsync runs with `LC_ALL=C` so names are escaped the same way everywhere. The source asks
//! for no per-file lines; itemised lines, should an rsync print them, are never echoed
//! (there may be millions). This module must never print the key file's contents, which
//! it never sees anyway.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::watch,
};

use super::{
    procs,
    rsync_out::{self, Stats},
    say,
    stunnel::{self, LogEvent},
    summary::Progress,
    tunnel_client,
};

/// How many error lines of one run are kept for messages and the summary.
const ERROR_TAIL: usize = 12;
/// How many per-file error lines of one run are kept for the summary: the first ones, since
/// later ones are often consequences; the rest are only counted.
pub const FILE_ERRORS_KEPT: usize = 20;
/// How long rsync's output may stay open after rsync exited: the TLS client started for
/// its connection (and rsync's fork waiting for it in `system()`) hold copies, and may be
/// stuck on a destination that stopped reading.
const STDERR_GRACE: Duration = Duration::from_secs(5);
/// rsync's progress lines (one per file with `--info=progress2`) are read at most this
/// often: they wait in the pipe instead of waking the mover, and rsync's core, per file.
const READ_EVERY: Duration = Duration::from_millis(10);
/// rsync's stdout pipe is enlarged to this (best effort), so a run of small files never
/// fills it between two reads: 1 MiB is about 14,000 progress lines.
const STDOUT_PIPE: i32 = 1 << 20;
/// Per-file error lines are cut to this many bytes, so 20 of them stay well within the
/// 4 KiB termination message.
const FILE_ERROR_MAX: usize = 160;

/// Why an rsync run could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// rsync could not be started.
    #[error(transparent)]
    Spawn(#[from] procs::ProcError),
    /// SIGTERM or SIGINT arrived; rsync was stopped.
    #[error("interrupted by a termination signal")]
    Interrupted,
}

/// One rsync invocation.
pub struct Invocation {
    /// The rsync binary.
    pub rsync: PathBuf,
    /// `RSYNC_CONNECT_PROG`: the TLS client command.
    pub connect_prog: String,
    /// Environment the TLS client command needs (rsync passes its own on).
    pub connect_env: Vec<(&'static str, OsString)>,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// Report progress at most this often (copy pass only); `start` is the mover's start.
    pub progress: Option<(Duration, Instant)>,
    /// Print the statistics lines (the control uploads stay quiet).
    pub print_stats: bool,
    /// Prefixes rsync puts in front of names in its error lines (the source directory as
    /// given to it), removed so per-file errors name paths relative to the volume.
    pub strip_prefixes: Vec<String>,
}

/// What the TLS client said during one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsView {
    /// A TCP connection to the destination was made.
    pub connected: bool,
    /// The TCP connection could not be made (refused, unreachable, DNS).
    pub connect_failed: bool,
    /// The TLS handshake failed because the keys differ.
    pub auth_failed: bool,
    /// The TLS handshake failed for another reason.
    pub handshake_failed: bool,
}

/// The outcome of one rsync run.
#[derive(Debug, Default)]
pub struct Report {
    /// rsync's exit code; `None` when it died from a signal.
    pub code: Option<i32>,
    /// Its statistics.
    pub stats: Stats,
    /// The stunnel client's view.
    pub tls: TlsView,
    /// The last error lines of rsync and stunnel.
    pub errors: Vec<String>,
    /// The receiver reported ENOSPC or EDQUOT.
    pub out_of_space: bool,
    /// The first [`FILE_ERRORS_KEPT`] per-file error lines (`send_files failed to open
    /// "dir/name": Permission denied (13)`), names relative to the volume, each bounded.
    pub file_errors: Vec<String>,
    /// How many per-file error lines there were in all.
    pub file_error_count: u64,
}

impl Report {
    /// Whether rsync exited 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs rsync to completion, or until `term` turns true.
pub async fn run(inv: Invocation, term: &mut watch::Receiver<bool>) -> Result<Report, RunError> {
    // rsync's stdout is a pipe of our own, read by a blocking thread rather than through
    // tokio's reactor: the reactor's edge-triggered epoll wakes a worker for every line
    // rsync writes (one per file), even while nobody reads, which the thread's paced reads
    // avoid (see `read_stdout`).
    let (stdout, stdout_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| procs::ProcError::Spawn {
            program: "rsync".to_owned(),
            source: e.into(),
        })?;
    // Best effort: the default 64 KiB still works, with more wake-ups.
    let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STDOUT_PIPE));
    let mut cmd = Command::new(&inv.rsync);
    cmd.args(&inv.args)
        .env("RSYNC_CONNECT_PROG", &inv.connect_prog)
        .envs(inv.connect_env.iter().map(|(k, v)| (k, v)))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_w))
        .stderr(Stdio::piped());
    let spawned = procs::spawn(&mut cmd, "rsync");
    // The command holds the pipe's write end: gone with it, so rsync's exit ends the pipe.
    drop(cmd);
    let mut child = spawned?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (exited_tx, exited) = watch::channel(false);
    let out_task = tokio::task::spawn_blocking({
        let (progress, print_stats, exited) = (inv.progress, inv.print_stats, exited.clone());
        let handle = tokio::runtime::Handle::current();
        move || {
            read_stdout(
                std::fs::File::from(stdout),
                progress,
                print_stats,
                exited,
                &handle,
            )
        }
    });
    let err_task = tokio::spawn(read_stderr(stderr, inv.strip_prefixes, exited));
    let status = tokio::select! {
        status = child.wait() => {
            exited_tx.send_replace(true);
            status.ok()
        }
        _ = term.wait_for(|t| *t) => {
            procs::stop(&mut child, Duration::from_secs(10)).await;
            return Err(RunError::Interrupted);
        }
    };
    let stats = out_task.await.unwrap_or_default();
    let err = err_task.await.unwrap_or_default();
    Ok(Report {
        code: status.and_then(|s| s.code()),
        stats,
        tls: err.tls,
        errors: err.errors,
        out_of_space: err.out_of_space,
        file_errors: err.file_errors,
        file_error_count: err.file_error_count,
    })
}

/// Reads rsync's stdout until it ends, or until [`STDERR_GRACE`] after `exited` (a
/// helper rsync started may keep a copy of it open). Blocking, on its own thread: once it
/// has drained the pipe it waits [`READ_EVERY`] (or until rsync exits) before it looks
/// again, so the lines rsync writes per file gather in the pipe instead of waking it.
fn read_stdout(
    mut out: std::fs::File,
    progress: Option<(Duration, Instant)>,
    print_stats: bool,
    mut exited: watch::Receiver<bool>,
    runtime: &tokio::runtime::Handle,
) -> Stats {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read as _;
    use std::os::fd::AsFd as _;
    /// How often a wait for output looks whether rsync has exited.
    const EXIT_CHECK: Duration = Duration::from_millis(100);
    let mut stats = Stats::default();
    let mut meter = progress.map(|(every, start)| Meter::new(every, start));
    // progress2 rewrites its line with '\r', so both '\r' and '\n' end a line.
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() && *exited.borrow() {
            deadline = Some(Instant::now() + STDERR_GRACE);
        }
        let wait = match deadline {
            Some(at) if Instant::now() >= at => break,
            Some(at) => at.saturating_duration_since(Instant::now()).min(EXIT_CHECK),
            None => EXIT_CHECK,
        };
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Split with memchr (optimised even in the dev profile), not byte by byte: a
        // full sync of many small files prints megabytes of progress.
        let mut rest = &buf[..n];
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            line.extend_from_slice(&rest[..at]);
            handle_line(&line, &mut stats, meter.as_mut(), print_stats);
            line.clear();
            rest = &rest[at + 1..];
        }
        line.extend_from_slice(rest);
        // The pipe is drained: let lines gather for a while, unless rsync exits.
        if n < buf.len() && deadline.is_none() {
            runtime.block_on(async {
                let _ = tokio::time::timeout(READ_EVERY, exited.wait_for(|e| *e)).await;
            });
        }
    }
    handle_line(&line, &mut stats, meter.as_mut(), print_stats);
    if let Some(meter) = meter.as_mut() {
        meter.finish();
    }
    stats
}

fn handle_line(raw: &[u8], stats: &mut Stats, meter: Option<&mut Meter>, print_stats: bool) {
    if raw.is_empty() {
        return;
    }
    if rsync_out::is_itemized(raw) {
        return;
    }
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end();
    if stats.absorb(text) {
        if print_stats {
            say::raw(text);
        }
    } else if let Some((bytes, percent, files)) = rsync_out::parse_progress2(text) {
        if let Some(meter) = meter {
            meter.update(bytes, percent, files);
        }
    } else if !text.trim().is_empty() {
        say::raw(text);
    }
}

/// What rsync's stderr (with the stunnel client's log) said during one run.
#[derive(Debug, Default)]
struct StderrView {
    tls: TlsView,
    errors: Vec<String>,
    out_of_space: bool,
    file_errors: Vec<String>,
    file_error_count: u64,
}

/// Reads rsync's stderr until it ends, or until [`STDERR_GRACE`] after `exited` turned
/// true.
async fn read_stderr(
    err: impl AsyncRead + Unpin,
    strip_prefixes: Vec<String>,
    mut exited: watch::Receiver<bool>,
) -> StderrView {
    let mut tls = TlsView::default();
    let mut errors = Vec::new();
    let mut out_of_space = false;
    let mut file_errors = Vec::new();
    let mut file_error_count = 0;
    let mut lines = BufReader::new(err).split(b'\n');
    let mut deadline = None;
    loop {
        // `next_segment` is cancel safe: a line cut by the select is read again.
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, lines.next_segment()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => tokio::select! {
                next = lines.next_segment() => next,
                _ = exited.wait_for(|e| *e) => {
                    deadline = Some(tokio::time::Instant::now() + STDERR_GRACE);
                    continue;
                }
            },
        };
        let Ok(Some(raw)) = next else { break };
        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        let builtin = tunnel_client::classify(&line);
        let is_stunnel = builtin.is_none() && (line.contains(" LOG") || line.starts_with('['));
        let event = builtin.unwrap_or_else(|| stunnel::classify(&line));
        match event {
            LogEvent::Connected => tls.connected = true,
            LogEvent::ConnectFailed => tls.connect_failed = true,
            LogEvent::AuthFailed => tls.auth_failed = true,
            LogEvent::HandshakeFailed => tls.handshake_failed = true,
            _ => {}
        }
        out_of_space |= rsync_out::is_out_of_space(&line);
        // Not gated on `is_stunnel`: that guess looks for " LOG", which a file name may hold;
        // stunnel's lines start with a date or '[', never "rsync: ".
        if rsync_out::is_file_error(&line) {
            file_error_count += 1;
            if file_errors.len() < FILE_ERRORS_KEPT {
                let relative = rsync_out::relative_names(&line, &strip_prefixes);
                file_errors.push(rsync_out::bounded(&relative, FILE_ERROR_MAX));
            }
        }
        let keep = if builtin.is_some() {
            event != LogEvent::Connected
        } else if is_stunnel {
            stunnel::is_noteworthy(&line)
                && !matches!(
                    stunnel::classify(&line),
                    LogEvent::Connected | LogEvent::Accepted
                )
        } else {
            true
        };
        if keep {
            say::raw(&if is_stunnel {
                format!("stunnel: {line}")
            } else {
                line.clone()
            });
            if errors.len() == ERROR_TAIL {
                errors.remove(0);
            }
            errors.push(line);
        }
    }
    StderrView {
        tls,
        errors,
        out_of_space,
        file_errors,
        file_error_count,
    }
}

/// Turns progress2 updates into [`Progress`] lines, at most one per interval.
struct Meter {
    every: Duration,
    start: Instant,
    last: Option<(Instant, u64)>,
    latest: Option<(u64, u8, u64)>,
}

impl Meter {
    fn new(every: Duration, start: Instant) -> Self {
        Self {
            every,
            start,
            last: None,
            latest: None,
        }
    }

    /// Prints the final state once the pass ends, so even short passes leave one line.
    fn finish(&mut self) {
        if let Some((bytes, percent, files)) = self.latest.take() {
            self.print(bytes, percent, files);
        }
    }

    fn update(&mut self, bytes: u64, percent: u8, files: u64) {
        let since = self.last.map_or(self.start, |(t, _)| t);
        if since.elapsed() < self.every {
            self.latest = Some((bytes, percent, files));
            return;
        }
        self.latest = None;
        self.print(bytes, percent, files);
    }

    fn print(&mut self, bytes: u64, percent: u8, files: u64) {
        let now = Instant::now();
        let (since, base) = self.last.unwrap_or((self.start, 0));
        let dt = now.duration_since(since);
        let rate = (bytes.saturating_sub(base) as f64 / dt.as_secs_f64().max(1e-3)) as u64;
        self.last = Some((now, bytes));
        say::raw(
            &Progress {
                bytes,
                rate,
                percent,
                files,
                elapsed: now.duration_since(self.start).as_secs(),
            }
            .to_string(),
        );
    }
}
