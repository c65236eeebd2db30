//! `replicate`: a pair from a PVC in one site to a new destination in another.
//!
//! Order matters: the destination first (its Service gives the address and the controller
//! makes the key), then the key into the source site, then the source. Every step is a
//! server-side apply, so a second run changes nothing.
//!
//! With `--psk-pair` no key is copied: both objects name the vault pair, each site's
//! controller takes the key from the vault (the destination stores it, the source reads
//! it), and `replicate` waits for each side's key Secret to be made ([`pairing`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::{
    Error, Output, Sites, contexts,
    manifests::{self, PairSpec},
    pairing, wait,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pair's name: the ReplicationSource and ReplicationDestination are called this.
    pub name: String,
    /// The application's PVC in the source site.
    #[arg(long)]
    pub pvc: String,
    #[command(flatten)]
    pub sites: Sites,
    /// The source's copy method (Clone, Snapshot, Direct); unset lets the policy decide.
    #[arg(long)]
    pub copy_method: Option<String>,
    /// The destination's copy method: Snapshot keeps point-in-time images to fail over to.
    #[arg(long, default_value = "Snapshot")]
    pub dest_copy_method: String,
    /// The destination's capacity (default: the source PVC's).
    #[arg(long)]
    pub capacity: Option<String>,
    /// The destination's StorageClass (default: the cluster's default).
    #[arg(long)]
    pub dest_storage_class: Option<String>,
    /// How the destination is reached: LoadBalancer crosses clusters, a ClusterIP does not.
    #[arg(long, default_value = "LoadBalancer")]
    pub service_type: String,
    /// A cron schedule for the source (unset: sync continuously).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Sync once now and then only on `kubectl ferrosync sync` (a manual trigger with this
    /// value), instead of a schedule.
    #[arg(long, conflicts_with = "schedule")]
    pub manual: Option<String>,
    /// The recovery point objective ("15m"), annotated on both sides: `status` marks pairs
    /// beyond it, and the controllers export it for Prometheus to alert on.
    #[arg(long, value_parser = crate::api::recovery_point::argument)]
    pub rpo: Option<String>,
    /// Pair the two sides' keys through the vault instead of copying a Secret: both objects
    /// get `ferrosync.io/psk-pair: <name>` and the source names no key Secret. Both
    /// clusters' controllers need the vault bundle, and both Namespaces a
    /// `ferrosync.io/psk-pair-prefixes` grant (a cluster admin's) covering the name.
    #[arg(long, value_parser = pairing::argument)]
    pub psk_pair: Option<String>,
    /// The destination's address, when it is known (needed with --dry-run).
    #[arg(long)]
    pub address: Option<String>,
    /// "client": print the manifests for both sites instead of applying them.
    #[arg(long, value_parser = ["client"])]
    pub dry_run: Option<String>,
    /// The format of --dry-run's output.
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: Output,
    /// How long to wait for the destination's address and key.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The capacity and access modes of the application's PVC.
fn volume_shape(pvc: &PersistentVolumeClaim) -> (Option<String>, Vec<String>) {
    let spec = pvc.spec.as_ref();
    let capacity = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| {
            spec.and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
        })
        .map(|q| q.0.clone());
    let modes = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    (capacity, modes)
}

/// The destination's key Secret name: VolSync's `volsync-rsync-tls-<name>` unless the
/// controller reports another.
fn default_key_secret(name: &str) -> String {
    format!("volsync-rsync-tls-{name}")
}

