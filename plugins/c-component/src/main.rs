//! `c-component`: the two steps of building a C policy plugin that are not the C compiler's.
//!
//! ```text
//! c-component bindings <wit-dir> <world> <out-dir>   C header, source and type object
//! c-component new <core.wasm> <component.wasm>        the component, from the linked module
//! ```
//!
//! `bindings` is `wit-bindgen c`, `new` is `wasm-tools component new` without an adapter: a
//! plugin makes no WASI call, so its core module imports nothing the world does not name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wit_component::ComponentEncoder;
use wit_parser::Resolve;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bindings", wit, world, out] => bindings(Path::new(wit), world, Path::new(out)),
        ["new", core, component] => new_component(Path::new(core), Path::new(component)),
        _ => Err(anyhow::anyhow!(
            "usage: c-component bindings <wit-dir> <world> <out-dir>\n       \
             c-component new <core.wasm> <component.wasm>"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c-component: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the C bindings of `world` (a header, a source file and an object file that
/// carries the world's type into the linked module) to `out`.
fn bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT contract in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path: PathBuf = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The module's imports from WASI preview 1, which only the WASI adapter could satisfy.
fn wasi_imports(module: &[u8]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(section) = payload? {
            for import in section.into_imports() {
                let import = import?;
                if import.module == "wasi_snapshot_preview1" {
                    found.push(import.name.to_owned());
                }
            }
        }
    }
    Ok(found)
}

/// Makes a component of a core module linked with the bindings' type object.
fn new_component(core: &Path, component: &Path) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    if module.get(..4) != Some(b"\0asm") {
        bail!("{} is not a WebAssembly module", core.display());
    }
    let wasi = wasi_imports(&module)?;
    if !wasi.is_empty() {
        bail!(
            "{} calls WASI ({}): a plugin built without the WASI adapter may call only \
             the world's functions and libc's that need no system (malloc, string functions), \
             not printf, files or clocks",
            core.display(),
            wasi.join(", ")
        );
    }
    let bytes = ComponentEncoder::default()
        .module(&module)
        .context("the module carries no world type (link the bindings' object file)")?
        .validate(true)
        .encode()?;
    std::fs::write(component, bytes).with_context(|| format!("writing {}", component.display()))
}
