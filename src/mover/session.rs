//! Sessions on the destination: one source's sync at a time, and a completion signal that
//! counts only when it comes from the source whose transfer it ends.
//!
//! Anyone holding the key can open connections. Without sessions, a second source (an old
//! mover still retrying, a misconfigured twin, or someone hostile) could interleave its
//! transfers with another's, or send `complete` between another source's passes, and the
//! destination would publish a mix or a half-transferred volume.
//!
//! Our source draws a random session token per run and presents it on every connection as a
//! harmless server option (`--suffix=.ferrosync-session-<hex>`, which rsync ignores without
//! `--backup`; a reference destination ignores it too). The destination's rsync daemon runs
//! `ferrosync mover gate pre|post <dir>` around every transfer (`pre-xfer exec`,
//! `post-xfer exec`), which keeps a small state file under a lock:
//!
//! - one transfer at a time: a connection waits (bounded) while another transfer runs;
//! - the first source with a token owns the run; connections with another token, or none,
//!   are refused while the owner is active; after the owner's last transfer failed, or it
//!   has been idle for [`SESSION_IDLE`], another source may take over (a crashed source
//!   must not block forever), and the old owner's token is then refused for the rest of the
//!   run: its earlier passes are no longer what the volume holds;
//! - once any token has been seen, connections without one (the reference protocol) are
//!   refused for the rest of the run: they could otherwise complete someone else's half
//!   transfer;
//! - `complete` counts only if it names the current owner's token (see [`check_complete`]).
//!
//! The state lives outside both rsync modules, so no client can read or write it. This
//! module must never admit two transfers at once nor accept a `complete` from a source other
//! than the run's owner once a token has been seen.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::fcntl::{Flock, FlockArg};
use rand::RngExt as _;

/// What our source passes as a server option to carry its token.
pub const TOKEN_OPTION_PREFIX: &str = "--suffix=.ferrosync-session-";
/// The line of `complete` that names the session.
const COMPLETE_SESSION_KEY: &str = "session=";
/// How long an owner may stay away after a successful transfer before another source may
/// take over: longer than a source's retry backoff (2 s doubling: at most 16 s between
/// attempts). After a failed transfer the owner holds no lease at all: a crashed source's
/// successor gets in at once, and a source that lost a connection gets its run back unless
/// another source took it meanwhile.
pub const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Tokens remembered as taken over (a run rarely sees more than two sources).
const REVOKED_KEPT: usize = 16;
/// How long a connection waits for the running transfer to end before it is refused.
pub const QUEUE_LIMIT: Duration = Duration::from_secs(20);
/// How often a waiting connection looks again.
const QUEUE_POLL: Duration = Duration::from_millis(50);
/// The state file and its lock file, in the session directory.
const STATE_FILE: &str = "state";
const LOCK_FILE: &str = "lock";
/// What the gate prints when it refuses; the source recognises it as "try again later".
pub const BUSY_MESSAGE: &str = "ferrosync destination busy";

/// Why sessions could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session token is not 32 lowercase hex digits.
    #[error("session token must be 32 lowercase hex digits, got {0:?}")]
    BadToken(String),
    /// A filesystem call on the state failed.
    #[error("session state {path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A source's random session token, 128 bits as hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes[..]);
        Self(hex::encode(bytes))
    }

    /// Parses a token, which is exactly 32 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, SessionError> {
        if text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(SessionError::BadToken(text.chars().take(64).collect()))
        }
    }

    /// The server option our source adds (as `-M<option>`) to every connection.
    pub fn server_option(&self) -> String {
        format!("{TOKEN_OPTION_PREFIX}{}", self.0)
    }

    /// The line `complete` carries.
    pub fn complete_line(&self) -> String {
        format!("{COMPLETE_SESSION_KEY}{}\n", self.0)
    }

    /// The token among a daemon's server arguments (`RSYNC_ARG<n>`), if any. A malformed
    /// token counts as none.
    pub fn from_server_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        args.into_iter()
            .find_map(|a| a.strip_prefix(TOKEN_OPTION_PREFIX))
            .and_then(|t| Self::parse(t).ok())
    }
}

