//! The Helm chart (`deploy/helm/ferrosync`): `helm lint`, `helm template` with every knob
//! the values offer, the same objects as `kubectl kustomize deploy/` (no drift), and an
//! install, upgrade and uninstall on a real apiserver.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::{Value, json};
use support::{bins, crds, deploy};

const CHART: &str = "deploy/helm/ferrosync";

/// Labels and annotations the chart adds that kustomize does not.
const CHART_LABELS: &[&str] = &[
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

fn chart() -> PathBuf {
    bins::repo_root().join(CHART)
}

/// `helm <args>` with its state in a scratch directory; stdout, or a panic with stderr.
fn helm(args: &[&str]) -> String {
    let (ok, out, err) = helm_status(args);
    assert!(ok, "helm {}:\n{err}{out}", args.join(" "));
    out
}

fn helm_status(args: &[&str]) -> (bool, String, String) {
    let bin = bins::tool("helm").unwrap_or_else(|e| panic!("{e}"));
    let home = std::env::temp_dir().join("ferrosync-helm-home");
    let out = Command::new(bin)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart into `ferrosync-system`, CRDs and the monitoring kinds
/// included, with `extra` arguments (values).
fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "ferrosync",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        deploy::NAMESPACE,
        "--include-crds",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ];
    args.extend(extra);
    documents(&helm(&args))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value = Value::deserialize(doc).expect("rendered YAML parses");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is rendered"))
}

fn values_file(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("values.yaml");
    std::fs::write(&path, yaml).expect("values file");
    path
}

#[test]
fn the_chart_lints_cleanly() {
    let chart = chart();
    let out = helm(&["lint", "--strict", chart.to_str().expect("utf-8")]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // The values CI uses for the parity check lint too.
    let ci = chart.join("ci/kustomize-parity-values.yaml");
    helm(&[
        "lint",
        "--strict",
        chart.to_str().expect("utf-8"),
        "-f",
        ci.to_str().expect("utf-8"),
    ]);
}

#[test]
fn every_value_reaches_the_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = values_file(
        dir.path(),
        r#"
replicaCount: 3
image: {repository: registry.example/ferrosync, tag: "9.9.9", pullPolicy: Always}
imagePullSecrets: [{name: controller-pull}]
mover:
  image: {repository: registry.example/mover, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
  imagePullSecrets: [mover-pull]
  backoffLimit: 4
log: {format: text, level: debug}
metrics: {certSecret: metrics-tls, serviceMonitor: {labels: {release: prom}}}
policies:
  bundles: [aws-ebs, vault]
  copyMethod: {bundle: aws-ebs, onFailure: fallback}
  psk: {bundle: vault, onFailure: fail}
resources: {requests: {cpu: 200m, memory: 100Mi}, limits: {memory: 1Gi}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: storage, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
priorityClassName: system-cluster-critical
extraConfig: |
  [reconcile]
  concurrency = 16
"#,
    );
    let objects = template(&["-f", values.to_str().expect("utf-8")]);
    let deployment = find(&objects, "Deployment", "ferrosync-controller");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/ferrosync:9.9.9");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "controller-pull"}])
    );
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["value"], "storage");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "zone"
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/ferrosync",
            "/var/cache/ferrosync",
            "/etc/ferrosync/metrics-tls",
            "/etc/ferrosync-policies/aws-ebs",
            "/etc/ferrosync-policies/vault"
        ]
    );
    let bundles: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("ferrosync-policy-"))
        .collect();
    assert_eq!(
        bundles,
        ["ferrosync-policy-aws-ebs", "ferrosync-policy-vault"]
    );
    let monitor = find(&objects, "ServiceMonitor", "ferrosync-controller");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");

    // The configuration the controller reads carries the rest, and loads.
    let toml = find(&objects, "ConfigMap", "ferrosync-config")["data"]["config.toml"]
        .as_str()
        .expect("config.toml")
        .to_string();
    assert!(
        toml.contains(r#"image_pull_secrets = ["mover-pull"]"#),
        "{toml}"
    );
    // mover.image_pull_secrets is the behaviours branch's key; check the rest loads.
    let without_pull = toml.replace(r#"image_pull_secrets = ["mover-pull"]"#, "");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &without_pull).expect("config");
    let config = ferrosync::config::Config::load(Some(&file))
        .unwrap_or_else(|e| panic!("the chart's configuration loads: {e}\n{toml}"));
    assert_eq!(
        config.mover.image,
        "registry.example/mover@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(config.mover.backoff_limit, 4);
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, ferrosync::config::LogFormat::Text);
    assert_eq!(config.reconcile.concurrency, 16);
    assert!(config.leader_election.enabled);
    assert!(config.metrics.secure);
    assert_eq!(
        config.metrics.cert_file.as_deref(),
        Some(Path::new("/etc/ferrosync/metrics-tls/tls.crt"))
    );
    let policy = serde_json::to_value(&config.policy).expect("policy");
    assert_eq!(
        policy["copy_method"]["bundle"],
        "/etc/ferrosync-policies/aws-ebs"
    );
    assert_eq!(policy["psk"]["on_failure"], "fail");

    // A decision point naming a bundle that is not installed is refused at render time.
    let (ok, _, err) = helm_status(&[
        "template",
        "x",
        chart().to_str().expect("utf-8"),
        "--set",
        "policies.bundles={aws-ebs}",
        "--set",
        "policies.psk.bundle=vault",
    ]);
    assert!(!ok && err.contains("policies.psk.bundle"), "{err}");
}

/// `kubectl kustomize <dir>` with the test control plane's kubectl.
fn kustomize(cp: &support::ControlPlane, dir: &str) -> Vec<Value> {
    documents(&deploy::render_dir(cp, dir))
}

/// kustomize's ConfigMap name without its content hash.
fn unhashed(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((stem, hash))
            if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            stem.to_string()
        }
        _ => name.to_string(),
    }
}

