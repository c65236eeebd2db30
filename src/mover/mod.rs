//! The data mover: `ferrosync mover destination|source`, run inside the mover Job. It moves
//! a volume 1:1 with rsync through a TLS 1.3 PSK tunnel, wire-compatible with the
//! reference VolSync rsync-TLS mover: by default its own ([`tunnel_server`] on the
//! destination, `ferrosync mover connect` per rsync connection on the source, both relaying
//! with batched in-place records, [`record`]), or stunnel processes as the reference
//! (`TLS_TUNNEL=stunnel`). Either works with the other, and with the reference's peers.
//!
//! # Settings (flag, then the environment variable the Job sets)
//!
//! Both sides:
//! - `--data-dir` `DATA_DIR` (default `/data`): the volume.
//! - `--key-dir` `KEY_DIR` (default `/keys`): holds `psk.txt`, `<identity>:<hex>`, ≥32 hex
//!   digits, not world-readable.
//! - `--tmp-dir` `TMP_DIR` (default `/tmp`): generated configs and the control module.
//! - `--privileged` `PRIVILEGED_MOVER` (`1`/`0`, default `0`).
//! - `--termination-message-path` `TERMINATION_MESSAGE_PATH` (default `/dev/termination-log`).
//! - `--ssl-version-min` `SSL_VERSION_MIN` (default `TLSv1.3`; `TLSv1.2` allowed).
//! - `--progress-interval` `PROGRESS_INTERVAL` (default `10s`).
//! - `--tunnel` `TLS_TUNNEL` (`builtin`, the default, or `stunnel`).
//!
//! Destination: `--listen-address` `LISTEN_ADDRESS`, else `--pod-ip` `POD_IP`, else all
//! addresses (`::`, or `0.0.0.0` without IPv6); `--listen-port` `LISTEN_PORT` (default
//! 8000); `--idle-timeout` `IDLE_TIMEOUT` (unset or `0s`: wait forever); `--control-limit`
//! `CONTROL_LIMIT` (default `256Mi`): the most bytes the control module may hold;
//! `--greeting-timeout` `GREETING_TIMEOUT` (default `30s`): how long a connection may stay
//! open without starting a transfer.
//!
//! Source: `--destination-address` `DESTINATION_ADDRESS` (required), `--destination-port`
//! `DESTINATION_PORT` (default 8000), `--max-attempts` `MAX_ATTEMPTS` (default 5),
//! `--retry-base-delay` `RETRY_BASE_DELAY` (default `2s`, doubling), `--compress`
//! `RSYNC_COMPRESS` (default `none`), `--bwlimit` `RSYNC_BWLIMIT`, `--io-timeout`
//! `RSYNC_IO_TIMEOUT` (default `10m`), `--block-size` `RSYNC_BLOCK_SIZE` (`auto`, the
//! default: see [`blocks`]; `rsync`; or bytes).
//!
//! # Exit codes
//!
//! 0 success; 1 internal error; 2 unparsable flag or environment value (clap). Permanent:
//! 10 config, 11 key invalid, 12 data directory missing, 13 authentication failed (keys
//! differ), 14 destination full, 15 rsync failed, 16 setup failed. Transient: 20 destination
//! unreachable, 21 connection lost, 22 interrupted (SIGTERM), 23 idle timeout, 24 files
//! vanished. See [`exit::ErrorClass`].
//!
//! A file rsync could not transfer (exit 23, e.g. unreadable by an unprivileged mover) is
//! named in the summary's `errors`: rsync's per-file error lines of the last attempt, the
//! first 20, paths relative to the volume, each cut to 160 bytes, the rest counted in
//! `errorsOmitted`; the controller puts them in `latestMoverStatus.logs`.
//!
//! # Protocol, and where it differs from the reference
//!
//! On the wire it is the reference's: TLS 1.3 PSK (TLS_AES_128_GCM_SHA256, identity and
//! key from `psk.txt`) on port 8000, an rsync daemon
//! per connection with modules `data` and `control`, munged symlinks, `control/complete`.
//! Our source names the top-level entries as rsync arguments (or, when there are too many,
//! lists them NUL-separated as `/<name>`, where names starting with `#` or `;` are not
//! comments), deletes inside them during pass 1 so pass 2 only compares the
//! top level (`-d`), lists every symlink of the tree (not only those itemised as changed,
//! which misses links sent by an interrupted run), and uploads the newline list, a
//! NUL-separated `symlink-munging-file0` and `complete` (holding [`COMPLETE_MARKER`]) in one
//! connection, with no sleeps. Our destination reads the NUL list when `complete` holds the
//! marker and the newline list otherwise, waits for open connections to close instead of
//! sleeping, and restores links natively, keeping their times and their parents' times.
//!
//! # Bounds against key holders who do not follow the protocol
//!
//! Our source presents a random session token on every connection; the destination's rsync
//! daemon runs a gate around each transfer ([`session`]): one transfer at a time, one
//! source's session per run, and `complete` counts only from that session, so a second or
//! hostile source can neither mix its data into another's sync nor end it early. The
//! `control` module takes only the three control files, is write-only, times out, and is
//! capped in size ([`CONTROL_LIMIT`](settings::DestinationArgs::control_limit)); options
//! that follow symlinks are refused. With reference sources (no token) the destination
//! cannot tell sources apart and only serialises their transfers.
//!
//! This module must never log or pass on the command line the pre-shared key, and never
//! report success for a sync that did not complete.

