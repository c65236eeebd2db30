//! The test control plane: etcd and kube-apiserver, optionally kube-controller-manager and
//! kube-scheduler, started once per test binary and site on free loopback ports.
//!
//! A binary may hold two independent control planes, `east` and `west` ([`Site`]): each
//! has its own etcd, apiserver, controllers, PKI and Service CIDR (from the site's
//! address plan), and [`ControlPlane::stop`] / [`ControlPlane::restart`] take one down and
//! bring it back with its data, as a lost site does.
//!
//! Tests share only paths (the kubeconfig, the PKI); each builds its own `kube::Client`
//! inside its own runtime and works in its own namespace. Nothing here ever talks to
//! anything but 127.0.0.1 (the Go module proxy aside, for the first download).

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use super::{
    bins,
    components::{self, Audit, Ports},
    crds, kubeconfig,
    pki::Pki,
    process,
    sim::addresses::Site,
    wait,
};

/// An audit policy that records who did what (verb, resource, user) without bodies: what
/// a least-privilege check needs.
pub const AUDIT_POLICY_METADATA: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

/// How to start a control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Install our CRDs and the VolumeSnapshot CRDs before handing the cluster out.
    pub install_crds: bool,
    /// Also run kube-controller-manager (with [`components::CONTROLLERS`]) and
    /// kube-scheduler: the end-to-end tier.
    pub controllers: bool,
    /// An audit Policy (YAML). When set, the apiserver writes JSON audit events to
    /// [`ControlPlane::audit_log`].
    pub audit_policy: Option<String>,
    /// Extra kube-apiserver flags (e.g. kubelet client certificates for the node simulator).
    pub apiserver_args: Vec<String>,
    /// Extra kube-controller-manager flags (e.g. shorter node-monitor periods).
    pub controller_manager_args: Vec<String>,
    /// Which site it is: its Service CIDR and, with simulators, its other address ranges.
    pub site: Site,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            install_crds: true,
            controllers: false,
            audit_policy: None,
            apiserver_args: Vec::new(),
            controller_manager_args: Vec::new(),
            site: Site::East,
        }
    }
}

impl Options {
    /// The end-to-end tier: controllers, scheduler, and a metadata audit log.
    pub fn end_to_end() -> Self {
        Options {
            controllers: true,
            audit_policy: Some(AUDIT_POLICY_METADATA.into()),
            ..Options::default()
        }
    }

    /// A bare apiserver whose requests still count for the least-privilege check: tests that
    /// run a controller against a second cluster without kube-controller-manager.
    pub fn audited() -> Self {
        Options {
            audit_policy: Some(AUDIT_POLICY_METADATA.into()),
            ..Options::default()
        }
    }

    /// The same options for another site.
    pub fn at(self, site: Site) -> Self {
        Options { site, ..self }
    }
}

/// A running control plane. Dropping it stops its processes and removes its directory;
/// the shared one is never dropped and is cleaned up when the test binary exits.
pub struct ControlPlane {
    /// The options it was started with.
    pub options: Options,
    /// Its directory on tmpfs: PKI, etcd data, logs, kubeconfigs.
    pub dir: PathBuf,
    /// The apiserver's URL.
    pub server: String,
    /// An admin (`system:masters`) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The CA, serving certificate and service-account key.
    pub pki: Pki,
    /// Where the control-plane binaries are.
    pub bin_dir: PathBuf,
    /// The apiserver's gitVersion, e.g. `v1.35.4`.
    pub version: String,
    /// How long starting took, CRDs included.
    pub started_in: Duration,
    /// The JSON-lines audit log, when [`Options::audit_policy`] is set.
    pub audit_log: Option<PathBuf>,
    children: Mutex<Vec<(&'static str, Child)>>,
    /// How each component was started, for [`ControlPlane::restart`].
    commands: Mutex<Vec<(&'static str, Vec<std::ffi::OsString>)>>,
}

/// The control plane shared by all tests of this binary, with default [`Options`].
pub fn control_plane() -> &'static ControlPlane {
    control_plane_with(Options::default())
}

/// The shared control plane of `options.site`, started with `options` by the first
/// caller. Every caller in one test binary must pass the same options for a site; the two
/// sites start in parallel when two threads ask at once.
pub fn control_plane_with(options: Options) -> &'static ControlPlane {
    type Slot = OnceLock<(Options, Result<ControlPlane, String>)>;
    static SHARED: Mutex<Option<HashMap<Site, &'static Slot>>> = Mutex::new(None);
    // One slot per site, leaked: shared control planes live as long as the binary.
    let slot: &'static Slot = SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(options.site)
        .or_insert_with(|| Box::leak(Box::default()));
    let (started_with, result) =
        slot.get_or_init(|| (options.clone(), ControlPlane::start(options.clone())));
    assert_eq!(
        started_with, &options,
        "one test binary, one set of control-plane options per site"
    );
    result
        .as_ref()
        .unwrap_or_else(|err| panic!("the test control plane did not start: {err}"))
}