/// An object as both renderings should agree on it: no chart labels or annotations, no
/// hash suffixes in ConfigMap names or references.
fn normalized(object: &Value) -> Value {
    let mut o = without_nulls(object);
    for field in ["labels", "annotations"] {
        if let Some(map) = o["metadata"][field].as_object_mut() {
            for label in CHART_LABELS {
                map.remove(*label);
            }
            if map.is_empty() {
                o["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove(field);
            }
        }
    }
    if o["kind"] == "CustomResourceDefinition" {
        // Helm installs crds/ verbatim, without templating, so it cannot add kustomize's
        // part-of label to them.
        if let Some(map) = o["metadata"]["labels"].as_object_mut() {
            map.remove("app.kubernetes.io/part-of");
            if map.is_empty() {
                o["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("labels");
            }
        }
    }
    if o["kind"] == "ConfigMap" {
        let name = unhashed(o["metadata"]["name"].as_str().unwrap_or_default());
        o["metadata"]["name"] = json!(name);
    }
    if o["kind"] == "Deployment" {
        let template = &mut o["spec"]["template"]["metadata"];
        if let Some(map) = template["annotations"].as_object_mut() {
            map.remove("checksum/config");
            if map.is_empty() {
                template
                    .as_object_mut()
                    .expect("metadata")
                    .remove("annotations");
            }
        }
        for volume in o["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(name) = volume["configMap"]["name"].as_str() {
                volume["configMap"]["name"] = json!(unhashed(name));
            }
        }
    }
    o
}

/// `value` without null fields: to the apiserver a null field is an absent one (the CRD
/// generator writes `labels: null`, kustomize drops it).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The path and both values of the first difference between `a` and `b`.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: chart {a} vs kustomize {b}")),
    }
}

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        unhashed(o["metadata"]["name"].as_str().unwrap_or_default()),
    )
}

