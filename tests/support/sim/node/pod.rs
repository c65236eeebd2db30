//! One pod on the simulated node, from binding to the final delete: prepare volumes, start
//! the containers in sandboxes, report status, honour graceful deletion.
//!
//! Not modelled: init and sidecar containers, restarts (every pod behaves as
//! `restartPolicy: Never`, which is what Jobs here use), probes (a started container is
//! ready), resource limits, image pull policy, service-link environment variables, and
//! kubelet Events.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::sync::watch;

use super::{
    images, kubelet_api, pull_backoff,
    sandbox::{self, Launch, Mount},
    status::{self, Container, ContainerState},
    volumes,
};
use crate::support::{process, sim::addresses};

/// The most of a termination message the kubelet keeps.
pub const MAX_MESSAGE: usize = 4096;
/// With FallbackToLogsOnError, the kubelet keeps at most this many log lines...
const FALLBACK_LINES: usize = 80;
/// ...and at most this many bytes of them.
const FALLBACK_BYTES: usize = 2048;

/// What the node loop tells a pod's task: the pod was marked for deletion with this grace
/// period (seconds), or vanished (`Some(0)` either way means no grace).
pub type Deletion = watch::Receiver<Option<i64>>;

/// Runs `pod` to completion under `dir`, then completes its deletion.
pub async fn run(client: Client, pod: Pod, dir: PathBuf, mut deletion: Deletion) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let started = status::now();
    let mut reported = Vec::new();
    kubelet_api::register(&ns, &name, &dir);
    let outcome = start(&client, &pod, &dir, &mut deletion, &started, &mut reported).await;
    if let Some((ip, running)) = outcome {
        let refresh = super::refresh::spawn(client.clone(), pod.clone(), dir.clone());
        let finished = wait(running, &mut deletion).await;
        refresh.abort();
        let containers: Vec<Container> = finished.into_iter().collect();
        report(&pods, &pod, Some(&ip.to_string()), &containers, &started).await;
    }
    // A terminated (or never started) pod waits for someone to delete it; then the
    // kubelet's part of deletion is done and it removes the object for good.
    let _ = deletion.wait_for(|d| d.is_some()).await;
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = pods.delete(&name, &params).await;
    kubelet_api::forget(&ns, &name);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A started container: its spec name, image, process and files.
struct Running {
    namespace: String,
    pod: String,
    spec: ContainerSpec,
    child: Child,
    started: String,
    termination_log: PathBuf,
    log: PathBuf,
}

