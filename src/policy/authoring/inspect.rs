//! `ferrosync policy inspect`: what a component is, read the way the host reads it.
//!
//! The world is not taken from metadata the author's toolchain wrote: the component is
//! compiled and type-checked against each decision point's world with the host's own
//! linker, so "implements copy-method" means the controller would load it for that point.
//! Imports and exports come from the compiled component's type. Nothing is run.

use std::path::{Path, PathBuf};

use serde::Serialize;
use wasmtime::{
    Engine,
    component::{Component, types::ComponentItem},
};

use crate::policy::{
    bindings::{copy_method::CopyMethodPre, psk::PskPre, service_type::ServiceTypePre},
    config::{Grants, Limits},
    plugin::{BundleFile, MAX_COMPONENT_BYTES, POLICY_FILE, sha256_hex},
    sandbox,
    types::DecisionPoint,
};

/// Why a component could not be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Bundle(#[from] crate::policy::LoadError),
    #[error("{path}: not a WebAssembly component: {message}")]
    NotAComponent { path: PathBuf, message: String },
}

/// One import or export, with the functions of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub name: String,
    /// `instance`, `func`, `type`, `resource`, `module` or `component`.
    pub kind: &'static str,
    /// An instance's functions (and other items), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// What the bundle around a component says about it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSide {
    pub dir: PathBuf,
    pub decision: DecisionPoint,
    pub plugin: String,
    /// The pin in `policy.toml`.
    pub pinned: String,
    /// Whether the component's digest is the pin (loading refuses it otherwise).
    pub pin_matches: bool,
    pub limits: Limits,
    /// What the bundle asks for beyond computing (the operator's ceiling must admit it).
    pub grants: Grants,
    /// Whether the component implements the bundle's decision point.
    pub world_matches: bool,
}

/// The inspection of one component.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub component: PathBuf,
    pub size: u64,
    pub max_size: u64,
    pub fits: bool,
    pub sha256: String,
    /// The ferrosync worlds the host's linker accepts it for (normally exactly one).
    pub worlds: Vec<String>,
    /// Why each world was refused, when none accepted it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<String>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleSide>,
}

/// The world name of a decision point, as in `plugins/wit/policy.wit`.
pub fn world_name(point: DecisionPoint) -> String {
    format!("ferrosync:policy/{point}@0.1.0")
}

fn item(engine: &Engine, name: &str, ty: &ComponentItem) -> Item {
    let (kind, items) = match ty {
        ComponentItem::ComponentInstance(inst) => (
            "instance",
            inst.exports(engine).map(|(n, _)| n.to_owned()).collect(),
        ),
        ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => ("func", Vec::new()),
        ComponentItem::Type(_) => ("type", Vec::new()),
        ComponentItem::Resource(_) => ("resource", Vec::new()),
        ComponentItem::Module(_) => ("module", Vec::new()),
        ComponentItem::Component(_) => ("component", Vec::new()),
    };
    Item {
        name: name.to_owned(),
        kind,
        items,
    }
}

