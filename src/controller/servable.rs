//! Whether ferrosync serves an object at all, decided before a pass touches anything.
//!
//! The CRDs admit everything VolSync's admit, so the controller sees objects it cannot
//! serve: another mover's (restic, rclone, ...), which it must leave exactly as they are,
//! and rsyncTLS objects it cannot serve (Block, a Service type it cannot expose, no
//! address, port 0, a schedule its parser rejects). The first get one Event and one log
//! line, once; the second get the Error (or Unsupported) condition and an Event saying
//! what to do, and nothing else: no key, no Service, no PVC, no Job.
//!
//! The verdict is pure (spec in, verdict out); only [`NotServed`] keeps state, so that
//! the announcement for another mover's object is made once per controller process.

use std::{collections::HashSet, sync::Mutex};

use crate::api::{
    AccessMode, CopyMethod, MoverSections, ReplicationDestinationSpec, ReplicationSourceSpec,
    ServiceType, Spelled, Spelling, Trigger, VolumeMode,
};

use super::schedule::Schedule;

/// What a pass does with an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An rsyncTLS object ferrosync serves.
    Serve,
    /// An object of other movers (named): announce once, write nothing.
    OtherMover(Vec<&'static str>),
    /// An object ferrosync will not act on until its spec changes.
    CannotServe(Refusal),
}

/// Why an object is not served, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The spec is wrong for any controller (VolSync would fail on it too, or later).
    #[error("{0}")]
    Invalid(String),
    /// The spec is valid for VolSync, but ferrosync does not implement it.
    #[error("{0}")]
    Unsupported(String),
}

/// The verdict on a ReplicationSource.
pub fn source(spec: &ReplicationSourceSpec) -> Verdict {
    let others = spec.other_movers.set();
    let Some(tls) = &spec.rsync_tls else {
        return without_rsync_tls(others);
    };
    let refusal = only_rsync_tls(&others)
        .or_else(|| {
            spec.source_pvc
                .as_deref()
                .filter(|name| !name.is_empty())
                .is_none()
                .then(|| {
                    Refusal::Invalid(
                        "spec.sourcePVC is not set: name the PersistentVolumeClaim to replicate"
                            .into(),
                    )
                })
        })
        .or_else(|| {
            tls.address
                .as_deref()
                .filter(|a| !a.trim().is_empty())
                .is_none()
                .then(|| {
                    Refusal::Invalid(
                        "spec.rsyncTLS.address is not set: set it to the destination's \
                         status.rsyncTLS.address"
                            .into(),
                    )
                })
        })
        .or_else(|| match tls.port {
            Some(port) if !(1..=65535).contains(&port) => Some(Refusal::Invalid(format!(
                "spec.rsyncTLS.port {port} is not a port a connection can use: set 1 to 65535, \
                 or remove it for the default 8000"
            ))),
            _ => None,
        })
        .or_else(|| access_modes(tls.access_modes.as_deref()))
        .or_else(|| schedule(spec.trigger.as_ref()));
    refusal.map_or(Verdict::Serve, Verdict::CannotServe)
}

/// The verdict on a ReplicationDestination.
pub fn destination(spec: &ReplicationDestinationSpec) -> Verdict {
    let others = spec.other_movers.set();
    let Some(tls) = &spec.rsync_tls else {
        return without_rsync_tls(others);
    };
    let needs = |field: &str| {
        Refusal::Invalid(format!(
            "spec.rsyncTLS.{field} is not set: it is required to provision the destination \
             volume; set it, or name an existing PVC in spec.rsyncTLS.destinationPVC"
        ))
    };
    let refusal = only_rsync_tls(&others)
        .or_else(|| volume_mode(tls.volume_mode.as_ref()))
        .or_else(|| service_type(tls.service_type.as_ref()))
        .or_else(|| {
            (tls.copy_method == Some(CopyMethod::Clone)).then(|| {
                Refusal::Invalid(
                    "spec.rsyncTLS.copyMethod Clone is not valid on a destination: use Direct \
                     or Snapshot"
                        .into(),
                )
            })
        })
        .or_else(|| {
            let provisions = tls.destination_pvc.is_none();
            if provisions && tls.capacity.is_none() {
                Some(needs("capacity"))
            } else if provisions && tls.access_modes.as_ref().is_none_or(Vec::is_empty) {
                Some(needs("accessModes"))
            } else {
                None
            }
        })
        .or_else(|| access_modes(tls.access_modes.as_deref()))
        .or_else(|| schedule(spec.trigger.as_ref()));
    refusal.map_or(Verdict::Serve, Verdict::CannotServe)
}

