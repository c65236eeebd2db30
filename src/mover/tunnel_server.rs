//! The destination's built-in TLS-PSK server: it listens, completes the TLS 1.3 PSK
//! handshake of each connection and relays it to an rsync daemon started for that
//! connection on a pair of pipes (`rsync --server --daemon`, as stunnel's `exec` did).
//!
//! Each connection has its own threads doing blocking I/O ([`relay`]); the accept loop is a
//! tokio task so it stops with the mover. Every daemon is started with a parent-death
//! signal and is signalled by pid when the server stops. This module must never log the
//! key, and never start a daemon for a connection that did not authenticate.

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    os::{fd::AsFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use openssl::ssl::SslContext;

use super::{procs, psk_tls, relay, say};

/// The most connections served at once; more are closed at once. The reference source
/// opens one at a time, ours too; the margin covers retries racing a slow teardown.
const MAX_CONNECTIONS: usize = 16;
/// Longest TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);
/// How long a peer may take to close after its daemon finished: nothing is left to
/// deliver to a daemon that exited, only the peer's close_notify to wait for.
const LINGER: Duration = Duration::from_secs(1);
/// Pipe size towards and from each daemon: large enough for a whole relay chunk.
const PIPE_SIZE: i32 = 1 << 20;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address does not parse or resolve.
    #[error("listen address {0:?} is not host:port")]
    Address(String),
    /// bind(2) or listen(2) failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How to start the per-connection daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The rsync binary.
    pub rsync: PathBuf,
    /// Its rsyncd.conf.
    pub config: PathBuf,
}

#[derive(Default)]
struct Shared {
    active: AtomicUsize,
    auth_failures: AtomicU64,
    daemons: Mutex<HashSet<u32>>,
    /// A handle on every open connection's socket, to end them all at stop.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

/// Turns stunnel's `host:port` (`:::8000` for all IPv6 and IPv4 addresses) into a socket
/// address.
pub fn parse_listen(endpoint: &str) -> Result<SocketAddr, ServerError> {
    let bad = || ServerError::Address(endpoint.to_owned());
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "::" } else { host };
    (host, port)
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

impl Server {
    /// Binds `endpoint` and starts accepting. Must run inside the tokio runtime.
    pub fn start(
        endpoint: &str,
        keys: &[psk_tls::Key],
        ssl_version_min: &str,
        daemon: Daemon,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let addr = parse_listen(endpoint)?;
        let ctx = psk_tls::server_context(keys, ssl_version_min)?;
        let bind = |source| ServerError::Bind {
            addr: endpoint.to_owned(),
            source,
        };
        // "::" takes IPv4 too (bindv6only is 0 on Linux), as stunnel's ":::8000".
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, ctx, daemon, shared.clone()));
        Ok(Self { shared, accept })
    }

    /// Connections open now (handshaking or relaying).
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Authenticated connections being served by a daemon now. A connection still in its
    /// handshake cannot write anything, so it neither delays completion nor counts as a
    /// source's activity.
    pub fn serving(&self) -> usize {
        lock(&self.shared.daemons).len()
    }

    /// The pids of the daemons serving connections now.
    pub fn daemons(&self) -> Vec<u32> {
        lock(&self.shared.daemons).iter().copied().collect()
    }

    /// Handshakes refused because the peer's key or identity differs.
    pub fn auth_failures(&self) -> u64 {
        self.shared.auth_failures.load(Ordering::Relaxed)
    }

    /// Whether the accept loop ended by itself (it only does on a listener error).
    pub fn is_finished(&self) -> bool {
        self.accept.is_finished()
    }

    /// Stops accepting, asks every daemon to stop, and waits up to `grace` for the
    /// connections to end; daemons left then are killed.
    pub async fn stop(&self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::Release);
        self.accept.abort();
        self.signal_daemons(Signal::SIGTERM);
        // Also ends handshakes that would otherwise wait for their timeout.
        for sock in lock(&self.shared.sockets).values() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + grace;
        while self.active() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal_daemons(Signal::SIGKILL);
    }

    fn signal_daemons(&self, signal: Signal) {
        let pids: Vec<u32> = lock(&self.shared.daemons).iter().copied().collect();
        for pid in pids {
            procs::signal(pid, signal);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: SslContext,
    daemon: Daemon,
    shared: Arc<Shared>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: keep serving the connections that exist.
                say::info("destination", &format!("accepting a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        if shared.active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            say::info(
                "destination",
                &format!("refused a connection from {peer}: {MAX_CONNECTIONS} already open"),
            );
            continue;
        }
        let Ok(stream) = stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(handle) = stream.try_clone() {
            lock(&shared.sockets).insert(id, handle);
        }
        shared.active.fetch_add(1, Ordering::AcqRel);
        let (ctx, daemon, shared) = (ctx.clone(), daemon.clone(), shared.clone());
        let done = {
            let shared = shared.clone();
            move || {
                lock(&shared.sockets).remove(&id);
                shared.active.fetch_sub(1, Ordering::AcqRel);
            }
        };
        let spawned = std::thread::Builder::new().name("tls-conn".into()).spawn({
            let done = done.clone();
            move || {
                serve(stream, peer, &ctx, &daemon, &shared);
                done();
            }
        });
        if spawned.is_err() {
            done();
        }
    }
}

