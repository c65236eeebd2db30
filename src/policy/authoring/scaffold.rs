//! `ferrosync policy new`: a plugin crate and its bundle, in a directory of their own.
//!
//! The SDK crate is not published, so the scaffold carries it: every file is embedded
//! from `plugins/` at compile time (the WIT contract, the SDK, the workspace's lock file
//! and release profile, and the template of the decision point), and only names are
//! changed. What a scaffold builds is therefore what `scripts/build-plugins.sh` builds and
//! the plugin test tier checks; it cannot drift from the contract the binary speaks.
//!
//! Layout written:
//!
//! ```text
//! <dir>/Cargo.toml            workspace: the plugin and the SDK, the plugins' release profile
//! <dir>/Cargo.lock            the versions ferrosync's own plugins are built and tested with
//! <dir>/.cargo/config.toml    a 64 KiB stack, as the host expects
//! <dir>/README.md             the commands that build, pin and test it
//! <dir>/wit/policy.wit        the contract
//! <dir>/sdk/                  the `ferrosync-plugin` helper crate
//! <dir>/plugin/               the plugin crate (named after the directory, or --name)
//! <dir>/bundle/               policy.toml and tests.json; `policy pin` adds the component
//! ```

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, value};

use crate::policy::types::DecisionPoint;

const WIT: &str = include_str!("../../../plugins/wit/policy.wit");
const SDK_MANIFEST: &str = include_str!("../../../plugins/sdk/Cargo.toml");
const SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const WORKSPACE: &str = include_str!("../../../plugins/Cargo.toml");
const LOCK: &str = include_str!("../../../plugins/Cargo.lock");

/// The template of one decision point (`plugins/template/<point>/`).
struct Template {
    manifest: &'static str,
    lib: &'static str,
    policy: &'static str,
    tests: &'static str,
}

macro_rules! template {
    ($dir:literal) => {
        Template {
            manifest: include_str!(concat!("../../../plugins/template/", $dir, "/Cargo.toml")),
            lib: include_str!(concat!("../../../plugins/template/", $dir, "/src/lib.rs")),
            policy: include_str!(concat!("../../../plugins/template/", $dir, "/policy.toml")),
            tests: include_str!(concat!("../../../plugins/template/", $dir, "/tests.json")),
        }
    };
}

fn template(point: DecisionPoint) -> Template {
    match point {
        DecisionPoint::CopyMethod => template!("copy-method"),
        DecisionPoint::ServiceType => template!("service-type"),
        DecisionPoint::Psk => template!("psk"),
    }
}

/// The plugin crate's directory inside a scaffold.
pub const PLUGIN_DIR: &str = "plugin";
/// The bundle's directory inside a scaffold.
pub const BUNDLE_DIR: &str = "bundle";

const CARGO_CONFIG: &str = "\
# As ferrosync's own plugins are linked (scripts/build-plugins.sh): a 64 KiB stack keeps
# the pages a decision touches few, so the host resets them cheaply between decisions.
[target.wasm32-wasip2]
rustflags = [\"-C\", \"link-arg=-zstack-size=65536\"]
";

const README: &str = "\
# A ferrosync policy plugin

- `plugin/src/lib.rs`: the plugin; `bundle/tests.json`: its golden cases;
  `bundle/policy.toml`: its settings, limits and grants, and the pin.
- `sdk/` and `wit/` are ferrosync's helper crate and contract, as of the `ferrosync` that
  wrote this directory (`ferrosync policy new`).

Build, pin, test (paths relative to this directory):

    cargo build --target wasm32-wasip2 --release
    ferrosync policy pin bundle --wasm target/wasm32-wasip2/release/NAME.wasm
    ferrosync policy test bundle
    ferrosync policy inspect bundle
    ferrosync policy bench bundle

`docs/authoring-policies.md` in ferrosync's repository is the guide.
";

const WORKSPACE_HEADER: &str = "\
# A ferrosync policy plugin (`plugin/`) with the helper crate it is written against
# (`sdk/`, carried because it is not published) and the WIT contract (`wit/`).
# Build: cargo build --target wasm32-wasip2 --release
";

/// Why a scaffold was not written. Nothing is written when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0:?} is not a usable crate name: use lower-case letters, digits and '-', starting \
         with a letter, at most 64 characters (or give --name)"
    )]
    BadName(String),
    #[error("{0} exists and is not empty; choose a new directory (nothing was written)")]
    NotEmpty(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An embedded file did not parse: a build of ferrosync with broken templates.
    #[error("embedded template {file}: {message}")]
    Template { file: &'static str, message: String },
}

/// One file of a scaffold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the scaffold's directory.
    pub path: PathBuf,
    pub contents: String,
}

