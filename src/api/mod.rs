//! The `volsync.backube/v1alpha1` API: ReplicationSource and ReplicationDestination, for
//! the rsyncTLS method, and the generation of their CustomResourceDefinitions.
//!
//! The schema carries no defaults for copyMethod, serviceType or port: the controller
//! applies them, so that "unset" stays distinguishable from "requested".
//!
//! Admission is exactly as wide as VolSync's CRDs (never narrower): the other movers'
//! sections are opaque and kept, open strings stay open ([`Spelling`]), and the checks
//! ferrosync would add are a ValidatingAdmissionPolicy in `deploy/admission/`, warning by
//! default. What ferrosync cannot serve, the controller reports.

mod common;
mod destination;
mod mover_volumes;
mod movers;
pub mod psk;
pub mod recovery_point;
mod source;
mod spelling;

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::*;
pub use destination::*;
pub use mover_volumes::*;
pub use movers::*;
pub use source::*;
pub use spelling::{Spelled, Spelling};

/// The API group of both kinds.
pub const GROUP: &str = "volsync.backube";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// Failures while writing CRDs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRD could not be rendered as YAML.
    #[error("rendering CRD YAML: {0}")]
    Render(#[from] serde_yaml_ng::Error),
    /// The output file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Arguments of `ferrosync crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing to standard output.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

/// Both CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ReplicationDestination::crd(), ReplicationSource::crd()]
}

/// The file name `ferrosync crd --output-dir` uses for a CRD.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"))
}

/// Renders one CRD as a YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, Error> {
    Ok(whole_bounds(&serde_yaml_ng::to_string(crd)?))
}

/// Writes whole-number bounds as integers (`maximum: 65535`, not `65535.0`): k8s-openapi
/// holds them as floats, while VolSync's CRDs, kustomize and the apiserver write integers,
/// so the chart (which installs the file verbatim) and kustomize would otherwise differ.
fn whole_bounds(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        let bound = ["minimum: ", "maximum: "]
            .iter()
            .find_map(|key| trimmed.strip_prefix(key))
            .and_then(|value| value.strip_suffix(".0"))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        match bound {
            Some(digits) => {
                out.push_str(&line[..line.len() - digits.len() - 2]);
                out.push_str(digits);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Implements `ferrosync crd`: prints both CRDs as a multi-document YAML stream, or writes
/// them to `--output-dir`.
pub fn write_crds(args: &CrdArgs) -> Result<(), Error> {
    for crd in crds() {
        let yaml = crd_yaml(&crd)?;
        match &args.output_dir {
            Some(dir) => {
                let path = dir.join(crd_file_name(&crd));
                std::fs::write(&path, yaml).map_err(|source| Error::Write { path, source })?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod parity;
#[cfg(test)]
mod tests;