/// The configuration a `ferrosync-config` ConfigMap holds, as the controller loads it.
fn loaded_config(object: &Value, dir: &Path) -> ferrosync::config::Config {
    let toml = object["data"]["config.toml"].as_str().expect("config.toml");
    let file = dir.join("config.toml");
    std::fs::write(&file, toml).expect("config");
    ferrosync::config::Config::load(Some(&file)).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

#[test]
fn kustomize_and_the_chart_render_the_same_objects() {
    let cp = support::control_plane();
    let dir = tempfile::tempdir().expect("tempdir");
    let parity = chart().join("ci/kustomize-parity-values.yaml");
    let parity = parity.to_str().expect("utf-8");

    // deploy/ and deploy/monitoring against the chart without bundles (the base mounts
    // none); deploy/policies against the chart's bundles.
    let mut kustomized = kustomize(cp, "deploy");
    kustomized.extend(kustomize(cp, "deploy/monitoring"));
    let charted = template(&["-f", parity, "--set-json", "policies.bundles=[]"]);
    let bundles_kustomized = kustomize(cp, "deploy/policies");
    let bundles_charted = template(&["-f", parity]);

    let by_key = |objects: &[Value]| -> BTreeMap<(String, String), Value> {
        objects.iter().map(|o| (key(o), normalized(o))).collect()
    };
    let (k, h) = (by_key(&kustomized), by_key(&charted));
    let only_kustomize: Vec<_> = k.keys().filter(|key| !h.contains_key(*key)).collect();
    // Helm installs into a namespace it is given (--create-namespace), it does not own it.
    assert_eq!(
        only_kustomize,
        [&("Namespace".to_string(), deploy::NAMESPACE.to_string())],
        "objects of deploy/ the chart lacks"
    );
    let only_chart: Vec<_> = h.keys().filter(|key| !k.contains_key(*key)).collect();
    assert!(
        only_chart.is_empty(),
        "objects the chart adds: {only_chart:?}"
    );
    let mut compared = 0;
    for (key, kustomize_object) in &k {
        let Some(chart_object) = h.get(key) else {
            continue;
        };
        compared += 1;
        if key == &("ConfigMap".to_string(), "ferrosync-config".to_string()) {
            // Same configuration, however the TOML is laid out.
            assert_eq!(
                loaded_config(chart_object, dir.path()),
                loaded_config(kustomize_object, dir.path()),
                "the controller's configuration"
            );
            continue;
        }
        if let Some(difference) = first_difference(chart_object, kustomize_object, "") {
            panic!("{key:?} differs between the chart and kustomize at {difference}");
        }
    }
    assert!(compared >= 12, "compared only {compared} objects");

    let (kb, hb) = (by_key(&bundles_kustomized), by_key(&bundles_charted));
    assert_eq!(kb.len(), 3, "three bundles in deploy/policies");
    for (key, kustomize_object) in &kb {
        let chart_object = hb
            .get(key)
            .unwrap_or_else(|| panic!("the chart ships bundle {key:?}"));
        assert_eq!(chart_object["data"], kustomize_object["data"], "{key:?}");
        // kustomize wraps base64 at 76 columns, Helm does not: compare without whitespace.
        let binary = |o: &Value| -> BTreeMap<String, String> {
            o["binaryData"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let text = v.as_str().unwrap_or_default();
                    (k.clone(), text.split_whitespace().collect())
                })
                .collect()
        };
        let (chart_binary, kustomize_binary) = (binary(chart_object), binary(kustomize_object));
        assert_eq!(
            chart_binary.keys().collect::<Vec<_>>(),
            kustomize_binary.keys().collect::<Vec<_>>(),
            "{key:?}"
        );
        assert!(
            chart_binary == kustomize_binary,
            "{key:?}: the component's bytes differ"
        );
    }
}

