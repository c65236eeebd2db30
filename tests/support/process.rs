//! Child processes that never outlive the test binary that started them.
//!
//! Three layers, because a test binary can end by returning, by panicking, or by being
//! killed:
//! - every child gets `PR_SET_PDEATHSIG(SIGKILL)`. The signal fires when the *thread* that
//!   forked it exits, so all children are forked by one spawner thread that lives as long
//!   as the process;
//! - every child leads its own process group, so a terminal's Ctrl-C reaches only the test
//!   binary, and cleanup can kill whatever a child forked;
//! - a watchdog shell, in its own process group, holds the read end of a pipe whose write
//!   end only this process has. When this process is gone, for any reason, the pipe
//!   closes, and the watchdog kills the registered groups and removes the registered
//!   directories.
//!
//! Nothing here may block on a child's output: children write to log files.

use std::{
    io::{self, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
};

use nix::{
    sys::{prctl, signal::Signal},
    unistd::getppid,
};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// The watchdog's script: collect groups and directories until EOF, then clean up.
const WATCHDOG: &str = r#"
trap '' INT HUP TERM
pgs=""; dirs=""
while IFS= read -r line; do
  case "$line" in
    "pg "*) pgs="$pgs ${line#pg }" ;;
    # A group already stopped: forget it, so a reused id is never killed.
    "unpg "*) pgs=$(echo " $pgs " | sed "s/ ${line#unpg } / /") ;;
    "dir "*) dirs="$dirs
${line#dir }" ;;
  esac
done
# No "--": dash's kill rejects it ("Illegal number: -") and would kill nothing.
for pg in $pgs; do kill -KILL "-$pg" 2>/dev/null; done
# Wait (bounded) for the groups to die, so nothing writes into a directory being removed.
for _ in $(seq 50); do
  alive=""
  for pg in $pgs; do kill -0 "-$pg" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
done
printf '%s\n' "$dirs" | while IFS= read -r d; do [ -n "$d" ] && rm -rf -- "$d"; done
"#;

fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            // The sender lives in a static, so `recv` never fails and this thread (the
            // parent of every child, as far as PDEATHSIG is concerned) never exits.
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the child-spawner thread");
        tx
    })
}

/// The watchdog process (kept, never waited for: it outlives us) and its pipe.
struct Watchdog {
    _process: Child,
    stdin: ChildStdin,
}

fn watchdog() -> &'static Mutex<Watchdog> {
    static WATCHDOG_PROCESS: OnceLock<Mutex<Watchdog>> = OnceLock::new();
    WATCHDOG_PROCESS.get_or_init(|| {
        let mut child = Command::new("sh")
            .args(["-c", WATCHDOG])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting the cleanup watchdog (sh)");
        let stdin = child.stdin.take().expect("piped stdin");
        Mutex::new(Watchdog {
            _process: child,
            stdin,
        })
    })
}

fn tell_watchdog(line: &str) {
    let mut watchdog = watchdog().lock().unwrap_or_else(|e| e.into_inner());
    // A failed write means the watchdog is gone; PDEATHSIG still covers the children.
    let _ = writeln!(watchdog.stdin, "{line}");
}

/// Removes `dir` (recursively) once this process has exited.
pub fn remove_on_exit(dir: &Path) {
    tell_watchdog(&format!("dir {}", dir.display()));
}

/// Spawns `cmd` as an owned child: its own process group, killed with this process.
/// Standard streams default to null; point stdout/stderr at a log file.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    cmd.stdin(Stdio::null()).process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing on the success path.
    unsafe {
        cmd.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died before the prctl: then nobody would kill us.
            if getppid().as_raw() as u32 != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .send((cmd, tx))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("child-spawner thread is gone"))??;
    tell_watchdog(&format!("pg {}", child.id()));
    Ok(child)
}

/// Kills a child's whole process group and reaps the child. For children that must stop
/// before the test binary ends (the watchdog handles the rest).
pub fn kill_group(child: &mut Child) {
    // Only while the leader is unreaped does its id surely still name its group.
    if let Ok(None) = child.try_wait() {
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
    }
    tell_watchdog(&format!("unpg {}", child.id()));
}

/// A free TCP port on 127.0.0.1, for a child to listen on. The port is released before the
/// child binds it, so it is picked below the kernel's ephemeral range: every `bind(:0)` and
/// every outgoing connection (movers, tunnels, simulators, clients, in this or another test
/// binary) takes its ports from that range, so none of them can take this one in between.
/// Only another caller of this function could, and it picks at random from ~20,000 ports.
pub fn free_port() -> u16 {
    let below = ephemeral_low().max(LOWEST_PICKED + 1000);
    (0..200)
        .map(|_| LOWEST_PICKED + (random() % u64::from(below - LOWEST_PICKED)) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("binding an ephemeral port on 127.0.0.1")
        })
}

/// The lowest port [`free_port`] picks: above the well-known and most registered services.
const LOWEST_PICKED: u16 = 10_000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A random number: std's per-process random hash keys over a counter, so concurrent test
/// binaries pick different sequences.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut hasher = KEYS.get_or_init(Default::default).build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_can_be_bound() {
        let low = ephemeral_low();
        // Each port is bound as soon as it is picked and held, as a child would: other
        // tests of this binary pick and bind ports at the same time, so a port picked
        // earlier and bound later could be theirs by then.
        let mut held = Vec::new();
        for _ in 0..50 {
            let port = free_port();
            assert!(
                (LOWEST_PICKED..low).contains(&port),
                "{port} not below {low}"
            );
            held.push(std::net::TcpListener::bind(("127.0.0.1", port)).expect("a free port binds"));
        }
        let distinct: std::collections::HashSet<_> = held
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        assert_eq!(distinct.len(), held.len(), "a held port was picked again");
    }
}
