//! Registry credentials in the format every Kubernetes tool writes: a
//! `kubernetes.io/dockerconfigjson` Secret (`kubectl create secret docker-registry`), or a
//! Docker `config.json` for the command line. Looked up by the registry's host, as the
//! kubelet does for imagePullSecrets; anonymous when no entry names the host.
//!
//! Passwords never reach an error, a log line or `Debug` output.

use std::{collections::BTreeMap, path::PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use oci_client::secrets::RegistryAuth;
use openssl::base64;
use serde::Deserialize;

use super::OciError;

/// Where the controller's pull secret comes from.
pub trait PullSecretSource: Send + Sync {
    /// The `.dockerconfigjson` of Secret `secret`.
    fn docker_config<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Vec<u8>, OciError>>;
}

/// No source: naming a pull secret is an error (for tools without a cluster).
#[derive(Debug, Default)]
pub struct NoPullSecrets;

impl PullSecretSource for NoPullSecrets {
    fn docker_config<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Vec<u8>, OciError>> {
        Box::pin(async move {
            Err(OciError::PullSecret {
                secret: secret.into(),
                message: "only the controller reads it from its namespace; here, log in to \
                          the registry (~/.docker/config.json) or set DOCKER_CONFIG"
                    .into(),
            })
        })
    }
}

/// For tools without a cluster (`policy check`, `policy eval`): the user's own Docker
/// `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), which
/// `docker login`, `oras login` and `crane auth login` write, stands in for the Secret.
#[derive(Debug, Default)]
pub struct LocalDockerConfig;

impl PullSecretSource for LocalDockerConfig {
    fn docker_config<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Vec<u8>, OciError>> {
        Box::pin(async move {
            match default_docker_config() {
                Some(path) => DockerConfigFile(path).docker_config(secret).await,
                None => NoPullSecrets.docker_config(secret).await,
            }
        })
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, when it exists.
pub fn default_docker_config() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    Some(dir.join("config.json")).filter(|p| p.is_file())
}

/// A Docker `config.json` on disk stands in for any Secret named (the CLI).
#[derive(Debug, Clone)]
pub struct DockerConfigFile(pub PathBuf);

impl PullSecretSource for DockerConfigFile {
    fn docker_config<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Vec<u8>, OciError>> {
        Box::pin(async move {
            tokio::fs::read(&self.0)
                .await
                .map_err(|e| OciError::PullSecret {
                    secret: format!("{secret} (from {})", self.0.display()),
                    message: e.to_string(),
                })
        })
    }
}

/// The controller's: the Secret read by name in its own namespace (`get`, never `list`).
#[derive(Clone)]
pub struct KubePullSecrets {
    client: kube::Client,
    namespace: String,
}

impl KubePullSecrets {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        KubePullSecrets {
            client,
            namespace: namespace.into(),
        }
    }
}

impl PullSecretSource for KubePullSecrets {
    fn docker_config<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Vec<u8>, OciError>> {
        Box::pin(async move {
            let name = format!("{}/{secret}", self.namespace);
            let bad = |message: String| OciError::PullSecret {
                secret: name.clone(),
                message,
            };
            let api: kube::Api<Secret> =
                kube::Api::namespaced(self.client.clone(), &self.namespace);
            let found = api
                .get_opt(secret)
                .await
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("not found".into()))?;
            found
                .data
                .and_then(|mut d| d.remove(".dockerconfigjson"))
                .map(|b| b.0)
                .ok_or_else(|| bad("has no .dockerconfigjson key".into()))
        })
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// The credentials `config` (a `.dockerconfigjson`) holds for `registry` (`host[:port]`).
/// Keys may carry a scheme or a path (`https://host/v1/`), as Docker's do.
pub fn auth_for(config: &[u8], registry: &str, secret: &str) -> Result<RegistryAuth, OciError> {
    let bad = |message: String| OciError::PullSecret {
        secret: secret.into(),
        message,
    };
    let parsed: DockerConfig =
        serde_json::from_slice(config).map_err(|e| bad(format!("not a Docker config: {e}")))?;
    let entry = parsed
        .auths
        .iter()
        .find(|(key, _)| host_of(key) == registry);
    let Some((_, entry)) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let encoded = entry.auth.as_deref().ok_or_else(|| {
        bad(format!(
            "the entry for {registry} has neither username/password nor auth"
        ))
    })?;
    let decoded = base64::decode_block(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad(format!("the auth of {registry} is not base64 text")))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| bad(format!("the auth of {registry} is not user:password")))?;
    Ok(RegistryAuth::Basic(user.into(), password.into()))
}

fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_by_host_in_every_form_docker_writes() {
        let auth = base64::encode_block(b"robot:s3cret");
        let config = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"username": "ci", "password": "pw"},
            "https://registry.example/v1/": {"auth": auth},
            "bad.example": {"auth": "!!"},
        }})
        .to_string();
        let basic = |r: RegistryAuth| match r {
            RegistryAuth::Basic(u, p) => (u, p),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            basic(auth_for(config.as_bytes(), "127.0.0.1:5000", "s").unwrap()),
            ("ci".into(), "pw".into())
        );
        assert_eq!(
            basic(auth_for(config.as_bytes(), "registry.example", "s").unwrap()),
            ("robot".into(), "s3cret".into())
        );
        assert!(matches!(
            auth_for(config.as_bytes(), "other.example", "s").unwrap(),
            RegistryAuth::Anonymous
        ));
        let err = auth_for(config.as_bytes(), "bad.example", "s").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        let err = auth_for(b"pw: not json", "x", "s").unwrap_err().to_string();
        assert!(
            err.contains("not a Docker config") && !err.contains("pw"),
            "{err}"
        );
    }
}