/// The run's session state, as the gate keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The source that owns the run.
    pub owner: Option<Token>,
    /// Whether any source has presented a token in this run.
    pub claimed: bool,
    /// When the owner was last admitted or last finished a transfer (Unix seconds).
    pub seen: u64,
    /// The daemon (pid) whose transfer is running.
    pub active: Option<u32>,
    /// Owners whose run another source took over: refused from then on.
    pub revoked: Vec<Token>,
}

impl State {
    /// Reads the state file's text; unknown or malformed lines are ignored (only the gate
    /// writes it).
    pub fn parse(text: &str) -> Self {
        let mut state = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "owner" => state.owner = Token::parse(value).ok(),
                "claimed" => state.claimed = value == "1",
                "seen" => state.seen = value.parse().unwrap_or(0),
                "active" => state.active = value.parse().ok(),
                "revoked" => {
                    state.revoked = value
                        .split(',')
                        .filter_map(|t| Token::parse(t).ok())
                        .take(REVOKED_KEPT)
                        .collect();
                }
                _ => {}
            }
        }
        state
    }

    /// The state file's text.
    pub fn render(&self) -> String {
        format!(
            "owner={}\nclaimed={}\nseen={}\nactive={}\nrevoked={}\n",
            self.owner.as_ref().map_or("", |t| t.0.as_str()),
            u8::from(self.claimed),
            self.seen,
            self.active.map(|p| p.to_string()).unwrap_or_default(),
            self.revoked
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another source's session owns the run.
    #[error("{BUSY_MESSAGE}: another source's session is in progress; try again later")]
    OtherSession,
    /// A source presented no token after one had presented a token.
    #[error(
        "{BUSY_MESSAGE}: a ferrosync source has used this destination in this run, \
         so connections without a session token are refused"
    )]
    NoToken,
    /// The running transfer did not end within the queue limit.
    #[error("{BUSY_MESSAGE}: another transfer is still running; try again later")]
    Queue,
    /// Another source took this source's run over; its earlier passes do not count.
    #[error(
        "{BUSY_MESSAGE}: another source took this source's session over; \
         a new sync must start from the beginning"
    )]
    TakenOver,
}

/// What the gate does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it transfer; the new state.
    Admit(State),
    /// Another transfer is running; look again shortly.
    Wait,
    /// Refuse it.
    Refuse(Refusal),
}

/// Decides on a connection from daemon `pid` presenting `token`, at `now` (Unix seconds);
/// `active_alive` tells whether the daemon in `state.active` still runs. While a transfer
/// runs, everyone waits: it may end the owner's lease (a failed transfer does).
pub fn decide(
    state: &State,
    token: Option<&Token>,
    pid: u32,
    now: u64,
    active_alive: bool,
) -> Decision {
    if state.active.is_some() && active_alive {
        return Decision::Wait;
    }
    if token.is_some_and(|t| state.revoked.contains(t)) {
        return Decision::Refuse(Refusal::TakenOver);
    }
    let live_owner = state
        .owner
        .as_ref()
        .filter(|_| now.saturating_sub(state.seen) < SESSION_IDLE.as_secs());
    let admitted = |owner: Option<Token>| {
        let mut revoked = state.revoked.clone();
        if let Some(old) = state.owner.as_ref().filter(|o| Some(*o) != owner.as_ref()) {
            revoked.push(old.clone());
            let excess = revoked.len().saturating_sub(REVOKED_KEPT);
            revoked.drain(..excess);
        }
        Decision::Admit(State {
            claimed: state.claimed || owner.is_some(),
            owner,
            seen: now,
            active: Some(pid),
            revoked,
        })
    };
    match (live_owner, token) {
        (Some(owner), Some(t)) if owner == t => admitted(Some(t.clone())),
        (Some(_), _) => Decision::Refuse(Refusal::OtherSession),
        (None, Some(t)) => admitted(Some(t.clone())),
        (None, None) if state.claimed => Decision::Refuse(Refusal::NoToken),
        (None, None) => admitted(None),
    }
}

