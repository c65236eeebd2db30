//! The artifact (docs/policy-bundle-artifact.md): an OCI image manifest whose layers are
//! the bundle's files. Built from a bundle directory for `push`; checked, descriptor by
//! descriptor and then file by file, before anything pulled is used. Pure: no I/O but
//! reading the directory being packed.

use std::{collections::BTreeMap, path::Path};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::{Deserialize, Serialize};

use super::{MAX_PULLED_COMPONENT_BYTES, MAX_TEXT_LAYER_BYTES, OciError};
use crate::policy::plugin::{BundleFile, POLICY_FILE, sha256_hex};

/// The manifest's `mediaType`.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The manifest's `artifactType`: what tells a policy bundle apart.
pub const ARTIFACT_TYPE: &str = "application/vnd.ferrosync.policy.bundle.v1";
/// OCI 1.1's empty descriptor, the config of an artifact that needs none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// `policy.toml`.
pub const POLICY_MEDIA_TYPE: &str = "application/vnd.ferrosync.policy.config.v1+toml";
/// The component (the registered type, as Wasm artifact layouts use it).
pub const COMPONENT_MEDIA_TYPE: &str = "application/wasm";
/// The golden test table.
pub const TESTS_MEDIA_TYPE: &str = "application/vnd.ferrosync.policy.tests.v1+json";
/// The component's cosign blob signature (`<component>.sig`).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.ferrosync.policy.signature.v1+base64";

const TITLE: &str = "org.opencontainers.image.title";
const DECISION: &str = "io.ferrosync.policy.decision";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const SOURCE: &str = "org.opencontainers.image.source";

/// An OCI descriptor (the fields a bundle uses; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest, as far as a bundle needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Policy,
    Component,
    Tests,
    Signature,
}

impl Kind {
    fn of(media_type: &str) -> Option<Kind> {
        Some(match media_type {
            POLICY_MEDIA_TYPE => Kind::Policy,
            COMPONENT_MEDIA_TYPE => Kind::Component,
            TESTS_MEDIA_TYPE => Kind::Tests,
            SIGNATURE_MEDIA_TYPE => Kind::Signature,
            _ => return None,
        })
    }

    fn media_type(self) -> &'static str {
        match self {
            Kind::Policy => POLICY_MEDIA_TYPE,
            Kind::Component => COMPONENT_MEDIA_TYPE,
            Kind::Tests => TESTS_MEDIA_TYPE,
            Kind::Signature => SIGNATURE_MEDIA_TYPE,
        }
    }

    fn max_bytes(self) -> u64 {
        match self {
            Kind::Component => MAX_PULLED_COMPONENT_BYTES,
            _ => MAX_TEXT_LAYER_BYTES,
        }
    }
}

/// A layer to fetch, as its descriptor announced it (checked before any download).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub kind: Kind,
    pub title: String,
    pub descriptor: Descriptor,
}

