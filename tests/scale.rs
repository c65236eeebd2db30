//! The control-plane scale benchmark of issues 7 and 10 (not a test: every case is
//! `#[ignore]` and `scripts/bench-scale.sh` runs them, each on a fresh control plane).
//!
//! - `converge_pairs`: N source/destination pairs (`FERROSYNC_SCALE_N`, default 100), each
//!   synced once; the time until every pair completed its first sync, the controller's
//!   peak RSS and CPU, the apiserver's CPU while converging, and the controller's own API
//!   requests per pair by verb and resource (from the audit log, by its user).
//! - `idle_object`: pairs scheduled far ahead, after their first sync: the controller's
//!   requests over a window (`FERROSYNC_SCALE_IDLE_WINDOW`, default 300 s), per object
//!   and scaled to an hour.
//!
//! The mover image maps to a trivial command in the node simulator, so this measures the
//! controller and the control plane, not rsync.

mod support;

#[path = "scale/audit.rs"]
mod audit;
#[path = "scale/pairs.rs"]
mod pairs;
#[path = "scale/procfs.rs"]
mod procfs;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/setup.rs"]
mod setup;

use std::time::Duration;

use audit::Filter;
use setup::{Bench, CONTROLLER_USER};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench-scale.sh"]
async fn converge_pairs() {
    let n = env_number("FERROSYNC_SCALE_N", 100) as usize;
    let bench = Bench::start().await;
    let ns = bench.cp.namespace("scale").await;
    let before = bench.sample();
    pairs::create(&ns.client, &ns.name, n, pairs::Trigger::Once).await;
    let created_in = before.at.elapsed();
    tokio::time::timeout(
        Duration::from_secs(60 * 60),
        pairs::synced(&ns.client, &ns.name, n),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not every pair synced within an hour; controller log:\n{}",
            bench.controller_log_tail()
        )
    });
    let after = bench.sample();
    let rss = bench.controller_peak_rss_mib();
    let own = bench.audit.requests(
        before.audit,
        after.audit,
        &Filter {
            user: Some(CONTROLLER_USER),
            namespace: None,
        },
    );
    let everyone = bench.audit.requests(
        before.audit,
        after.audit,
        &Filter {
            user: None,
            namespace: None,
        },
    );
    let per_pair = |count: u64| count as f64 / n as f64;
    let qps = setup::kcm_qps();
    let mut summary = report::table(&[
        "build",
        "N",
        "kcm QPS/burst",
        "time until all pairs synced",
        "peak RSS",
        "controller CPU",
        "apiserver CPU",
        "controller's own API requests per pair",
        "all clients' requests per pair",
        "load average (1/5/15 min) at start; at end",
    ]);
    summary.add_row(vec![
        report::build(),
        n.to_string(),
        format!("{qps}/{}", 2 * qps),
        format!(
            "{:.1} s (creating took {:.1} s)",
            (after.at - before.at).as_secs_f64(),
            created_in.as_secs_f64()
        ),
        format!(
            "{rss:.0} MiB (before the first create: {:.0} MiB)",
            before.controller_peak_rss
        ),
        format!("{:.1} s", after.controller_cpu - before.controller_cpu),
        format!("{:.1} s", after.apiserver_cpu - before.apiserver_cpu),
        format!("{:.1}", per_pair(own.total())),
        format!("{:.1}", per_pair(everyone.total())),
        format!("{}; {}", before.load, after.load),
    ]);
    println!("=== scale report: converge N = {n}");
    println!("{summary}\n");
    println!("The controller's own requests ({CONTROLLER_USER}), first create to last first sync:");
    println!("{}", report::breakdown(&own, n as f64, "per pair"));
    println!("=== end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench-scale.sh"]
async fn idle_object() {
    let pairs_n = env_number("FERROSYNC_SCALE_IDLE_PAIRS", 10) as usize;
    let window = Duration::from_secs(env_number("FERROSYNC_SCALE_IDLE_WINDOW", 300));
    // After the first syncs, before the window: the passes that finish an iteration.
    let settle = Duration::from_secs(30);
    let bench = Bench::start().await;
    let ns = bench.cp.namespace("scale-idle").await;
    pairs::create(&ns.client, &ns.name, pairs_n, pairs::Trigger::FarAhead).await;
    tokio::time::timeout(
        Duration::from_secs(600),
        pairs::synced(&ns.client, &ns.name, pairs_n),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the idle pairs' first syncs did not finish; controller log:\n{}",
            bench.controller_log_tail()
        )
    });
    tokio::time::sleep(settle).await;
    let before = bench.sample();
    tokio::time::sleep(window).await;
    let after = bench.sample();
    let all = bench.audit.requests(
        before.audit,
        after.audit,
        &Filter {
            user: Some(CONTROLLER_USER),
            namespace: None,
        },
    );
    let on_objects = bench.audit.requests(
        before.audit,
        after.audit,
        &Filter {
            user: Some(CONTROLLER_USER),
            namespace: Some(&ns.name),
        },
    );
    let objects = (2 * pairs_n) as f64;
    let hours = (after.at - before.at).as_secs_f64() / 3600.0;
    let per_object_hour = |count: u64| count as f64 / objects / hours;
    let mut summary = report::table(&[
        "build",
        "idle objects",
        "window (scaled to an hour)",
        "requests on its namespace per idle object per hour",
        "all the controller's requests per idle object per hour",
        "controller CPU in the window",
        "load average (1/5/15 min) at start; at end",
    ]);
    summary.add_row(vec![
        report::build(),
        format!("{pairs_n} pairs = {objects} objects, schedule \"0 0 1 1 *\""),
        format!(
            "{:.0} s, from {} s after the last first sync",
            window.as_secs_f64(),
            settle.as_secs()
        ),
        format!("{:.1}", per_object_hour(on_objects.total())),
        format!("{:.1}", per_object_hour(all.total())),
        format!("{:.2} s", after.controller_cpu - before.controller_cpu),
        format!("{}; {}", before.load, after.load),
    ]);
    println!("=== scale report: idle objects");
    println!("{summary}\n");
    println!("The controller's requests in the window, all of them (per idle object per hour):");
    println!(
        "{}",
        report::breakdown(&all, objects * hours, "per object per hour")
    );
    println!("=== end");
}
