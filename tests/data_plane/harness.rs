//! Starting movers and collecting what they report.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use ferrosync::mover::Summary;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrosync");

/// The binary for a mover that runs as another user: a copy where every user can reach it.
/// The built-in tunnel's client is this binary again (rsync starts it through
/// `RSYNC_CONNECT_PROG`, by path, as the mover's user), and cargo's target directory may
/// sit below a home only root can enter (CI keeps it in `~/.cache`), as an image's
/// `/usr/local/bin` never does.
fn bin_for_any_user() -> &'static Path {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        // One place, replaced on each run (by rename, so a copy still running from an
        // earlier run is untouched): no copy of 100 MB is left per run.
        let dir = std::env::temp_dir().join("ferrosync-data-plane-bin");
        fs::create_dir_all(&dir).expect("a directory for the mover binary");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let staged = dir.join(format!("ferrosync.{}", std::process::id()));
        fs::copy(BIN, &staged).expect("copying the mover binary");
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("ferrosync");
        fs::rename(&staged, &bin).expect("placing the mover binary");
        bin
    })
}
pub const KEY_A: &str = "volsync:8f1c2a9b3e4d5f60718293a4b5c6d7e8f9011223344556677889900aabbccdde";
pub const KEY_B: &str = "volsync:00112233445566778899aabbccddeeff8f1c2a9b3e4d5f60718293a4b5c6d7e8";

/// One test's directories: a source volume, a destination volume, keys and scratch space,
/// and the TLS tunnel both movers use (`TLS_TUNNEL`).
pub struct Env {
    pub root: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub tunnel: &'static str,
}

impl Env {
    /// Movers on the built-in tunnel, the default.
    pub fn new() -> Self {
        Self::with_tunnel("builtin")
    }

    /// Movers on `tunnel`: `builtin` or `stunnel` (the fallback).
    pub fn with_tunnel(tunnel: &'static str) -> Self {
        // tmpfs when there is one: the trees are many small files, and disk writeback of
        // other work on the machine would otherwise dominate the timings.
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("ferrosync-dp.")
            .tempdir_in(base)
            .expect("tempdir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let src = root.path().join("src");
        let dst = root.path().join("dst");
        fs::create_dir(&src).expect("mkdir src");
        fs::create_dir(&dst).expect("mkdir dst");
        let env = Self {
            root,
            src,
            dst,
            tunnel,
        };
        env.write_key("keys-src", KEY_A, 0o600);
        env.write_key("keys-dst", KEY_A, 0o600);
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Writes `<name>/psk.txt` with `contents` and `mode`.
    pub fn write_key(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir_all(&dir).expect("mkdir keys");
        let file = dir.join("psk.txt");
        fs::write(&file, contents).expect("write key");
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).expect("chmod key");
        dir
    }

    /// A fresh scratch directory.
    pub fn tmp(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir_all(&dir).expect("mkdir tmp");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        dir
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// How to start a mover: its role and environment, optionally as another user.
#[derive(Clone)]
pub struct Mover {
    pub role: &'static str,
    pub vars: HashMap<String, String>,
    pub as_user: Option<u32>,
}

impl Mover {
    fn new(role: &'static str, env: &Env, data: &Path, keys: &str, tmp: &str) -> Self {
        let mut vars = HashMap::new();
        vars.insert("DATA_DIR".into(), data.display().to_string());
        vars.insert("KEY_DIR".into(), env.path(keys).display().to_string());
        let tmp = env.tmp(tmp);
        vars.insert("TMP_DIR".into(), tmp.display().to_string());
        vars.insert(
            "TERMINATION_MESSAGE_PATH".into(),
            tmp.join("summary.json").display().to_string(),
        );
        vars.insert("PRIVILEGED_MOVER".into(), "1".into());
        vars.insert("PROGRESS_INTERVAL".into(), "200ms".into());
        vars.insert("TLS_TUNNEL".into(), env.tunnel.into());
        Self {
            role,
            vars,
            as_user: None,
        }
    }

    pub fn destination(env: &Env, port: u16) -> Self {
        Self::new("destination", env, &env.dst, "keys-dst", "tmp-dst")
            .var("LISTEN_ADDRESS", "127.0.0.1")
            .var("LISTEN_PORT", &port.to_string())
    }

    pub fn source(env: &Env, port: u16) -> Self {
        Self::new("source", env, &env.src, "keys-src", "tmp-src")
            .var("DESTINATION_ADDRESS", "127.0.0.1")
            .var("DESTINATION_PORT", &port.to_string())
            .var("RETRY_BASE_DELAY", "20ms")
    }

    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    pub fn user(mut self, uid: u32) -> Self {
        self.as_user = Some(uid);
        self
    }

    fn summary_path(&self) -> PathBuf {
        PathBuf::from(&self.vars["TERMINATION_MESSAGE_PATH"])
    }

    /// Starts the mover in its own process group, collecting its output.
    pub fn spawn(&self) -> Running {
        let _ = fs::remove_file(self.summary_path());
        let mut cmd = match self.as_user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--".into(),
                    bin_for_any_user().display().to_string(),
                ]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["mover", self.role])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn mover");
        let log = Arc::new(Mutex::new(String::new()));
        let readers = [
            collect(child.stdout.take().expect("stdout"), log.clone()),
            collect(child.stderr.take().expect("stderr"), log.clone()),
        ];
        Running {
            child,
            log,
            readers: readers.into(),
            summary: self.summary_path(),
            role: self.role,
        }
    }

    /// Runs the mover to its end.
    pub fn run(&self, limit: Duration) -> Finished {
        self.spawn().wait(limit)
    }
}

fn collect(
    pipe: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = log.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    })
}

