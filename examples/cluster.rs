//! The test control plane, standalone: for the demo and for developers poking at the API.
//! It is the same harness the tests use (`tests/support`), so what works here works there.
//!
//! ```text
//! cargo run --example cluster -- [--controllers] [--simulators] [--in-cluster] [--registry] [--site east|west] [--state-dir DIR] [--service-account NS/NAME]...
//! ```
//!
//! `--site` picks the address plan (Service, pod, load-balancer and node ranges), so two
//! of these processes are two independent clusters whose ranges never overlap
//! (`scripts/cluster.sh up --pair`). SIGUSR1 stops the control plane (etcd, apiserver,
//! controllers; the data stays), as a lost site; SIGUSR2 starts it again.
//!
//! `--simulators` (implies `--controllers`) also runs the simulated node, storage, load
//! balancer and routing of `tests/support/sim`, with the mover image mapped to the built
//! `ferrosync` binary: the demo's real replication runs on it. `--registry` (implies
//! `--simulators`) also starts the test registry with the images `scripts/build-images.sh`
//! built, and writes its address, login and image references to `<state-dir>/registry.env`:
//! movers of that image run in its own root filesystem.
//!
//! `--in-cluster` (implies `--simulators`) readies the cluster for the controller's own
//! Deployment (`kubectl apply --server-side -k deploy/overlays/test-cluster`): the
//! ServiceAccount admission plugin (token volumes) and the overlay's images on the node.
//!
//! It writes `<state-dir>/env` (KUBECONFIG, PATH with the built kubectl), one
//! `<ns>.<name>.kubeconfig` per `--service-account`, then `<state-dir>/ready`, and runs until
//! SIGINT or SIGTERM; then it stops everything and removes the control plane's files.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{path::PathBuf, process::ExitCode};

use support::{ControlPlane, Options};

struct Args {
    controllers: bool,
    simulators: bool,
    in_cluster: bool,
    registry: bool,
    state_dir: PathBuf,
    service_accounts: Vec<(String, String)>,
    site: support::sim::Site,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        controllers: false,
        simulators: false,
        in_cluster: false,
        registry: false,
        state_dir: support::bins::repo_root().join("target/ferrosync-cluster"),
        service_accounts: Vec::new(),
        site: support::sim::Site::East,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--controllers" => args.controllers = true,
            "--simulators" => {
                args.controllers = true;
                args.simulators = true;
            }
            "--site" => {
                let name = argv.next().ok_or("--site needs east or west")?;
                args.site = support::sim::Site::parse(&name)
                    .ok_or_else(|| format!("unknown site {name:?}: east or west"))?;
            }
            "--in-cluster" => {
                args.controllers = true;
                args.simulators = true;
                args.in_cluster = true;
            }
            "--registry" => {
                args.controllers = true;
                args.simulators = true;
                args.registry = true;
            }
            "--state-dir" => {
                args.state_dir = argv.next().ok_or("--state-dir needs a directory")?.into()
            }
            "--service-account" => {
                let value = argv
                    .next()
                    .ok_or("--service-account needs NAMESPACE/NAME")?;
                let (ns, name) = value
                    .split_once('/')
                    .ok_or("--service-account needs NAMESPACE/NAME")?;
                args.service_accounts
                    .push((ns.to_string(), name.to_string()));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn write_state(cp: &ControlPlane, args: &Args) -> Result<(), String> {
    let dir = &args.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    for (ns, name) in &args.service_accounts {
        let path = cp.service_account_kubeconfig(ns, name);
        std::fs::copy(&path, dir.join(format!("{ns}.{name}.kubeconfig")))
            .map_err(|e| format!("{e}"))?;
    }
    // Named after the site (cluster, user and context), so that two sites' files merge
    // into one kubeconfig with a context each.
    let site = cp.options.site.name();
    support::kubeconfig::merge_sites(&dir.join("kubeconfig"), &[(site, &cp.kubeconfig)])?;
    write(
        "env",
        format!(
            "export KUBECONFIG={}\nexport PATH={}:$PATH\n",
            dir.join("kubeconfig").display(),
            cp.bin_dir.display()
        ),
    )?;
    if args.registry {
        let registry = support::registry::shared();
        write(
            "registry.env",
            format!(
                "export DEMO_REGISTRY={}\nexport DEMO_REGISTRY_USERNAME={}\n\
                 export DEMO_REGISTRY_PASSWORD={}\nexport DEMO_CONTROLLER_IMAGE={}\n\
                 export DEMO_MOVER_IMAGE={}\n",
                registry.host,
                support::registry::USERNAME,
                registry.password,
                registry.controller_image,
                registry.mover_image,
            ),
        )?;
    }
    write("ready", format!("{}\n", cp.server))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("cluster: {err}");
            return ExitCode::from(2);
        }
    };
    let _ = std::fs::remove_file(args.state_dir.join("ready"));
    let mut options = Options {
        controllers: args.controllers,
        site: args.site,
        ..Options::default()
    };
    if args.in_cluster {
        options
            .apiserver_args
            .push(support::components::SERVICE_ACCOUNT_ADMISSION.into());
        support::incluster::register_images();
    }
    let cp = match ControlPlane::start(options) {
        Ok(cp) => cp,
        Err(err) => {
            eprintln!("cluster: the control plane did not start: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The simulators live as long as the process: they need the control plane for good.
    let cp: &'static ControlPlane = Box::leak(Box::new(cp));
    if args.simulators {
        let mover = support::bins::cargo_target_dir().join("debug/ferrosync");
        support::sim::node::images::register(
            "ghcr.io/ferrosync/ferrosync-mover:0.1.0",
            support::sim::node::images::Image::binary(mover, "/usr/local/bin/ferrosync"),
        );
        let sim = support::sim::Cluster::start(cp);
        println!("simulators running in {}", sim.dir.display());
    }
    if let Err(err) = write_state(cp, &args) {
        eprintln!("cluster: {err}");
        return ExitCode::FAILURE;
    }
    println!(
        "kubeconfig: {}",
        args.state_dir.join("kubeconfig").display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
        let mut lose = signal(SignalKind::user_defined1()).expect("SIGUSR1");
        let mut back = signal(SignalKind::user_defined2()).expect("SIGUSR2");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = lose.recv() => {
                    cp.stop();
                    let _ = std::fs::write(args.state_dir.join("stopped"), "");
                    println!("control plane stopped (SIGUSR1); SIGUSR2 starts it again");
                }
                _ = back.recv() => {
                    match cp.restart() {
                        Ok(()) => {
                            let _ = std::fs::remove_file(args.state_dir.join("stopped"));
                            println!("control plane started again (SIGUSR2)");
                        }
                        Err(err) => eprintln!("cluster: restarting the control plane: {err}"),
                    }
                }
            }
        }
    });
    let _ = std::fs::remove_file(args.state_dir.join("ready"));
    // Leaked for the simulators' sake; its processes and files go with this process (the
    // harness's exit cleanup), as in the tests.
    println!("control plane stopped");
    ExitCode::SUCCESS
}