/// What was scaffolded, and the commands that come next.
#[derive(Debug, Clone)]
pub struct Scaffold {
    pub dir: PathBuf,
    pub name: String,
    pub point: DecisionPoint,
    pub files: Vec<File>,
}

impl Scaffold {
    /// The component cargo builds, under `target_dir` (the scaffold's `target/` unless
    /// CARGO_TARGET_DIR says otherwise).
    pub fn component(&self, target_dir: &Path) -> PathBuf {
        target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", self.name.replace('-', "_")))
    }

    /// The bundle directory.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join(BUNDLE_DIR)
    }
}

/// A crate name: what cargo accepts and what makes a clean component file name.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.into()))
    }
}

/// The scaffold's files for a plugin `name` of `point`. Pure.
pub fn files(point: DecisionPoint, name: &str) -> Result<Vec<File>, ScaffoldError> {
    check_name(name)?;
    let t = template(point);
    let parse = |file: &'static str, text: &str| {
        text.parse::<DocumentMut>()
            .map_err(|e| ScaffoldError::Template {
                file,
                message: e.to_string(),
            })
    };

    let mut workspace = parse("plugins/Cargo.toml", WORKSPACE)?;
    let mut members = toml_edit::Array::new();
    members.push(PLUGIN_DIR);
    members.push("sdk");
    workspace["workspace"]["members"] = value(members);
    if let Some(table) = workspace["workspace"].as_table_mut() {
        table.decor_mut().set_prefix(WORKSPACE_HEADER);
    }
    // The components' profile only; others serve tools of this tree.
    if let Some(profiles) = workspace.get_mut("profile").and_then(|p| p.as_table_mut()) {
        profiles.retain(|name, _| name == "release");
    }

    let mut manifest = parse("plugins/template/*/Cargo.toml", t.manifest)?;
    manifest["package"]["name"] = value(name);

    let mut policy = parse("plugins/template/*/policy.toml", t.policy)?;
    policy["plugin"]["name"] = value(name);
    policy["plugin"]["wasm"] = value(format!("{name}.wasm"));

    let file = |path: &str, contents: String| File {
        path: path.into(),
        contents,
    };
    Ok(vec![
        file("Cargo.toml", workspace.to_string()),
        file("Cargo.lock", LOCK.into()),
        file(".cargo/config.toml", CARGO_CONFIG.into()),
        file(".gitignore", "/target\n".into()),
        file("README.md", README.replace("NAME", &name.replace('-', "_"))),
        file("wit/policy.wit", WIT.into()),
        file("sdk/Cargo.toml", SDK_MANIFEST.into()),
        file("sdk/src/lib.rs", SDK_LIB.into()),
        file(&format!("{PLUGIN_DIR}/Cargo.toml"), manifest.to_string()),
        file(&format!("{PLUGIN_DIR}/src/lib.rs"), t.lib.into()),
        file(&format!("{BUNDLE_DIR}/policy.toml"), policy.to_string()),
        file(&format!("{BUNDLE_DIR}/tests.json"), t.tests.into()),
    ])
}

/// The default plugin name: the directory's own name.
pub fn default_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
        .unwrap_or_default()
}

