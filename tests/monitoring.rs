//! `deploy/monitoring`: the alert rules under `promtool check rules` and `promtool test
//! rules` (synthetic series), the Grafana dashboard and the rules querying only metrics
//! the controller exposes, and every object applied to a real apiserver with the
//! Prometheus Operator's CRDs.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use ferrosync::{
    policy::metrics::{DecisionLabels, FailureLabels, PluginLabels, PolicyMetrics, ReloadLabels},
    telemetry::{Exposition, Metrics, ObjectLabels},
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::{bins, crds, deploy};

fn monitoring(file: &str) -> PathBuf {
    bins::repo_root().join("deploy/monitoring").join(file)
}

/// Every sample name the controller's /metrics can show, from the real registrations
/// with one observation in each family; plus Prometheus' own `up`.
fn exposed_series() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let policy = PolicyMetrics::default();
    policy.register(&mut registry);
    let labels = ObjectLabels::new("ns", "o", "source");
    metrics.observe_pass(&labels, false, false);
    metrics.observe_sync(&labels, 1.0, 1);
    metrics.observe_schedule(
        &labels,
        Some("*/5 * * * *"),
        k8s_openapi::jiff::Timestamp::now(),
    );
    metrics.observe_recovery_point(
        &labels,
        Some(k8s_openapi::jiff::Timestamp::now()),
        Some(std::time::Duration::from_secs(900)),
    );
    metrics.observe_reconcile("ReplicationSource", Some("Kube"));
    let (point, plugin) = ("psk".to_string(), "p".to_string());
    policy
        .decisions
        .get_or_create(&DecisionLabels {
            point: point.clone(),
            plugin: plugin.clone(),
            outcome: "plugin".into(),
        })
        .inc();
    policy
        .failures
        .get_or_create(&FailureLabels {
            point: point.clone(),
            plugin: plugin.clone(),
            kind: "trap".into(),
        })
        .inc();
    let run = PluginLabels { point, plugin };
    policy.latency.get_or_create(&run).observe(0.001);
    policy.fuel.get_or_create(&run).observe(1e5);
    policy
        .reloads
        .get_or_create(&ReloadLabels {
            result: "ok".into(),
        })
        .inc();
    let text = Exposition::new(registry, metrics)
        .encode()
        .expect("encodes");
    let mut names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    names.insert("up".into());
    names
}

/// The `volsync_*` / `ferrosync_*` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex_lite::Regex::new(r"\b(?:volsync|ferrosync)_[a-zA-Z0-9_]+").expect("regex");
    let mut names: BTreeSet<String> = re.find_iter(expr).map(|m| m.as_str().to_string()).collect();
    if regex_lite::Regex::new(r"\bup\s*\{")
        .expect("regex")
        .is_match(expr)
    {
        names.insert("up".into());
    }
    names
}

/// Every query string in a Grafana dashboard: panel targets and variable queries.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        // A data-source variable's query is the data source's type, not PromQL.
        Value::Object(map) if map.get("type") == Some(&Value::String("datasource".into())) => {}
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The PrometheusRule's alert expressions by alert name.
fn alert_rules() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(monitoring("prometheusrule.yaml")).expect("rules");
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let mut out = BTreeMap::new();
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            out.insert(
                r["alert"].as_str().expect("alert rules only").to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            );
        }
    }
    out
}

#[test]
fn the_dashboard_is_valid_json_and_queries_only_exposed_metrics() {
    let text = std::fs::read_to_string(monitoring("grafana-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "every panel has a unique id");

    let exposed = exposed_series();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= panels.len(), "{queries:?}");
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "query {query:?} names no ferrosync metric"
        );
        for name in names {
            assert!(
                exposed.contains(&name),
                "the dashboard queries {name}, which the controller does not expose ({query})\nexposed: {exposed:?}"
            );
            used.insert(name);
        }
    }
    // VolSync's three metrics are all on it.
    for name in [
        "volsync_volume_out_of_sync",
        "volsync_missed_intervals_total",
        "volsync_sync_duration_seconds",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
}

#[test]
fn alert_rules_query_only_exposed_metrics() {
    let exposed = exposed_series();
    let rules = alert_rules();
    for alert in [
        "FerrosyncVolumeOutOfSync",
        "FerrosyncMissedIntervals",
        "FerrosyncSyncDurationNearInterval",
        "FerrosyncPolicyFailures",
        "FerrosyncControllerDown",
        "FerrosyncRecoveryPointObjectiveMissed",
    ] {
        assert!(rules.contains_key(alert), "{alert} is defined: {rules:?}");
    }
    for (alert, expr) in &rules {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert}: {expr}");
        for name in names {
            assert!(
                exposed.contains(&name),
                "{alert} queries {name}, never exposed"
            );
        }
    }
}

/// Writes the PrometheusRule's spec (the plain rule file promtool reads) and the rule
/// tests into `dir`.
fn promtool_workdir(dir: &Path, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(monitoring("prometheusrule.yaml")).expect("rules");
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let spec = serde_yaml_ng::to_string(&rule["spec"]).expect("spec");
    std::fs::write(dir.join("ferrosync.rules.yaml"), edit(spec)).expect("rules file");
    std::fs::copy(
        monitoring("tests/rules-test.yaml"),
        dir.join("rules-test.yaml"),
    )
    .expect("rule tests");
}