#[tokio::test]
async fn the_chart_installs_upgrades_and_uninstalls_on_a_real_apiserver() {
    use k8s_openapi::{
        api::{
            apps::v1::Deployment,
            core::v1::{ConfigMap, Service, ServiceAccount},
            rbac::v1::ClusterRole,
        },
        apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    };
    use kube::{
        Api,
        api::{ApiResource, DynamicObject, GroupVersionKind},
    };

    let cp = support::control_plane();
    let client = cp.client().await;
    // The monitoring kinds, so the chart's ServiceMonitor and PrometheusRule install.
    let files = bins::monitoring_crd_files().unwrap_or_else(|e| panic!("{e}"));
    crds::install(
        &client,
        &crds::load(&files).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = cp.kubeconfig.to_str().expect("utf-8").to_string();
    let chart = chart();
    let chart = chart.to_str().expect("utf-8");
    let ns = "ferrosync-helm";
    let install = [
        "install",
        "ferrosync",
        chart,
        "--namespace",
        ns,
        "--create-namespace",
        "--kubeconfig",
        kubeconfig.as_str(),
    ];
    helm(&install);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployments
        .get("ferrosync-controller")
        .await
        .expect("the Deployment is installed");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get("ferrosync")
        .await
        .expect("ServiceAccount");
    Api::<Service>::namespaced(client.clone(), ns)
        .get("ferrosync-controller-metrics")
        .await
        .expect("metrics Service");
    let role = Api::<ClusterRole>::all(client.clone())
        .get("ferrosync-controller")
        .await
        .expect("ClusterRole");
    assert!(
        role.rules
            .unwrap_or_default()
            .iter()
            .any(|r| r.resources.as_deref() == Some(&["tokenreviews".to_string()][..])),
        "the controller's rules come from deploy/base/rbac.yaml"
    );
    for name in [
        "ferrosync-view",
        "ferrosync-edit",
        "ferrosync-metrics-reader",
    ] {
        Api::<ClusterRole>::all(client.clone())
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("ClusterRole {name}: {e}"));
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let vault = config_maps
        .get("ferrosync-policy-vault")
        .await
        .expect("the vault bundle");
    let wasm = std::fs::read(bins::repo_root().join("policies/vault/psk-from-vault.wasm"))
        .expect("the component");
    assert_eq!(
        vault.binary_data.unwrap_or_default()["psk-from-vault.wasm"].0,
        wasm,
        "the component's bytes survive the chart"
    );
    for (kind, plural, name) in [
        ("ServiceMonitor", "servicemonitors", "ferrosync-controller"),
        ("PrometheusRule", "prometheusrules", "ferrosync"),
    ] {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
            plural,
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
    }

    // An upgrade with a changed configuration rolls the pods (the checksum changes).
    let checksum = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("checksum/config").cloned())
    };
    let before = checksum(&deployment).expect("checksum annotation");
    helm(&[
        "upgrade",
        "ferrosync",
        chart,
        "--namespace",
        ns,
        "--kubeconfig",
        kubeconfig.as_str(),
        "--reuse-values",
        "--set",
        "log.level=debug",
    ]);
    let after = deployments
        .get("ferrosync-controller")
        .await
        .expect("Deployment");
    assert_ne!(checksum(&after).expect("checksum"), before);
    let config = config_maps.get("ferrosync-config").await.expect("config");
    assert!(config.data.unwrap_or_default()["config.toml"].contains(r#"level = "debug""#));

    // Uninstalling removes the controller and keeps the CRDs, so no replication object
    // (and no reference to data) is deleted with it.
    helm(&[
        "uninstall",
        "ferrosync",
        "--namespace",
        ns,
        "--kubeconfig",
        kubeconfig.as_str(),
        "--wait",
    ]);
    assert!(
        deployments
            .get_opt("ferrosync-controller")
            .await
            .expect("get")
            .is_none(),
        "the Deployment is gone"
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt("ferrosync-controller")
            .await
            .expect("get")
            .is_none()
    );
    Api::<CustomResourceDefinition>::all(client.clone())
        .get("replicationsources.volsync.backube")
        .await
        .expect("the CRDs stay");
}
