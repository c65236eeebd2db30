//! Start-up checks against the API server.

use kube::Client;

use crate::api;

/// The outcome of the CRD check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdCheck {
    /// Both kinds are served.
    Installed,
    /// These resources (plural.group) are not served.
    Missing(Vec<String>),
}

/// The resources the controller needs, as `plural.group`.
const REQUIRED: &[&str] = &["replicationsources", "replicationdestinations"];

/// Checks through discovery that both kinds are served. Discovery needs no RBAC on
/// CustomResourceDefinitions, which keeps the controller's role small.
pub async fn check_crds(client: &Client) -> Result<CrdCheck, kube::Error> {
    let served: Vec<String> = match client
        .list_api_group_resources(&format!("{}/{}", api::GROUP, api::VERSION))
        .await
    {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(missing_resources(&served))
}

fn missing_resources(served: &[String]) -> CrdCheck {
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|r| !served.iter().any(|s| s == *r))
        .map(|r| format!("{r}.{}", api::GROUP))
        .collect();
    if missing.is_empty() {
        CrdCheck::Installed
    } else {
        CrdCheck::Missing(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_missing_kind() {
        let served = vec![
            "replicationsources".to_string(),
            "replicationsources/status".to_string(),
        ];
        assert_eq!(
            missing_resources(&served),
            CrdCheck::Missing(vec!["replicationdestinations.volsync.backube".into()])
        );
        let all = vec![
            "replicationsources".into(),
            "replicationdestinations".into(),
        ];
        assert_eq!(missing_resources(&all), CrdCheck::Installed);
    }
}
