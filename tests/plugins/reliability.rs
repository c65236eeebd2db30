//! What must hold when the network, the bundle files or the load misbehave: a redirect to
//! an origin not allowed is never followed, a compressed response bomb is refused without
//! memory growing, a torn bundle update never serves the wrong component, and a slow
//! decision point never holds up another one.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ferrosync::{
    api::CopyMethod,
    policy::{
        DecidedBy, FailureKind, FailureMode, HttpGrant, Limits, Pins, PointConfig, PolicyConfig,
        PskAnswer, Side, credentials::NoCredentials, reload::spawn_watcher,
    },
};
use serde_json::json;

use super::common::*;

/// A listener that must never see a connection.
struct Untouched(TcpListener);

impl Untouched {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Untouched(l)
    }
    fn origin(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
    fn assert_untouched(&self) {
        assert!(
            matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a connection reached the origin that is not allowed"
        );
    }
}

/// A tiny HTTP/1.1 server on loopback answering every request with `response` (head and
/// body), counting requests. Runs until the test process ends.
fn serve(response: Arc<Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let response = response.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                if read_head(&mut stream).is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    // The client may hang up once it has read enough: not an error here.
                    let _ = stream.write_all(&response);
                }
            });
        }
    });
    (origin, count)
}

/// Reads a request head (these requests have no body).
fn read_head(stream: &mut TcpStream) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

fn http_grant(origin: &str, max_response_kib: u32) -> HttpGrant {
    HttpGrant {
        allow: vec![origin.to_owned()],
        timeout: Duration::from_secs(5),
        max_response_kib,
        max_requests: 4,
        credentials: None,
    }
}

/// The hostile psk plugin in `mode` against `url`, allowed only `origin`.
async fn psk_engine(mode: &str, url: &str, grant: HttpGrant) -> ferrosync::policy::PolicyEngine {
    let mut s = spec("hostile-psk", json!({ "mode": mode, "url": url }));
    s.limits.timeout = Duration::from_secs(10);
    s.grants.http = Some(grant);
    let config = PolicyConfig {
        psk: point(s, FailureMode::Fallback),
        ..config_with_good_neighbour()
    };
    engine_with(&config, Arc::new(NoCredentials), None).await
}

#[tokio::test]
async fn a_redirect_to_an_origin_not_allowed_is_never_contacted() {
    let forbidden = Untouched::new();
    let target = format!("{}/v1/auth/token/lookup-self", forbidden.origin());
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (allowed, requests) = serve(Arc::new(redirect.into_bytes()));
    let url = format!("{allowed}/v1/secret/data/x");

    // The host does not follow it: the plugin sees the 302 itself.
    let engine = psk_engine("http", &url, http_grant(&allowed, 64)).await;
    let d = engine
        .psk(&psk_input(Side::Source, None))
        .await
        .expect("fallback");
    let f = d.provenance.failure.clone().expect("the plugin reports");
    assert_eq!(f.kind, FailureKind::PluginError);
    assert!(
        f.message.contains(&format!("reached {url}: HTTP 302")),
        "{f}"
    );
    assert!(
        d.provenance.denials.is_empty(),
        "{:?}",
        d.provenance.denials
    );

    // A plugin that follows it by hand is refused before any connection.
    let engine = psk_engine("follow", &url, http_grant(&allowed, 64)).await;
    let d = engine
        .psk(&psk_input(Side::Source, None))
        .await
        .expect("fallback");
    let f = d.provenance.failure.clone().expect("the plugin reports");
    assert!(
        f.message.contains("HTTP 302 then") && f.message.contains("is not on the allow-list"),
        "{f}"
    );
    assert_eq!(d.provenance.denials.len(), 1, "{:?}", d.provenance.denials);
    assert_eq!(d.decision.answer, PskAnswer::GenerateLocally);

    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "both asked the allowed origin"
    );
    forbidden.assert_untouched();
    assert_good_neighbour_works(&engine).await;
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 256 MiB of zeros, gzip-compressed (about 250 KiB).
fn gzip_bomb() -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// Resident memory before and after a bomb, measured in a process of its own (the
/// parent test below runs this one alone in a child, so no other test's memory counts).
#[tokio::test]
#[ignore = "run by a_compressed_response_bomb_is_refused_with_memory_flat in a child process"]
async fn bomb_in_a_child_process() {
    if std::env::var_os("FERROSYNC_BOMB_CHILD").is_none() {
        return;
    }
    let bomb = gzip_bomb();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    response.extend_from_slice(&bomb);
    drop(bomb);
    let (origin, requests) = serve(Arc::new(response));
    let url = format!("{origin}/v1/secret/data/x");
    // Up to 1 MiB accepted: the bomb's 250 KiB on the wire fit, what they decode to
    // does not.
    let engine = psk_engine("http", &url, http_grant(&origin, 1024)).await;
    // Warm: the engine, its pools and a first run are resident before measuring.
    let _ = engine.psk(&psk_input(Side::Source, None)).await;
    let before = rss();
    for _ in 0..3 {
        let d = engine
            .psk(&psk_input(Side::Source, None))
            .await
            .expect("fallback");
        let f = d.provenance.failure.clone().expect("refused");
        assert!(f.message.contains("response too large"), "{f}");
    }
    let after = rss();
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    println!("BOMB rss_before={before} rss_after={after}");
}