mod blocks;
mod classify;
mod control;
mod debug;
mod destination;
pub mod exit;
#[cfg(test)]
mod fuzz_tests;
mod keyfile;
mod pipe_out;
mod procs;
mod psk_tls;
mod record;
mod relay;
mod rsync_out;
mod rsync_run;
mod rsyncd;
mod say;
pub mod session;
pub mod settings;
mod source;
mod stunnel;
pub mod summary;
mod symlinks;
mod tunnel;
mod tunnel_client;
mod tunnel_server;

use std::{process::ExitCode, time::Instant};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

pub use exit::{ErrorClass, Failure};
pub use source::COMPLETE_MARKER;
pub use summary::{Outcome, Progress, Role, Summary};

/// How many statistics lines the summary keeps.
const STATS_KEPT: usize = 8;

/// Data-mover roles.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the destination side: a TLS-PSK server with an rsync daemon per connection,
    /// until the source signals completion.
    Destination(Box<settings::DestinationArgs>),
    /// Run the source side: push the data with rsync through a TLS-PSK client.
    Source(Box<settings::SourceArgs>),
    /// One TLS-PSK connection, as rsync's remote shell or RSYNC_CONNECT_PROG (started by the
    /// source's rsync).
    #[command(hide = true)]
    Connect(tunnel_client::ConnectArgs),
    /// Run by the destination's rsync daemon before and after each transfer: admits one
    /// source's session at a time (see `session`). Not for people.
    #[command(hide = true)]
    Gate(session::GateArgs),
}

/// Counters a run accumulates for its summary.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    bytes_sent: u64,
    bytes_received: u64,
    files_transferred: u64,
    files_deleted: u64,
    attempts: u32,
    auth_failure: bool,
    stats: Vec<String>,
    /// Per-file errors of the last attempt, and how many were not kept.
    file_errors: Vec<String>,
    file_errors_omitted: u64,
}

impl Tally {
    fn push_stats(&mut self, lines: &[String]) {
        self.stats.extend(lines.iter().cloned());
        let excess = self.stats.len().saturating_sub(STATS_KEPT);
        self.stats.drain(..excess);
    }
}

/// Runs a mover role and returns its process exit code.
pub async fn run(cmd: Command) -> ExitCode {
    if let Command::Connect(args) = &cmd {
        // Blocking on purpose: this process only relays one connection, on its own threads.
        return tunnel_client::run(args);
    }
    let start = Instant::now();
    let mut term = termination_signal();
    let mut tally = Tally::default();
    // The gate runs inside the destination's rsync daemon, never as a mover of its own.
    if let Command::Gate(args) = &cmd {
        return ExitCode::from(session::gate(args).await);
    }
    if debug::requested() {
        let (role, tmp) = match &cmd {
            Command::Destination(args) => ("destination", &args.common.tmp_dir),
            Command::Source(args) => ("source", &args.common.tmp_dir),
            Command::Gate(_) | Command::Connect(_) => unreachable!("returned above"),
        };
        // No summary: a debug run is not a sync, and the controller records none.
        return if debug::hold(role, tmp, &mut term).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(ErrorClass::Interrupted.exit_code())
        };
    }
    let (role, name, path, result) = match &cmd {
        Command::Gate(_) => unreachable!("returned above"),
        Command::Destination(args) => (
            Role::Destination,
            "destination",
            &args.common.termination_message_path,
            destination::run(args, &mut term, &mut tally).await,
        ),
        Command::Source(args) => (
            Role::Source,
            "source",
            &args.common.termination_message_path,
            source::run(args, &mut term, &mut tally, start).await,
        ),
        Command::Connect(_) => unreachable!("handled above"),
    };
    let code = result.as_ref().err().map_or(0, |f| f.class.exit_code());
    let summary = Summary {
        role,
        result: if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        exit_code: code,
        error_class: result.as_ref().err().map(|f| f.class),
        transient: result.as_ref().err().map(|f| f.class.is_transient()),
        auth_failure: tally.auth_failure,
        message: result.as_ref().err().map(|f| f.message.clone()),
        bytes_sent: tally.bytes_sent,
        bytes_received: tally.bytes_received,
        files_transferred: tally.files_transferred,
        files_deleted: tally.files_deleted,
        attempts: tally.attempts,
        duration_seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        stats: tally.stats,
        errors: tally.file_errors,
        errors_omitted: tally.file_errors_omitted,
    };
    match &result {
        Ok(()) => say::info(name, "succeeded"),
        Err(f) => say::info(
            name,
            &format!("failed ({:?}, exit {code}): {}", f.class, f.message),
        ),
    }
    if let Err(e) = summary.write_to(path) {
        say::info(
            name,
            &format!("could not write the summary to {}: {e}", path.display()),
        );
    }
    ExitCode::from(code)
}

/// A flag that turns true on SIGTERM or SIGINT.
fn termination_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut sigterm), Ok(mut sigint)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        tx.send_replace(true);
        // Keep the sender alive so receivers never see a closed channel as "no signal".
        std::future::pending::<()>().await;
    });
    rx
}
