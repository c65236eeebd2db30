//! What the real apiserver rejects, and what it must admit, row by row against VolSync's
//! CRDs: a row VolSync rejects is rejected with a message naming the bad field (type
//! errors, the copyMethod enum, quantity format, minItems, the schedule pattern, the port
//! range); a row VolSync admits is admitted, even where ferrosync cannot serve it (the
//! controller reports those, and `deploy/admission/` warns about them).

use serde_json::json;

use crate::{
    fixtures::{self, Obj, destination, source},
    support::control_plane,
};

/// One row: what is wrong, the object, and the field the rejection must name.
struct Case {
    what: &'static str,
    object: Obj,
    field: &'static str,
}

fn case(what: &'static str, object: Obj, field: &'static str) -> Case {
    Case {
        what,
        object,
        field,
    }
}

fn table() -> Vec<Case> {
    let rd = || destination("bad-dest");
    let rs = || source("bad-source");
    vec![
        // Type errors.
        case(
            "paused is a string",
            rd().set("spec.paused", json!("yes")),
            "spec.paused",
        ),
        case(
            "port is a string",
            rs().set("spec.rsyncTLS.port", json!("eight thousand")),
            "spec.rsyncTLS.port",
        ),
        case(
            "accessModes is not a list",
            rd().set("spec.rsyncTLS.accessModes", json!("ReadWriteOnce")),
            "spec.rsyncTLS.accessModes",
        ),
        case(
            "capacity is a bool",
            rd().set("spec.rsyncTLS.capacity", json!(true)),
            "spec.rsyncTLS.capacity",
        ),
        case(
            "a restic section that is not an object",
            rs().set("spec.restic", json!("yes")),
            "spec.restic",
        ),
        // The one enum VolSync has.
        case(
            "destination copyMethod unknown",
            rd().set("spec.rsyncTLS.copyMethod", json!("Copy")),
            "spec.rsyncTLS.copyMethod",
        ),
        case(
            "source copyMethod unknown",
            rs().set("spec.rsyncTLS.copyMethod", json!("Mirror")),
            "spec.rsyncTLS.copyMethod",
        ),
        // Quantity format.
        case(
            "destination capacity in words",
            rd().set("spec.rsyncTLS.capacity", json!("ten gigs")),
            "spec.rsyncTLS.capacity",
        ),
        case(
            "source capacity with a bad unit",
            rs().set("spec.rsyncTLS.capacity", json!("10GB")),
            "spec.rsyncTLS.capacity",
        ),
        // minItems.
        case(
            "destination accessModes empty",
            rd().set("spec.rsyncTLS.accessModes", json!([])),
            "spec.rsyncTLS.accessModes",
        ),
        case(
            "source accessModes empty",
            rs().set("spec.rsyncTLS.accessModes", json!([])),
            "spec.rsyncTLS.accessModes",
        ),
        // The schedule pattern (VolSync's): too few fields, day and month names, words.
        case(
            "schedule with 4 fields",
            rs().set("spec.trigger.schedule", json!("*/5 * * *")),
            "spec.trigger.schedule",
        ),
        case(
            "schedule with a day name",
            rs().set("spec.trigger.schedule", json!("0 0 1 * MON")),
            "spec.trigger.schedule",
        ),
        case(
            "destination schedule @midnight",
            rd().set("spec.trigger.schedule", json!("@midnight")),
            "spec.trigger.schedule",
        ),
        case(
            "schedule @every",
            rs().set("spec.trigger.schedule", json!("@every 5m")),
            "spec.trigger.schedule",
        ),
        case(
            "empty schedule",
            rd().set("spec.trigger.schedule", json!("")),
            "spec.trigger.schedule",
        ),
        // Port range.
        case(
            "port 65536",
            rs().set("spec.rsyncTLS.port", json!(65536)),
            "spec.rsyncTLS.port",
        ),
        case(
            "port -1",
            rs().set("spec.rsyncTLS.port", json!(-1)),
            "spec.rsyncTLS.port",
        ),
    ]
}