/// Prepares and starts the containers; `None` when the pod was deleted before they could
/// start (its status then still says why they are waiting).
async fn start(
    client: &Client,
    pod: &Pod,
    dir: &Path,
    deletion: &mut Deletion,
    started: &str,
    reported: &mut Vec<Container>,
) -> Option<(std::net::Ipv4Addr, Vec<Running>)> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(dir) {
        let failed = waiting_all(
            &spec.containers,
            "CreateContainerConfigError",
            &e.to_string(),
        );
        report(&pods, pod, None, &failed, started).await;
        return None;
    }
    // Volumes first: until they are ready the pod is ContainerCreating, and retried.
    let prepared = loop {
        if deletion.borrow().is_some() {
            return None;
        }
        match volumes::prepare(client, pod, dir).await {
            Ok(prepared) => break prepared,
            Err(reason) => {
                let waiting = waiting_all(&spec.containers, "ContainerCreating", &reason);
                if !same_states(reported, &waiting) {
                    report(&pods, pod, None, &waiting, started).await;
                    *reported = waiting;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), deletion.changed()).await;
            }
        }
    };
    let ip = addresses::pods_under(dir).allocate();
    let mut backoff = pull_backoff::Backoff::default();
    let launches = loop {
        let mut launches = Vec::new();
        let mut blocked = Vec::new();
        for c in &spec.containers {
            let pulled = images::pull(client, pod, c.image.as_deref().unwrap_or_default()).await;
            match pulled.and_then(|image| launch(pod, c, image, &prepared, dir, &ip.to_string())) {
                Ok(l) => launches.push((c.clone(), l)),
                Err((reason, message)) => blocked.push(Container {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: ContainerState::Waiting { reason, message },
                }),
            }
        }
        if blocked.is_empty() {
            break launches;
        }
        // Like the kubelet: the pod stays Pending with the reason until it is deleted; a
        // failed pull is retried with a growing back-off (a pull secret may be fixed).
        report(&pods, pod, Some(&ip.to_string()), &blocked, started).await;
        // Not a pull failure (a configuration error): not retried.
        let backing_off = pull_backoff::backing_off(&blocked)?;
        if !pull_backoff::pause(deletion, pull_backoff::NEXT_SYNC).await {
            return None;
        }
        report(&pods, pod, Some(&ip.to_string()), &backing_off, started).await;
        if !pull_backoff::pause(deletion, backoff.next()).await {
            return None;
        }
    };
    let mut running = Vec::new();
    for (spec, launch) in launches {
        let log = dir.join(format!("{}.log", spec.name));
        let mut cmd = sandbox::command(&launch);
        let out = File::create(&log).ok()?;
        cmd.stdout(out.try_clone().ok()?).stderr(out);
        let child = match process::spawn(cmd) {
            Ok(child) => child,
            Err(e) => {
                let failed = waiting_all(&[spec], "RunContainerError", &e.to_string());
                report(&pods, pod, Some(&ip.to_string()), &failed, started).await;
                return None;
            }
        };
        super::exec::register(
            &ns,
            &pod.metadata.name.clone().unwrap_or_default(),
            &spec.name,
            child.id(),
        );
        running.push(Running {
            namespace: ns.clone(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            spec,
            child,
            started: status::now(),
            termination_log: launch.termination_log.0.clone(),
            log,
        });
    }
    let states: Vec<Container> = running
        .iter()
        .map(|r| Container {
            name: r.spec.name.clone(),
            image: r.spec.image.clone().unwrap_or_default(),
            state: ContainerState::Running {
                started: r.started.clone(),
            },
        })
        .collect();
    report(&pods, pod, Some(&ip.to_string()), &states, started).await;
    Some((ip, running))
}

/// Waits for every container to exit; on deletion sends SIGTERM to each container's main
/// process, waits out the grace period, then SIGKILLs what is left.
async fn wait(running: Vec<Running>, deletion: &mut Deletion) -> Vec<Container> {
    let pids: Vec<u32> = running.iter().map(|r| r.child.id()).collect();
    let waits = running.into_iter().map(|mut r| {
        tokio::task::spawn_blocking(move || {
            let status = r.child.wait();
            (r, status)
        })
    });
    let all = futures::future::join_all(waits);
    tokio::pin!(all);
    let requested = async {
        let _ = deletion.wait_for(|d| d.is_some()).await;
        let grace = deletion.borrow().unwrap_or(0);
        grace.max(0) as u64
    };
    let exited = tokio::select! {
        done = &mut all => done,
        grace = requested => {
            for &pid in &pids {
                signal_main_process(pid, Signal::SIGTERM);
            }
            match tokio::time::timeout(Duration::from_secs(grace), &mut all).await {
                Ok(done) => done,
                Err(_) => {
                    for &pid in &pids {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    all.await
                }
            }
        }
    };
    exited
        .into_iter()
        .filter_map(Result::ok)
        .map(|(r, status)| {
            super::exec::forget(&r.namespace, &r.pod, &r.spec.name);
            // bwrap exits with the container's code, or 128 + signal, like a runtime.
            let exit_code = status.ok().and_then(|s| s.code()).unwrap_or(137);
            let message = termination_message(&r, exit_code);
            Container {
                name: r.spec.name.clone(),
                image: r.spec.image.clone().unwrap_or_default(),
                state: ContainerState::Terminated {
                    started: r.started,
                    finished: status::now(),
                    exit_code,
                    message,
                },
            }
        })
        .collect()
}

/// SIGTERM goes to the container's PID 1 (bwrap's child), not to bwrap, which would die
/// without passing it on.
fn signal_main_process(bwrap: u32, signal: Signal) {
    let children =
        std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children")).unwrap_or_default();
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }
}

