//! The test control plane, standalone: for the demo and for developers poking at the API.
//! It is the same harness the tests use (`tests/support`), so what works here works there.
//!
//! ```text
//! cargo run --example cluster -- [--controllers] [--simulators] [--in-cluster] [--registry] [--state-dir DIR] [--service-account NS/NAME]...
//! ```
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
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        controllers: false,
        simulators: false,
        in_cluster: false,
        registry: false,
        state_dir: support::bins::repo_root().join("target/ferrosync-cluster"),
        service_accounts: Vec::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--controllers" => args.controllers = true,
            "--simulators" => {
                args.controllers = true;
                args.simulators = true;
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
    write(
        "kubeconfig",
        std::fs::read_to_string(&cp.kubeconfig).map_err(|e| format!("{e}"))?,
    )?;
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
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    let _ = std::fs::remove_file(args.state_dir.join("ready"));
    // Leaked for the simulators' sake; its processes and files go with this process (the
    // harness's exit cleanup), as in the tests.
    println!("control plane stopped");
    ExitCode::SUCCESS
}
