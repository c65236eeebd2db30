//! Where the host finds the credentials it injects into granted HTTP requests: a
//! Kubernetes Secret for the controller, a fixed map for tests and the CLI.
//!
//! Values are handed only to the HTTP gate. They must never be logged, put in an error,
//! or passed to a plugin.

use std::collections::HashMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;

use super::config::CredentialRef;

/// Why a credential could not be resolved. Messages name the Secret, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential source is configured for Secret {0}")]
    NoSource(String),
    #[error("Secret {0} not found")]
    NotFound(String),
    #[error("Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    #[error("Secret {secret} key {key:?} is not valid UTF-8 header text")]
    NotText { secret: String, key: String },
    #[error("reading Secret {secret}: {message}")]
    Api { secret: String, message: String },
}

/// Resolves a [`CredentialRef`] to its value.
pub trait CredentialSource: Send + Sync {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>>;
}

/// No credentials at all: any reference is an error.
#[derive(Debug, Default)]
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        Box::pin(async move { Err(CredentialError::NoSource(r.secret.clone())) })
    }
}

/// Fixed values by `(secret, key)`: for tests and `policy eval --credential`.
#[derive(Default)]
pub struct StaticCredentials(HashMap<(String, String), String>);

impl StaticCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the value of `key` in Secret `secret`.
    pub fn with(mut self, secret: &str, key: &str, value: &str) -> Self {
        self.0.insert((secret.into(), key.into()), value.into());
        self
    }
}

impl CredentialSource for StaticCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        let found = self.0.get(&(r.secret.clone(), r.key.clone())).cloned();
        Box::pin(async move {
            found.ok_or_else(|| CredentialError::MissingKey {
                secret: r.secret.clone(),
                key: r.key.clone(),
            })
        })
    }
}

/// Reads Secrets through the Kubernetes API, in the reference's namespace or the
/// controller's own.
pub struct KubeCredentials {
    client: kube::Client,
    default_namespace: String,
}

impl KubeCredentials {
    pub fn new(client: kube::Client, default_namespace: impl Into<String>) -> Self {
        KubeCredentials {
            client,
            default_namespace: default_namespace.into(),
        }
    }
}

impl CredentialSource for KubeCredentials {
    fn resolve<'a>(
        &'a self,
        r: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        Box::pin(async move {
            let ns = r.namespace.as_deref().unwrap_or(&self.default_namespace);
            let name = format!("{ns}/{}", r.secret);
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), ns);
            let secret = api
                .get_opt(&r.secret)
                .await
                .map_err(|e| CredentialError::Api {
                    secret: name.clone(),
                    message: e.to_string(),
                })?
                .ok_or_else(|| CredentialError::NotFound(name.clone()))?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| b.0.clone())
                .ok_or_else(|| CredentialError::MissingKey {
                    secret: name.clone(),
                    key: r.key.clone(),
                })?;
            let value = String::from_utf8(bytes)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
                .ok_or_else(|| CredentialError::NotText {
                    secret: name,
                    key: r.key.clone(),
                })?;
            Ok(value)
        })
    }
}