/// A bundle directory packed for a push: the layers with their bytes, and the manifest.
pub struct Packed {
    pub layers: Vec<(Descriptor, Vec<u8>)>,
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Packs the bundle in `dir` (its `policy.toml`, the component, the tests table and the
/// component's signature when present). Refuses a bundle whose component does not match
/// its own pin: it could never be loaded. `annotations` are added to the manifest's.
pub fn pack(dir: &Path, annotations: &BTreeMap<String, String>) -> Result<Packed, OciError> {
    let bad = |message: String| OciError::Bundle {
        dir: dir.into(),
        message,
    };
    let bundle = BundleFile::read(dir).map_err(|e| bad(e.to_string()))?;
    let name_in_dir = |path: &Path, what: &str| -> Result<String, OciError> {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let name = rel.to_string_lossy().into_owned();
        plain_name(&name).then_some(name).ok_or_else(|| {
            bad(format!(
                "{what} {rel:?} must be a file directly in the bundle"
            ))
        })
    };
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| bad(format!("{name}: {e}")));
    let component = name_in_dir(&bundle.plugin.wasm, "the component")?;
    let mut files = vec![(Kind::Policy, POLICY_FILE.to_owned(), read(POLICY_FILE)?)];
    let wasm = read(&component)?;
    let actual = sha256_hex(&wasm);
    if actual != bundle.plugin.sha256.trim().to_ascii_lowercase() {
        return Err(bad(format!(
            "{component} has sha256 {actual}, but policy.toml pins {}; rebuild or re-pin it",
            bundle.plugin.sha256
        )));
    }
    files.push((Kind::Component, component.clone(), wasm));
    if bundle.tests.is_file() {
        let tests = name_in_dir(&bundle.tests, "the tests table")?;
        let bytes = read(&tests)?;
        files.push((Kind::Tests, tests, bytes));
    }
    let signature = format!("{component}.sig");
    if dir.join(&signature).is_file() {
        let bytes = read(&signature)?;
        files.push((Kind::Signature, signature, bytes));
    }
    for (kind, name, bytes) in &files {
        if bytes.len() as u64 > kind.max_bytes() {
            return Err(bad(format!(
                "{name} is {} bytes; at most {} fit",
                bytes.len(),
                kind.max_bytes()
            )));
        }
    }
    let layers: Vec<(Descriptor, Vec<u8>)> = files
        .into_iter()
        .map(|(kind, title, bytes)| {
            let descriptor = Descriptor {
                media_type: kind.media_type().into(),
                digest: digest_of(&bytes),
                size: bytes.len() as u64,
                annotations: BTreeMap::from([(TITLE.into(), title)]),
            };
            (descriptor, bytes)
        })
        .collect();
    let mut manifest_annotations = BTreeMap::from([
        (TITLE.to_owned(), bundle.plugin.name.clone()),
        (DECISION.to_owned(), bundle.decision.as_str().to_owned()),
    ]);
    manifest_annotations.extend(annotations.clone());
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: empty_config(),
        layers: layers.iter().map(|(d, _)| d.clone()).collect(),
        annotations: manifest_annotations,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
    Ok(Packed {
        layers,
        digest: digest_of(&manifest),
        manifest,
    })
}

fn empty_config() -> Descriptor {
    Descriptor {
        media_type: EMPTY_MEDIA_TYPE.into(),
        digest: EMPTY_CONFIG_DIGEST.into(),
        size: EMPTY_CONFIG.len() as u64,
        annotations: BTreeMap::new(),
    }
}

/// A file name with no directory part: what a layer's title may be.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with("..")
}

/// Checks a pulled manifest (whose bytes already hashed to the digest asked for) and
/// lists the layers to fetch: checks 2 and 3 of the definition, before any download.
pub fn plan(reference: &str, manifest: &[u8]) -> Result<Vec<Planned>, OciError> {
    let refuse = |message: String| OciError::NotABundle {
        reference: reference.into(),
        message,
    };
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| refuse(format!("manifest: {e}")))?;
    if manifest.schema_version != 2 || manifest.media_type.as_deref() != Some(MANIFEST_MEDIA_TYPE) {
        return Err(refuse(format!(
            "the manifest is {:?} (schema {}), not an OCI image manifest",
            manifest.media_type, manifest.schema_version
        )));
    }
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(refuse(format!(
            "artifactType is {:?}, not {ARTIFACT_TYPE}",
            manifest.artifact_type
        )));
    }
    if manifest.config != empty_config() {
        return Err(refuse("the config is not the empty descriptor".into()));
    }
    let mut planned: Vec<Planned> = Vec::new();
    for layer in manifest.layers {
        let kind = Kind::of(&layer.media_type)
            .ok_or_else(|| refuse(format!("unknown layer media type {:?}", layer.media_type)))?;
        let title = layer.annotations.get(TITLE).cloned().unwrap_or_default();
        if !plain_name(&title) {
            return Err(refuse(format!(
                "layer {} has the title {title:?}, not a plain file name",
                layer.digest
            )));
        }
        super::reference::check_digest(&layer.digest).map_err(&refuse)?;
        if layer.size > kind.max_bytes() {
            return Err(refuse(format!(
                "layer {title} announces {} bytes; at most {} are accepted",
                layer.size,
                kind.max_bytes()
            )));
        }
        if planned.iter().any(|p| p.kind == kind || p.title == title) {
            return Err(refuse(format!(
                "two layers of type {} or titled {title}",
                layer.media_type
            )));
        }
        planned.push(Planned {
            kind,
            title,
            descriptor: layer,
        });
    }
    for required in [Kind::Policy, Kind::Component] {
        if !planned.iter().any(|p| p.kind == required) {
            return Err(refuse(format!("no {} layer", required.media_type())));
        }
    }
    Ok(planned)
}

