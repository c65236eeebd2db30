//! Namespace labels, which label-selecting bindings need to choose a bundle.
//!
//! Looked up only when some binding of the decision point selects by labels. The
//! controller reads them from its Namespace metadata watch (`controller::caches`), which
//! follows label changes and then reconciles the namespace's objects, so which bundle
//! answers follows them at the next decision (the precedence in `scope` then decides,
//! visibly: the `PolicyBindingOverlap` condition); `ferrosync policy diff` reads them
//! with a GET, with the user's own rights.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;

/// A namespace's labels.
pub type Labels = BTreeMap<String, String>;

/// Why a namespace's labels could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {0} not found")]
    NotFound(String),
    #[error("reading namespace {namespace}: {message}")]
    Api { namespace: String, message: String },
}

/// Reads a namespace's labels.
pub trait NamespaceLabels: Send + Sync {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, NamespaceError>>;
}

/// Fixed labels by namespace; unknown namespaces have none. For `policy eval`, `policy
/// test` and tests.
#[derive(Debug, Default, Clone)]
pub struct StaticNamespaceLabels(pub BTreeMap<String, Labels>);

impl NamespaceLabels for StaticNamespaceLabels {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, NamespaceError>> {
        let labels = self.0.get(namespace).cloned().unwrap_or_default();
        Box::pin(async move { Ok(labels) })
    }
}

/// The cluster's Namespaces, read with `get` (for `ferrosync policy diff`).
pub struct KubeNamespaceLabels {
    client: kube::Client,
}

impl KubeNamespaceLabels {
    pub fn new(client: kube::Client) -> Self {
        KubeNamespaceLabels { client }
    }
}

impl NamespaceLabels for KubeNamespaceLabels {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Labels, NamespaceError>> {
        Box::pin(async move {
            let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
            let ns = api
                .get_opt(namespace)
                .await
                .map_err(|e| NamespaceError::Api {
                    namespace: namespace.into(),
                    message: e.to_string(),
                })?
                .ok_or_else(|| NamespaceError::NotFound(namespace.into()))?;
            Ok(ns.metadata.labels.unwrap_or_default())
        })
    }
}
