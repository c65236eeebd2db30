//! `ferrosync policy pin`: puts a freshly built component into its bundle and writes its
//! digest into `policy.toml`, the step between `cargo build` and `policy test`.
//!
//! Only the `[plugin] sha256` value changes (comments and layout stay), and only after the
//! component was copied and read back: a failed pin leaves the bundle as it was, apart
//! from a component that then fails its old pin, loudly.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, value};

use crate::policy::plugin::{MAX_COMPONENT_BYTES, POLICY_FILE, sha256_hex};

/// Why a bundle was not pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {message}")]
    Bundle { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is {size} bytes; a component must fit a ConfigMap ({MAX_COMPONENT_BYTES} \
         bytes): build with the release profile, and drop dependencies it does not need"
    )]
    TooLarge { path: PathBuf, size: u64 },
}

/// What was pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The component inside the bundle.
    pub component: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// The pin before (as written).
    pub previous: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.into(),
        source,
    }
}

/// Pins the bundle in `dir` to its component, after copying `built` over it if given.
pub fn pin(dir: &Path, built: Option<&Path>) -> Result<Pinned, PinError> {
    let file = dir.join(POLICY_FILE);
    let bad = |message: String| PinError::Bundle {
        path: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| bad(format!("{e}")))?;
    let wasm = doc
        .get("plugin")
        .and_then(|p| p.get("wasm"))
        .and_then(|w| w.as_str())
        .ok_or_else(|| bad("no [plugin] wasm = \"...\"".into()))?;
    let component = dir.join(wasm);
    let previous = doc["plugin"]
        .get("sha256")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned();
    if let Some(built) = built {
        let size = std::fs::metadata(built).map_err(io(built))?.len();
        if size > MAX_COMPONENT_BYTES {
            return Err(PinError::TooLarge {
                path: built.into(),
                size,
            });
        }
        // The same file by another spelling must not be copied onto itself, which would
        // truncate it.
        let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
        if !same(built, &component) {
            std::fs::copy(built, &component).map_err(io(&component))?;
        }
    }
    // The digest of the bytes that sit in the bundle, read back after the copy.
    let bytes = std::fs::read(&component).map_err(io(&component))?;
    let size = bytes.len() as u64;
    if size > MAX_COMPONENT_BYTES {
        return Err(PinError::TooLarge {
            path: component,
            size,
        });
    }
    let sha256 = sha256_hex(&bytes);
    doc["plugin"]["sha256"] = value(&sha256);
    std::fs::write(&file, doc.to_string()).map_err(io(&file))?;
    Ok(Pinned {
        component,
        sha256,
        size,
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_follows_the_component_and_nothing_else_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = "# mine\ndecision = \"psk\"\n\n[plugin]\nname = \"p\"\nwasm = \"p.wasm\"\n\
                      # filled by pin\nsha256 = \"00\"\n\n[plugin.limits]\nfuel = 1_000 # low\n";
        std::fs::write(tmp.path().join(POLICY_FILE), policy).unwrap();
        let built = tmp.path().join("built.wasm");
        std::fs::write(&built, b"\0asm-not-really").unwrap();
        let pinned = pin(tmp.path(), Some(&built)).unwrap();
        assert_eq!(pinned.sha256, sha256_hex(b"\0asm-not-really"));
        assert_eq!(pinned.previous, "00");
        assert_eq!(
            std::fs::read(tmp.path().join("p.wasm")).unwrap(),
            b"\0asm-not-really"
        );
        let after = std::fs::read_to_string(tmp.path().join(POLICY_FILE)).unwrap();
        assert_eq!(
            after,
            policy.replace("\"00\"", &format!("{:?}", pinned.sha256))
        );
        // Without --wasm: the component already in the bundle.
        std::fs::write(tmp.path().join("p.wasm"), b"other").unwrap();
        assert_eq!(pin(tmp.path(), None).unwrap().sha256, sha256_hex(b"other"));
        // The bundle's own component, spelled differently, is kept intact.
        let spelled = tmp.path().join(".").join("p.wasm");
        assert_eq!(
            pin(tmp.path(), Some(&spelled)).unwrap().sha256,
            sha256_hex(b"other")
        );
    }

    #[test]
    fn too_large_or_missing_components_are_refused_and_the_pin_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = "[plugin]\nname = \"p\"\nwasm = \"p.wasm\"\nsha256 = \"00\"\n";
        std::fs::write(tmp.path().join(POLICY_FILE), policy).unwrap();
        let err = pin(tmp.path(), None).unwrap_err();
        assert!(matches!(err, PinError::Io { .. }), "{err}");
        let big = tmp.path().join("big.wasm");
        std::fs::write(&big, vec![0u8; MAX_COMPONENT_BYTES as usize + 1]).unwrap();
        let err = pin(tmp.path(), Some(&big)).unwrap_err();
        assert!(err.to_string().contains("fit a ConfigMap"), "{err}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(POLICY_FILE)).unwrap(),
            policy
        );
        assert!(!tmp.path().join("p.wasm").exists());
    }
}