/// One connection: handshake, daemon, relay, teardown.
fn serve(sock: TcpStream, peer: SocketAddr, ctx: &SslContext, daemon: &Daemon, shared: &Shared) {
    let _ = relay::tune_socket(&sock);
    let _ = sock.set_read_timeout(Some(HANDSHAKE_LIMIT));
    let (ssl, secrets) = match psk_tls::new_connection(ctx) {
        Ok(c) => c,
        Err(e) => {
            say::info("destination", &format!("TLS setup for {peer}: {e}"));
            return;
        }
    };
    let tls = match relay::handshake(ssl, &sock, relay::Side::Server) {
        Ok(tls) => tls,
        Err(relay::HandshakeError::Tls(text)) if psk_tls::is_auth_error(&text) => {
            shared.auth_failures.fetch_add(1, Ordering::Relaxed);
            say::info(
                "destination",
                &format!(
                    "authentication failed: a source presented a different pre-shared key ({peer}: {text})"
                ),
            );
            return;
        }
        Err(e) => {
            say::info(
                "destination",
                &format!("TLS handshake with {peer} failed: {e}"),
            );
            return;
        }
    };
    let _ = sock.set_read_timeout(None);
    if shared.stopping.load(Ordering::Acquire) {
        return;
    }
    let mut cmd = Command::new(&daemon.rsync);
    cmd.arg0("rsync")
        .arg("--server")
        .arg("--daemon")
        .arg(format!("--config={}", daemon.config.display()))
        .arg(".")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: runs between fork and exec and only makes the prctl(2) syscall, which is
    // async-signal-safe. This thread outlives the child: it waits for it below.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            say::info(
                "destination",
                &format!("starting the rsync daemon for {peer}: {e}"),
            );
            return;
        }
    };
    lock(&shared.daemons).insert(child.id());
    // Checked again after registering: a stop that began in between has not seen this pid.
    if shared.stopping.load(Ordering::Acquire) {
        procs::signal(child.id(), Signal::SIGTERM);
    }
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    for fd in [stdin.as_fd(), stdout.as_fd()] {
        // Best effort: an unprivileged mover may be capped lower by pipe-max-size.
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let outcome = relay::run(
        tls,
        &secrets,
        relay::Side::Server,
        &sock,
        stdout,
        stdin,
        LINGER,
    );
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let _ = child.wait();
    lock(&shared.daemons).remove(&child.id());
    if let Some(e) = outcome.error
        && !shared.stopping.load(Ordering::Acquire)
    {
        say::info(
            "destination",
            &format!("connection from {peer} ended with an error: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stunnel_style_listen_addresses() {
        assert_eq!(
            parse_listen(":::8000").expect("v6 any"),
            "[::]:8000".parse().expect("addr")
        );
        assert_eq!(
            parse_listen("0.0.0.0:8000").expect("v4 any"),
            "0.0.0.0:8000".parse().expect("addr")
        );
        assert_eq!(
            parse_listen("[fd00::1]:9").expect("v6"),
            "[fd00::1]:9".parse().expect("addr")
        );
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_listen("1.2.3.4:x").is_err());
    }
}
