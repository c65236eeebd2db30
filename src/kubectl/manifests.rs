//! The objects a pair is made of, as pure functions of what the user asked for: the same
//! manifests are applied by `replicate` and printed by `replicate --dry-run` for GitOps.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::keys;

/// Label on both objects of a pair and on the key Secret's copy: the pair's name.
pub const PAIR_LABEL: &str = "ferrosync.io/pair";

/// What a pair is made from.
#[derive(Clone, Debug, PartialEq)]
pub struct PairSpec {
    /// The pair's name: both objects are called this.
    pub name: String,
    pub source_namespace: String,
    pub source_pvc: String,
    pub dest_namespace: String,
    /// The source's copy method (unset: the copy-method policy decides).
    pub source_copy_method: Option<String>,
    /// The destination's copy method: Snapshot keeps images to fail over to.
    pub dest_copy_method: String,
    /// Only with Direct: an existing PVC to write into (the failback direction).
    pub destination_pvc: Option<String>,
    pub capacity: Option<String>,
    pub access_modes: Vec<String>,
    pub dest_storage_class: Option<String>,
    pub service_type: Option<String>,
    pub schedule: Option<String>,
    /// A manual trigger instead of a schedule.
    pub manual: Option<String>,
    /// The key Secret, by name, for the source (the destination's controller makes the key
    /// and names it in its status; the copy in the source site has the same name).
    pub key_secret: Option<String>,
    pub address: Option<String>,
    pub rpo: Option<String>,
    /// A vault pair (`ferrosync.io/psk-pair`) on both sides: each controller takes the key
    /// from the vault, so `key_secret` stays unset and no Secret is copied.
    pub psk_pair: Option<String>,
}

fn metadata(name: &str, namespace: &str, pair: &str, annotations: BTreeMap<&str, &str>) -> Value {
    let mut meta = json!({
        "name": name,
        "namespace": namespace,
        "labels": { PAIR_LABEL: pair },
    });
    if !annotations.is_empty() {
        meta["annotations"] = json!(annotations);
    }
    meta
}

fn trigger(spec: &PairSpec) -> Option<Value> {
    match (&spec.schedule, &spec.manual) {
        (_, Some(manual)) => Some(json!({ "manual": manual })),
        (Some(schedule), None) => Some(json!({ "schedule": schedule })),
        (None, None) => None,
    }
}

/// The annotations both sides carry: the recovery point objective and the vault pair.
fn shared_annotations(spec: &PairSpec) -> impl Iterator<Item = (&'static str, &str)> {
    rpo(spec).into_iter().chain(
        spec.psk_pair
            .as_deref()
            .map(|p| (crate::policy::pairs::PAIR_ANNOTATION, p)),
    )
}

/// The recovery point objective's annotation, on both sides: the destination's site is
/// where a failover happens and where Prometheus must alert when the source site is lost
/// (the destination's lastSyncTime is the recovery point); the source's, while both run.
fn rpo(spec: &PairSpec) -> Option<(&'static str, &str)> {
    spec.rpo.as_deref().map(|r| (keys::RPO, r))
}

/// The ReplicationDestination, for the destination site. It carries the source PVC's name
/// so that `failover` can name the promoted PVC after the application's.
pub fn destination(spec: &PairSpec) -> Value {
    let mut rsync_tls = json!({ "copyMethod": spec.dest_copy_method });
    let set = |v: &mut Value, k: &str, x: &Option<String>| {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    };
    set(&mut rsync_tls, "capacity", &spec.capacity);
    set(&mut rsync_tls, "storageClassName", &spec.dest_storage_class);
    set(&mut rsync_tls, "serviceType", &spec.service_type);
    set(&mut rsync_tls, "destinationPVC", &spec.destination_pvc);
    if !spec.access_modes.is_empty() {
        rsync_tls["accessModes"] = json!(spec.access_modes);
    }
    let mut annotations = BTreeMap::from([(keys::SOURCE_PVC, spec.source_pvc.as_str())]);
    annotations.extend(shared_annotations(spec));
    json!({
        "apiVersion": "volsync.backube/v1alpha1",
        "kind": "ReplicationDestination",
        "metadata": metadata(&spec.name, &spec.dest_namespace, &spec.name, annotations),
        "spec": { "rsyncTLS": rsync_tls },
    })
}

/// The ReplicationSource, for the source site. Its key Secret is referenced, never inlined;
/// a vault pair's source references none (its controller makes its own from the vault).
pub fn source(spec: &PairSpec) -> Value {
    let mut rsync_tls = json!({});
    if let Some(m) = &spec.source_copy_method {
        rsync_tls["copyMethod"] = json!(m);
    }
    if let Some(k) = &spec.key_secret {
        rsync_tls["keySecret"] = json!(k);
    }
    if let Some(a) = &spec.address {
        rsync_tls["address"] = json!(a);
    }
    let annotations = BTreeMap::from_iter(shared_annotations(spec));
    let mut object = json!({
        "apiVersion": "volsync.backube/v1alpha1",
        "kind": "ReplicationSource",
        "metadata": metadata(&spec.name, &spec.source_namespace, &spec.name, annotations),
        "spec": { "sourcePVC": spec.source_pvc, "rsyncTLS": rsync_tls },
    });
    if let Some(t) = trigger(spec) {
        object["spec"]["trigger"] = t;
    }
    object
}