#[test]
fn a_compressed_response_bomb_is_refused_with_memory_flat() {
    build();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "plugins::reliability::bomb_in_a_child_process",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERROSYNC_BOMB_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the test's name on the same line, before its output.
    let line = stdout
        .lines()
        .find_map(|l| l.find("BOMB ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no measurement: {stdout}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (before, after) = (field("rss_before="), field("rss_after="));
    // Three 256 MiB bombs decoded would add at least 256 MiB; refused at 1 MiB decoded,
    // the process stays within allocator noise.
    assert!(
        after < before + (16 << 20),
        "resident memory grew from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn a_torn_bundle_update_never_serves_the_wrong_component() {
    // Old: the shipped aws-ebs bundle (Snapshot for EBS). New: the hostile copy-method
    // plugin in its deterministic `hashmap` mode (Direct, "order=..."). Each decision
    // says which digest decided; its behaviour must be that digest's.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aws-ebs");
    copy_bundle("aws-ebs", &dir);
    let old = digest(&dir.join("copy-method-by-driver.wasm"));
    let new_wasm = wasm("hostile-copy-method");
    let new = digest(&new_wasm);
    // The operator pins both for the rollover.
    let mut point = PointConfig::bundle_as_written(&dir).unwrap();
    point.sha256 = Pins::new([old.clone(), new.clone()]);
    point.on_failure = FailureMode::Fail;
    let config = PolicyConfig {
        copy_method: Some(point),
        ..PolicyConfig::default()
    };
    let engine = engine(&config).await;
    let watcher = spawn_watcher(engine.clone(), config.clone(), Duration::from_millis(10));

    // Decides all along, recording (digest, method, reason).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let decider = {
        let (engine, seen, stop) = (engine.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let d = engine.copy_method(&copy_input()).await;
                let d = d
                    .expect("a plugin failure would mean a component ran under another's settings");
                seen.lock().unwrap().push((
                    d.provenance.sha256.clone().unwrap(),
                    d.provenance.decided_by,
                    d.decision.method,
                    d.decision.reason.clone(),
                ));
                tokio::task::yield_now().await;
            }
        })
    };
    let wait_for = |what: &'static str, cond: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };

    // Torn: the component changes first; policy.toml (pin and settings) still the old.
    let target = dir.join("copy-method-by-driver.wasm");
    std::fs::copy(&new_wasm, dir.join("incoming.wasm")).unwrap();
    std::fs::rename(dir.join("incoming.wasm"), &target).unwrap();
    let e = engine.clone();
    wait_for(
        "the torn state was never noticed",
        Box::new(move || e.last_reload_error().is_some()),
    )
    .await;
    let msg = engine.last_reload_error().unwrap();
    assert!(
        msg.contains("refusing to load") && msg.contains(&new),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.plugins()[0].sha256, old, "the old set keeps serving");

    // Then policy.toml follows, its pin and settings in one file swap (the hostile
    // plugin reads `mode` and ignores the rest): the new component serves.
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let pin_line = text.lines().find(|l| l.starts_with("sha256 = ")).unwrap();
    let text = text
        .replacen(pin_line, &format!("sha256 = \"{new}\""), 1)
        .replace(
            "[plugin.settings.default]",
            "[plugin.settings]\nmode = \"hashmap\"\n\n[plugin.settings.default]",
        );
    std::fs::write(dir.join("policy.toml.tmp"), text).unwrap();
    std::fs::rename(dir.join("policy.toml.tmp"), &file).unwrap();
    let e = engine.clone();
    let n = new.clone();
    wait_for(
        "the completed update never took effect",
        Box::new(move || e.plugins()[0].sha256 == n),
    )
    .await;
    let count = seen.lock().unwrap().len();
    let s = seen.clone();
    wait_for(
        "no decision after the update",
        Box::new(move || s.lock().unwrap().len() > count + 3),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    decider.await.unwrap();
    watcher.abort();

    let seen = seen.lock().unwrap();
    let (mut by_old, mut by_new) = (0, 0);
    for (sha, by, method, reason) in seen.iter() {
        assert!(matches!(by, DecidedBy::Plugin | DecidedBy::Cache), "{by:?}");
        if *sha == old {
            by_old += 1;
            assert_eq!(
                *method,
                CopyMethod::Snapshot,
                "old digest, other behaviour: {reason}"
            );
        } else if *sha == new {
            by_new += 1;
            assert_eq!(*method, CopyMethod::Direct, "{reason}");
            assert!(
                reason.starts_with("order="),
                "new digest, other behaviour: {reason}"
            );
        } else {
            panic!("decided by an unknown digest {sha}");
        }
    }
    assert!(by_old > 0 && by_new > 0, "old {by_old}, new {by_new}");
}

#[tokio::test]
async fn a_slow_decision_point_holds_up_no_other_and_waits_within_its_deadline() {
    // A vault that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", silent.local_addr().unwrap());
    let mut s = spec(
        "hostile-psk",
        json!({ "mode": "http", "url": format!("{origin}/v1/x") }),
    );
    s.limits = Limits {
        timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    s.grants.http = Some(HttpGrant {
        timeout: Duration::from_secs(30),
        ..http_grant(&origin, 64)
    });
    let mut config = PolicyConfig {
        psk: Some(PointConfig {
            concurrency: Some(2),
            deadline: Some(Duration::from_millis(500)),
            on_failure: FailureMode::Fail,
            ..PointConfig::inline(s)
        }),
        ..config_with_good_neighbour()
    };
    // Today's default of all points together.
    config.engine.max_concurrency = 2;
    let engine = engine(&config).await;

    // Two psk decisions hold both psk slots, stuck on the vault.
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.psk(&psk_input(Side::Source, None)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Service-type decisions go on meanwhile.
    for _ in 0..3 {
        assert_good_neighbour_works(&engine).await;
    }
    assert!(
        stuck.iter().all(|h| !h.is_finished()),
        "the service-type decisions finished only after the psk ones"
    );

    // A third psk decision waits for a slot within the point's deadline: the stuck ones
    // free theirs at their own deadline, a moment before its own, so it either finds no
    // slot or too little time left (its vault request then times out). Either way it
    // ends at its deadline, not at the plugin's 3 s or the grant's 30 s, and says so.
    let start = Instant::now();
    let err = engine
        .psk(&psk_input(Side::Destination, None))
        .await
        .expect_err("no slot within the deadline");
    let msg = err.to_string();
    assert!(
        msg.contains("the psk decision point's deadline of 500ms passed")
            || msg.contains("by its decision point's deadline")
            || msg.contains("timed out"),
        "{msg}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // The stuck ones end at the deadline too, not at the plugin's 3 s or the grant's 30 s.
    for h in stuck {
        let err = h.await.unwrap().expect_err("cut by the deadline");
        assert!(
            err.to_string().contains("timed out")
                || err.to_string().contains("decision point's deadline"),
            "{err}"
        );
    }
    drop(silent);
}