/// The state after daemon `pid`'s transfer ended at `now`, successfully or not. A failed
/// transfer ends the owner's lease at once.
pub fn finished(state: &State, pid: u32, now: u64, succeeded: bool) -> State {
    let mut next = state.clone();
    if next.active == Some(pid) {
        next.active = None;
        next.seen = if succeeded { now } else { 0 };
    }
    next
}

/// Why a `complete` does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteRejected {
    /// It names no session or another one than the run's owner.
    #[error(
        "the completion signal does not name the session that owns this run \
         (a second source, or one without a session token, sent it); ignored"
    )]
    NotTheOwner,
}

/// Whether `complete` (its contents) ends the run described by `state`. Without any token
/// in the run, any `complete` counts (the reference protocol).
pub fn check_complete(state: &State, contents: &[u8]) -> Result<(), CompleteRejected> {
    if !state.claimed {
        return Ok(());
    }
    let named = String::from_utf8_lossy(contents)
        .lines()
        .find_map(|l| l.strip_prefix(COMPLETE_SESSION_KEY))
        .and_then(|t| Token::parse(t.trim()).ok());
    match (&state.owner, named) {
        (Some(owner), Some(named)) if *owner == named => Ok(()),
        _ => Err(CompleteRejected::NotTheOwner),
    }
}

/// The session directory's files, with the state read and written under an exclusive lock.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created by the destination, writable by the daemon's user).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Creates the empty state and lock files, writable by `world_writable` daemons that
    /// run as another user than the mover.
    pub fn init(&self, world_writable: bool) -> Result<(), SessionError> {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = if world_writable { 0o666 } else { 0o600 };
        for name in [STATE_FILE, LOCK_FILE] {
            let path = self.dir.join(name);
            fs::write(&path, "")
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .map_err(|source| SessionError::Io { path, source })?;
        }
        Ok(())
    }

    /// Runs `f` on the state under the lock, writing back what it returns (if anything).
    pub fn update<T>(
        &self,
        f: impl FnOnce(&State) -> (Option<State>, T),
    ) -> Result<T, SessionError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SessionError::Io { path, source }
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| SessionError::Io {
                path: lock_path.clone(),
                source: e.into(),
            })?;
        let state_path = self.dir.join(STATE_FILE);
        let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
        let (next, out) = f(&State::parse(&text));
        if let Some(next) = next {
            // Written in place: the file is tiny and only ever accessed under the lock.
            fs::write(&state_path, next.render()).map_err(io(&state_path))?;
        }
        Ok(out)
    }

    /// The current state.
    pub fn read(&self) -> Result<State, SessionError> {
        self.update(|s| (None, s.clone()))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether process `pid` still runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

/// Which end of a transfer the gate is called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// `pre-xfer exec`: admit, queue or refuse.
    Pre,
    /// `post-xfer exec`: the transfer ended.
    Post,
}

/// `ferrosync mover gate`: run by the destination's rsync daemon around each transfer.
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// Before or after the transfer.
    #[arg(value_enum)]
    pub phase: Phase,
    /// The session directory the destination created.
    pub dir: PathBuf,
}

