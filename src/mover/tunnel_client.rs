//! `ferrosync mover connect`: the source's built-in TLS-PSK client, started by rsync once
//! per connection as its remote shell (`-e`, `host::module`; rsync's stdin and stdout for
//! it are Unix socketpairs), or through `RSYNC_CONNECT_PROG` (one loopback TCP pair). It
//! connects to the destination, completes the TLS 1.3 PSK handshake and relays
//! ([`relay`]).
//!
//! It reports on stderr, which is rsync's, in lines [`classify`] understands, so the
//! source learns per attempt whether the destination was unreachable or refused the key.
//! This module must never write anything but relayed data to stdout, and never print the
//! key.

use std::{
    fs::File,
    io::Write as _,
    net::{TcpStream, ToSocketAddrs},
    os::fd::AsFd,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use super::{keyfile, psk_tls, relay, stunnel::LogEvent};

/// Every line this client prints starts with this.
pub const PREFIX: &str = "ferrosync-tls:";
/// Longest wait for the TCP connection and, separately, for the handshake.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// How long the destination may take to close after rsync closed its end: rsync has
/// exited then and reads nothing more, so only the close_notify exchange is left.
const LINGER: Duration = Duration::from_secs(1);

/// How long a relay may go on after rsync left before this process ends anyway: long
/// enough to deliver what rsync wrote last, short enough that a stalled destination does
/// not keep rsync's stderr (and so the source) waiting.
const ORPHAN_LIMIT: Duration = Duration::from_secs(10);

/// Settings of `ferrosync mover connect`, passed by the source through rsync's
/// environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The destination, `host:port`.
    #[arg(long, env = "FERROSYNC_TLS_CONNECT")]
    pub connect: String,
    /// Directory holding `psk.txt`.
    #[arg(long, env = "KEY_DIR", default_value = "/keys")]
    pub key_dir: PathBuf,
    /// Lowest TLS version to offer.
    #[arg(long, env = "SSL_VERSION_MIN", default_value = "TLSv1.3")]
    pub ssl_version_min: String,
    /// What rsync appends when it starts this client as its remote shell (`-e`, with a
    /// `host::module` destination): the host and the remote command. Ignored (the
    /// destination starts its own daemon), except that they mark that mode.
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub remote_shell_args: Vec<String>,
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{PREFIX} {line}");
}

/// Classifies one of this client's lines; `None` for any other line.
pub fn classify(line: &str) -> Option<LogEvent> {
    let rest = line.strip_prefix(PREFIX)?.trim_start();
    Some(if rest.starts_with("connected to ") {
        LogEvent::Connected
    } else if rest.starts_with("cannot connect to ") {
        LogEvent::ConnectFailed
    } else if rest.starts_with("authentication failed") {
        LogEvent::AuthFailed
    } else if rest.starts_with("TLS handshake") {
        LogEvent::HandshakeFailed
    } else {
        LogEvent::Other
    })
}

/// Runs one connection to its end. The exit code only matters to rsync's log.
pub fn run(args: &ConnectArgs) -> ExitCode {
    match connect_and_relay(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            say(&line);
            ExitCode::FAILURE
        }
    }
}

