//! `ferrosync controller` against the real apiserver: healthy at once, ready only once
//! both CRDs are served.

use std::time::Duration;

use crate::support::{
    ControlPlane, Options, bins, control_plane, controller::RunningController, crds, wait,
};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn controller_is_healthy_and_ready_with_crds_installed() {
    let cp = control_plane();
    let mut controller = RunningController::start(cp, &cp.kubeconfig, &[]);
    assert_eq!(
        controller
            .wait_for_status("/healthz", 200, TIMEOUT)
            .await
            .unwrap(),
        "ok"
    );
    controller
        .wait_for_status("/readyz", 200, TIMEOUT)
        .await
        .unwrap();
    let (code, metrics) = controller.get("/metrics").expect("metrics answer");
    assert_eq!(code, 200, "{metrics}");
}

/// The not-ready path needs an apiserver without our CRDs, so it gets one of its own
/// (a few seconds): the shared one has them installed from the start.
#[tokio::test]
async fn controller_is_not_ready_until_crds_are_installed() {
    let bare = ControlPlane::start(Options {
        install_crds: false,
        ..Options::default()
    })
    .expect("a bare control plane");
    let mut controller = RunningController::start(&bare, &bare.kubeconfig, &[]);
    controller
        .wait_for_status("/healthz", 200, TIMEOUT)
        .await
        .unwrap();
    // It says why it is not ready, naming both missing kinds.
    wait::until("the controller to log the missing CRDs", TIMEOUT, || {
        let log = controller.log_text();
        async move {
            let named = log.contains("CRDs not installed")
                && log.contains("replicationsources.volsync.backube")
                && log.contains("replicationdestinations.volsync.backube");
            Ok(named.then_some(()))
        }
    })
    .await
    .unwrap();
    assert_eq!(controller.get("/readyz").map(|(code, _)| code), Some(503));

    let client = bare.client().await;
    crds::install(&client, &crds::load(&bins::ferrosync_crd_files()).unwrap())
        .await
        .unwrap();
    controller
        .wait_for_status("/readyz", 200, TIMEOUT)
        .await
        .unwrap();
}
