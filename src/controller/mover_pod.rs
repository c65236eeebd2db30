//! What a pass decides about the mover Pod beyond the user's options: whether it runs in
//! debug mode (`volsync.backube/enable-debug-mover`), whether the data volume is mounted
//! read-only (ReadOnlyMany), and on which node it must run (the node where the
//! application's pod mounts a single-node volume, with that pod's tolerations).
//!
//! The decisions are pure functions of objects read elsewhere; only [`placement`] and
//! [`replace_if_mode_changed`] talk to the API.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, Resource, api::ListParams};

use super::{conditions::Reason, context::Context, error::Error, progress::Progress};
use crate::resources::{
    job::{Placement, extras::is_debug_job},
    meta::MANAGED_BY,
};

/// Annotation on a ReplicationSource or ReplicationDestination: run its mover in debug
/// mode, where the Pod starts but moves no data, so a person can exec in.
pub const ENABLE_DEBUG_MOVER: &str = "volsync.backube/enable-debug-mover";

/// Whether the object asks for a debug mover: the annotation is present and not an
/// explicit "false" or "no".
pub fn debug_requested<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENABLE_DEBUG_MOVER))
        .is_some_and(|v| !v.eq_ignore_ascii_case("false") && !v.eq_ignore_ascii_case("no"))
}

/// The access modes of a PVC: the bound ones, else the requested ones.
pub fn access_modes(pvc: &PersistentVolumeClaim) -> Vec<String> {
    pvc.status
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| pvc.spec.as_ref().and_then(|s| s.access_modes.clone()))
        .unwrap_or_default()
}

/// A ReadOnlyMany volume is mounted read-only: many nodes may read it, none may write.
pub fn read_only(modes: &[String]) -> bool {
    modes.iter().any(|m| m == "ReadOnlyMany")
}

/// Whether a volume with these modes can be used from one node only, so the mover must
/// run where the application already mounts it.
pub fn single_node(modes: &[String]) -> bool {
    !modes
        .iter()
        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
}

/// Where the pods of `pvc`'s namespace that mount it put the mover: next to a running
/// application pod, else a pending one, else (when only movers use it, for example two
/// sources of one volume) next to a mover. `None` when nobody mounts it.
pub fn placement_among<'a>(
    claim: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<Placement> {
    let uses = |p: &&Pod| {
        p.spec.as_ref().is_some_and(|s| {
            s.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
            })
        })
    };
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let ours = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.get(MANAGED_BY).is_some_and(|v| v == "ferrosync"))
    };
    let on_node = |p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
    };
    let users: Vec<&Pod> = pods.into_iter().filter(uses).filter(on_node).collect();
    let pick = |app: bool| {
        let of_kind = || users.iter().filter(move |p| ours(p) != app);
        of_kind()
            .find(|p| phase(p) == "Running")
            .or_else(|| of_kind().find(|p| phase(p) == "Pending"))
    };
    let pod = pick(true).or_else(|| pick(false))?;
    let spec = pod.spec.as_ref()?;
    Some(Placement {
        node: spec.node_name.clone()?,
        tolerations: spec.tolerations.clone().unwrap_or_default(),
    })
}

/// Where the mover of a user's volume `pvc` must run: next to the application when the
/// volume is single-node, anywhere otherwise.
pub async fn placement(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
) -> Result<Option<Placement>, Error> {
    if !single_node(&access_modes(pvc)) {
        return Ok(None);
    }
    let (Some(ns), Some(name)) = (&pvc.metadata.namespace, &pvc.metadata.name) else {
        return Ok(None);
    };
    // The application's pods from the apiserver, ferrosync's movers from their cache: a
    // namespace of many pairs holds a mover per running pair, and listing them all on
    // every Job made was most of the controller's peak memory (BENCHMARKS.md, scale).
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let not_ours = ListParams::default().labels(&format!("{MANAGED_BY}!=ferrosync"));
    let apps = pods.list(&not_ours).await?.items;
    let movers = ctx.caches.namespace_mover_pods(ns);
    Ok(placement_among(
        name,
        apps.iter().chain(movers.iter().map(AsRef::as_ref)),
    ))
}

