//! `ferrosync mover source`: pushes the volume to the destination through a TLS-PSK
//! tunnel, in the reference's passes, then uploads the symlink lists and the completion
//! signal.
//!
//! Per attempt: pass 1 copies the top-level entries, named as arguments (or listed
//! NUL-separated, `--from0 --files-from`, when there are too many), preserving everything
//! and deleting inside them; pass 2 deletes
//! top-level entries the source no longer has; then one connection uploads
//! `control/symlink-munging-file` (newline list, reference format),
//! `control/symlink-munging-file0` (NUL list) and `control/complete`.
//! Transient failures are retried with exponential backoff. This module must never pass
//! the key on a command line or send `complete` unless both passes succeeded.

use std::{
    ffi::OsString,
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use tokio::sync::watch;

use super::{
    Tally, blocks, classify,
    classify::check,
    exit::{ErrorClass, Failure},
    keyfile, procs,
    rsync_run::{self, Invocation, Report, RunError},
    rsyncd::{CONTROL_MODULE, DATA_MODULE},
    say,
    session::Token,
    settings::{self, BlockSize, SourceArgs, Tunnel},
    stunnel, symlinks,
};

/// What `control/complete` holds when our source sends it. A reference destination only
/// checks that the file exists; ours reads this to pick the NUL-separated symlink list.
pub const COMPLETE_MARKER: &str = "ferrosync-complete v1";
/// The rsync URL host; unused for connecting (RSYNC_CONNECT_PROG does that).
const URL_HOST: &str = "ferrosync-destination";
/// The reference excludes this everywhere in the tree, on both passes.
const EXCLUDE: &str = "--exclude=lost+found";

struct Ctx<'a> {
    args: &'a SourceArgs,
    rsync: PathBuf,
    connect_prog: String,
    connect_env: ConnectEnv,
    /// The built-in client as rsync's remote shell command (see [`module_url`]).
    remote_shell: String,
    /// rsync `--block-size` for pass 1, if not rsync's own.
    block_size: Option<u32>,
    work: PathBuf,
    start: Instant,
    /// This run's session token, presented on every connection and named in `complete`.
    session: Token,
    /// The data directory, resolved, for naming top-level entries on rsync's command line.
    source_dir: PathBuf,
    /// How rsync may spell the data directory in its error lines (as given, and resolved:
    /// it prints its working directory), each with a trailing slash.
    data_prefixes: Vec<String>,
}

/// Runs the source side; counters go into `tally`.
pub async fn run(
    args: &SourceArgs,
    term: &mut watch::Receiver<bool>,
    tally: &mut Tally,
    start: Instant,
) -> Result<(), Failure> {
    let common = &args.common;
    settings::check_common(common)?;
    let endpoint = settings::destination_endpoint(args)?;
    let key = keyfile::check(&common.key_dir)?;
    if !common.data_dir.is_dir() {
        return Err(Failure::new(
            ErrorClass::DataDirMissing,
            format!(
                "source location not found: {} is not a directory",
                common.data_dir.display()
            ),
        ));
    }
    let setup = |e: &dyn std::fmt::Display| Failure::new(ErrorClass::SetupFailed, e.to_string());
    let rsync = procs::which("rsync").map_err(|e| setup(&e))?;
    let work = tempfile::Builder::new()
        .prefix("ferrosync-source.")
        .tempdir_in(&common.tmp_dir)
        .map_err(|e| {
            setup(&format!(
                "creating a work directory in {}: {e}",
                common.tmp_dir.display()
            ))
        })?;
    let (connect_prog, connect_env) =
        connect_prog(args, &endpoint, &key, work.path()).map_err(|e| setup(&e))?;
    let block_size = block_size(args).await;
    let ctx = Ctx {
        args,
        rsync,
        remote_shell: connect_prog.clone(),
        connect_prog,
        connect_env,
        block_size,
        work: work.path().to_owned(),
        start,
        session: Token::generate(),
        data_prefixes: data_prefixes(&common.data_dir),
        source_dir: fs::canonicalize(&common.data_dir)
            .or_else(|_| std::path::absolute(&common.data_dir))
            .map_err(|e| setup(&e))?,
    };

    say::info("source", &format!("syncing data to {endpoint} ..."));
    let sync_start = Instant::now();
    let max = args.max_attempts.max(1);
    let mut result = Err(Failure::new(ErrorClass::Internal, "no attempt made"));
    for attempt in 1..=max {
        tally.attempts = attempt;
        result = attempt_once(&ctx, term, tally).await;
        let Err(failure) = &result else { break };
        if !failure.class.is_transient()
            || failure.class == ErrorClass::Interrupted
            || attempt == max
        {
            break;
        }
        let delay = classify::backoff(args.retry_base_delay, attempt);
        say::info(
            "source",
            &format!(
                "synchronization failed ({:?}): {}. Retrying in {}. Retry {attempt}/{max}.",
                failure.class,
                failure.message,
                humantime::format_duration(delay)
            ),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.wait_for(|t| *t) => {
                result = Err(interrupted());
                break;
            }
        }
    }
    let line = format!("rsync completed in {}s", sync_start.elapsed().as_secs());
    say::raw(&line);
    tally.stats.push(line);
    match result {
        Err(mut f) if f.class.is_transient() && f.class != ErrorClass::Interrupted && max > 1 => {
            f.message = format!("{} (gave up after {max} attempts)", f.message);
            Err(f)
        }
        other => other,
    }
}

