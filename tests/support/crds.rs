//! Installs CustomResourceDefinitions from YAML files and waits until they are served.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use serde::Deserialize;

use super::wait;

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "ferrosync-test-harness";

/// Reads every CRD document in `files`.
pub fn load(files: &[PathBuf]) -> Result<Vec<CustomResourceDefinition>, String> {
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(doc)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            if value.is_null() {
                continue;
            }
            crds.push(
                serde_yaml_ng::from_value(value).map_err(|e| format!("{}: {e}", file.display()))?,
            );
        }
    }
    Ok(crds)
}

/// Server-side applies `crds` and waits until each is Established.
pub async fn install(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let mut crd = crd.clone();
        // An applied object must not carry a resourceVersion (it would be a precondition).
        crd.metadata.resource_version = None;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("applying CRD {name}: {e}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait::until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api
                        .get(&name)
                        .await
                        .map_err(|e| format!("getting CRD {name}: {e}"))?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}
