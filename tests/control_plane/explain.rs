//! `kubectl explain` (the kubectl built with the apiserver) shows our field docs, which
//! come from the `///` comments of `src/api/` through the published OpenAPI v3 document.

use std::time::Duration;

use ferrosync::api::ReplicationDestination;
use kube::CustomResourceExt;

use crate::support::{control_plane, wait};

/// The description of `spec.rsyncTLS.copyMethod` in the generated CRD.
fn copy_method_doc() -> String {
    let crd = serde_json::to_value(ReplicationDestination::crd()).expect("crd json");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let field = &schema["properties"]["spec"]["properties"]["rsyncTLS"]["properties"]["copyMethod"];
    field["description"]
        .as_str()
        .expect("copyMethod is documented")
        .to_string()
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn kubectl_explain_prints_our_docs() {
    let cp = control_plane();
    let doc = words(&copy_method_doc());
    assert!(
        doc.starts_with("copyMethod is how each received image is kept"),
        "{doc}"
    );
    // The OpenAPI document is rebuilt asynchronously after a CRD is established.
    let output = wait::until(
        "kubectl explain to show the copyMethod docs",
        Duration::from_secs(30),
        || {
            let out = cp
                .kubectl()
                .args(["explain", "replicationdestination.spec.rsyncTLS.copyMethod"])
                .output()
                .map_err(|e| format!("running kubectl: {e}"));
            let doc = doc.clone();
            async move {
                let out = out?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                Ok(words(&text).contains(&doc).then_some(text))
            }
        },
    )
    .await
    .expect("kubectl explain");
    assert!(output.contains("FIELD: copyMethod"), "{output}");
    assert!(
        output.contains("ENUM:") && output.contains("Snapshot"),
        "{output}"
    );
}

#[tokio::test]
async fn kubectl_explain_describes_the_kinds() {
    let cp = control_plane();
    for (kind, start) in [
        (
            "replicationsource",
            "A ReplicationSource replicates one PersistentVolumeClaim",
        ),
        (
            "replicationdestination",
            "A ReplicationDestination receives a replicated volume",
        ),
    ] {
        let text = wait::until(
            &format!("kubectl explain {kind} to describe the kind"),
            Duration::from_secs(30),
            || {
                let out = cp
                    .kubectl()
                    .args(["explain", kind])
                    .output()
                    .map_err(|e| format!("running kubectl: {e}"));
                async move {
                    let text = String::from_utf8_lossy(&out?.stdout).to_string();
                    Ok(words(&text).contains(start).then_some(text))
                }
            },
        )
        .await
        .expect("kubectl explain");
        assert!(!text.contains("Auto-generated"), "{text}");
    }
}
