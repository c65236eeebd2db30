//! `failover`: promote the copy when the source site is lost (or on purpose).
//!
//! The order is what makes it safe:
//! 1. let an in-flight sync finish (unless `--now`): pausing either side mid-transfer
//!    would stop it, and its data is the freshest complete copy;
//! 2. fence the destination: paused (no mover, so no listener for a returning source)
//!    and annotated, so `resume` refuses it;
//! 3. pause the source when its site answers;
//! 4. promote: Snapshot restores the latest image (complete by construction); Direct hands
//!    over the destination PVC only when no iteration is open on it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::{Error, Site, Sites, contexts, keys, manifests, wait};
use crate::api::ReplicationDestination;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pair (the ReplicationDestination's name).
    pub name: String,
    #[command(flatten)]
    pub sites: Sites,
    /// Do not wait for an in-flight sync: abandon it (its partial data is never promoted).
    #[arg(long)]
    pub now: bool,
    /// The promoted PVC's name (default: the application's PVC name).
    #[arg(long = "name")]
    pub pvc_name: Option<String>,
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn synchronizing_reason(sync: Option<&crate::api::SyncStatus>) -> Option<&str> {
    sync?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Synchronizing")
        .map(|c| c.reason.as_str())
}

/// Pure: whether the source has a sync in flight, or finished one the destination has
/// not published yet (the destination publishes its image after its own mover ends).
pub fn source_ahead(rs: &crate::api::ReplicationSource, rd: &ReplicationDestination) -> bool {
    let sync = rs.status.as_ref().map(|s| &s.sync);
    let sent = sync.and_then(|s| s.last_sync_time.as_ref()).map(|t| t.0);
    synchronizing_reason(sync) == Some("SyncInProgress") || (sent.is_some() && sent > last_sync(rd))
}

/// Pure: whether an open iteration of this destination has received data, which it may
/// have written only in part.
pub fn partially_written(rd: &ReplicationDestination) -> bool {
    let sync = rd.status.as_ref().map(|s| &s.sync);
    synchronizing_reason(sync) == Some("SyncInProgress")
        && sync
            .and_then(|s| s.progress.as_ref())
            .and_then(|p| p.bytes_transferred)
            .is_some_and(|b| b > 0)
}

fn last_sync(rd: &ReplicationDestination) -> Option<Timestamp> {
    rd.status
        .as_ref()?
        .sync
        .last_sync_time
        .as_ref()
        .map(|t| t.0)
}

/// What a failover promotes, decided from the destination alone (pure).
#[derive(Debug, PartialEq)]
pub enum Promotion {
    /// Restore this VolumeSnapshot into a new PVC.
    Restore { snapshot: String },
    /// Hand over this PVC as it is.
    Direct { pvc: String },
}

pub fn promotion(rd: &ReplicationDestination) -> Result<Promotion, Error> {
    let image = rd.status.as_ref().and_then(|s| s.latest_image.as_ref()).ok_or_else(|| {
        Error::NotReady(format!(
            "ReplicationDestination {} has no image yet: no sync has completed, so there is nothing to promote",
            rd.name_any()
        ))
    })?;
    match image.kind.as_str() {
        "VolumeSnapshot" => Ok(Promotion::Restore {
            snapshot: image.name.clone(),
        }),
        "PersistentVolumeClaim" => Ok(Promotion::Direct {
            pvc: image.name.clone(),
        }),
        other => Err(Error::Conflict(format!(
            "latest image of kind {other} cannot be promoted"
        ))),
    }
}

/// Deletes the destination's mover Job, if any, and waits until it and its pods are gone.
async fn stop_destination_mover(site: &Site, name: &str, timeout: Duration) -> Result<(), Error> {
    let job = crate::resources::names::job(crate::resources::names::Side::Destination, name);
    let jobs = site.jobs();
    match jobs
        .delete(&job, &kube::api::DeleteParams::foreground())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(site.api(e)),
    }
    wait::until("the destination's mover to stop", timeout, || async {
        Ok(site.get_opt(&jobs, &job).await?.is_none().then_some(()))
    })
    .await
}

async fn destination(site: &Site, name: &str) -> Result<ReplicationDestination, Error> {
    site.get_opt(&site.destinations(), name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{} does not exist",
                site.describe("ReplicationDestination", name)
            ))
        })
}