/// Inspects a component file, or the component of the bundle directory `target`.
pub fn inspect(target: &Path) -> Result<Inspection, InspectError> {
    let bundle = if target.is_dir() || target.join(POLICY_FILE).is_file() {
        Some((target.to_owned(), BundleFile::read(target)?))
    } else {
        None
    };
    let path = bundle
        .as_ref()
        .map_or_else(|| target.to_owned(), |(_, b)| b.plugin.wasm.clone());
    let read_err = |message: String| InspectError::Read {
        path: path.clone(),
        message,
    };
    let bytes = std::fs::read(&path).map_err(|e| read_err(e.to_string()))?;
    let size = bytes.len() as u64;
    let sha256 = sha256_hex(&bytes);

    // As the host configures its engine for plugins (fuel and epochs change the code).
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true).epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|e| read_err(format!("{e:#}")))?;
    let component = Component::new(&engine, &bytes).map_err(|e| InspectError::NotAComponent {
        path: path.clone(),
        message: format!("{e:#}"),
    })?;
    let ty = component.component_type();
    let imports = ty
        .imports(&engine)
        .map(|(n, e)| item(&engine, n, &e.ty))
        .collect();
    let exports = ty
        .exports(&engine)
        .map(|(n, e)| item(&engine, n, &e.ty))
        .collect();

    let (mut worlds, mut refusals) = (Vec::new(), Vec::new());
    match sandbox::linker(&engine).and_then(|l| l.instantiate_pre(&component)) {
        Err(e) => refusals.push(format!("the host cannot satisfy its imports: {e:#}")),
        Ok(pre) => {
            for point in [
                DecisionPoint::CopyMethod,
                DecisionPoint::ServiceType,
                DecisionPoint::Psk,
            ] {
                let checked = match point {
                    DecisionPoint::CopyMethod => CopyMethodPre::new(pre.clone()).map(drop),
                    DecisionPoint::ServiceType => ServiceTypePre::new(pre.clone()).map(drop),
                    DecisionPoint::Psk => PskPre::new(pre.clone()).map(drop),
                };
                match checked {
                    Ok(()) => worlds.push(world_name(point)),
                    Err(e) => refusals.push(format!("{point}: {e:#}")),
                }
            }
        }
    }
    if !worlds.is_empty() {
        refusals.clear();
    }
    let bundle = bundle.map(|(dir, b)| BundleSide {
        dir,
        decision: b.decision,
        pin_matches: b.plugin.sha256.trim().eq_ignore_ascii_case(&sha256),
        pinned: b.plugin.sha256,
        plugin: b.plugin.name,
        limits: b.plugin.limits,
        grants: b.plugin.grants,
        world_matches: worlds.contains(&world_name(b.decision)),
    });
    Ok(Inspection {
        component: path,
        size,
        max_size: MAX_COMPONENT_BYTES,
        fits: size <= MAX_COMPONENT_BYTES,
        sha256,
        worlds,
        refusals,
        imports,
        exports,
        bundle,
    })
}

/// What a bundle asks for, in a line.
pub fn grants_summary(grants: &Grants) -> String {
    let mut parts = Vec::new();
    if grants.random {
        parts.push("secure randomness".to_owned());
    }
    if let Some(http) = &grants.http {
        let mut line = format!(
            "HTTP to {} ({} requests of at most {} KiB each, {} per request)",
            http.allow.join(", "),
            http.max_requests,
            http.max_response_kib,
            humantime::format_duration(http.timeout)
        );
        if let Some(c) = &http.credentials {
            line.push_str(&format!(
                ", with header {} from Secret {}{} key {}",
                c.header,
                c.namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                c.secret,
                c.key
            ));
        }
        parts.push(line);
    }
    if parts.is_empty() {
        "none (pure computation)".into()
    } else {
        parts.join("; ")
    }
}

/// The text report.
pub fn render(i: &Inspection) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    line("component", i.component.display().to_string());
    line(
        "size",
        format!(
            "{} bytes ({} the {}-byte limit of a ConfigMap)",
            i.size,
            if i.fits { "fits" } else { "EXCEEDS" },
            i.max_size
        ),
    );
    line("sha256", i.sha256.clone());
    if i.worlds.is_empty() {
        line(
            "world",
            "none of ferrosync's: the host would refuse it".into(),
        );
        for r in &i.refusals {
            line("", format!("- {r}"));
        }
    } else {
        line("world", i.worlds.join(", "));
    }
    for (label, items) in [("imports", &i.imports), ("exports", &i.exports)] {
        if items.is_empty() {
            line(label, "(none)".into());
        }
        for (n, it) in items.iter().enumerate() {
            let detail = if it.items.is_empty() {
                format!("{} ({})", it.name, it.kind)
            } else {
                format!("{} ({}: {})", it.name, it.kind, it.items.join(", "))
            };
            line(if n == 0 { label } else { "" }, detail);
        }
    }
    if let Some(b) = &i.bundle {
        line(
            "bundle",
            format!("{}: {} plugin {}", b.dir.display(), b.decision, b.plugin),
        );
        line(
            "pin",
            if b.pin_matches {
                "matches policy.toml".into()
            } else {
                format!(
                    "policy.toml pins {}, which is NOT this component (run `ferrosync policy pin`)",
                    b.pinned
                )
            },
        );
        if !b.world_matches {
            line(
                "",
                format!(
                    "the component does NOT implement the bundle's {} world",
                    b.decision
                ),
            );
        }
        line(
            "limits",
            format!(
                "fuel {}, time {}, memory {} MiB",
                b.limits.fuel,
                humantime::format_duration(b.limits.timeout),
                b.limits.memory_mib
            ),
        );
        line("grants", grants_summary(&b.grants));
    }
    out
}