/// Runs the gate with the daemon's `RSYNC_*` environment; returns the exit code (non-zero
/// refuses the transfer). Its stdout goes to the client.
pub async fn gate(args: &GateArgs) -> u8 {
    let store = Store::new(&args.dir);
    let pid = std::env::var("RSYNC_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let Some(pid) = pid else {
        println!("ferrosync gate: RSYNC_PID is not set; run only by the rsync daemon");
        return 1;
    };
    let result = match args.phase {
        Phase::Post => {
            let succeeded = std::env::var("RSYNC_EXIT_STATUS").is_ok_and(|v| v.trim() == "0");
            store
                .update(|s| (Some(finished(s, pid, unix_now(), succeeded)), ()))
                .map(|()| 0)
        }
        Phase::Pre => {
            let server_args: Vec<String> = (0..64)
                .map_while(|n| std::env::var(format!("RSYNC_ARG{n}")).ok())
                .collect();
            let token = Token::from_server_args(server_args.iter().map(String::as_str));
            admit(&store, token.as_ref(), pid).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            println!("ferrosync gate: {e}");
            1
        }
    }
}

async fn admit(store: &Store, token: Option<&Token>, pid: u32) -> Result<u8, SessionError> {
    let deadline = tokio::time::Instant::now() + QUEUE_LIMIT;
    loop {
        let decision = store.update(|s| {
            let d = decide(s, token, pid, unix_now(), s.active.is_some_and(alive));
            match d {
                Decision::Admit(next) => (Some(next), Decision::Admit(State::default())),
                other => (None, other),
            }
        })?;
        let refusal = match decision {
            Decision::Admit(_) => return Ok(0),
            Decision::Refuse(r) => r,
            Decision::Wait if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(QUEUE_POLL).await;
                continue;
            }
            Decision::Wait => Refusal::Queue,
        };
        println!("{refusal}");
        return Ok(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(c: char) -> Token {
        Token::parse(&c.to_string().repeat(32)).expect("token")
    }

    #[test]
    fn tokens_are_random_hex_and_found_among_server_args() {
        let a = Token::generate();
        assert_ne!(a, Token::generate());
        assert_eq!(Token::parse(&a.0).expect("round trip"), a);
        let opt = a.server_option();
        assert_eq!(
            Token::from_server_args(["--server", "-logDtpre.iLsfxC", &opt, ".", "data/"]),
            Some(a)
        );
        assert_eq!(Token::from_server_args(["--server", "."]), None);
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33)] {
            let err = Token::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("32 lowercase hex"), "{err}");
            assert_eq!(
                Token::from_server_args([format!("{TOKEN_OPTION_PREFIX}{bad}").as_str()]),
                None
            );
        }
    }

    #[test]
    fn state_round_trips_and_tolerates_junk() {
        let s = State {
            owner: Some(token('a')),
            claimed: true,
            seen: 42,
            active: Some(7),
            revoked: vec![token('b'), token('c')],
        };
        assert_eq!(State::parse(&s.render()), s);
        assert_eq!(State::parse(""), State::default());
        assert_eq!(
            State::parse("owner=zz\nseen=x\nactive=-1\nrevoked=,zz,\nnoise\n=\n"),
            State::default()
        );
    }

    #[test]
    fn the_first_token_owns_the_run_and_others_are_refused() {
        let (a, b) = (token('a'), token('b'));
        let Decision::Admit(s) = decide(&State::default(), Some(&a), 10, 100, false) else {
            panic!("first source refused");
        };
        assert_eq!(s.owner, Some(a.clone()));
        assert!(s.claimed);
        // While A transfers, everyone waits: one transfer at a time.
        for t in [Some(&a), Some(&b), None] {
            assert_eq!(decide(&s, t, 11, 101, true), Decision::Wait);
        }
        // Between A's connections: A goes on, B and token-less ones are refused.
        let s = finished(&s, 10, 105, true);
        assert_eq!(s.active, None);
        assert!(matches!(
            decide(&s, Some(&a), 13, 106, false),
            Decision::Admit(_)
        ));
        assert_eq!(
            decide(&s, Some(&b), 13, 106, false),
            Decision::Refuse(Refusal::OtherSession)
        );
        assert_eq!(
            decide(&s, None, 13, 106, false),
            Decision::Refuse(Refusal::OtherSession)
        );
        // A stayed away: B takes over, A is refused from then on, token-less too.
        let later = 105 + SESSION_IDLE.as_secs();
        assert_eq!(
            decide(&s, None, 14, later, false),
            Decision::Refuse(Refusal::NoToken)
        );
        let Decision::Admit(s2) = decide(&s, Some(&b), 14, later, false) else {
            panic!("B could not take over an abandoned run");
        };
        assert_eq!(s2.owner, Some(b.clone()));
        assert_eq!(s2.revoked, vec![a.clone()]);
        let s2 = finished(&s2, 14, later, true);
        assert_eq!(
            decide(&s2, Some(&a), 15, later * 10, false),
            Decision::Refuse(Refusal::TakenOver)
        );
    }

    #[test]
    fn a_failed_transfer_ends_the_lease_at_once() {
        let (a, b) = (token('a'), token('b'));
        let Decision::Admit(s) = decide(&State::default(), Some(&a), 10, 100, false) else {
            panic!("refused");
        };
        let failed = finished(&s, 10, 101, false);
        // A can come back if nobody else came...
        assert!(matches!(
            decide(&failed, Some(&a), 11, 102, false),
            Decision::Admit(State { revoked, .. }) if revoked.is_empty()
        ));
        // ...and B gets in at once otherwise.
        assert!(matches!(
            decide(&failed, Some(&b), 11, 102, false),
            Decision::Admit(_)
        ));
    }

    #[test]
    fn reference_sources_without_tokens_go_one_at_a_time() {
        let Decision::Admit(s) = decide(&State::default(), None, 10, 100, false) else {
            panic!("reference source refused");
        };
        assert_eq!(s.owner, None);
        assert!(!s.claimed);
        assert_eq!(decide(&s, None, 11, 100, true), Decision::Wait);
        // A dead daemon does not hold the queue.
        assert!(matches!(
            decide(&s, None, 11, 100, false),
            Decision::Admit(_)
        ));
        // A token takes the run over once nothing runs.
        assert!(matches!(
            decide(
                &finished(&s, 10, 101, true),
                Some(&token('a')),
                11,
                101,
                false
            ),
            Decision::Admit(State { claimed: true, .. })
        ));
        // Someone else's post-xfer does not clear the running transfer.
        assert_eq!(finished(&s, 99, 200, true), s);
    }

    #[test]
    fn complete_counts_only_from_the_owner_once_a_token_was_seen() {
        let a = token('a');
        let owned = State {
            owner: Some(a.clone()),
            claimed: true,
            ..State::default()
        };
        let ours = format!("ferrosync-complete v1\n{}symlinks=0\n", a.complete_line());
        assert_eq!(check_complete(&owned, ours.as_bytes()), Ok(()));
        let theirs = format!("ferrosync-complete v1\n{}", token('b').complete_line());
        for bad in [theirs.as_bytes(), b"", b"\xff\xfe", b"session=\n"] {
            let err = check_complete(&owned, bad).expect_err("foreign complete");
            assert!(
                err.to_string().contains("does not name the session"),
                "{err}"
            );
        }
        // Owner gone idle but claimed: still only the owner's complete.
        let orphan = State {
            owner: None,
            ..owned.clone()
        };
        assert!(check_complete(&orphan, ours.as_bytes()).is_err());
        assert_eq!(check_complete(&State::default(), b"anything"), Ok(()));
    }

    #[tokio::test]
    async fn the_store_serialises_updates_under_its_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.init(false).expect("init");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    store
                        .update(|s| {
                            let mut n = s.clone();
                            n.seen += 1;
                            (Some(n), ())
                        })
                        .expect("update")
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        assert_eq!(store.read().expect("read").seen, 16);
        let missing = Store::new(dir.path().join("nope"));
        let err = missing.read().expect_err("no dir");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