pub async fn run(args: Args) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let (source, dest) = contexts::reachable(&args.sites).await?;
    let dest = dest.ok_or_else(|| Error::Unreachable {
        role: "destination",
        context: args.sites.dest_context.clone().unwrap_or_default(),
        detail: "it holds the copy to promote, so failover needs it".into(),
    })?;
    let rd = destination(&dest, &args.name).await?;
    promotion(&rd)?;

    // A destination without a trigger is "in progress" whenever it listens, so whether a
    // transfer is in flight is the source's to say, when its site answers.
    let busy = match &source {
        Some(site) => site
            .get_opt(&site.sources(), &args.name)
            .await?
            .is_some_and(|rs| source_ahead(&rs, &rd)),
        None => false,
    };
    if busy && !args.now {
        let before = last_sync(&rd);
        eprintln!("a sync is in flight; letting it finish (--now abandons it)");
        wait::until(
            "the in-flight sync to be published",
            args.timeout,
            || async {
                let rd = destination(&dest, &args.name).await?;
                Ok((last_sync(&rd) != before).then_some(()))
            },
        )
        .await?;
    }

    // Fence first: from here on no destination mover runs, so nothing reaches the copy.
    let fenced_at = Timestamp::now().to_string();
    dest.merge(
        &dest.destinations(),
        &args.name,
        json!({ "metadata": { "annotations": { keys::FENCED: fenced_at } }, "spec": { "paused": true } }),
    )
    .await?;
    // Paused, the controller starts no mover; one already listening (a destination waits
    // for the next sync) keeps its port open until it is stopped here.
    stop_destination_mover(&dest, &args.name, args.timeout).await?;
    eprintln!(
        "fenced {}",
        dest.describe("ReplicationDestination", &args.name)
    );
    if let Some(site) = &source
        && site.get_opt(&site.sources(), &args.name).await?.is_some()
    {
        site.merge(
            &site.sources(),
            &args.name,
            json!({ "spec": { "paused": true } }),
        )
        .await?;
        eprintln!("paused {}", site.describe("ReplicationSource", &args.name));
    }

    let rd = destination(&dest, &args.name).await?;
    let promoted = match promotion(&rd)? {
        Promotion::Direct { pvc } => {
            // An open iteration that received data may have written part of a transfer.
            if partially_written(&rd) {
                return Err(Error::Conflict(format!(
                    "a sync into PVC {pvc} began and did not finish, so it may hold partial data; refusing to promote it. \
                     Resume the pair to let the sync complete, then fail over again"
                )));
            }
            pvc
        }
        Promotion::Restore { snapshot } => {
            let app = rd
                .annotations()
                .get(keys::SOURCE_PVC)
                .cloned()
                .unwrap_or_else(|| args.name.clone());
            let name = args.pvc_name.clone().unwrap_or(app);
            restore(&dest, &rd, &args.name, &name, &snapshot, args.timeout).await?;
            name
        }
    };
    dest.merge(
        &dest.destinations(),
        &args.name,
        json!({ "metadata": { "annotations": { keys::PROMOTED_PVC: promoted } } }),
    )
    .await?;
    let age = last_sync(&rd).map_or("unknown".into(), |t| {
        humantime::format_duration(Duration::from_secs(
            Timestamp::now().duration_since(t).as_secs().max(0) as u64,
        ))
        .to_string()
    });
    println!(
        "promoted {} in {:.1}s; its data is {age} old (the last completed sync)",
        dest.describe("PVC", &promoted),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Restores `snapshot` into the PVC `name`; a PVC of that name that is not this
/// promotion's is an error, never overwritten.
async fn restore(
    dest: &Site,
    rd: &ReplicationDestination,
    pair: &str,
    name: &str,
    snapshot: &str,
    timeout: Duration,
) -> Result<(), Error> {
    if let Some(existing) = dest.get_opt(&dest.pvcs(), name).await? {
        let ours = existing
            .labels()
            .get(manifests::PAIR_LABEL)
            .map(String::as_str)
            == Some(pair)
            && existing
                .spec
                .as_ref()
                .and_then(|s| s.data_source.as_ref())
                .is_some_and(|d| d.name == snapshot);
        if !ours {
            return Err(Error::Conflict(format!(
                "{} already exists; choose another with --name",
                dest.describe("PersistentVolumeClaim", name)
            )));
        }
    } else {
        let spec = rd.spec.rsync_tls.as_ref();
        let capacity = spec.and_then(|s| s.capacity.as_ref()).map(|q| q.0.clone());
        let snap = dest.get_opt(&dest.snapshots(), snapshot).await?;
        let restore_size = snap
            .as_ref()
            .and_then(|s| s.data.pointer("/status/restoreSize"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let size = restore_size
            .or(capacity)
            .ok_or_else(|| Error::NotReady(format!("snapshot {snapshot} has no size yet")))?;
        let modes: Vec<String> = spec
            .and_then(|s| s.access_modes.as_ref())
            .map(|m| m.iter().map(|m| m.as_str().to_string()).collect())
            .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
        let class = spec.and_then(|s| s.storage_class_name.as_deref());
        let pvc =
            manifests::restored_pvc(name, &dest.namespace, pair, snapshot, &size, &modes, class);
        dest.apply(&dest.pvcs(), name, &pvc).await?;
    }
    wait::until(&format!("PVC {name} to be bound"), timeout, || async {
        let pvc = dest.get_opt(&dest.pvcs(), name).await?;
        Ok(pvc
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            .filter(|p| p == "Bound")
            .map(|_| ()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::TypedLocalObjectReference;

    fn rd(kind: Option<&str>) -> ReplicationDestination {
        let mut rd = ReplicationDestination::new("db", Default::default());
        rd.status = Some(crate::api::ReplicationDestinationStatus {
            latest_image: kind.map(|k| TypedLocalObjectReference {
                kind: k.into(),
                name: "img".into(),
                api_group: None,
            }),
            ..Default::default()
        });
        rd
    }

    #[test]
    fn a_snapshot_is_restored_and_a_pvc_handed_over() {
        assert_eq!(
            promotion(&rd(Some("VolumeSnapshot"))).unwrap(),
            Promotion::Restore {
                snapshot: "img".into()
            }
        );
        assert_eq!(
            promotion(&rd(Some("PersistentVolumeClaim"))).unwrap(),
            Promotion::Direct { pvc: "img".into() }
        );
    }

    #[test]
    fn only_an_open_iteration_that_received_data_is_partial() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let mut listening = rd(Some("PersistentVolumeClaim"));
        let status = listening.status.as_mut().unwrap();
        status.sync.conditions = Some(vec![Condition {
            type_: "Synchronizing".into(),
            reason: "SyncInProgress".into(),
            message: String::new(),
            status: "True".into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }]);
        assert!(
            !partially_written(&listening),
            "listening, nothing received"
        );
        let mut receiving = listening.clone();
        receiving.status.as_mut().unwrap().sync.progress = Some(crate::api::SyncProgress {
            bytes_transferred: Some(4096),
            ..Default::default()
        });
        assert!(partially_written(&receiving));
        let mut done = receiving.clone();
        done.status
            .as_mut()
            .unwrap()
            .sync
            .conditions
            .as_mut()
            .unwrap()[0]
            .reason = "WaitingForManual".into();
        assert!(
            !partially_written(&done),
            "a finished iteration is complete"
        );
    }

    #[test]
    fn a_source_sync_the_destination_has_not_published_is_in_flight() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s| Some(Time(Timestamp::from_second(s).unwrap()));
        let mut rs = crate::api::ReplicationSource::new("db", Default::default());
        let mut status = crate::api::ReplicationSourceStatus::default();
        status.sync.last_sync_time = at(200);
        rs.status = Some(status);
        let mut dest = rd(Some("VolumeSnapshot"));
        dest.status.as_mut().unwrap().sync.last_sync_time = at(100);
        assert!(source_ahead(&rs, &dest), "sent at 200, published at 100");
        dest.status.as_mut().unwrap().sync.last_sync_time = at(201);
        assert!(!source_ahead(&rs, &dest), "published after it was sent");
    }

    #[test]
    fn without_an_image_there_is_nothing_to_promote() {
        let err = promotion(&rd(None)).unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("no image yet"), "{err}");
    }
}