/// The copy of the destination's key Secret for the source site: the same name and data,
/// labelled with the pair. `data` is passed through untouched and never shown.
pub fn key_secret_copy(
    name: &str,
    namespace: &str,
    pair: &str,
    data: BTreeMap<String, k8s_openapi::ByteString>,
) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(PAIR_LABEL.to_string(), pair.to_string())])),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A PVC restored from `snapshot`: the promoted copy after a failover.
pub fn restored_pvc(
    name: &str,
    namespace: &str,
    pair: &str,
    snapshot: &str,
    capacity: &str,
    access_modes: &[String],
    storage_class: Option<&str>,
) -> Value {
    let mut spec = json!({
        "accessModes": access_modes,
        "resources": { "requests": { "storage": capacity } },
        "dataSource": { "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot },
    });
    if let Some(class) = storage_class {
        spec["storageClassName"] = json!(class);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(name, namespace, pair, BTreeMap::new()),
        "spec": spec,
    })
}

/// A VolumeSnapshot of `pvc`, kept: the original volume before a failback overwrites it.
pub fn keep_snapshot(
    name: &str,
    namespace: &str,
    pair: &str,
    pvc: &str,
    class: Option<&str>,
) -> Value {
    let mut spec = json!({ "source": { "persistentVolumeClaimName": pvc } });
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": metadata(name, namespace, pair, BTreeMap::new()),
        "spec": spec,
    })
}

/// Renders objects as one multi-document YAML stream, each document headed by a comment
/// naming the site it belongs to.
pub fn yaml_stream(docs: &[(&str, &Value)]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (site, doc) in docs {
        out.push_str(&format!("---\n# apply to the {site} cluster\n"));
        out.push_str(&serde_yaml_ng::to_string(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PairSpec {
        PairSpec {
            name: "db".into(),
            source_namespace: "app".into(),
            source_pvc: "data".into(),
            dest_namespace: "dr".into(),
            source_copy_method: None,
            dest_copy_method: "Snapshot".into(),
            destination_pvc: None,
            capacity: Some("1Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            dest_storage_class: None,
            service_type: Some("LoadBalancer".into()),
            schedule: Some("*/5 * * * *".into()),
            manual: None,
            key_secret: Some("volsync-rsync-tls-db".into()),
            address: None,
            rpo: Some("15m".into()),
            psk_pair: None,
        }
    }

    #[test]
    fn the_destination_carries_the_pair_and_the_application_pvc() {
        let rd = destination(&spec());
        assert_eq!(rd["metadata"]["labels"][PAIR_LABEL], "db");
        assert_eq!(rd["metadata"]["annotations"][keys::SOURCE_PVC], "data");
        assert_eq!(rd["spec"]["rsyncTLS"]["serviceType"], "LoadBalancer");
        assert_eq!(rd["spec"]["rsyncTLS"]["capacity"], "1Gi");
        // The recovery point objective is watched where a failover would happen.
        assert_eq!(rd["metadata"]["annotations"][keys::RPO], "15m");
        let without = destination(&PairSpec {
            rpo: None,
            ..spec()
        });
        assert_eq!(
            without["metadata"]["annotations"],
            json!({ keys::SOURCE_PVC: "data" })
        );
        // The destination follows the source: a schedule belongs to the source only.
        assert!(rd["spec"].get("trigger").is_none());
    }

    #[test]
    fn the_source_references_the_key_and_omits_an_unknown_address() {
        let rs = source(&spec());
        assert_eq!(rs["spec"]["rsyncTLS"]["keySecret"], "volsync-rsync-tls-db");
        assert!(rs["spec"]["rsyncTLS"].get("address").is_none());
        assert_eq!(rs["spec"]["trigger"]["schedule"], "*/5 * * * *");
        assert_eq!(rs["metadata"]["annotations"][keys::RPO], "15m");
        let without = source(&PairSpec {
            rpo: None,
            ..spec()
        });
        assert!(without["metadata"].get("annotations").is_none());
        let with_address = source(&PairSpec {
            address: Some("192.0.2.7".into()),
            ..spec()
        });
        assert_eq!(with_address["spec"]["rsyncTLS"]["address"], "192.0.2.7");
    }

    #[test]
    fn a_vault_pair_annotates_both_sides_and_references_no_secret() {
        let paired = PairSpec {
            psk_pair: Some("geo-db".into()),
            key_secret: None,
            ..spec()
        };
        let (rd, rs) = (destination(&paired), source(&paired));
        for obj in [&rd, &rs] {
            assert_eq!(
                obj["metadata"]["annotations"][crate::policy::pairs::PAIR_ANNOTATION],
                "geo-db"
            );
            assert_eq!(obj["metadata"]["annotations"][keys::RPO], "15m");
        }
        assert!(rs["spec"]["rsyncTLS"].get("keySecret").is_none(), "{rs}");
        assert!(rd["spec"]["rsyncTLS"].get("keySecret").is_none(), "{rd}");
        let out = yaml_stream(&[("destination", &rd), ("source", &rs)]).unwrap();
        assert_eq!(
            out.matches("ferrosync.io/psk-pair: geo-db").count(),
            2,
            "{out}"
        );
        assert!(!out.contains("keySecret"), "{out}");
        // Without a pair, no annotation.
        assert!(
            source(&spec())["metadata"]["annotations"]
                .get(crate::policy::pairs::PAIR_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn a_manual_trigger_wins_over_a_schedule() {
        let rs = source(&PairSpec {
            manual: Some("once".into()),
            ..spec()
        });
        assert_eq!(rs["spec"]["trigger"], json!({ "manual": "once" }));
    }

    #[test]
    fn the_yaml_stream_names_each_site() {
        let (rd, rs) = (destination(&spec()), source(&spec()));
        let out = yaml_stream(&[("destination", &rd), ("source", &rs)]).unwrap();
        assert_eq!(out.matches("---\n").count(), 2);
        assert!(out.contains("# apply to the destination cluster\napiVersion: volsync.backube/v1alpha1\nkind: ReplicationDestination"));
        assert!(
            !out.contains("psk.txt"),
            "a key is referenced, never inlined"
        );
    }
}
