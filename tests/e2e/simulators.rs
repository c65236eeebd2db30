//! The simulators themselves: a pod really runs as its security context and reports like
//! a kubelet; storage really provisions, clones, snapshots and restores.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{PersistentVolumeClaim, Pod},
    storage::v1::StorageClass,
};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::json;

use crate::{
    env::{SHELL_IMAGE, env},
    fixtures::{STEP, bound_dir, event, pod, pvc, terminated},
    support::{
        sim::storage::{self, snapshot},
        wait,
    },
};

#[tokio::test]
async fn pod_runs_as_its_security_context_and_reports_like_a_kubelet() {
    let env = env();
    let ns = env.cp.namespace("sim-pod").await;
    let started = Instant::now();
    pvc("vol").create(&ns).await;
    let vol = bound_dir(&ns, "vol").await;
    // Everything the container observes goes into its termination message.
    let script = r#"
        exec 2>&1
        msg="uid=$(id -u) gid=$(id -g) groups=$(id -G) ip=$POD_IP"
        touch /rootfs-write 2>/dev/null && msg="$msg root=writable" || msg="$msg root=ro"
        touch /scratch/x && msg="$msg scratch=rw"
        echo data > /data/out && msg="$msg data=rw"
        msg="$msg key=$(cat /keys/psk.txt) keymode=$(stat -L -c %a:%g /keys/psk.txt)"
        grep -q CapEff:.0000000000000000 /proc/self/status && msg="$msg caps=none"
        printf '%s' "$msg" > /dev/termination-log
        echo first-line; echo last-line
        exit 3
    "#;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "key"}, "stringData": {"psk.txt": "volsync:abc"}
    }))
    .expect("secret");
    ns.api()
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    pod("probe", SHELL_IMAGE, &["/bin/sh", "-c", script])
        .run_as(1234, 2345, 5678)
        .container_security(
            json!({"readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
                                   "allowPrivilegeEscalation": false}),
        )
        .env_field("POD_IP", "status.podIP")
        .secret("key", "/keys", 0o600)
        .memory_dir("scratch", "/scratch")
        .pvc("vol", "/data")
        .create(&ns)
        .await;
    let pod = terminated(&ns, "probe").await;
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let ip = status.pod_ip.clone().expect("podIP");
    assert!(ip.starts_with("127.100."), "pod IP {ip}");
    let state = status.container_statuses.expect("container statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(state.exit_code, 3);
    assert_eq!(
        state.message.as_deref(),
        Some(&*format!(
            "uid=1234 gid=2345 groups=2345 5678 ip={ip} root=ro scratch=rw data=rw key=volsync:abc keymode=640:5678 caps=none"
        ))
    );
    // Its output, through pods/log: the API server asks the node's kubelet endpoint.
    let params = kube::api::LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    let log = ns
        .api::<Pod>()
        .logs("probe", &params)
        .await
        .expect("pods/log");
    assert_eq!(log, "last-line\n");
    // Files the container writes belong to its uid and gid.
    let meta = std::fs::metadata(vol.join("out")).expect("the pod wrote into its volume");
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
    eprintln!("sim pod test: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn storage_clones_and_restores_snapshots_with_metadata() {
    let env = env();
    let ns = env.cp.namespace("sim-storage").await;
    pvc("origin").create(&ns).await;
    let origin = bound_dir(&ns, "origin").await;
    std::fs::write(origin.join("file"), b"hello").expect("write");
    std::os::unix::fs::chown(origin.join("file"), Some(4321), Some(4321)).expect("chown");

    pvc("copy").clone_of("origin").create(&ns).await;
    let copy = bound_dir(&ns, "copy").await;
    assert_eq!(std::fs::read(copy.join("file")).expect("clone"), b"hello");
    assert_eq!(
        std::fs::metadata(copy.join("file")).expect("meta").uid(),
        4321
    );

    let vs_api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(ns.client.clone(), &ns.name, &snapshot::snapshots());
    let vs = DynamicObject::new("snap", &snapshot::snapshots())
        .data(json!({"spec": {"source": {"persistentVolumeClaimName": "origin"}}}));
    vs_api
        .create(&PostParams::default(), &vs)
        .await
        .expect("snapshot");
    wait::until("the snapshot to be ready", STEP, || async {
        let vs = vs_api.get("snap").await.map_err(|e| e.to_string())?;
        Ok((vs.data.pointer("/status/readyToUse") == Some(&json!(true))).then_some(vs))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Changes after the snapshot must not show in the restore.
    std::fs::write(origin.join("file"), b"changed").expect("write");
    pvc("restored").restore_of("snap").create(&ns).await;
    let restored = bound_dir(&ns, "restored").await;
    assert_eq!(
        std::fs::read(restored.join("file")).expect("restore"),
        b"hello"
    );

    // Deleting a claim releases its volume, and the driver removes the data.
    ns.api::<PersistentVolumeClaim>()
        .delete("copy", &Default::default())
        .await
        .expect("delete");
    wait::until("the clone's directory to be removed", STEP, || async {
        Ok((!copy.exists()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_class_that_cannot_clone_leaves_the_clone_pending_with_the_provisioner_event() {
    let env = env();
    let ns = env.cp.namespace("sim-noclone").await;
    pvc("origin")
        .class(storage::CLASS_NO_CLONE)
        .create(&ns)
        .await;
    bound_dir(&ns, "origin").await;
    pvc("copy")
        .class(storage::CLASS_NO_CLONE)
        .clone_of("origin")
        .create(&ns)
        .await;
    let message = event(&ns.client, &ns.name, "copy", "ProvisioningFailed").await;
    assert_eq!(
        message,
        format!(
            "failed to provision volume with StorageClass {:?}: CSI driver does not support clone operations: controller CLONE_VOLUME capability is not reported",
            storage::CLASS_NO_CLONE
        )
    );
    let claim = ns
        .api::<PersistentVolumeClaim>()
        .get("copy")
        .await
        .expect("claim");
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
}

#[tokio::test]
async fn graceful_deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let env = env();
    let ns = env.cp.namespace("sim-delete").await;
    // PID 1 with a handler exits on SIGTERM; PID 1 without one ignores it, as in a
    // container, and is killed when the grace period is over.
    let handles = "trap 'exit 0' TERM; while :; do sleep 0.1; done";
    let ignores = "while :; do sleep 0.1; done";
    for (name, script) in [("handles", handles), ("ignores", ignores)] {
        pod(name, SHELL_IMAGE, &["/bin/sh", "-c", script])
            .create(&ns)
            .await;
    }
    let pods = ns.api::<Pod>();
    for name in ["handles", "ignores"] {
        wait::until(&format!("pod {name} to run"), STEP, || async {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            let phase = pod.status.and_then(|s| s.phase);
            Ok((phase.as_deref() == Some("Running")).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // Long enough that a loaded machine still tells "ended by SIGTERM" from "killed".
    let grace = 8;
    let params = DeleteParams {
        grace_period_seconds: Some(grace),
        ..DeleteParams::default()
    };
    let started = Instant::now();
    for name in ["handles", "ignores"] {
        pods.delete(name, &params).await.expect("delete");
    }
    let gone = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait::until(&format!("pod {name} to be gone"), STEP, || async {
                Ok(pods
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                    .then_some(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            started.elapsed()
        }
    };
    let (handled, ignored) = tokio::join!(gone("handles"), gone("ignores"));
    assert!(
        handled < Duration::from_secs(grace as u64),
        "SIGTERM ended it: {handled:?}"
    );
    assert!(
        ignored >= Duration::from_secs(grace as u64),
        "killed only after the grace period: {ignored:?}"
    );
}

#[tokio::test]
async fn storage_delays_and_failures_are_injected_per_class() {
    let env = env();
    let ns = env.cp.namespace("sim-inject").await;
    let class = |name: &str, params: serde_json::Value| -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": storage::DRIVER, "parameters": params,
        }))
        .expect("class")
    };
    let classes: kube::Api<StorageClass> = kube::Api::all(ns.client.clone());
    let (slow, broken) = (format!("{}-slow", ns.name), format!("{}-broken", ns.name));
    for c in [
        class(&slow, json!({ storage::PARAM_PROVISION_DELAY: "3s" })),
        class(&broken, json!({ storage::PARAM_FAIL: "out of capacity" })),
    ] {
        classes
            .create(&PostParams::default(), &c)
            .await
            .expect("class");
    }
    let started = Instant::now();
    pvc("slow").class(&slow).create(&ns).await;
    pvc("broken").class(&broken).create(&ns).await;
    bound_dir(&ns, "slow").await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "bound only after the delay"
    );
    let message = event(&ns.client, &ns.name, "broken", "ProvisioningFailed").await;
    assert_eq!(
        message,
        format!("failed to provision volume with StorageClass {broken:?}: out of capacity")
    );
    for c in [slow, broken] {
        classes
            .delete(&c, &Default::default())
            .await
            .expect("class cleanup");
    }
}

#[tokio::test]
async fn root_has_only_the_capabilities_it_was_granted() {
    let env = env();
    let ns = env.cp.namespace("sim-caps").await;
    pvc("vol").create(&ns).await;
    let vol = bound_dir(&ns, "vol").await;
    std::fs::write(vol.join("private"), "x").expect("write");
    std::os::unix::fs::chown(vol.join("private"), Some(4321), Some(4321)).expect("chown");
    std::fs::set_permissions(vol.join("private"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let script = "cat /data/private >/dev/null 2>&1 && r=readable || r=denied; printf %s $r > /dev/termination-log";
    let caps = [
        ("none", json!({"drop": ["ALL"]})),
        ("granted", json!({"drop": ["ALL"], "add": ["DAC_OVERRIDE"]})),
    ];
    for (name, capabilities) in &caps {
        pod(name, SHELL_IMAGE, &["/bin/sh", "-c", script])
            .container_security(json!({"runAsUser": 0, "capabilities": capabilities}))
            .pvc("vol", "/data")
            .create(&ns)
            .await;
    }
    for (name, expected) in [("none", "denied"), ("granted", "readable")] {
        let pod = terminated(&ns, name).await;
        let message = pod.status.and_then(|s| s.container_statuses).and_then(|c| {
            c[0].state
                .clone()
                .and_then(|s| s.terminated)
                .and_then(|t| t.message)
        });
        assert_eq!(message.as_deref(), Some(expected), "pod {name}");
    }
}
