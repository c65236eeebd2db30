//! Every applicable example object of the spec is accepted as written, with only the
//! namespace substituted, and stored without any field pruned.

use std::path::PathBuf;

use serde_json::Value;

use crate::{fixtures, support::control_plane};

fn example_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/fixtures/spec-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/spec-examples")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn spec_examples_are_accepted_as_written() {
    let ns = control_plane().namespace("spec-examples").await;
    let files = example_files();
    assert_eq!(
        files.len(),
        4,
        "both destinations, the source and the Secret: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example");
        let example: Value = serde_yaml_ng::from_str(&text).expect("example YAML");
        let stored = fixtures::create(&ns.client, &ns.name, &example, false)
            .await
            .unwrap_or_else(|e| panic!("{} rejected: {e}", file.display()));
        let stored = serde_json::to_value(&stored).expect("json");
        // Nothing pruned or defaulted away: what was written is what is stored.
        for field in ["spec", "data", "type"] {
            assert_eq!(
                stored.get(field),
                example.get(field),
                "{}: {field} changed when stored",
                file.display()
            );
        }
        assert_eq!(stored["metadata"]["name"], example["metadata"]["name"]);
    }
}