fn connect_and_relay(args: &ConnectArgs) -> Result<(), String> {
    let (_, ring) = keyfile::load(&args.key_dir).map_err(|e| e.to_string())?;
    let key = psk_tls::Key::from_psk(ring.current()).map_err(|e| e.to_string())?;
    let ctx = psk_tls::client_context(&key, &args.ssl_version_min).map_err(|e| e.to_string())?;
    let endpoint = &args.connect;
    let sock = dial(endpoint).map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let _ = relay::tune_socket(&sock);
    let _ = sock.set_read_timeout(Some(CONNECT_LIMIT));
    let (ssl, secrets) = psk_tls::new_connection(&ctx).map_err(|e| e.to_string())?;
    let tls = match relay::handshake(ssl, &sock, relay::Side::Client) {
        Ok(tls) => tls,
        Err(relay::HandshakeError::Tls(text)) if psk_tls::is_auth_error(&text) => {
            return Err(format!(
                "authentication failed: {endpoint} refused the TLS-PSK handshake, so the keys differ ({text})"
            ));
        }
        // Closed before any TLS reply: nothing that speaks TLS serves this address to us
        // (a proxy with no backend, or another cluster's ClusterIP). To the user that is
        // an unreachable destination, not a transfer that broke.
        Err(e) if closed_before_reply(&e) => {
            return Err(format!(
                "cannot connect to {endpoint}: the connection was closed before any TLS reply ({e}); nothing serves this address from here"
            ));
        }
        Err(e) => return Err(format!("TLS handshake with {endpoint} failed: {e}")),
    };
    say(&format!("connected to {endpoint}"));
    let _ = sock.set_read_timeout(None);
    // rsync may hand its remote shell a non-blocking stdout (it only makes it blocking
    // with --blocking-io); the relay's threads block. These descriptions are this end's
    // own, so rsync's ends are not affected.
    for fd in [std::io::stdin().as_fd(), std::io::stdout().as_fd()] {
        set_blocking(fd).map_err(|e| format!("making rsync's socket blocking: {e}"))?;
    }
    exit_when_rsync_leaves();
    let stdin = File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    );
    let stdout = relay::ShutdownOnDrop(File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    ));
    // As rsync's remote shell, rsync waits for this process to exit before it closes its
    // end: once the destination has closed, nothing more can be delivered, so the input
    // is ended too (its reading side shut down), which ends the relay.
    let input_end = if args.remote_shell_args.is_empty() {
        None
    } else {
        Some(stdin.try_clone().map_err(|e| e.to_string())?)
    };
    let stdout = EndsInput {
        out: stdout,
        input: input_end,
    };
    let outcome = relay::run(
        tls,
        &secrets,
        relay::Side::Client,
        &sock,
        stdin,
        stdout,
        LINGER,
    );
    // A broken connection is rsync's to report (it sees the stream end); say why here.
    if let Some(e) = outcome.error {
        say(&format!("connection to {endpoint} ended: {e}"));
    }
    Ok(())
}

/// Whether the handshake ended because the other end closed or reset the connection
/// (rather than answering, or refusing the key).
fn closed_before_reply(e: &relay::HandshakeError) -> bool {
    match e {
        relay::HandshakeError::Eof => true,
        relay::HandshakeError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
        ),
        relay::HandshakeError::Tls(_) => false,
    }
}

fn set_blocking(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// The plaintext output which, when the relay drops it (the destination closed), also
/// ends the plaintext input (see [`connect_and_relay`]).
struct EndsInput {
    out: relay::ShutdownOnDrop,
    input: Option<File>,
}

impl std::io::Write for EndsInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.out.write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl AsFd for EndsInput {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.out.as_fd()
    }
}

impl Drop for EndsInput {
    fn drop(&mut self) {
        if let Some(input) = &self.input {
            // Wakes the reading thread with an end of input (ENOTSOCK for a pipe).
            let _ = socket2::SockRef::from(input).shutdown(std::net::Shutdown::Read);
        }
    }
}

/// Ends this process [`ORPHAN_LIMIT`] after rsync closed its end of the socketpair, in
/// case the relay is blocked on a destination that stopped reading: rsync's own
/// `--timeout` has then ended rsync, and nothing is left to deliver to.
fn exit_when_rsync_leaves() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    std::thread::spawn(|| {
        let stdin = std::io::stdin();
        // Hang-ups are always reported; RDHUP also when rsync only shut its sending side.
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(stdin.as_fd(), rdhup)];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        std::thread::sleep(ORPHAN_LIMIT);
        std::process::exit(0);
    });
}

/// Connects to the first address of `endpoint` that answers.
fn dial(endpoint: &str) -> std::io::Result<TcpStream> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not host:port");
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_LIMIT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_its_own_lines_only() {
        let cases = [
            (
                "ferrosync-tls: connected to 10.0.0.1:8000",
                LogEvent::Connected,
            ),
            (
                "ferrosync-tls: cannot connect to 10.0.0.1:8000: Connection refused (os error 111)",
                LogEvent::ConnectFailed,
            ),
            (
                "ferrosync-tls: authentication failed: h:1 refused",
                LogEvent::AuthFailed,
            ),
            (
                "ferrosync-tls: TLS handshake with h:1 failed: eof",
                LogEvent::HandshakeFailed,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), Some(want), "{line}");
        }
        assert_eq!(classify("rsync: connection unexpectedly closed"), None);
    }
}