/// A mover that is running.
pub struct Running {
    pub child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    summary: PathBuf,
    role: &'static str,
}

/// A mover that exited.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub log: String,
    pub summary: Summary,
}

impl Running {
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Polls until `cond` holds, failing the test with the log after `limit`.
    pub fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !cond(self) {
            if Instant::now() > deadline {
                panic!("{} never {what}; log:\n{}", self.role, self.log());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                if !cond(self) {
                    panic!(
                        "{} exited ({status}) before it {what}; log:\n{}",
                        self.role,
                        self.log()
                    );
                }
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the destination is listening.
    pub fn listening(mut self) -> Self {
        self.wait_until("listened", Duration::from_secs(20), |r| {
            r.log().contains("listening on")
        });
        self
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn summary_written(&self) -> bool {
        self.summary.exists()
    }

    pub fn signal_group(&self, signal: Signal) {
        let pgid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = killpg(pgid, signal);
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Waits for the exit (killing the group after `limit`) and reads the summary.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                self.signal_group(Signal::SIGKILL);
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; log:\n{}",
                    self.role,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let log = self.log();
        let text = fs::read_to_string(&self.summary)
            .unwrap_or_else(|e| panic!("{} wrote no summary ({e}); log:\n{log}", self.role));
        let summary: Summary = serde_json::from_str(&text).expect("summary parses");
        assert!(text.len() <= 4096, "summary too long: {}", text.len());
        Finished {
            code: status.code().unwrap_or(-1),
            log,
            summary,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal_group(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    pub fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit code; log:\n{}\nsummary: {:?}",
            self.log, self.summary
        );
        self
    }
}

/// One full sync: a destination and a source on a fresh port; both must succeed.
pub fn sync(env: &Env) -> (Finished, Finished) {
    sync_with(env, |m| m, |m| m)
}

pub fn sync_with(
    env: &Env,
    dst: impl FnOnce(Mover) -> Mover,
    src: impl FnOnce(Mover) -> Mover,
) -> (Finished, Finished) {
    let port = free_port();
    let dest = dst(Mover::destination(env, port)).spawn().listening();
    let source = src(Mover::source(env, port)).run(Duration::from_secs(120));
    source.assert_code(0);
    let dest = dest.wait(Duration::from_secs(30));
    dest.assert_code(0);
    (source, dest)
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
