//! Projected volumes, as the kubelet's projected volume plugin fills them: every source
//! written into one directory with the atomic writer's layout (`volumes::write_files`).
//!
//! - `serviceAccountToken`: a token from the TokenRequest API for the pod's ServiceAccount,
//!   bound to the pod (so it dies with it), with the source's audience and lifetime. The
//!   node asks as `system:node:<name>`, which the Node authorizer allows only for pods
//!   bound to it. The ServiceAccount admission plugin adds such a source to every pod
//!   (`kube-api-access-*`, with the `kube-root-ca.crt` ConfigMap and the namespace).
//! - `configMap` and `secret`: their keys (or `items`); `optional` ones may be missing.
//! - `downwardAPI`: `fieldRef` items (the fields `env` resolves).
//!
//! Not modelled: token refresh (the kubelet renews at 80% of the lifetime; the apiserver
//! extends the admission's 3607 s tokens to a year, longer than any test),
//! `clusterTrustBundle` and `podCertificate` sources, and `resourceFieldRef`.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{KeyToPath, Pod, ProjectedVolumeSource, Secret, ServiceAccount},
    },
};
use kube::{Api, Client, api::PostParams};

use super::volumes;

/// One file of the volume: path, contents, mode.
type File = (String, Vec<u8>, Option<i32>);

/// Writes every source of `projected` into `dir`. `Err` is a reason to keep the pod in
/// ContainerCreating (a missing ConfigMap, a refused token), retried by the caller.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    projected: &ProjectedVolumeSource,
    dir: &Path,
    fs_group: Option<u32>,
) -> Result<(), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files: Vec<File> = Vec::new();
    for source in projected.sources.iter().flatten() {
        if let Some(token) = &source.service_account_token {
            let jwt = request_token(
                client,
                pod,
                token.audience.clone(),
                token.expiration_seconds,
            )
            .await?;
            files.push((token.path.clone(), jwt.into_bytes(), None));
        }
        if let Some(cm) = &source.config_map {
            let name = cm.name.as_str();
            match volumes::config_map_data(client, ns, name).await {
                Ok(data) => files.extend(select(&data, cm.items.as_deref())),
                Err(_) if cm.optional == Some(true) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(secret) = &source.secret {
            let name = secret.name.as_str();
            let found = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(|e| format!("secret {name:?}: {e}"))?;
            match found {
                Some(found) => {
                    let data: BTreeMap<String, Vec<u8>> = found
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, ByteString(v))| (k, v))
                        .collect();
                    files.extend(select(&data, secret.items.as_deref()));
                }
                None if secret.optional == Some(true) => {}
                None => return Err(format!("secret {name:?} not found")),
            }
        }
        if let Some(downward) = &source.downward_api {
            for item in downward.items.iter().flatten() {
                let field = item.field_ref.as_ref().ok_or_else(|| {
                    format!(
                        "downwardAPI {}: only fieldRef items are simulated",
                        item.path
                    )
                })?;
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                let value = super::env::field_value(pod, &field.field_path, &ip)
                    .ok_or_else(|| format!("unsupported fieldPath {}", field.field_path))?;
                files.push((item.path.clone(), value.into_bytes(), item.mode));
            }
        }
    }
    // One payload: write_files takes data plus per-file modes as items.
    let data: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(path, bytes, _)| (path.clone(), bytes.clone()))
        .collect();
    let items: Vec<KeyToPath> = files
        .iter()
        .map(|(path, _, mode)| KeyToPath {
            key: path.clone(),
            path: path.clone(),
            mode: *mode,
        })
        .collect();
    let mode = projected.default_mode.unwrap_or(0o644) as u32;
    volumes::write_files(dir, &data, Some(&items), mode, fs_group)
}

/// `data`'s keys, or the chosen `items` under their paths and modes.
fn select(data: &BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>) -> Vec<File> {
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone(), i.mode)))
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect(),
    }
}

/// A token for the pod's ServiceAccount, bound to the pod, from the TokenRequest API.
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // Empty: the apiserver's own audiences (its issuer).
            audiences: audience.into_iter().collect(),
            expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("a token for serviceaccount {ns}/{account}: {e}"))?;
    issued
        .status
        .map(|s| s.token)
        .ok_or_else(|| format!("a token for serviceaccount {ns}/{account}: no status"))
}