/// Deletes the mover Job when it was built for the other mode (debug or not), so the next
/// pass starts the one the annotation asks for. Returns whether it did.
pub async fn replace_if_mode_changed(
    ctx: &Context,
    namespace: &str,
    job: &str,
    debug: bool,
) -> Result<bool, Error> {
    // From the cache: a Job it has not seen yet was just built in the mode asked for.
    match ctx.caches.job(namespace, job) {
        Some(existing) if is_debug_job(&existing) != debug => {
            ctx.delete_job(namespace, job).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A debug mover that exited moved no data: nothing is published or recorded as a sync.
/// Its Job goes, and while the annotation stays the next pass starts another.
pub async fn debug_finished(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    namespace: &str,
    job: &str,
) -> Result<Progress, Error> {
    ctx.delete_job(namespace, job).await?;
    ctx.event(
        object,
        false,
        "DebugMoverExited",
        format!(
            "debug mover Job {job} exited without moving data; remove the {ENABLE_DEBUG_MOVER} annotation to synchronize again"
        ),
    )
    .await;
    Ok(
        Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll)
            .with_message("the debug mover exited; a new one starts while the annotation is set"),
    )
}

/// The condition of a pass whose mover runs in debug mode.
pub fn debug_running(ctx: &Context, job: &str) -> Progress {
    Progress::new(Reason::SyncInProgress, ctx.config.requeue.poll).with_message(format!(
        "debug mover {job} is running and moves no data ({ENABLE_DEBUG_MOVER}); exec in, and delete /tmp/exit-debug-if-removed to end it"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, claim: &str, node: &str, phase: &str, mover: bool) -> Pod {
        let labels = if mover {
            json!({MANAGED_BY: "ferrosync"})
        } else {
            json!({"app": name})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c"}],
                "tolerations": [{"key": format!("taint-of-{name}"), "operator": "Exists"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}],
            },
            "status": {"phase": phase},
        }))
        .expect("pod fixture")
    }

    #[test]
    fn the_running_application_pod_wins() {
        let pods = [
            pod("mover", "data", "n0", "Running", true),
            pod("other", "elsewhere", "n2", "Running", false),
            pod("pending-app", "data", "n3", "Pending", false),
            pod("app", "data", "n1", "Running", false),
        ];
        let p = placement_among("data", &pods).expect("placed");
        assert_eq!(p.node, "n1");
        assert_eq!(p.tolerations[0].key.as_deref(), Some("taint-of-app"));
    }

    #[test]
    fn pending_applications_then_movers_then_nothing() {
        let pods = [
            pod("mover", "data", "n0", "Running", true),
            pod("app", "data", "n3", "Pending", false),
        ];
        assert_eq!(placement_among("data", &pods).expect("placed").node, "n3");
        assert_eq!(
            placement_among("data", &pods[..1]).expect("placed").node,
            "n0"
        );
        assert_eq!(placement_among("nobody", &pods), None);
        let unscheduled = pod("app", "data", "", "Pending", false);
        assert_eq!(placement_among("data", &[unscheduled]), None);
    }

    #[test]
    fn modes_decide_read_only_and_single_node() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(read_only(&m(&["ReadOnlyMany"])));
        assert!(!read_only(&m(&["ReadWriteOnce"])));
        assert!(single_node(&m(&["ReadWriteOnce"])));
        assert!(single_node(&m(&["ReadWriteOncePod"])));
        assert!(!single_node(&m(&["ReadWriteMany"])));
        assert!(!single_node(&m(&["ReadOnlyMany"])));
    }

    #[test]
    fn the_debug_annotation_is_on_unless_it_says_no() {
        use crate::api::ReplicationSource;
        let mut rs = ReplicationSource::new("s", Default::default());
        assert!(!debug_requested(&rs));
        for (value, on) in [("", true), ("true", true), ("false", false), ("No", false)] {
            rs.metadata.annotations =
                Some([(ENABLE_DEBUG_MOVER.to_string(), value.to_string())].into());
            assert_eq!(debug_requested(&rs), on, "{value:?}");
        }
    }
}
