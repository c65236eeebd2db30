//! `failback` (alias `reverse`): after a failover, replicate the promoted volume back to
//! the original one, sending only what changed.
//!
//! The original PVC becomes the destinationPVC of a reverse pair, so rsync compares against
//! what it already holds. Writes that reached the original after its last sync but never
//! reached the copy would be deleted by that resync, so the original is snapshotted first
//! and the snapshot kept. `--switch-back` then stops at a quiet promoted volume, runs a last
//! delta sync, removes the reverse pair and restores the original direction.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;

use super::{
    Error, Site, Sites, contexts, keys,
    manifests::{self, PairSpec},
    sync, wait,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The original pair's name.
    pub name: String,
    /// --source-context is the ORIGINAL source site (it receives the data back);
    /// --dest-context the site where the copy was promoted.
    #[command(flatten)]
    pub sites: Sites,
    /// After the reverse sync, stop at the promoted side, run a last delta sync and restore
    /// the original direction. Stop the application on the promoted side first.
    #[arg(long)]
    pub switch_back: bool,
    /// How the promoted side takes its point-in-time copy for the reverse sync.
    #[arg(long, default_value = "Clone")]
    pub copy_method: String,
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The reverse pair's name.
pub fn reverse_name(name: &str) -> String {
    format!("{name}-reverse")
}

/// The kept snapshot of the original volume, named by time so each failback keeps its own.
pub fn keep_snapshot_name(pvc: &str, now: Timestamp) -> String {
    format!("{pvc}-before-failback-{}", now.as_second())
}

async fn mounted_by(site: &Site, pvc: &str) -> Result<Vec<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(site.client.clone(), &site.namespace);
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| site.api(e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == pvc)
                })
        })
        .filter(|p| !p.labels().contains_key("app.kubernetes.io/managed-by"))
        .map(|p| p.name_any())
        .collect())
}