/// The termination message: the file the container wrote, at most 4096 bytes; with
/// `FallbackToLogsOnError` and a failure, the log's tail when the file is empty.
fn termination_message(r: &Running, exit_code: i32) -> String {
    let mut message = read_prefix(&r.termination_log, MAX_MESSAGE);
    let fallback = r.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if message.is_empty() && fallback && exit_code != 0 {
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(FALLBACK_LINES)..].join("\n");
        let start = tail.len().saturating_sub(FALLBACK_BYTES);
        let start = (start..=tail.len())
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(tail.len());
        message = tail[start..].to_string();
    }
    message
}

fn read_prefix(path: &Path, max: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(file) = File::open(path) {
        let _ = file.take(max as u64).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Resolves one container: image, command, environment, mounts and identity.
/// `Err((reason, message))` in the kubelet's words.
fn launch(
    pod: &Pod,
    c: &ContainerSpec,
    image: images::Image,
    volumes: &std::collections::HashMap<String, volumes::Prepared>,
    dir: &Path,
    pod_ip: &str,
) -> Result<Launch, (String, String)> {
    let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| config_err("no spec".into()))?;
    let identity =
        sandbox::identity(spec.security_context.as_ref(), c, &image).map_err(config_err)?;
    let mut argv = c
        .command
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    // As a runtime does: `args` replace the image's CMD, and a `command` drops it.
    match (&c.command, &c.args) {
        (_, Some(args)) => argv.extend(args.clone()),
        (None, None) => argv.extend(image.cmd.clone()),
        (Some(_), None) => {}
    }
    // The node's own cluster's `kubernetes` Service (two sites' differ).
    let cluster_ip = addresses::site_under(dir).plan().kubernetes_ip();
    let mut env = super::env::resolve(pod, c, pod_ip, cluster_ip).map_err(config_err)?;
    // The image's ENV sits between the runtime's defaults and the container's `env`.
    let own: Vec<&str> = c.env.iter().flatten().map(|v| v.name.as_str()).collect();
    for (k, v) in image.env.iter().filter(|(k, _)| !own.contains(&k.as_str())) {
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v.clone()));
    }
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&m.name)
            .ok_or_else(|| config_err(format!("volume {:?} not found", m.name)))?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => v.host.join(sub),
            None => v.host.clone(),
        };
        mounts.push(Mount {
            host,
            path: m.mount_path.clone(),
            read_only: v.read_only || m.read_only == Some(true),
        });
    }
    let termination_log = dir.join(format!("{}.termination-log", c.name));
    File::create(&termination_log).map_err(|e| config_err(e.to_string()))?;
    // The container writes it as its own user, as with the kubelet's bind-mounted file.
    std::os::unix::fs::chown(&termination_log, Some(identity.uid), Some(identity.gid))
        .map_err(|e| config_err(e.to_string()))?;
    let path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let working_dir = c.working_dir.clone().or_else(|| image.working_dir.clone());
    Ok(Launch {
        hostname: pod.metadata.name.clone().unwrap_or_default(),
        image,
        argv,
        env,
        working_dir,
        mounts,
        termination_log: (termination_log, path),
        identity,
    })
}

fn waiting_all(containers: &[ContainerSpec], reason: &str, message: &str) -> Vec<Container> {
    containers
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: ContainerState::Waiting {
                reason: reason.into(),
                message: message.into(),
            },
        })
        .collect()
}

fn same_states(a: &[Container], b: &[Container]) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

async fn report(
    pods: &Api<Pod>,
    pod: &Pod,
    ip: Option<&str>,
    containers: &[Container],
    started: &str,
) {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let body = status::patch(pod, ip, containers, started);
    // Retried: a lost status write would leave the Job controller waiting forever.
    for _ in 0..50 {
        match pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
