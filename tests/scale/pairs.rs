//! N pairs, each a ReplicationDestination and a ReplicationSource (manual trigger, so each
//! syncs exactly once), with a trivial mover that reports success at once.

use std::{
    fmt,
    time::{Duration, Instant},
};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::support::{
    Options, control_plane_with,
    controller::RunningController,
    sim::{
        Cluster,
        node::images::{self, Image},
        storage,
    },
    wait,
};

const MOVER_IMAGE: &str = "ferrosync.test/trivial-mover:scale";

/// The measured figures of one run.
pub struct Report {
    n: usize,
    converged: Duration,
    controller_peak_rss_mib: f64,
    apiserver_rps: f64,
    reconciles_per_second: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| N | first sync of every pair | controller peak RSS | apiserver req/s | reconciles/s |"
        )?;
        writeln!(f, "|---|---|---|---|---|")?;
        write!(
            f,
            "| {} | {:.1} s | {:.1} MiB | {:.1} | {:.1} |",
            self.n,
            self.converged.as_secs_f64(),
            self.controller_peak_rss_mib,
            self.apiserver_rps,
            self.reconciles_per_second
        )
    }
}

/// A mover that writes a successful summary where the kubelet reads it and exits 0.
fn trivial_mover(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("trivial-mover.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nprintf '{\"role\":\"%s\",\"result\":\"succeeded\",\"exitCode\":0,\"durationSeconds\":0}' \"$2\" > /dev/termination-log\nexit 0\n",
    )
    .expect("writing the trivial mover");
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&path)
        .status()
        .expect("chmod");
    path
}

/// Creates `n` pairs and waits until every object recorded its first sync.
pub async fn converge(n: usize, deadline: Duration) -> Report {
    let cp = control_plane_with(Options::end_to_end());
    images::register(
        MOVER_IMAGE,
        Image::binary(
            trivial_mover(&cp.dir),
            ferrosync::resources::job::MOVER_BINARY,
        ),
    );
    Cluster::start(cp);
    let controller = RunningController::start(
        cp,
        &cp.kubeconfig,
        &[
            ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
            ("FERROSYNC_REQUEUE__POLL", "1s"),
            ("FERROSYNC_LOG__LEVEL", "warn"),
        ],
    );
    let ns = cp.namespace("scale").await;
    let client = ns.client.clone();
    let requests_before = apiserver_requests(cp).await;
    let started = Instant::now();

    let rds: Api<ReplicationDestination> = Api::namespaced(client.clone(), &ns.name);
    let rss: Api<ReplicationSource> = Api::namespaced(client.clone(), &ns.name);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &ns.name);
    for i in 0..n {
        let pvc = serde_json::from_value(json!({
            "metadata": {"name": format!("data-{i}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage::CLASS,
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .expect("pvc");
        pvcs.create(&PostParams::default(), &pvc)
            .await
            .expect("creating a PVC");
        let rd = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
            "metadata": {"name": format!("dst-{i}")},
            "spec": {"trigger": {"manual": "once"},
                     "rsyncTLS": {"copyMethod": "Direct", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"],
                                  "storageClassName": storage::CLASS}},
        }))
        .expect("rd");
        rds.create(&PostParams::default(), &rd)
            .await
            .expect("creating a destination");
        let rs = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
            "metadata": {"name": format!("src-{i}")},
            "spec": {"sourcePVC": format!("data-{i}"), "trigger": {"manual": "once"},
                     "rsyncTLS": {"copyMethod": "Direct", "address": "127.0.0.1"}},
        }))
        .expect("rs");
        rss.create(&PostParams::default(), &rs)
            .await
            .expect("creating a source");
    }

    wait::until("every pair's first sync", deadline, || {
        let (rds, rss) = (rds.clone(), rss.clone());
        async move {
            let synced =
                |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.is_some();
            let d = rds
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let s = rss
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let done = d
                .items
                .iter()
                .filter(|o| {
                    synced(
                        o.status
                            .as_ref()
                            .and_then(|st| st.sync.last_sync_time.as_ref()),
                    )
                })
                .count()
                + s.items
                    .iter()
                    .filter(|o| {
                        synced(
                            o.status
                                .as_ref()
                                .and_then(|st| st.sync.last_sync_time.as_ref()),
                        )
                    })
                    .count();
            Ok((done == 2 * n).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.log_text()));
    let converged = started.elapsed();
    let requests = apiserver_requests(cp).await - requests_before;
    let reconciles = metric_sum(
        &controller
            .get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default(),
        "ferrosync_reconciles_total",
    );
    Report {
        n,
        converged,
        controller_peak_rss_mib: peak_rss_mib(controller.pid()),
        apiserver_rps: requests / converged.as_secs_f64(),
        reconciles_per_second: reconciles / converged.as_secs_f64(),
    }
}

/// VmHWM of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The apiserver's total request count, from its own /metrics.
async fn apiserver_requests(cp: &crate::support::ControlPlane) -> f64 {
    let client = cp.client().await;
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
    metric_sum(&text, "apiserver_request_total")
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
