//! Least privilege, proven: the (resource, verb) pairs the controller's ServiceAccount used
//! across the end-to-end suite, read from the apiserver's audit log, against the rules in
//! `deploy/base/rbac.yaml`. It fails when the controller was ever forbidden something, and when
//! the RBAC grants a verb the controller never used.
//!
//! `scripts/test.sh` runs the suite with `FERROSYNC_AUDIT_LOG` set, then this (ignored by
//! a plain `cargo test`, since it needs that log).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{api::rbac::v1::PolicyRule, jiff::Timestamp};
use serde::Deserialize;
use serde_json::Value;

const USER: &str = "system:serviceaccount:ferrosync-system:ferrosync";

/// `group/resource[/subresource]` and a verb.
type Use = (String, String);

#[derive(Deserialize)]
struct RoleDoc {
    kind: String,
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

fn granted() -> BTreeSet<Use> {
    let text = std::fs::read_to_string(
        std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        )
        .join("deploy/base/rbac.yaml"),
    )
    .expect("deploy/rbac.yaml");
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let Ok(role) = RoleDoc::deserialize(doc) else {
            continue;
        };
        if !role.kind.ends_with("Role") {
            continue;
        }
        for rule in role.rules {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        out.insert((format!("{group}/{resource}"), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

/// What the controller did, and what it was refused.
/// When a test restarted an apiserver (`ControlPlane::restart`): from the restart until
/// shortly after /readyz, as `(from, until)` in RFC 3339, one JSON line each in
/// `<audit log>.restarts`.
type Windows = Vec<(Timestamp, Timestamp)>;

fn restart_windows(audit_log: &str) -> Windows {
    let text = std::fs::read_to_string(format!("{audit_log}.restarts")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|w| {
            Some((
                w["from"].as_str()?.parse().ok()?,
                w["until"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

fn used(events: &[Value], restarts: &Windows) -> (BTreeSet<Use>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut forbidden = Vec::new();
    for e in events.iter().filter(|e| e["user"]["username"] == USER) {
        let object = &e["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue;
        };
        let group = object["apiGroup"].as_str().unwrap_or("");
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{group}/{resource}/{sub}"),
            None => format!("{group}/{resource}"),
        };
        let verb = e["verb"].as_str().unwrap_or("").to_string();
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        // A namespace being deleted refuses new objects with 403 too; that is the
        // NamespaceLifecycle admission plugin, not authorisation (the request was allowed).
        let terminating = e["responseStatus"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("because it is being terminated"));
        // A restarted apiserver answers before its authoriser's caches are filled, and
        // refuses everyone until they are: not a missing rule.
        let received: Option<Timestamp> = e["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok());
        let restarting = received.is_some_and(|t| {
            restarts
                .iter()
                .any(|(from, until)| *from <= t && t <= *until)
        });
        if code == 403 && restarting {
            continue;
        }
        if code == 403 && !terminating {
            forbidden.push(format!(
                "{verb} {resource}: {}",
                e["responseStatus"]["message"]
            ));
            continue;
        }
        // Server-side apply that creates an object is a patch answered 201, and the
        // apiserver authorises it as create too.
        if verb == "patch" && code == 201 {
            used.insert((resource.clone(), "create".to_string()));
        }
        used.insert((resource, verb));
    }
    (used, forbidden)
}

/// The events of `path` and of any rotated files beside it (`<stem>-<time>.log`), should
/// an apiserver have rotated it despite `--audit-log-maxsize`.
fn read_log_and_rotations(path: &std::path::Path) -> Vec<Value> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.push(path.to_path_buf());
    let mut events = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        events.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    events
}

#[test]
#[ignore = "needs the audit log of an end-to-end run: scripts/test.sh runs it"]
fn the_controller_uses_every_granted_verb_and_nothing_is_forbidden() {
    let path = std::env::var("FERROSYNC_AUDIT_LOG")
        .expect("FERROSYNC_AUDIT_LOG names the end-to-end audit log");
    let events = read_log_and_rotations(std::path::Path::new(&path));
    let (used, forbidden) = used(&events, &restart_windows(&path));
    assert!(
        !used.is_empty(),
        "no request by {USER} in {path}: did the suite run the controller as its ServiceAccount?"
    );
    assert!(
        forbidden.is_empty(),
        "the controller was forbidden:\n{}",
        forbidden.join("\n")
    );

    let granted = granted();
    let unused: Vec<&Use> = granted.iter().filter(|g| !used.contains(*g)).collect();
    let mut report = BTreeMap::new();
    for (resource, verb) in &used {
        report
            .entry(resource.clone())
            .or_insert_with(Vec::new)
            .push(verb.clone());
    }
    eprintln!("verbs the controller used: {report:#?}");
    assert!(
        unused.is_empty(),
        "deploy/base/rbac.yaml grants verbs the controller never used across the suite: {unused:?}"
    );
    // Everything used was granted (otherwise the apiserver would have said 403 above).
    let ungranted: Vec<&Use> = used.iter().filter(|u| !granted.contains(*u)).collect();
    assert!(
        ungranted.is_empty(),
        "used but not granted (wildcards?): {ungranted:?}"
    );
}

#[test]
fn the_checker_reads_rules_and_audit_events() {
    let granted = granted();
    assert!(
        granted.contains(&("batch/jobs".to_string(), "delete".to_string())),
        "{granted:?}"
    );
    let events = vec![
        serde_json::json!({"user": {"username": USER}, "verb": "patch", "objectRef": {"resource": "jobs", "apiGroup": "batch"}, "responseStatus": {"code": 201}}),
        serde_json::json!({"user": {"username": USER}, "verb": "get", "objectRef": {"resource": "pods", "subresource": "log"}, "responseStatus": {"code": 403, "message": "no"}}),
        serde_json::json!({"user": {"username": "admin"}, "verb": "delete", "objectRef": {"resource": "pods"}, "responseStatus": {"code": 200}}),
        serde_json::json!({"user": {"username": USER}, "verb": "create", "objectRef": {"resource": "jobs", "apiGroup": "batch"}, "responseStatus": {"code": 403, "message": "jobs.batch \"j\" is forbidden: unable to create new content in namespace n because it is being terminated"}}),
        serde_json::json!({"user": {"username": USER}, "verb": "watch", "objectRef": {"resource": "jobs", "apiGroup": "batch"}, "requestReceivedTimestamp": "2026-11-30T12:00:01.000000Z", "responseStatus": {"code": 403, "message": "restarting"}}),
    ];
    let restarts = vec![(
        "2026-11-30T12:00:00Z".parse().unwrap(),
        "2026-11-30T12:00:05Z".parse().unwrap(),
    )];
    let (used, forbidden) = used(&events, &restarts);
    assert!(
        used.contains(&("batch/jobs".to_string(), "create".to_string())),
        "an apply that created counts as create"
    );
    assert!(used.contains(&("batch/jobs".to_string(), "patch".to_string())));
    assert_eq!(forbidden.len(), 1);
    assert_eq!(used.len(), 2, "other users are not the controller");
}
