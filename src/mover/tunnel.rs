//! The destination's TLS-PSK server, either kind: the built-in one ([`tunnel_server`],
//! the default) or a stunnel process (the fallback, `TLS_TUNNEL=stunnel`). Both accept the
//! same handshake and start an rsync daemon per connection; the destination only asks
//! whether connections are open, how many failed authentication, and to stop.
//!
//! This module must never log key material; stunnel gets only the key file's path.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
    task::JoinHandle,
};

use super::{
    exit::{ErrorClass, Failure},
    procs, psk_tls, say,
    settings::Tunnel,
    stunnel::{self, LogEvent},
    tunnel_server::{Daemon, Server},
};

/// Longest wait for stunnel to bind its port.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// What the server needs.
pub struct ServerSpec<'a> {
    /// Which implementation.
    pub kind: Tunnel,
    /// `host:port` in stunnel's syntax.
    pub listen: &'a str,
    /// The validated key file, and its contents.
    pub key_file: &'a Path,
    /// See [`ServerSpec::key_file`].
    pub key: &'a crate::api::psk::KeyRing,
    /// `TLSv1.3` or `TLSv1.2`.
    pub ssl_version_min: &'a str,
    /// The rsync binary.
    pub rsync: PathBuf,
    /// The daemons' rsyncd.conf.
    pub rsyncd_conf: PathBuf,
    /// Where a stunnel config may be written.
    pub work: &'a Path,
}

/// A listening server.
pub enum ServerTunnel {
    /// The built-in server.
    Builtin(Server),
    /// A stunnel process and the task following its log.
    Stunnel {
        /// The process.
        child: Child,
        /// Connections refused for a wrong key, counted from its log.
        auth_failures: Arc<AtomicU64>,
        /// Follows stderr; ends when stunnel exits.
        log_task: Option<JoinHandle<()>>,
    },
}

impl ServerTunnel {
    /// Starts listening; returns once the port is bound.
    pub async fn start(
        spec: ServerSpec<'_>,
        term: &mut watch::Receiver<bool>,
    ) -> Result<Self, Failure> {
        let setup = |m: String| Failure::new(ErrorClass::SetupFailed, m);
        let listen = spec.listen;
        match spec.kind {
            Tunnel::Builtin => {
                let keys = std::iter::once(spec.key.current())
                    .chain(spec.key.previous())
                    .map(psk_tls::Key::from_psk)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup(e.to_string()))?;
                let daemon = Daemon {
                    rsync: spec.rsync,
                    config: spec.rsyncd_conf,
                };
                Server::start(listen, &keys, spec.ssl_version_min, daemon)
                    .map(Self::Builtin)
                    .map_err(|e| setup(e.to_string()))
            }
            Tunnel::Stunnel => {
                let bin = procs::which("stunnel").map_err(|e| setup(e.to_string()))?;
                let conf = spec.work.join("stunnel.conf");
                let text = stunnel::render_server(
                    listen,
                    spec.key_file,
                    spec.ssl_version_min,
                    &spec.rsync,
                    &spec.rsyncd_conf,
                );
                write_private(&conf, &text)
                    .map_err(|e| setup(format!("writing {}: {e}", conf.display())))?;
                let mut cmd = Command::new(&bin);
                cmd.arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let mut child =
                    procs::spawn(&mut cmd, "stunnel").map_err(|e| setup(e.to_string()))?;
                let auth_failures = Arc::new(AtomicU64::new(0));
                let (ready_tx, mut ready) = watch::channel(None::<bool>);
                let stderr = child.stderr.take().expect("stderr is piped");
                let log_task =
                    tokio::spawn(follow_stunnel(stderr, ready_tx, auth_failures.clone()));
                let mut tunnel = Self::Stunnel {
                    child,
                    auth_failures,
                    log_task: Some(log_task),
                };
                let Self::Stunnel { child, .. } = &mut tunnel else {
                    unreachable!()
                };
                let outcome = tokio::select! {
                    r = ready.wait_for(Option::is_some) => {
                        if r.map(|v| *v != Some(true)).unwrap_or(true) {
                            Err(setup(format!("stunnel could not listen on {listen}")))
                        } else {
                            Ok(())
                        }
                    }
                    _ = child.wait() => Err(setup(format!("stunnel exited before listening on {listen}"))),
                    _ = tokio::time::sleep(READY_LIMIT) => Err(setup(format!("stunnel did not listen on {listen} within {READY_LIMIT:?}"))),
                    _ = term.wait_for(|t| *t) => Err(Failure::new(ErrorClass::Interrupted, "interrupted by a termination signal before the source completed")),
                };
                match outcome {
                    Ok(()) => Ok(tunnel),
                    Err(f) => {
                        tunnel.stop(Duration::from_secs(5)).await;
                        Err(f)
                    }
                }
            }
        }
    }

    /// Whether an authenticated connection is being served (an rsync daemon is alive).
    pub fn busy(&self) -> bool {
        match self {
            Self::Builtin(server) => server.serving() > 0,
            Self::Stunnel { child, .. } => child
                .id()
                .is_some_and(|pid| !procs::children_of(pid).is_empty()),
        }
    }

    /// The pids of the rsync daemons serving connections now.
    pub fn daemons(&self) -> Vec<u32> {
        match self {
            Self::Builtin(server) => server.daemons(),
            Self::Stunnel { child, .. } => child.id().map(procs::children_of).unwrap_or_default(),
        }
    }

    /// Connections refused for a wrong key or identity.
    pub fn auth_failures(&self) -> u64 {
        match self {
            Self::Builtin(server) => server.auth_failures(),
            Self::Stunnel { auth_failures, .. } => auth_failures.load(Ordering::Relaxed),
        }
    }

    /// Resolves if the server dies by itself, with a description.
    pub async fn died(&mut self) -> String {
        match self {
            Self::Builtin(server) => {
                while !server.is_finished() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                "the TLS server's accept loop ended".to_owned()
            }
            Self::Stunnel { child, .. } => format!(
                "stunnel exited unexpectedly ({})",
                child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string())
            ),
        }
    }

    /// Stops accepting and ends every daemon, waiting up to `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        match self {
            Self::Builtin(server) => server.stop(grace).await,
            Self::Stunnel {
                child, log_task, ..
            } => {
                if let Some(pid) = child.id() {
                    for daemon in procs::children_of(pid) {
                        procs::signal(daemon, nix::sys::signal::Signal::SIGTERM);
                    }
                }
                procs::stop(child, grace).await;
                if let Some(task) = log_task.take() {
                    let _ = task.await;
                }
            }
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
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