impl ControlPlane {
    /// Starts a control plane of its own (most tests want [`control_plane`] instead).
    /// Blocks; safe to call from inside a tokio runtime.
    pub fn start(options: Options) -> Result<ControlPlane, String> {
        std::thread::scope(|s| s.spawn(|| Self::start_blocking(options)).join())
            .unwrap_or_else(|_| Err("control-plane start-up panicked".into()))
    }

    fn start_blocking(options: Options) -> Result<ControlPlane, String> {
        let started = Instant::now();
        let bin_dir = bins::bin_dir()?;
        let dir = tmpfs_dir()?;
        let pki = Pki::create_for(&dir.join("pki"), options.site.plan().kubernetes_ip())?;
        let admin = pki.client_cert("admin", "admin", &["system:masters"])?;
        let ports = Ports {
            etcd_client: process::free_port(),
            etcd_peer: process::free_port(),
            apiserver: process::free_port(),
        };
        let mut cp = ControlPlane {
            server: format!("https://127.0.0.1:{}", ports.apiserver),
            kubeconfig: dir.join("admin.kubeconfig"),
            // FERROSYNC_AUDIT_LOG collects the audit events of every end-to-end binary in one
            // file, for the least-privilege check that runs after them (scripts/test.sh).
            audit_log: options.audit_policy.as_ref().map(|_| {
                std::env::var_os("FERROSYNC_AUDIT_LOG")
                    .map_or_else(|| dir.join("audit.log"), PathBuf::from)
            }),
            version: String::new(),
            started_in: Duration::ZERO,
            bin_dir,
            pki,
            dir,
            options,
            children: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
        };
        // From here on, an early return drops `cp`, which stops what was started.
        kubeconfig::write(&cp.kubeconfig, &cp.server, &cp.pki.ca_cert, &admin)?;
        cp.launch(
            "etcd",
            components::etcd(&cp.bin_dir.join("etcd"), &cp.dir.join("etcd"), ports),
        )?;
        let policy = cp.dir.join("audit-policy.yaml");
        if let Some(text) = &cp.options.audit_policy {
            std::fs::write(&policy, text)
                .map_err(|e| format!("writing {}: {e}", policy.display()))?;
        }
        let audit = cp.audit_log.as_deref().map(|log| Audit {
            policy: &policy,
            log,
        });
        let mut apiserver = components::apiserver(
            &cp.bin_dir.join("kube-apiserver"),
            &cp.pki,
            ports,
            audit,
            &cp.options.apiserver_args,
        );
        // The site's Service CIDR; the last occurrence of a flag wins.
        apiserver.arg(cp.service_cidr_flag());
        cp.launch("kube-apiserver", apiserver)?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        cp.version = runtime.block_on(cp.initialise())?;
        cp.started_in = started.elapsed();
        // Straight to stderr: libtest captures only the print macros, and this line is
        // wanted in every run's output.
        let _ = writeln!(
            std::io::stderr(),
            "test control plane: kube-apiserver {} at {} ready in {:.1}s{} (kubeconfig {})",
            cp.version,
            cp.server,
            cp.started_in.as_secs_f64(),
            if cp.options.controllers {
                " with kube-controller-manager and kube-scheduler"
            } else {
                ""
            },
            cp.kubeconfig.display(),
        );
        Ok(cp)
    }