/// The manual trigger to apply to a source that has `existing`: one that `sync` set
/// since is kept, because putting the requested one back would start a sync, and running
/// replicate again must change nothing. A value the user chose is applied as asked.
fn manual_to_apply(requested: Option<String>, existing: Option<String>) -> Option<String> {
    match (requested, existing) {
        (Some(_), Some(set_by_sync)) if super::sync::is_sync_token(&set_by_sync) => {
            Some(set_by_sync)
        }
        (requested, _) => requested,
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    let dry_run = args.dry_run.is_some();
    let (source, dest) = contexts::both(&args.sites).await?;
    let pvc = source
        .get_opt(&source.pvcs(), &args.pvc)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{} does not exist",
                source.describe("PersistentVolumeClaim", &args.pvc)
            ))
        })?;
    let (found_capacity, access_modes) = volume_shape(&pvc);
    let mut spec = PairSpec {
        name: args.name.clone(),
        source_namespace: source.namespace.clone(),
        source_pvc: args.pvc.clone(),
        dest_namespace: dest.namespace.clone(),
        source_copy_method: args.copy_method.clone(),
        dest_copy_method: args.dest_copy_method.clone(),
        destination_pvc: None,
        capacity: args.capacity.clone().or(found_capacity),
        access_modes,
        dest_storage_class: args.dest_storage_class.clone(),
        service_type: Some(args.service_type.clone()),
        schedule: args.schedule.clone(),
        manual: args.manual.clone(),
        // A vault pair's source takes its key from the vault, not from a named Secret.
        key_secret: match args.psk_pair {
            Some(_) => None,
            None => Some(default_key_secret(&args.name)),
        },
        address: args.address.clone(),
        rpo: args.rpo.clone(),
        psk_pair: args.psk_pair.clone(),
    };
    if spec.capacity.is_none() {
        return Err(Error::Usage(format!(
            "PVC {} has no size; pass --capacity",
            args.pvc
        )));
    }

    if dry_run {
        let (rd, rs) = (manifests::destination(&spec), manifests::source(&spec));
        let out = match args.output {
            Output::Json => serde_json::to_string_pretty(&serde_json::json!({
                "destination": rd, "source": rs,
            }))
            .map_err(|e| Error::Output(e.to_string()))?,
            _ => manifests::yaml_stream(&[("destination", &rd), ("source", &rs)])
                .map_err(|e| Error::Output(e.to_string()))?,
        };
        println!("{out}");
        match &args.psk_pair {
            Some(pair) => {
                eprintln!(
                    "Both sides take their key from the vault (pair {pair}): no Secret to create \
                     or commit. Each cluster's controller needs the vault bundle, and each \
                     Namespace a {} grant covering {pair}, set by a cluster admin.",
                    crate::policy::pairs::PREFIXES_ANNOTATION
                );
                // Said, not refused: the manifests are for a repository, applied later.
                for site in [&dest, &source] {
                    if let Err(e) = pairing::precheck(site, pair, false).await {
                        eprintln!("warning: {e}");
                    }
                }
            }
            None => eprintln!(
                "The source references the key Secret {key} by name: create it in the source \
                 cluster from the destination's, e.g. with a sealed or external secret (never commit it).",
                key = default_key_secret(&args.name)
            ),
        }
        if spec.address.is_none() {
            eprintln!(
                "Fill in spec.rsyncTLS.address of the source: it is the destination's \
                 status.rsyncTLS.address once its Service exists \
                 (kubectl --context {} -n {} get replicationdestination {} -o jsonpath='{{.status.rsyncTLS.address}}')",
                dest.context, dest.namespace, args.name
            );
        }
        return Ok(());
    }

    // A pair the Namespaces do not grant is refused before anything is created.
    if let Some(pair) = &args.psk_pair {
        for site in [&dest, &source] {
            pairing::precheck(site, pair, true).await?;
        }
    }

    // An object of that name that belongs to another pair is not ours to change.
    if let Some(existing) = dest.get_opt(&dest.destinations(), &args.name).await? {
        let pair = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(manifests::PAIR_LABEL));
        if pair.is_some_and(|p| p != &args.name) || pair.is_none() {
            return Err(Error::Conflict(format!(
                "{} already exists and is not this pair's; choose another name",
                dest.describe("ReplicationDestination", &args.name)
            )));
        }
    }
    dest.apply(
        &dest.destinations(),
        &args.name,
        &manifests::destination(&spec),
    )
    .await?;
    eprintln!(
        "{} applied",
        dest.describe("ReplicationDestination", &args.name)
    );

    let rd_api = dest.destinations();
    let address = match &args.psk_pair {
        None => {
            let (address, key_name) = wait::until(
                "the destination's address and key",
                args.timeout,
                || async {
                    let rd = dest.get_opt(&rd_api, &args.name).await?;
                    let tls = rd.and_then(|rd| rd.status).and_then(|s| s.rsync_tls);
                    Ok(tls.and_then(|t| Some((t.address?, t.key_secret?))))
                },
            )
            .await?;
            spec.key_secret = Some(key_name.clone());
            super::objects::copy_key(&dest, &source, &key_name, &args.name).await?;
            address
        }
        Some(pair) => {
            let address = pairing::await_key(
                &dest,
                "ReplicationDestination",
                &args.name,
                pair,
                args.timeout,
                || async {
                    let rd = dest.get_opt(&rd_api, &args.name).await?;
                    let status = rd.and_then(|rd| rd.status);
                    let tls = status.as_ref().and_then(|s| s.rsync_tls.as_ref());
                    let ready = tls.and_then(|t| t.key_secret.as_ref().and(t.address.clone()));
                    Ok(pairing::key_state(status.as_ref().map(|s| &s.sync), ready))
                },
            )
            .await?;
            eprintln!(
                "{}: key stored in the vault (pair {pair}); no Secret copied",
                dest.describe("ReplicationDestination", &args.name)
            );
            address
        }
    };
    if spec.address.is_none() {
        spec.address = Some(address.clone());
    }

    if let Some(existing) = source.get_opt(&source.sources(), &args.name).await? {
        let pair = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(manifests::PAIR_LABEL));
        if pair != Some(&args.name) {
            return Err(Error::Conflict(format!(
                "{} already exists and is not this pair's; choose another name",
                source.describe("ReplicationSource", &args.name)
            )));
        }
        spec.manual = manual_to_apply(
            spec.manual.take(),
            existing.spec.trigger.and_then(|t| t.manual),
        );
    }
    source
        .apply(&source.sources(), &args.name, &manifests::source(&spec))
        .await?;
    if let Some(pair) = &args.psk_pair {
        let rs_api = source.sources();
        let key = pairing::await_key(
            &source,
            "ReplicationSource",
            &args.name,
            pair,
            args.timeout,
            || async {
                let rs = source.get_opt(&rs_api, &args.name).await?;
                let status = rs.and_then(|rs| rs.status);
                let ready = status
                    .as_ref()
                    .and_then(|s| s.rsync_tls.as_ref())
                    .and_then(|t| t.key_secret.clone());
                Ok(pairing::key_state(status.as_ref().map(|s| &s.sync), ready))
            },
        )
        .await?;
        eprintln!(
            "{}: key from the vault (pair {pair}) in {} (not shown)",
            source.describe("ReplicationSource", &args.name),
            source.describe("Secret", &key)
        );
    }
    println!(
        "replicating {} -> {} at {address}",
        source.describe("PVC", &args.pvc),
        dest.describe("ReplicationDestination", &args.name),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_sync_set_survives_running_replicate_again() {
        let token = crate::kubectl::sync::manual_token(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let once = || Some("once".to_string());
        assert_eq!(manual_to_apply(once(), Some(token.clone())), Some(token));
        assert_eq!(manual_to_apply(once(), Some("mine".into())), once());
        assert_eq!(manual_to_apply(once(), None), once());
        assert_eq!(manual_to_apply(None, Some("mine".into())), None);
    }
}