async fn attempt_once(
    ctx: &Ctx<'_>,
    term: &mut watch::Receiver<bool>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let data = &ctx.args.common.data_dir;
    // The summary names the files the last attempt could not transfer.
    tally.file_errors.clear();
    tally.file_errors_omitted = 0;
    let mut source_root = data.as_os_str().to_owned();
    source_root.push("/");
    let data_url = module_url(ctx, DATA_MODULE);

    // Pass 1: copy, preserving everything, and delete inside the listed top-level entries.
    // The root directory itself is not in the list, so its attributes are left alone.
    let entries = top_level_entries(data)?;
    if entries.is_empty() {
        say::info("source", "Skipping sync of empty source directory");
    } else {
        let mut args = common_args(ctx);
        args.extend(["-aAHSx", "-r", "--delete", "--numeric-ids", EXCLUDE].map(OsString::from));
        // Compare times to the nanosecond: by default rsync treats times within the same
        // second as equal, so a directory changed by this very transfer (a deletion, a
        // new entry) kept the transfer's time instead of the source's.
        args.push("--modify-window=-1".into());
        args.push("--info=stats2,misc2,progress2".into());
        args.extend(ctx.args.compress.rsync_args().iter().map(OsString::from));
        if let Some(block) = ctx.block_size {
            args.push(format!("--block-size={block}").into());
        }
        match entry_args(&ctx.source_dir, &entries) {
            Some(paths) => args.extend(paths),
            None => {
                let list = ctx.work.join("files-from0");
                fs::write(&list, symlinks::encode_nul_list(&entries)).map_err(internal)?;
                args.push("--from0".into());
                args.push(flag("--files-from=", &list));
                args.push(source_root.clone());
            }
        }
        args.push(data_url.clone());
        let report = rsync(ctx, term, args, true, tally).await?;
        check("pass 1 (copy)", &report)?;
        tally.files_transferred = report.stats.files_transferred;
        tally.files_deleted = report.stats.files_deleted;
    }

    // The symlink list is taken once pass 1 has sent the tree, and while pass 2 (which
    // only deletes top-level entries, and sends no links) runs.
    let data_owned = data.clone();
    let walk = tokio::task::spawn_blocking(move || symlinks::find_all(&data_owned));

    // Pass 2: deletions of top-level entries only (`-d`: no recursion, as pass 1 already
    // deleted below them); without -t/-p the root directory's attributes stay untouched.
    let mut args = common_args(ctx);
    args.extend(
        [
            "-dx",
            EXCLUDE,
            "--ignore-existing",
            "--ignore-non-existing",
            "--delete",
        ]
        .map(OsString::from),
    );
    args.push("--info=stats2,misc2".into());
    args.extend([source_root, data_url]);
    let report = rsync(ctx, term, args, true, tally).await?;
    check("pass 2 (deletions)", &report)?;
    tally.files_deleted += report.stats.files_deleted;

    let links = walk
        .await
        .map_err(internal)?
        .map_err(|e| Failure::new(ErrorClass::DataDirMissing, format!("listing symlinks: {e}")))?;

    let upload = ctx.work.join("upload");
    fs::create_dir_all(&upload).map_err(internal)?;
    let (newline_list, left_out) = symlinks::encode_newline_list(&links);
    if left_out > 0 {
        say::info(
            "source",
            &format!(
                "{left_out} symlink name(s) contain a newline: only the NUL-separated list carries them"
            ),
        );
    }
    fs::write(upload.join(symlinks::NEWLINE_LIST), newline_list).map_err(internal)?;
    fs::write(
        upload.join(symlinks::NUL_LIST),
        symlinks::encode_nul_list(&links),
    )
    .map_err(internal)?;
    // One connection carries the lists and `complete`. --delay-updates renames them into
    // place together at the end; our destination reads the lists only once this
    // connection has closed, and the reference destination waits 5 s after `complete`.
    say::info("source", "Sending shutdown to remote...");
    fs::write(
        upload.join("complete"),
        format!(
            "{COMPLETE_MARKER}\nsymlinks={}\n{}",
            links.len(),
            ctx.session.complete_line()
        ),
    )
    .map_err(internal)?;
    let mut args = common_args(ctx);
    args.extend(["--info=stats2", "--delay-updates"].map(OsString::from));
    for name in [symlinks::NEWLINE_LIST, symlinks::NUL_LIST, "complete"] {
        args.push(upload.join(name).into());
    }
    let mut control_url = module_url(ctx, CONTROL_MODULE);
    control_url.push("/");
    args.push(control_url);
    let report = rsync(ctx, term, args, false, tally).await?;
    check(
        "sending the symlink lists and the completion signal",
        &report,
    )?;
    say::info("source", "...done");
    Ok(())
}