    /// Waits for the apiserver, installs CRDs, starts the controllers; returns the version.
    async fn initialise(&self) -> Result<String, String> {
        let client = kubeconfig::client(&self.kubeconfig).await?;
        wait::until(
            "kube-apiserver /readyz",
            Duration::from_secs(60),
            || async {
                self.check_children()?;
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("static request");
                Ok(client.request_text(request).await.ok().map(|_| ()))
            },
        )
        .await?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| format!("/version: {e}"))?
            .git_version;
        if self.options.install_crds {
            let mut files = bins::ferrosync_crd_files();
            files.extend(bins::snapshot_crd_files()?);
            crds::install(&client, &crds::load(&files)?).await?;
        }
        if self.options.controllers {
            self.start_controllers(&client).await?;
        }
        Ok(version)
    }

    /// Starts kube-controller-manager and kube-scheduler, and waits until both are healthy
    /// and the controller manager does its work (it creates `default` ServiceAccounts).
    async fn start_controllers(&self, client: &kube::Client) -> Result<(), String> {
        let (kcm_port, scheduler_port) = (process::free_port(), process::free_port());
        let mut kcm = components::controller_manager(
            &self.bin_dir.join("kube-controller-manager"),
            &self.kubeconfig,
            &self.pki,
            kcm_port,
            &self.options.controller_manager_args,
        );
        kcm.arg(self.service_cidr_flag());
        self.launch("kube-controller-manager", kcm)?;
        let scheduler = components::scheduler(
            &self.bin_dir.join("kube-scheduler"),
            &self.kubeconfig,
            &self.pki,
            scheduler_port,
        );
        self.launch("kube-scheduler", scheduler)?;
        for (name, port) in [
            ("kube-controller-manager", kcm_port),
            ("kube-scheduler", scheduler_port),
        ] {
            wait::until(
                &format!("{name} /healthz"),
                Duration::from_secs(60),
                || async move {
                    self.check_children()?;
                    Ok(healthz(port).then_some(()))
                },
            )
            .await?;
        }
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), "default");
        wait::eventually(
            "the serviceaccount controller to create default/default",
            Duration::from_secs(30),
            || accounts.get("default"),
        )
        .await?;
        Ok(())
    }

    fn service_cidr_flag(&self) -> String {
        format!(
            "--service-cluster-ip-range={}",
            self.options.site.plan().service_cidr
        )
    }

    /// Stops every component (the apiserver before etcd), keeping etcd's data: the site is
    /// lost, and clients get "connection refused". [`ControlPlane::restart`] brings it back.
    pub fn stop(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (_, child) in children.iter_mut().rev() {
            process::kill_group(child);
        }
        children.clear();
    }

    /// Starts the components [`ControlPlane::stop`] stopped, with the same command lines,
    /// ports and data: etcd and the apiserver first, then (once it is ready; they refuse
    /// to start without it) the controller manager and the scheduler.
    pub fn restart(&self) -> Result<(), String> {
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (storage, controllers): (Vec<_>, Vec<_>) = commands
            .into_iter()
            .partition(|(name, _)| matches!(*name, "etcd" | "kube-apiserver"));
        let from = k8s_openapi::jiff::Timestamp::now();
        for (name, argv) in storage {
            self.respawn(name, &argv)?;
        }
        self.wait_ready_blocking()?;
        record_restart(from);
        for (name, argv) in controllers {
            self.respawn(name, &argv)?;
        }
        Ok(())
    }

    fn respawn(&self, name: &'static str, argv: &[std::ffi::OsString]) -> Result<(), String> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        self.spawn_logged(name, cmd, true)
    }

    /// Waits (blocking, on a runtime of its own) until the apiserver answers /readyz.
    fn wait_ready_blocking(&self) -> Result<(), String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?;
                runtime.block_on(async {
                    let client = kubeconfig::client(&self.kubeconfig).await?;
                    wait::until(
                        "kube-apiserver /readyz after a restart",
                        Duration::from_secs(60),
                        || async {
                            self.check_children()?;
                            let request = http::Request::get("/readyz")
                                .body(Vec::new())
                                .expect("static request");
                            Ok(client.request_text(request).await.ok().map(|_| ()))
                        },
                    )
                    .await
                })
            })
            .join()
            .unwrap_or_else(|_| Err("waiting for the apiserver panicked".into()))
        })
    }

    /// Starts `cmd` as a child of this control plane, logging to `<dir>/<name>.log`.
    pub fn launch(&self, name: &'static str, cmd: Command) -> Result<(), String> {
        let argv: Vec<std::ffi::OsString> = std::iter::once(cmd.get_program().to_owned())
            .chain(cmd.get_args().map(ToOwned::to_owned))
            .collect();
        // Environment and working directory are not set by the harness's commands.
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, argv));
        self.spawn_logged(name, cmd, false)
    }

    fn spawn_logged(
        &self,
        name: &'static str,
        mut cmd: Command,
        append: bool,
    ) -> Result<(), String> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| format!("{e}"))?;
        cmd.stdout(log).stderr(err);
        let child = process::spawn(cmd).map_err(|e| format!("starting {name}: {e}"))?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, child));
        Ok(())
    }

    /// The process ids of the components (etcd, kube-apiserver, ...), each a group leader.
    pub fn pids(&self) -> Vec<u32> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.iter().map(|(_, child)| child.id()).collect()
    }

    /// Fails, with the end of its log, if a component has exited.
    pub fn check_children(&self) -> Result<(), String> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}); end of its log:\n{}",
                    self.log_tail(name, 40)
                ));
            }
        }
        Ok(())
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`, ...).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let children = self.children.get_mut().unwrap_or_else(|e| e.into_inner());
        // Reverse order: the apiserver goes before etcd, so it does not log a storm of
        // connection errors.
        for (_, child) in children.iter_mut().rev() {
            process::kill_group(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory on tmpfs (etcd's data must not touch a disk), removed at exit.
fn tmpfs_dir() -> Result<PathBuf, String> {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("ferrosync-cp-")
        .tempdir_in(&parent)
        .map_err(|e| format!("creating a directory in {}: {e}", parent.display()))?
        .keep();
    process::remove_on_exit(&dir);
    Ok(dir)
}

/// Whether https://127.0.0.1:`port`/healthz answers "ok". The component's certificate is
/// self-signed by the component, and the probe carries no secret, so it is not verified.
fn healthz(port: u16) -> bool {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(&format!("https://127.0.0.1:{port}/healthz"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .is_some_and(|body| body == "ok")
}

/// How long after /readyz a restarted apiserver's authoriser may still refuse: its RBAC
/// caches fill from the watch it starts with.
const AUTHORISER_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Notes a restart window beside the suite's audit log (`<log>.restarts`), so the
/// least-privilege check (`tests/rbac_audit.rs`) does not count the refusals of an
/// apiserver still filling its caches as missing rules.
fn record_restart(from: k8s_openapi::jiff::Timestamp) {
    let Ok(log) = std::env::var("FERROSYNC_AUDIT_LOG") else {
        return;
    };
    let until = k8s_openapi::jiff::Timestamp::now() + AUTHORISER_SETTLE;
    let line = serde_json::json!({"from": from.to_string(), "until": until.to_string()});
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{log}.restarts"));
    if let Ok(mut file) = file {
        use std::io::Write;
        let _ = writeln!(file, "{line}");
    }
}