fn promtool(args: &[&Path], sub: &[&str]) -> (bool, String) {
    let bin = bins::tool("promtool").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin)
        .args(sub)
        .args(args)
        .output()
        .expect("running promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    promtool_workdir(dir.path(), |spec| spec);
    let rules = dir.path().join("ferrosync.rules.yaml");
    let (ok, out) = promtool(&[&rules], &["check", "rules"]);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alert_rules().len())),
        "{out}"
    );
    let (ok, out) = promtool(&[&dir.path().join("rules-test.yaml")], &["test", "rules"]);
    assert!(ok, "promtool test rules:\n{out}");

    // The rule tests have teeth: a threshold moved from 80 % to 95 % of the interval
    // makes them fail.
    let dir = tempfile::tempdir().expect("tempdir");
    promtool_workdir(dir.path(), |spec| {
        assert!(spec.contains("> 0.8 *"), "{spec}");
        spec.replace("> 0.8 *", "> 0.95 *")
    });
    let (ok, out) = promtool(&[&dir.path().join("rules-test.yaml")], &["test", "rules"]);
    assert!(!ok, "a changed threshold must fail the rule tests:\n{out}");
    assert!(out.contains("FerrosyncSyncDurationNearInterval"), "{out}");

    // So do the recovery point alert's: an objective doubled, or the alert taken off the
    // copy's side (a source's stale timestamp would fire it).
    for (from, to) in [
        (
            "> on (obj_namespace, obj_name, role, method) max",
            "> on (obj_namespace, obj_name, role, method) 2 * max",
        ),
        (
            r#"ferrosync_last_sync_timestamp_seconds{role="destination"}"#,
            "ferrosync_last_sync_timestamp_seconds",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        promtool_workdir(dir.path(), |spec| {
            assert!(spec.contains(from), "{spec}");
            spec.replace(from, to)
        });
        let (ok, out) = promtool(&[&dir.path().join("rules-test.yaml")], &["test", "rules"]);
        assert!(!ok, "{to:?} must fail the rule tests:\n{out}");
        assert!(
            out.contains("FerrosyncRecoveryPointObjectiveMissed"),
            "{out}"
        );
    }
}

fn dynamic(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

#[tokio::test]
async fn monitoring_objects_apply_to_a_real_apiserver() {
    let cp = support::control_plane();
    let client = cp.client().await;
    let files = bins::monitoring_crd_files().unwrap_or_else(|e| panic!("{e}"));
    crds::install(
        &client,
        &crds::load(&files).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let namespace = std::fs::read_to_string(bins::repo_root().join("deploy/base/namespace.yaml"))
        .expect("namespace.yaml");
    deploy::apply(cp, &namespace);
    // kubectl's strict field validation: a field the CRDs do not know fails the apply.
    deploy::apply(cp, &deploy::render_dir(cp, "deploy/monitoring"));

    let ns = deploy::NAMESPACE;
    let monitors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &dynamic(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
            "servicemonitors",
        ),
    );
    let monitor = monitors
        .get("ferrosync-controller")
        .await
        .expect("ServiceMonitor");
    let rules: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &dynamic(
            "monitoring.coreos.com",
            "v1",
            "PrometheusRule",
            "prometheusrules",
        ),
    );
    let rule = rules.get("ferrosync").await.expect("PrometheusRule");
    let mut stored: Vec<&str> = rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules stored")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        alert_rules().keys().map(String::as_str).collect::<Vec<_>>()
    );

    // The ServiceMonitor selects the metrics Service, whose port is the Deployment's.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let service = services
        .get("ferrosync-controller-metrics")
        .await
        .expect("metrics Service");
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    let selector = monitor.data["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(
            service_labels.get(k).map(String::as_str),
            v.as_str(),
            "the ServiceMonitor selects the Service by {k}"
        );
    }
    let endpoint = &monitor.data["spec"]["endpoints"][0];
    let spec = service.spec.expect("spec");
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(endpoint["port"].as_str(), port.name.as_deref());
    assert_eq!(endpoint["scheme"].as_str(), Some("https"));

    let rendered = deploy::render(cp);
    let deployment = rendered
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Deployment"))
        .expect("the Deployment in deploy/");
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_yaml_ng::from_str(deployment).expect("Deployment");
    let pod = deployment.spec.expect("spec").template;
    let pod_labels = pod.metadata.and_then(|m| m.labels).unwrap_or_default();
    for (k, v) in spec.selector.expect("selector") {
        assert_eq!(
            pod_labels.get(&k),
            Some(&v),
            "the Service selects the pods by {k}"
        );
    }
    let container_port = pod.spec.expect("pod spec").containers[0]
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|p| {
            Some(p.name.clone().unwrap_or_default()) == port.target_port.as_ref().map(target_name)
        })
        .expect("the container has the Service's target port");
    assert_eq!(container_port.container_port, 8443);

    let dashboards: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns);
    let dashboard = dashboards
        .get("ferrosync-grafana-dashboard")
        .await
        .expect("dashboard ConfigMap");
    assert_eq!(
        dashboard
            .metadata
            .labels
            .unwrap_or_default()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1")
    );
    let json = &dashboard.data.unwrap_or_default()["ferrosync.json"];
    serde_json::from_str::<Value>(json).expect("the stored dashboard is JSON");
}

fn target_name(port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> String {
    match port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
    }
}
