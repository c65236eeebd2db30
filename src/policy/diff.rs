//! `ferrosync policy diff`: where a candidate configuration would decide differently from
//! the active one, over the objects of a running cluster.
//!
//! Both configurations run in engines of their own on inputs gathered as the controller
//! gathers them (sources' PVCs and classes, the topology for destinations), so nothing is
//! written anywhere. The psk point is left out: its answers depend on a vault and on key
//! Secrets, and comparing keys offline would mean holding them; run a psk candidate in
//! shadow mode instead, which records only the kind of answer.

use std::sync::Arc;

use k8s_openapi::api::{core::v1::PersistentVolumeClaim, storage::v1::StorageClass};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde::Serialize;

use super::{
    config::PolicyConfig,
    engine::{EngineOptions, PolicyEngine},
    namespaces::KubeNamespaceLabels,
    outcome::{Decided, PolicyError},
    shadow::Comparable,
    types::{CopyMethodInput, DecisionPoint, PvcInfo, ServiceTypeInput, StorageClassInfo},
};
use crate::api::{ReplicationDestination, ReplicationSource, Spelling};

/// Why a diff could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("reading the cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error("{which} configuration: {message}")]
    Load {
        which: &'static str,
        message: String,
    },
}

/// One decision, by both configurations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffRow {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub point: DecisionPoint,
    pub active: String,
    pub active_by: String,
    pub candidate: String,
    pub candidate_by: String,
    pub differs: bool,
}

/// Every copy-method (sources) and service-type (destinations) decision in `namespace`
/// (all namespaces when `None`), by the active and the candidate configuration.
pub async fn diff(
    client: &Client,
    active: &PolicyConfig,
    candidate: &PolicyConfig,
    namespace: Option<&str>,
) -> Result<Vec<DiffRow>, DiffError> {
    let engine = |config: &PolicyConfig, which: &'static str| {
        let options = EngineOptions {
            namespaces: Arc::new(KubeNamespaceLabels::new(client.clone())),
            ..EngineOptions::default()
        };
        let config = config.clone();
        async move {
            PolicyEngine::new(&config, options)
                .await
                .map_err(|e| DiffError::Load {
                    which,
                    message: e.to_string(),
                })
        }
    };
    let (active, candidate) = (
        engine(active, "active").await?,
        engine(candidate, "candidate").await?,
    );
    let mut rows = Vec::new();
    let sources: Api<ReplicationSource> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let snapshot_classes = snapshot_classes(client).await?;
    for rs in sources.list(&ListParams::default()).await?.items {
        let (Some(tls), Some(claim)) = (&rs.spec.rsync_tls, &rs.spec.source_pvc) else {
            continue;
        };
        let ns = rs.namespace().unwrap_or_default();
        let Some(source) = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .get_opt(claim)
            .await?
        else {
            continue;
        };
        let input = copy_method_input(&source, &classes, &snapshot_classes, tls.copy_method);
        let a = active.copy_method(&input).await;
        let c = candidate.copy_method(&input).await;
        rows.push(row(
            "ReplicationSource",
            &rs.name_any(),
            &ns,
            DecisionPoint::CopyMethod,
            a,
            c,
        ));
    }
    let destinations: Api<ReplicationDestination> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let topology = crate::controller::topology::TopologyCache::default()
        .get(client)
        .await?;
    for rd in destinations.list(&ListParams::default()).await?.items {
        let Some(tls) = &rd.spec.rsync_tls else {
            continue;
        };
        let requested = tls.service_type.as_ref().and_then(Spelling::known);
        if requested == Some(crate::api::ServiceType::NodePort) {
            continue; // Never put to the policy (see the controller's destination).
        }
        let ns = rd.namespace().unwrap_or_default();
        let input = ServiceTypeInput {
            namespace: ns.clone(),
            name: rd.name_any(),
            labels: rd.labels().clone(),
            requested,
            topology: topology.clone(),
        };
        let a = active.service_type(&input).await;
        let c = candidate.service_type(&input).await;
        rows.push(row(
            "ReplicationDestination",
            &rd.name_any(),
            &ns,
            DecisionPoint::ServiceType,
            a,
            c,
        ));
    }
    Ok(rows)
}

fn row<D: Comparable>(
    kind: &'static str,
    name: &str,
    namespace: &str,
    point: DecisionPoint,
    active: Result<Decided<D>, PolicyError>,
    candidate: Result<Decided<D>, PolicyError>,
) -> DiffRow {
    let show = |d: &Result<Decided<D>, PolicyError>| match d {
        Ok(d) => (d.decision.compared(), d.provenance.decided_by()),
        Err(e) => (format!("error: {e}"), "failed".into()),
    };
    let ((active, active_by), (candidate, candidate_by)) = (show(&active), show(&candidate));
    DiffRow {
        kind,
        namespace: namespace.into(),
        name: name.into(),
        point,
        differs: active != candidate,
        active,
        active_by,
        candidate,
        candidate_by,
    }
}

fn copy_method_input(
    source: &PersistentVolumeClaim,
    classes: &[StorageClass],
    snapshot_classes: &[(String, String, bool)],
    requested: Option<crate::api::CopyMethod>,
) -> CopyMethodInput {
    let spec = source.spec.clone().unwrap_or_default();
    let class = spec
        .storage_class_name
        .as_deref()
        .and_then(|name| classes.iter().find(|c| c.name_any() == name));
    let provisioner = class.map(|c| c.provisioner.clone());
    // The default class first, as the controller orders them.
    let mut snaps: Vec<(bool, String)> = snapshot_classes
        .iter()
        .filter(|(_, driver, _)| Some(driver) == provisioner.as_ref())
        .map(|(name, _, default)| (!default, name.clone()))
        .collect();
    snaps.sort();
    CopyMethodInput {
        pvc: PvcInfo::of(source),
        storage_class: class.map(StorageClassInfo::of),
        requested,
        snapshot_classes: snaps.into_iter().map(|(_, n)| n).collect(),
        storage_classes: classes.iter().map(|c| c.name_any()).collect(),
        clone_failure: None,
    }
}

/// VolumeSnapshotClasses as (name, driver, is default); none without the snapshot CRDs.
async fn snapshot_classes(client: &Client) -> Result<Vec<(String, String, bool)>, kube::Error> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(list
        .into_iter()
        .map(|c| {
            let driver = c
                .data
                .get("driver")
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_owned();
            let default = c
                .annotations()
                .get("snapshot.storage.kubernetes.io/is-default-class")
                .map(String::as_str)
                == Some("true");
            (c.name_any(), driver, default)
        })
        .collect())
}
