//! The control-plane scale benchmark of issue 7 (not a test: every case is `#[ignore]`
//! and `scripts/bench-scale.sh` runs it): converge N source/destination pairs on the local
//! control plane and report the time until every pair completed its first sync, the
//! controller's peak RSS, apiserver requests per second and reconciles per second.
//!
//! The mover image maps to a trivial command in the node simulator, so this measures the
//! controller and the control plane, not N rsync processes on two cores.

mod support;

#[path = "scale/pairs.rs"]
mod pairs;

use std::time::Duration;

/// N from `FERROSYNC_SCALE_N` (default 100).
fn n() -> usize {
    std::env::var("FERROSYNC_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench-scale.sh"]
async fn converge_pairs() {
    let report = pairs::converge(n(), Duration::from_secs(60 * 30)).await;
    println!("{report}");
}