fn without_rsync_tls(others: Vec<&'static str>) -> Verdict {
    if others.is_empty() {
        Verdict::CannotServe(Refusal::Invalid(
            "no replication method is set: set spec.rsyncTLS, the method ferrosync serves".into(),
        ))
    } else {
        Verdict::OtherMover(others)
    }
}

fn only_rsync_tls(others: &[&str]) -> Option<Refusal> {
    (!others.is_empty()).then(|| {
        Refusal::Invalid(format!(
            "spec sets rsyncTLS and {}: only one mover may be set; remove {} (or rsyncTLS)",
            others.join(", "),
            others.join(", ")
        ))
    })
}

fn volume_mode(mode: Option<&Spelling<VolumeMode>>) -> Option<Refusal> {
    match mode? {
        Spelling::Known(VolumeMode::Filesystem) => None,
        Spelling::Known(VolumeMode::Block) => Some(Refusal::Unsupported(
            "spec.rsyncTLS.volumeMode Block is not supported by ferrosync, which replicates \
             filesystems only: use Filesystem, or keep this pair on VolSync"
                .into(),
        )),
        Spelling::Unknown(other) => Some(Refusal::Invalid(format!(
            "spec.rsyncTLS.volumeMode {other:?} is not a volume mode: use Filesystem"
        ))),
    }
}

fn service_type(requested: Option<&Spelling<ServiceType>>) -> Option<Refusal> {
    let other = match requested? {
        Spelling::Known(_) => return None,
        Spelling::Unknown(other) => other,
    };
    // The types ServiceType knows are served; list them all here when one is added.
    let served = [
        ServiceType::ClusterIP,
        ServiceType::LoadBalancer,
        ServiceType::NodePort,
    ]
    .map(Spelled::as_str)
    .join(" or ");
    Some(match other.as_str() {
        // A real Service type ferrosync does not expose a listener through.
        "ExternalName" => Refusal::Unsupported(format!(
            "spec.rsyncTLS.serviceType {other} is not supported by ferrosync: use {served}, \
             or remove it to let the service-type policy decide"
        )),
        _ => Refusal::Invalid(format!(
            "spec.rsyncTLS.serviceType {other:?} is not a Service type this cluster has: use \
             {served}, or remove it to let the service-type policy decide"
        )),
    })
}

fn access_modes(modes: Option<&[Spelling<AccessMode>]>) -> Option<Refusal> {
    let (index, bad) = modes?.iter().enumerate().find_map(|(i, m)| match m {
        Spelling::Unknown(s) => Some((i, s)),
        Spelling::Known(_) => None,
    })?;
    Some(Refusal::Invalid(format!(
        "spec.rsyncTLS.accessModes[{index}] {bad:?} is not an access mode: use ReadWriteOnce, \
         ReadOnlyMany, ReadWriteMany or ReadWriteOncePod"
    )))
}

/// A schedule the apiserver admitted (VolSync's pattern is loose) but the cron parser
/// rejects. Ignored while `trigger.manual` is set, as the trigger machine ignores it.
fn schedule(trigger: Option<&Trigger>) -> Option<Refusal> {
    let trigger = trigger?;
    if trigger.manual.is_some() {
        return None;
    }
    let expr = trigger.schedule.as_deref()?;
    Schedule::parse(expr).err().map(|err| {
        Refusal::Invalid(format!(
            "spec.trigger.schedule: {err}; write five cron fields (for example \"*/5 * * * *\") \
             or a descriptor such as @hourly"
        ))
    })
}

/// The objects of other movers already announced by this process.
#[derive(Debug, Default)]
pub struct NotServed {
    announced: Mutex<HashSet<String>>,
}

impl NotServed {
    /// True the first time it is asked about `uid`, false afterwards.
    pub fn first_time(&self, uid: &str) -> bool {
        self.announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string())
    }

    /// The Event's note for an object of `movers`.
    pub fn note(movers: &[&str]) -> String {
        format!(
            "ferrosync serves only spec.rsyncTLS; this object uses {}, which ferrosync leaves \
             exactly as it is (it writes neither its status nor anything it references)",
            movers.join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
