//! `ferrosync policy push <bundle-dir> <registry/repo:tag>` and
//! `ferrosync policy pull <reference> <dir>`: what a release pipeline and a person use.
//! Both print the pinned reference (`<registry>/<repo>@sha256:…`) that the controller's
//! configuration names. Exit codes: 0 done, 1 refused (by the registry or a check),
//! 2 unusable input.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use oci_client::{Reference, secrets::RegistryAuth};

use super::{
    OciConfig, OciError,
    artifact::{self, Planned},
    auth, reference, registry,
};

/// How to reach the registry.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// A Docker config.json (or a Secret's .dockerconfigjson) holding the registry's
    /// credentials. Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json when
    /// present; anonymous otherwise.
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// A PEM CA certificate to trust for the registry (repeatable).
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Speak plain HTTP to this registry, `host:port` (a registry on loopback only).
    #[arg(long = "plain-http", value_name = "HOST:PORT")]
    pub plain_http: Vec<String>,
}

/// `policy push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The bundle directory (policy.toml, the component, tests.json, <component>.sig).
    pub bundle: PathBuf,
    /// Where to push: `<registry>/<repository>:<tag>`.
    pub reference: String,
    /// The manifest's org.opencontainers.image.version annotation.
    #[arg(long)]
    pub version: Option<String>,
    /// The manifest's org.opencontainers.image.source annotation.
    #[arg(long)]
    pub source: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `policy pull`.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// `<registry>/<repository>@sha256:<digest>` (or a tag: the digest it resolves to is
    /// printed, to pin).
    pub reference: String,
    /// The directory to write the bundle's files to (created if missing).
    pub dir: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn push(args: PushArgs) -> ExitCode {
    report(run_push(&args).await)
}

pub async fn pull(args: PullArgs) -> ExitCode {
    report(run_pull(&args).await)
}

fn report(result: Result<String, OciError>) -> ExitCode {
    match result {
        Ok(pinned) => {
            println!("{pinned}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            match e {
                OciError::BadReference { .. } | OciError::Settings { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run_push(args: &PushArgs) -> Result<String, OciError> {
    let target = reference::parse_any(&args.reference)?;
    let mut annotations = BTreeMap::new();
    if let Some(v) = &args.version {
        annotations.insert(artifact::VERSION.to_owned(), v.clone());
    }
    if let Some(s) = &args.source {
        annotations.insert(artifact::SOURCE.to_owned(), s.clone());
    }
    let packed = artifact::pack(&args.bundle, &annotations)?;
    let (client, auth) = connect(&args.registry, &target)?;
    let digest = registry::push(&client, &target, &auth, &packed).await?;
    Ok(pinned(&target, &digest))
}

async fn run_pull(args: &PullArgs) -> Result<String, OciError> {
    let source = reference::parse_any(&args.reference)?;
    let (client, auth) = connect(&args.registry, &source)?;
    let (manifest, digest) = registry::manifest(&client, &source, &auth).await?;
    let text = pinned(&source, &digest);
    let planned = artifact::plan(&text, &manifest)?;
    let mut files: Vec<(Planned, Vec<u8>)> = Vec::new();
    for layer in planned {
        let bytes = registry::blob(&client, &source, &layer.descriptor).await?;
        files.push((layer, bytes));
    }
    artifact::check_files(&text, &files)?;
    write_files(&args.dir, &files)?;
    Ok(text)
}

fn write_files(dir: &Path, files: &[(Planned, Vec<u8>)]) -> Result<(), OciError> {
    let err = |e: std::io::Error| OciError::Bundle {
        dir: dir.into(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    for (layer, bytes) in files {
        std::fs::write(dir.join(&layer.title), bytes).map_err(err)?;
    }
    Ok(())
}

/// `<registry>/<repository>@<digest>`.
fn pinned(reference: &Reference, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    )
}

fn connect(
    args: &RegistryArgs,
    target: &Reference,
) -> Result<(oci_client::Client, RegistryAuth), OciError> {
    let settings = OciConfig {
        ca_files: args.ca_files.clone(),
        plain_http: args.plain_http.clone(),
        ..OciConfig::default()
    };
    let client = registry::client(&settings)?;
    let config = args
        .registry_config
        .clone()
        .or_else(auth::default_docker_config);
    let auth = match config {
        Some(path) => {
            let bytes = std::fs::read(&path).map_err(|e| OciError::PullSecret {
                secret: path.display().to_string(),
                message: e.to_string(),
            })?;
            auth::auth_for(
                &bytes,
                target.resolve_registry(),
                &path.display().to_string(),
            )?
        }
        None => RegistryAuth::Anonymous,
    };
    Ok((client, auth))
}
