//! A table of invalid objects, each rejected by the real apiserver with a message that
//! names the bad field: type errors, every enum, quantity format, minItems, cron field
//! count, the port range, and every cross-field CEL rule in `src/api/`.

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
        // Every enum.
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
        case(
            "serviceType NodePort",
            rd().set("spec.rsyncTLS.serviceType", json!("NodePort")),
            "spec.rsyncTLS.serviceType",
        ),
        case(
            "destination accessModes item unknown",
            rd().set("spec.rsyncTLS.accessModes", json!(["ReadWriteAlways"])),
            "spec.rsyncTLS.accessModes[0]",
        ),
        case(
            "source accessModes item unknown",
            rs().set("spec.rsyncTLS.accessModes", json!(["RWO"])),
            "spec.rsyncTLS.accessModes[0]",
        ),
        case(
            "volumeMode Raw",
            rd().set("spec.rsyncTLS.volumeMode", json!("Raw")),
            "spec.rsyncTLS.volumeMode",
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
        // Cron field count.
        case(
            "schedule with 4 fields",
            rs().set("spec.trigger.schedule", json!("*/5 * * *")),
            "spec.trigger.schedule",
        ),
        case(
            "schedule with 6 fields",
            rs().set("spec.trigger.schedule", json!("0 */5 * * * *")),
            "spec.trigger.schedule",
        ),
        case(
            "destination schedule with 6 fields",
            rd().set("spec.trigger.schedule", json!("* * * * * *")),
            "spec.trigger.schedule",
        ),
        // Port range.
        case(
            "port 0",
            rs().set("spec.rsyncTLS.port", json!(0)),
            "spec.rsyncTLS.port",
        ),
        case(
            "port 65536",
            rs().set("spec.rsyncTLS.port", json!(65536)),
            "spec.rsyncTLS.port",
        ),
        // Cross-field CEL rules, destination.
        case(
            "no destinationPVC and no capacity",
            rd().remove("spec.rsyncTLS.capacity"),
            "spec.rsyncTLS.capacity",
        ),
        case(
            "no destinationPVC and no accessModes",
            rd().remove("spec.rsyncTLS.accessModes"),
            "spec.rsyncTLS.accessModes",
        ),
        case(
            "destination copyMethod Clone",
            rd().set("spec.rsyncTLS.copyMethod", json!("Clone")),
            "spec.rsyncTLS.copyMethod",
        ),
        case(
            "cleanupTempPVC with Direct",
            rd().set("spec.rsyncTLS.copyMethod", json!("Direct"))
                .set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
            "spec.rsyncTLS.cleanupTempPVC",
        ),
        case(
            "cleanupTempPVC with destinationPVC",
            rd().set("spec.rsyncTLS.destinationPVC", json!("mine"))
                .set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
            "spec.rsyncTLS.cleanupTempPVC",
        ),
        // Cross-field CEL rules, source.
        case(
            "no address",
            rs().remove("spec.rsyncTLS.address"),
            "spec.rsyncTLS.address",
        ),
        case(
            "empty address",
            rs().set("spec.rsyncTLS.address", json!("")),
            "spec.rsyncTLS.address",
        ),
        case(
            "rsyncTLS without sourcePVC",
            rs().remove("spec.sourcePVC"),
            "spec.sourcePVC",
        ),
    ]
}

#[tokio::test]
/// The bases of the table are valid, and so are the edge cases the schema must admit.
async fn the_valid_bases_are_accepted() {
    let ns = control_plane().namespace("valid-bases").await;
    for obj in [
        destination("ok-dest"),
        source("ok-source"),
        destination("ok-pvc")
            .remove("spec.rsyncTLS.capacity")
            .remove("spec.rsyncTLS.accessModes")
            .set("spec.rsyncTLS.destinationPVC", json!("mine")),
        // Without rsyncTLS: the controller, not the schema, reports the unsupported method.
        destination("no-method").remove("spec.rsyncTLS"),
        source("no-method")
            .remove("spec.rsyncTLS")
            .remove("spec.sourcePVC"),
        // Block is admitted (and reported as unsupported by the controller).
        destination("block").set("spec.rsyncTLS.volumeMode", json!("Block")),
        destination("none").set("spec.rsyncTLS.copyMethod", json!("None")),
        destination("cleanup").set("spec.rsyncTLS.cleanupTempPVC", json!(true)),
        source("descriptor").set("spec.trigger.schedule", json!("@hourly")),
        source("manual").set("spec.trigger", json!({"manual": "now"})),
        source("ports")
            .set("spec.rsyncTLS.port", json!(65535))
            .set("spec.rsyncTLS.capacity", json!(1073741824)),
    ] {
        fixtures::create(&ns.client, &ns.name, &obj.0, true)
            .await
            .unwrap_or_else(|e| panic!("{} should be valid: {e}", obj.0));
    }
}

#[tokio::test]
async fn invalid_objects_are_rejected_naming_the_field() {
    let ns = control_plane().namespace("invalid").await;
    let table = table();
    assert!(table.len() >= 15);
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
