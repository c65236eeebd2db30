//! From configuration to bundle directories: every decision point (default, shadow,
//! bindings) that names an `oci` reference is fetched (from the cache when there, else
//! from its registry), verified, and served from a directory in the cache. The engine
//! then loads it as any bundle, with the same pins, ceilings and signature checks; a
//! failure here refuses the whole new set, so the old one keeps serving.

use oci_client::{Client, secrets::RegistryAuth};

use super::{
    OciConfig, OciError, PullSecretSource,
    artifact::{self, Planned},
    auth,
    cache::Cache,
    reference::BundleRef,
    registry,
};
use crate::policy::config::{PointConfig, PolicyConfig};

/// Whether any point of `config` names an OCI bundle.
pub fn has_oci(config: &PolicyConfig) -> bool {
    config
        .all_points()
        .iter()
        .any(|(_, _, p, _)| p.oci.is_some())
}

/// `config` with each OCI point served from a verified directory in the cache.
pub async fn materialise(
    config: &PolicyConfig,
    secrets: &dyn PullSecretSource,
) -> Result<PolicyConfig, OciError> {
    let mut out = config.clone();
    if !has_oci(config) {
        return Ok(out);
    }
    let cache = Cache::open(&config.oci)?;
    let mut fetcher = Fetcher {
        settings: &config.oci,
        secrets,
        cache,
        client: None,
    };
    let mut points: Vec<(String, &mut PointConfig)> = Vec::new();
    slots(
        "",
        [&mut out.copy_method, &mut out.service_type, &mut out.psk],
        &mut points,
    );
    let s = &mut out.shadow;
    slots(
        "shadow.",
        [&mut s.copy_method, &mut s.service_type, &mut s.psk],
        &mut points,
    );
    for b in &mut out.bindings {
        let scope = format!("bindings.{}.", b.name);
        slots(
            &scope,
            [&mut b.copy_method, &mut b.service_type, &mut b.psk],
            &mut points,
        );
        let s = &mut b.shadow;
        slots(
            &format!("{scope}shadow."),
            [&mut s.copy_method, &mut s.service_type, &mut s.psk],
            &mut points,
        );
    }
    for (name, point) in points {
        let Some(reference) = point.oci.clone() else {
            continue;
        };
        if point.bundle.is_some() || point.plugin.is_some() {
            return Err(OciError::Ambiguous {
                point: format!("[policy.{name}]"),
            });
        }
        point.bundle = Some(fetcher.fetch(&reference).await?);
    }
    Ok(out)
}

/// The configured points of one scope, named as in the configuration.
fn slots<'a>(
    scope: &str,
    points: [&'a mut Option<PointConfig>; 3],
    out: &mut Vec<(String, &'a mut PointConfig)>,
) {
    for (name, slot) in ["copy_method", "service_type", "psk"]
        .into_iter()
        .zip(points)
    {
        if let Some(point) = slot.as_mut() {
            out.push((format!("{scope}{name}"), point));
        }
    }
}

struct Fetcher<'a> {
    settings: &'a OciConfig,
    secrets: &'a dyn PullSecretSource,
    cache: Cache,
    /// Built on the first cache miss: a fully cached set needs no registry, no Secret.
    client: Option<(Client, Option<Vec<u8>>)>,
}

impl Fetcher<'_> {
    /// The verified bundle directory of `reference`.
    async fn fetch(&mut self, reference: &BundleRef) -> Result<std::path::PathBuf, OciError> {
        let text = reference.to_string();
        let digest = reference.digest();
        let manifest = match self.cache.get(digest) {
            Some(bytes) => bytes,
            None => {
                let (client, auth) = self.client(reference).await?;
                let (bytes, _) = registry::manifest(client, reference.reference(), &auth).await?;
                bytes
            }
        };
        let planned = artifact::plan(&text, &manifest)?;
        let mut files: Vec<(Planned, Vec<u8>)> = Vec::new();
        for layer in planned {
            let bytes = match self.cache.get(&layer.descriptor.digest) {
                Some(b) if b.len() as u64 == layer.descriptor.size => b,
                _ => {
                    let (client, _) = self.client(reference).await?;
                    let bytes =
                        registry::blob(client, reference.reference(), &layer.descriptor).await?;
                    self.cache.put(&layer.descriptor.digest, &bytes)?;
                    bytes
                }
            };
            files.push((layer, bytes));
        }
        artifact::check_files(&text, &files)?;
        // Stored last: a manifest in the cache means its layers were all there and good.
        self.cache.put(digest, &manifest)?;
        let named: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.title.as_str(), b.as_slice()))
            .collect();
        self.cache.write_bundle(digest, &named)
    }

    /// The client and the credentials for `reference`'s registry.
    async fn client(&mut self, reference: &BundleRef) -> Result<(&Client, RegistryAuth), OciError> {
        if self.client.is_none() {
            let config = match &self.settings.pull_secret {
                Some(secret) => Some(self.secrets.docker_config(secret).await?),
                None => None,
            };
            self.client = Some((registry::client(self.settings)?, config));
        }
        let (client, config) = self.client.as_ref().expect("set above");
        let auth = match (config, &self.settings.pull_secret) {
            (Some(config), Some(secret)) => auth::auth_for(config, reference.registry(), secret)?,
            _ => RegistryAuth::Anonymous,
        };
        Ok((client, auth))
    }
}