/// Environment variables the TLS client command gets through rsync.
type ConnectEnv = Vec<(&'static str, OsString)>;

/// The delta block size of this run (see [`blocks`]).
async fn block_size(args: &SourceArgs) -> Option<u32> {
    match args.block_size {
        BlockSize::Rsync => None,
        BlockSize::Bytes(b) => Some(b),
        BlockSize::Auto => {
            let data = args.common.data_dir.clone();
            // A walk that fails leaves the choice to rsync, which will report the problem.
            let largest = tokio::task::spawn_blocking(move || blocks::largest_file(&data))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let block = blocks::for_largest_file(largest);
            if let Some(b) = block {
                say::info(
                    "source",
                    &format!("delta-transfer blocks of {b} bytes (largest file: {largest} bytes)"),
                );
            }
            block
        }
    }
}

/// `RSYNC_CONNECT_PROG` and the environment it needs: the built-in client (this binary's
/// `mover connect`, told where to go through the environment) or a stunnel client in
/// inetd mode. rsync runs the command with `sh -c` once per connection.
fn connect_prog(
    args: &SourceArgs,
    endpoint: &str,
    key: &Path,
    work: &Path,
) -> Result<(String, ConnectEnv), String> {
    let common = &args.common;
    let quoted = |path: &Path| -> Result<String, String> {
        let text = path.to_str().unwrap_or("'");
        // Single quotes for sh; rsync itself expands `%H` in the command.
        if text.contains(['\'', '%']) {
            return Err(format!("{} must not contain ' or %", path.display()));
        }
        Ok(format!("'{text}'"))
    };
    match common.tunnel {
        Tunnel::Builtin => {
            let exe = std::env::current_exe().map_err(|e| format!("locating ferrosync: {e}"))?;
            let env = vec![
                ("FERROSYNC_TLS_CONNECT", OsString::from(endpoint)),
                // Absolute: rsync may change directory before it connects.
                (
                    "KEY_DIR",
                    std::path::absolute(&common.key_dir)
                        .map_err(|e| e.to_string())?
                        .into_os_string(),
                ),
                ("SSL_VERSION_MIN", OsString::from(&common.ssl_version_min)),
            ];
            Ok((format!("{} mover connect", quoted(&exe)?), env))
        }
        Tunnel::Stunnel => {
            let bin = procs::which("stunnel").map_err(|e| e.to_string())?;
            let conf = work.join("stunnel-client.conf");
            write_private(
                &conf,
                stunnel::render_client(endpoint, key, &common.ssl_version_min).as_bytes(),
            )
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
            Ok((
                format!("exec {} {}", quoted(&bin)?, quoted(&conf)?),
                Vec::new(),
            ))
        }
    }
}

/// The URL of a destination module. The built-in client is rsync's remote shell (`-e`,
/// `host::module`): rsync then talks the daemon protocol over a Unix socketpair to it,
/// where `RSYNC_CONNECT_PROG` (`rsync://`, kept for stunnel) gets a loopback TCP pair
/// (rsync's `socketpair_tcp`), whose TCP stack cost the client 30 % more CPU. What goes
/// over the network is the same.
fn module_url(ctx: &Ctx<'_>, module: &str) -> OsString {
    match ctx.args.common.tunnel {
        Tunnel::Builtin => format!("{URL_HOST}::{module}").into(),
        Tunnel::Stunnel => format!("rsync://{URL_HOST}/{module}").into(),
    }
}

fn common_args(ctx: &Ctx<'_>) -> Vec<OsString> {
    // No per-file output (`--out-format`, the reference's `--itemize-changes`): the mover
    // only counts, and rsync's statistics count; a line per file cost rsync a `write` and
    // the mover a wake-up per file (20,000 of each for the benchmark's tree).
    let mut args = vec![
        format!("--timeout={}", ctx.args.io_timeout.as_secs().max(1)).into(),
        // The session token, as a server option rsync ignores (see `session`).
        format!("-M{}", ctx.session.server_option()).into(),
    ];
    if ctx.args.common.tunnel == Tunnel::Builtin {
        // rsync splits this itself (no shell) and appends the host and a remote command,
        // which the client ignores.
        args.push("-e".into());
        args.push(ctx.remote_shell.clone().into());
    }
    if let Some(limit) = &ctx.args.bwlimit {
        args.push(format!("--bwlimit={limit}").into());
    }
    args
}

async fn rsync(
    ctx: &Ctx<'_>,
    term: &mut watch::Receiver<bool>,
    args: Vec<OsString>,
    print_stats: bool,
    tally: &mut Tally,
) -> Result<Report, Failure> {
    let inv = Invocation {
        rsync: ctx.rsync.clone(),
        connect_prog: ctx.connect_prog.clone(),
        connect_env: ctx.connect_env.clone(),
        args,
        progress: print_stats.then_some((ctx.args.common.progress_interval, ctx.start)),
        print_stats,
        strip_prefixes: ctx.data_prefixes.clone(),
    };
    let report = match rsync_run::run(inv, term).await {
        Ok(report) => report,
        Err(RunError::Interrupted) => return Err(interrupted()),
        Err(e @ RunError::Spawn(_)) => {
            return Err(Failure::new(ErrorClass::SetupFailed, e.to_string()));
        }
    };
    tally.bytes_sent += report.stats.bytes_sent;
    tally.bytes_received += report.stats.bytes_received;
    tally.auth_failure |= report.tls.auth_failed;
    let room = rsync_run::FILE_ERRORS_KEPT.saturating_sub(tally.file_errors.len());
    let kept = report.file_errors.len().min(room);
    tally
        .file_errors
        .extend(report.file_errors.iter().take(kept).cloned());
    tally.file_errors_omitted += report.file_error_count.saturating_sub(kept as u64);
    if print_stats {
        tally.push_stats(&report.stats.lines);
    }
    Ok(report)
}

/// The data directory as rsync may print it in front of names: as given and resolved
/// (rsync's sender reports `<its working directory>/<name>`), with a trailing slash.
fn data_prefixes(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [Some(data.to_owned()), fs::canonicalize(data).ok()]
        .into_iter()
        .flatten()
    {
        let text = dir.to_string_lossy();
        let prefix = format!("{}/", text.trim_end_matches('/'));
        if prefix != "/" && !out.contains(&prefix) {
            out.push(prefix);
        }
    }
    // Longest first, so a resolved path that extends the given one is removed whole.
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out
}

/// Entries directly under the data directory, except `lost+found`, sorted by bytes, each
/// as `/<name>`: `--files-from` skips entries starting with `#` or `;` as comments, even
/// with `--from0` (the reference loses such top-level entries), and rsync strips a leading
/// slash from list entries (unlike `./`, which would make it send the root directory).
fn top_level_entries(data: &Path) -> Result<Vec<Vec<u8>>, Failure> {
    let read = fs::read_dir(data).map_err(|e| {
        Failure::new(
            ErrorClass::DataDirMissing,
            format!("reading {}: {e}", data.display()),
        )
    })?;
    let mut names = Vec::new();
    for entry in read {
        let name = entry.map_err(internal)?.file_name();
        if name != "lost+found" {
            let mut entry = b"/".to_vec();
            entry.extend_from_slice(name.as_bytes());
            names.push(entry);
        }
    }
    names.sort();
    Ok(names)
}

/// The most bytes of top-level names passed as arguments; more go through a list file.
const ENTRY_ARGS_LIMIT: usize = 64 * 1024;

/// The top-level entries as rsync source arguments (`<dir>/<name>`, no trailing slash, so
/// each entry itself is sent and the root directory is not), or `None` when they are too
/// many for a command line. rsync's `--files-from` costs its sender an `open` and two more
/// `stat`s per file of the tree (a per-path safety check of rsync 3.4), which arguments do
/// not: 40 % of the sender's CPU on a tree of 20,000 files.
fn entry_args(dir: &Path, entries: &[Vec<u8>]) -> Option<Vec<OsString>> {
    let total: usize = entries
        .iter()
        .map(|e| e.len() + dir.as_os_str().len())
        .sum();
    if total > ENTRY_ARGS_LIMIT {
        return None;
    }
    Some(
        entries
            .iter()
            .map(|name| {
                // `name` is `/<entry>`: appended to the directory it is an absolute path,
                // which rsync never mistakes for an option or a remote `host:path`.
                let mut arg = dir.as_os_str().to_owned();
                arg.push(std::ffi::OsStr::from_bytes(name));
                arg
            })
            .collect(),
    )
}

fn flag(name: &str, path: &Path) -> OsString {
    let mut f = OsString::from(name);
    f.push(path);
    f
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorClass::Internal, e.to_string())
}

fn interrupted() -> Failure {
    Failure::new(
        ErrorClass::Interrupted,
        "interrupted by a termination signal before the sync completed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_entries_are_slash_prefixed_and_skip_lost_and_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["#hash", ";semi", "lost+found", "b"] {
            fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        let got = top_level_entries(dir.path()).expect("list");
        assert_eq!(got, [&b"/#hash"[..], b"/;semi", b"/b"]);
    }

    #[test]
    fn top_level_entries_become_absolute_arguments_until_too_many() {
        let entries = vec![b"/-rf".to_vec(), b"/a:b".to_vec()];
        let args = entry_args(Path::new("/data"), &entries).expect("few");
        assert_eq!(
            args,
            [OsString::from("/data/-rf"), OsString::from("/data/a:b")]
        );
        let many: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("/entry-{i}").into_bytes())
            .collect();
        assert!(entry_args(Path::new("/data"), &many).is_none());
    }
}