/// Writes a scaffold into `dir`, which must not exist or be empty.
pub fn write(
    point: DecisionPoint,
    dir: &Path,
    name: Option<&str>,
) -> Result<Scaffold, ScaffoldError> {
    let name = name.map_or_else(|| default_name(dir), str::to_owned);
    let files = files(point, &name)?;
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || dir.is_file() {
        return Err(ScaffoldError::NotEmpty(dir.into()));
    }
    for f in &files {
        let path = dir.join(&f.path);
        let write = || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &f.contents)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(Scaffold {
        dir: dir.into(),
        name,
        point,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        )
    }

    fn read(rel: &str) -> String {
        std::fs::read_to_string(root().join(rel)).expect(rel)
    }

    fn get<'a>(files: &'a [File], path: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"))
            .contents
    }

    /// The scaffold is the tree's plugins/ with only names changed: the contract, the
    /// SDK, the lock file and the template's code and tests are the files as they are
    /// now, and the manifests differ from them only in the names.
    #[test]
    fn a_scaffold_is_the_template_with_its_names_changed() {
        for point in [
            DecisionPoint::CopyMethod,
            DecisionPoint::ServiceType,
            DecisionPoint::Psk,
        ] {
            let dir = format!("plugins/template/{point}");
            let files = files(point, "my-plugin").unwrap();
            assert_eq!(
                get(&files, "wit/policy.wit"),
                read("plugins/wit/policy.wit")
            );
            assert_eq!(
                get(&files, "sdk/src/lib.rs"),
                read("plugins/sdk/src/lib.rs")
            );
            assert_eq!(
                get(&files, "sdk/Cargo.toml"),
                read("plugins/sdk/Cargo.toml")
            );
            assert_eq!(get(&files, "Cargo.lock"), read("plugins/Cargo.lock"));
            assert_eq!(
                get(&files, "plugin/src/lib.rs"),
                read(&format!("{dir}/src/lib.rs"))
            );
            assert_eq!(
                get(&files, "bundle/tests.json"),
                read(&format!("{dir}/tests.json"))
            );
            let renamed = |text: &str| text.replace(&format!("template-{point}"), "my-plugin");
            assert_eq!(
                get(&files, "plugin/Cargo.toml"),
                renamed(&read(&format!("{dir}/Cargo.toml")))
            );
            assert_eq!(
                get(&files, "bundle/policy.toml"),
                renamed(&read(&format!("{dir}/policy.toml")))
            );
            let tmp = tempfile::tempdir().unwrap();
            std::fs::write(
                tmp.path().join("policy.toml"),
                get(&files, "bundle/policy.toml"),
            )
            .unwrap();
            let bundle = crate::policy::plugin::BundleFile::read(tmp.path()).unwrap();
            assert_eq!(bundle.decision, point);
            assert_eq!(bundle.plugin.wasm, tmp.path().join("my-plugin.wasm"));
            // The workspace keeps the plugins' release profile, with its own members.
            let ws: toml_edit::DocumentMut = get(&files, "Cargo.toml").parse().unwrap();
            let tree: toml_edit::DocumentMut = read("plugins/Cargo.toml").parse().unwrap();
            assert_eq!(
                ws["profile"]["release"].to_string(),
                tree["profile"]["release"].to_string()
            );
            assert_eq!(
                ws["workspace"]["members"].to_string().trim(),
                r#"["plugin", "sdk"]"#
            );
            let profiles: Vec<&str> = ws["profile"]
                .as_table()
                .unwrap()
                .iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(profiles, ["release"]);
            assert!(get(&files, "README.md").contains("release/my_plugin.wasm"));
        }
    }

    #[test]
    fn names_and_occupied_directories_are_refused_writing_nothing() {
        for bad in [
            "",
            "My-Plugin",
            "9lives",
            "a_b",
            "trailing-",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(ScaffoldError::BadName(_))),
                "{bad}"
            );
        }
        check_name("my-plugin2").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let err = write(DecisionPoint::Psk, tmp.path(), Some("p")).unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty(_)), "{err}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert_eq!(default_name(Path::new("/x/My_Plugin")), "my-plugin");
    }
}