/// Objects VolSync's CRDs admit, which ferrosync's must admit too: rows this table
/// rejected before admission parity. The controller reports those it cannot serve.
fn admitted() -> Vec<(&'static str, Obj)> {
    let rd = || destination("ok-dest");
    let rs = || source("ok-source");
    vec![
        ("the destination base", rd()),
        ("the source base", rs()),
        (
            "destinationPVC instead of capacity and accessModes",
            rd().remove("spec.rsyncTLS.capacity")
                .remove("spec.rsyncTLS.accessModes")
                .set("spec.rsyncTLS.destinationPVC", json!("mine")),
        ),
        ("no rsyncTLS on a destination", rd().remove("spec.rsyncTLS")),
        (
            "no rsyncTLS and no sourcePVC",
            rs().remove("spec.rsyncTLS").remove("spec.sourcePVC"),
        ),
        (
            "volumeMode Block",
            rd().set("spec.rsyncTLS.volumeMode", json!("Block")),
        ),
        (
            "volumeMode Raw",
            rd().set("spec.rsyncTLS.volumeMode", json!("Raw")),
        ),
        (
            "copyMethod None",
            rd().set("spec.rsyncTLS.copyMethod", json!("None")),
        ),
        (
            "destination copyMethod Clone",
            rd().set("spec.rsyncTLS.copyMethod", json!("Clone")),
        ),
        (
            "cleanupTempPVC",
            rd().set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
        ),
        (
            "cleanupTempPVC with Direct",
            rd().set("spec.rsyncTLS.copyMethod", json!("Direct"))
                .set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
        ),
        (
            "cleanupTempPVC with destinationPVC",
            rd().set("spec.rsyncTLS.destinationPVC", json!("mine"))
                .set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
        ),
        (
            "no destinationPVC and no capacity",
            rd().remove("spec.rsyncTLS.capacity"),
        ),
        (
            "no destinationPVC and no accessModes",
            rd().remove("spec.rsyncTLS.accessModes"),
        ),
        (
            "serviceType NodePort",
            rd().set("spec.rsyncTLS.serviceType", json!("NodePort")),
        ),
        (
            "serviceType ExternalName",
            rd().set("spec.rsyncTLS.serviceType", json!("ExternalName")),
        ),
        (
            "serviceType Tunnel",
            rd().set("spec.rsyncTLS.serviceType", json!("Tunnel")),
        ),
        (
            "destination accessModes item unknown",
            rd().set("spec.rsyncTLS.accessModes", json!(["ReadWriteAlways"])),
        ),
        (
            "source accessModes item unknown",
            rs().set("spec.rsyncTLS.accessModes", json!(["RWO"])),
        ),
        ("no address", rs().remove("spec.rsyncTLS.address")),
        (
            "empty address",
            rs().set("spec.rsyncTLS.address", json!("")),
        ),
        ("rsyncTLS without sourcePVC", rs().remove("spec.sourcePVC")),
        ("port 0", rs().set("spec.rsyncTLS.port", json!(0))),
        (
            "port 65535 and an integer capacity",
            rs().set("spec.rsyncTLS.port", json!(65535))
                .set("spec.rsyncTLS.capacity", json!(1073741824)),
        ),
        (
            "schedule @hourly",
            rs().set("spec.trigger.schedule", json!("@hourly")),
        ),
        (
            "schedule @annually",
            rd().set("spec.trigger.schedule", json!("@annually")),
        ),
        (
            "manual trigger",
            rs().set("spec.trigger", json!({"manual": "now"})),
        ),
        // VolSync's pattern anchors its alternatives at one end each, so these pass.
        (
            "schedule with 6 fields",
            rs().set("spec.trigger.schedule", json!("0 */5 * * * *")),
        ),
        (
            "destination schedule with 6 fields",
            rd().set("spec.trigger.schedule", json!("* * * * * *")),
        ),
        (
            "a descriptor with words after it",
            rs().set("spec.trigger.schedule", json!("@hourly or so")),
        ),
        (
            "words before five fields",
            rd().set("spec.trigger.schedule", json!("at 0 0 * * *")),
        ),
        ("paused", rs().set("spec.paused", json!(true))),
        (
            "two movers at once",
            rs().set("spec.restic", json!({"repository": "restic-config"})),
        ),
    ]
}

#[tokio::test]
async fn what_volsync_admits_is_admitted() {
    let ns = control_plane().namespace("valid-bases").await;
    let mut failures = Vec::new();
    for (what, obj) in admitted() {
        if let Err(e) = fixtures::create(&ns.client, &ns.name, &obj.0, true).await {
            failures.push(format!("{what}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "VolSync admits these:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn invalid_objects_are_rejected_naming_the_field() {
    let ns = control_plane().namespace("invalid").await;
    let table = table();
    assert!(table.len() >= 14);
    let mut failures = Vec::new();
    for Case {
        what,
        object,
        field,
    } in table
    {
        match fixtures::create(&ns.client, &ns.name, &object.0, true).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) => {
                // Printed so `--nocapture` shows the table with the apiserver's words.
                println!("| {} | {what} | {} |", object.kind(), status.message);
                if status.code != 422 || !status.message.contains(field) {
                    failures.push(format!(
                        "{what}: {} {:?} does not name {field}",
                        status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{what}: {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
