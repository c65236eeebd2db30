//! A container's environment, as the kubelet and runtime build it: the image's defaults
//! (PATH, HOSTNAME, HOME), then the container's `env` with `$(VAR)` references expanded and
//! downward-API fields filled in. Also KUBERNETES_SERVICE_HOST/PORT. Not modelled: `envFrom`, Secret/ConfigMap key
//! references, resource fields and service-link variables.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The runtime's default PATH.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `kubernetes` Service's variables, given its ClusterIP (the first address of the
/// site's Service CIDR, `addresses::Plan::kubernetes_ip`): port 443.
pub fn kubernetes_service(cluster_ip: std::net::Ipv4Addr) -> [(String, String); 3] {
    [
        ("KUBERNETES_SERVICE_HOST".into(), cluster_ip.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
    ]
}

/// The environment of `container` in `pod`, whose IP is `pod_ip`, on a node of the
/// cluster whose `kubernetes` Service has `cluster_ip`.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    cluster_ip: std::net::Ipv4Addr,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), PATH.into()),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("HOME".into(), "/".into()),
    ];
    // What the kubelet always sets, service links or not: where in-cluster clients find the
    // apiserver (the `kubernetes` Service, which the routing simulator forwards).
    env.extend(kubernetes_service(cluster_ip));
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().ok_or_else(|| {
                    format!(
                        "env {}: only downward-API fieldRef sources are simulated",
                        var.name
                    )
                })?;
                field_value(pod, &field.field_path, pod_ip).ok_or_else(|| {
                    format!(
                        "env {}: unsupported fieldPath {}",
                        var.name, field.field_path
                    )
                })?
            }
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// A downward-API field of `pod` (for `env` and projected `downwardAPI` items).
pub(super) fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".into(),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .map(|k| (k, &meta.labels))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| (k, &meta.annotations))
                });
            let (key, map) = key?;
            let key = key.strip_suffix("']")?;
            map.as_ref()?.get(key).cloned().unwrap_or_default()
        }
    })
}

/// Expands `$(NAME)` from earlier variables; `$$(NAME)` is a literal `$(NAME)`, and an
/// unknown reference stays as written, as in Kubernetes.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}