/// Checks the downloaded files against each other (check 5): `policy.toml` parses, names
/// the layers' titles, and pins the component layer's digest.
pub fn check_files(reference: &str, files: &[(Planned, Vec<u8>)]) -> Result<(), OciError> {
    let refuse = |message: String| OciError::NotABundle {
        reference: reference.into(),
        message,
    };
    let of = |kind: Kind| files.iter().find(|(p, _)| p.kind == kind);
    let (policy, text) = of(Kind::Policy).ok_or_else(|| refuse("no policy.toml".into()))?;
    if policy.title != POLICY_FILE {
        return Err(refuse(format!(
            "the policy layer is titled {:?}, not {POLICY_FILE}",
            policy.title
        )));
    }
    let text = std::str::from_utf8(text).map_err(|e| refuse(format!("{POLICY_FILE}: {e}")))?;
    let bundle: BundleFile = Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| refuse(format!("{POLICY_FILE}: {e}")))?;
    let (component, _) = of(Kind::Component).ok_or_else(|| refuse("no component".into()))?;
    if Path::new(&component.title) != bundle.plugin.wasm {
        return Err(refuse(format!(
            "{POLICY_FILE} names the component {:?}, but the component layer is titled {:?}",
            bundle.plugin.wasm, component.title
        )));
    }
    let pinned = format!(
        "sha256:{}",
        bundle.plugin.sha256.trim().to_ascii_lowercase()
    );
    if component.descriptor.digest != pinned {
        return Err(refuse(format!(
            "the component layer is {}, but {POLICY_FILE} pins {pinned}",
            component.descriptor.digest
        )));
    }
    if let Some((tests, _)) = of(Kind::Tests)
        && Path::new(&tests.title) != bundle.tests
    {
        return Err(refuse(format!(
            "{POLICY_FILE} names the tests {:?}, but the tests layer is titled {:?}",
            bundle.tests, tests.title
        )));
    }
    if let Some((sig, _)) = of(Kind::Signature)
        && sig.title != format!("{}.sig", component.title)
    {
        return Err(refuse(format!(
            "the signature layer is titled {:?}, not {}.sig",
            sig.title, component.title
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(dir: &Path, component: &[u8], signed: bool) {
        std::fs::write(dir.join("p.wasm"), component).unwrap();
        std::fs::write(
            dir.join(POLICY_FILE),
            format!(
                "decision = \"copy-method\"\n[plugin]\nname = \"p\"\nwasm = \"p.wasm\"\nsha256 = \"{}\"\n",
                sha256_hex(component)
            ),
        )
        .unwrap();
        std::fs::write(dir.join("tests.json"), b"[]").unwrap();
        if signed {
            std::fs::write(dir.join("p.wasm.sig"), b"c2ln").unwrap();
        }
    }

    fn unpack(packed: &Packed) -> Vec<(Planned, Vec<u8>)> {
        let planned = plan("r", &packed.manifest).unwrap();
        planned
            .into_iter()
            .zip(packed.layers.iter().map(|(_, b)| b.clone()))
            .collect()
    }

    #[test]
    fn a_packed_bundle_plans_and_checks_and_its_digest_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        bundle(dir.path(), b"\0asm component", true);
        let extra = BTreeMap::from([(VERSION.to_owned(), "1".to_owned())]);
        let packed = pack(dir.path(), &extra).unwrap();
        assert_eq!(packed.digest, digest_of(&packed.manifest));
        assert_eq!(pack(dir.path(), &extra).unwrap().digest, packed.digest);
        let files = unpack(&packed);
        let kinds: Vec<Kind> = files.iter().map(|(p, _)| p.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Policy, Kind::Component, Kind::Tests, Kind::Signature]
        );
        assert_eq!(
            files[1].0.descriptor.digest,
            format!("sha256:{}", sha256_hex(b"\0asm component"))
        );
        check_files("r", &files).unwrap();
        let manifest: Manifest = serde_json::from_slice(&packed.manifest).unwrap();
        assert_eq!(manifest.annotations[DECISION], "copy-method");
        assert_eq!(manifest.annotations[VERSION], "1");
        assert_eq!(manifest.config.digest, digest_of(EMPTY_CONFIG));
    }

    #[test]
    fn a_component_off_its_pin_is_not_pushed() {
        let dir = tempfile::tempdir().unwrap();
        bundle(dir.path(), b"one", false);
        std::fs::write(dir.path().join("p.wasm"), b"two").unwrap();
        let err = pack(dir.path(), &BTreeMap::new()).err().unwrap();
        assert!(err.to_string().contains("rebuild or re-pin"), "{err}");
    }

    fn edited(packed: &Packed, edit: impl Fn(&mut Manifest)) -> Vec<u8> {
        let mut m: Manifest = serde_json::from_slice(&packed.manifest).unwrap();
        edit(&mut m);
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn manifests_that_are_not_bundles_are_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        bundle(dir.path(), b"c", false);
        let packed = pack(dir.path(), &BTreeMap::new()).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "artifactType",
                edited(&packed, |m| m.artifact_type = Some("application/x".into())),
            ),
            (
                "not an OCI image manifest",
                edited(&packed, |m| m.media_type = None),
            ),
            ("empty descriptor", edited(&packed, |m| m.config.size = 3)),
            (
                "unknown layer media type",
                edited(&packed, |m| m.layers[2].media_type = "text/plain".into()),
            ),
            (
                "two layers",
                edited(&packed, |m| {
                    let l = m.layers[1].clone();
                    m.layers.push(l)
                }),
            ),
            (
                "plain file name",
                edited(&packed, |m| {
                    m.layers[1].annotations.insert(TITLE.into(), "../x".into());
                }),
            ),
            (
                "at most",
                edited(&packed, |m| m.layers[0].size = MAX_TEXT_LAYER_BYTES + 1),
            ),
            (
                "no application/wasm layer",
                edited(&packed, |m| {
                    m.layers.remove(1);
                }),
            ),
            ("manifest:", b"{not json".to_vec()),
        ];
        for (expect, bytes) in cases {
            let err = plan("r", &bytes).expect_err(expect).to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }

    #[test]
    fn files_that_disagree_with_policy_toml_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        bundle(dir.path(), b"c", true);
        let packed = pack(dir.path(), &BTreeMap::new()).unwrap();
        let mut files = unpack(&packed);
        files[1].0.title = "other.wasm".into();
        let err = check_files("r", &files).unwrap_err().to_string();
        assert!(err.contains("names the component"), "{err}");
        let mut files = unpack(&packed);
        files[1].0.descriptor.digest = format!("sha256:{}", "0".repeat(64));
        let err = check_files("r", &files).unwrap_err().to_string();
        assert!(err.contains("pins"), "{err}");
        let mut files = unpack(&packed);
        files[3].0.title = "x.sig".into();
        assert!(check_files("r", &files).is_err());
    }
}