pub async fn run(args: Args) -> Result<(), Error> {
    let (original, promoted_site) = contexts::both(&args.sites).await?;
    let rd = promoted_site
        .get_opt(&promoted_site.destinations(), &args.name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{} does not exist",
                promoted_site.describe("ReplicationDestination", &args.name)
            ))
        })?;
    let promoted = rd
        .annotations()
        .get(keys::PROMOTED_PVC)
        .cloned()
        .filter(|_| rd.annotations().contains_key(keys::FENCED))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "pair {} has not been failed over; nothing to fail back",
                args.name
            ))
        })?;
    let rs = original
        .get_opt(&original.sources(), &args.name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{} does not exist",
                original.describe("ReplicationSource", &args.name)
            ))
        })?;
    let original_pvc = rs.spec.source_pvc.clone().ok_or_else(|| {
        Error::NotFound(format!(
            "ReplicationSource {} names no sourcePVC",
            args.name
        ))
    })?;
    // The old source must never push over the promoted data again.
    original
        .merge(
            &original.sources(),
            &args.name,
            json!({ "spec": { "paused": true } }),
        )
        .await?;

    let reverse = reverse_name(&args.name);
    if original
        .get_opt(&original.destinations(), &reverse)
        .await?
        .is_none()
    {
        let snap = keep_snapshot_name(&original_pvc, Timestamp::now());
        let class = rs
            .spec
            .rsync_tls
            .as_ref()
            .and_then(|t| t.volume_snapshot_class_name.as_deref());
        original
            .apply(
                &original.snapshots(),
                &snap,
                &manifests::keep_snapshot(
                    &snap,
                    &original.namespace,
                    &args.name,
                    &original_pvc,
                    class,
                ),
            )
            .await?;
        wait::until(
            &format!("snapshot {snap} of the original volume"),
            args.timeout,
            || async {
                let s = original.get_opt(&original.snapshots(), &snap).await?;
                Ok(s.and_then(|s| {
                    s.data
                        .pointer("/status/readyToUse")
                        .and_then(|v| v.as_bool())
                })
                .filter(|r| *r)
                .map(|_| ()))
            },
        )
        .await?;
        println!(
            "kept {}: it holds any writes that reached the original after its last sync; the reverse sync replaces them",
            original.describe("VolumeSnapshot", &snap)
        );
    }

    let service_type = rd
        .spec
        .rsync_tls
        .as_ref()
        .and_then(|t| t.service_type.as_ref())
        .map(|t| t.as_str().to_string());
    let token = sync::manual_token(Timestamp::now());
    let mut spec = PairSpec {
        name: reverse.clone(),
        source_namespace: promoted_site.namespace.clone(),
        source_pvc: promoted.clone(),
        dest_namespace: original.namespace.clone(),
        source_copy_method: Some(args.copy_method.clone()),
        dest_copy_method: "Direct".into(),
        destination_pvc: Some(original_pvc.clone()),
        capacity: None,
        access_modes: Vec::new(),
        dest_storage_class: None,
        service_type: service_type.or_else(|| Some("LoadBalancer".into())),
        schedule: None,
        manual: Some(token.clone()),
        key_secret: None,
        address: None,
        rpo: None,
        psk_pair: None,
    };
    let mut rd_doc = manifests::destination(&spec);
    // The reverse destination listens until the pair is switched back.
    rd_doc["spec"].as_object_mut().map(|s| s.remove("trigger"));
    original
        .apply(&original.destinations(), &reverse, &rd_doc)
        .await?;
    let rd_api = original.destinations();
    let (address, key) = wait::until(
        "the reverse destination's address and key",
        args.timeout,
        || async {
            let rd = original.get_opt(&rd_api, &reverse).await?;
            let tls = rd.and_then(|rd| rd.status).and_then(|s| s.rsync_tls);
            Ok(tls.and_then(|t| Some((t.address?, t.key_secret?))))
        },
    )
    .await?;
    super::objects::copy_key(&original, &promoted_site, &key, &reverse).await?;
    spec.key_secret = Some(key);
    spec.address = Some(address);
    promoted_site
        .apply(
            &promoted_site.sources(),
            &reverse,
            &manifests::source(&spec),
        )
        .await?;
    let done = sync::follow(&promoted_site, &reverse, &token, args.timeout).await?;
    report(&promoted_site, &promoted, &done).await?;

    if !args.switch_back {
        println!(
            "the reverse pair {reverse} keeps {} in sync with {}; run `kubectl ferrosync failback {} --switch-back` after stopping the application there",
            original.describe("PVC", &original_pvc),
            promoted_site.describe("PVC", &promoted),
            args.name
        );
        return Ok(());
    }

    let users = mounted_by(&promoted_site, &promoted).await?;
    if !users.is_empty() {
        return Err(Error::Conflict(format!(
            "PVC {promoted} is in use by pod(s) {}: stop the application on the promoted side before switching back",
            users.join(", ")
        )));
    }
    let last = sync::trigger(&promoted_site, &reverse, true, args.timeout)
        .await?
        .ok_or_else(|| Error::NotReady("the last delta sync did not report".into()))?;
    report(&promoted_site, &promoted, &last).await?;

    let delete = DeleteParams::default();
    promoted_site
        .sources()
        .delete(&reverse, &delete)
        .await
        .map_err(|e| promoted_site.api(e))?;
    original
        .destinations()
        .delete(&reverse, &delete)
        .await
        .map_err(|e| original.api(e))?;
    promoted_site
        .merge(
            &promoted_site.destinations(),
            &args.name,
            json!({ "metadata": { "annotations": { keys::FENCED: null, keys::PROMOTED_PVC: null } }, "spec": { "paused": false } }),
        )
        .await?;
    original
        .merge(
            &original.sources(),
            &args.name,
            json!({ "spec": { "paused": false } }),
        )
        .await?;
    println!(
        "switched back: {} replicates to {} again; the promoted PVC {promoted} is left in place",
        original.describe("PVC", &original_pvc),
        promoted_site.describe("ReplicationDestination", &args.name)
    );
    Ok(())
}

/// Prints the bytes a reverse sync sent next to the volume's size.
async fn report(site: &Site, pvc: &str, rs: &crate::api::ReplicationSource) -> Result<(), Error> {
    let sent = rs
        .status
        .as_ref()
        .and_then(|s| s.sync.last_sync_stats.as_ref())
        .and_then(|s| s.bytes_sent)
        .unwrap_or(0);
    let size = site
        .get_opt(&site.pvcs(), pvc)
        .await?
        .and_then(|p| p.status)
        .and_then(|s| s.capacity)
        .and_then(|c| c.get("storage").map(|q| q.0.clone()))
        .unwrap_or_else(|| "?".into());
    println!(
        "reverse sync done: {sent} bytes ({}) sent for a volume of {size}",
        indicatif::HumanBytes(sent.max(0) as u64)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_snapshots_never_collide_across_failbacks() {
        assert_eq!(reverse_name("db"), "db-reverse");
        let a = keep_snapshot_name("data", Timestamp::from_second(100).unwrap());
        let b = keep_snapshot_name("data", Timestamp::from_second(200).unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("data-before-failback-"));
    }
}
