//! The distribution protocol, through the `oci-client` crate: pushing a packed bundle,
//! and fetching a manifest and its blobs with every byte checked against its digest.

use std::time::Duration;

use futures::StreamExt as _;
use oci_client::{
    Client, Reference, RegistryOperation,
    client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol},
    errors::{OciDistributionError, OciErrorCode},
    manifest::OciDescriptor,
    secrets::RegistryAuth,
};

use super::{
    OciConfig, OciError,
    artifact::{self, Descriptor, MANIFEST_MEDIA_TYPE, Packed},
};

/// A client for the registries `settings` describe (extra CAs, plain-HTTP hosts).
pub fn client(settings: &OciConfig) -> Result<Client, OciError> {
    let mut extra = Vec::new();
    for path in &settings.ca_files {
        let data = std::fs::read(path).map_err(|e| OciError::Settings {
            registry: "(all)".into(),
            message: format!("CA file {}: {e}", path.display()),
        })?;
        extra.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    if let Some(host) = settings.plain_http.iter().find(|h| !loopback(h)) {
        return Err(OciError::Settings {
            registry: host.clone(),
            message: "plain HTTP is allowed only to a registry on loopback \
                      (127.0.0.0/8, [::1], localhost); give its CA with ca_files instead"
                .into(),
        });
    }
    let protocol = if settings.plain_http.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(settings.plain_http.clone())
    };
    Ok(Client::new(ClientConfig {
        protocol,
        extra_root_certificates: extra,
        // A bundle is one manifest, never an index: no platform to choose.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        ..ClientConfig::default()
    }))
}

/// Whether `host[:port]` names this machine: nothing else may be spoken to without TLS.
fn loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Turns the crate's error into one that says what to do.
fn classify(reference: &Reference, e: OciDistributionError) -> OciError {
    let reference = reference.whole();
    let message = e.to_string();
    let not_found = |code: &OciErrorCode| {
        matches!(
            code,
            OciErrorCode::ManifestUnknown
                | OciErrorCode::BlobUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::NotFound
        )
    };
    let denied =
        |code: &OciErrorCode| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied);
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            OciError::Unauthorized { reference, message }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => OciError::Unauthorized { reference, message },
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => {
            OciError::NotFound { reference, message }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| denied(&x.code)) =>
        {
            OciError::Unauthorized { reference, message }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| not_found(&x.code)) =>
        {
            OciError::NotFound { reference, message }
        }
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            OciError::Unreachable {
                reference,
                message: format!("{message}: {}", root_cause(r)),
            }
        }
        OciDistributionError::RequestError(r) => OciError::Registry {
            reference,
            message: format!("{message}: {}", root_cause(r)),
        },
        _ => OciError::Registry { reference, message },
    }
}

/// reqwest's message alone says "error sending request"; the cause says why (refused,
/// certificate unknown).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Pushes `packed` as `reference` (a tag or its own digest); returns the manifest digest.
pub async fn push(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    packed: &Packed,
) -> Result<String, OciError> {
    let err = |e| classify(reference, e);
    client
        .auth(reference, auth, RegistryOperation::Push)
        .await
        .map_err(err)?;
    client
        .push_blob(
            reference,
            artifact::EMPTY_CONFIG,
            artifact::EMPTY_CONFIG_DIGEST,
        )
        .await
        .map_err(err)?;
    for (descriptor, bytes) in &packed.layers {
        client
            .push_blob(reference, bytes.clone(), &descriptor.digest)
            .await
            .map_err(err)?;
    }
    let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
    client
        .push_manifest_raw(reference, packed.manifest.clone(), content_type)
        .await
        .map_err(err)?;
    Ok(packed.digest.clone())
}

/// The manifest's bytes and their digest. With a digest in `reference`, bytes that hash
/// to anything else are refused (check 1), whatever the registry says.
pub async fn manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<(Vec<u8>, String), OciError> {
    let (bytes, _) = client
        .pull_manifest_raw(reference, auth, &[MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| classify(reference, e))?;
    let actual = artifact::digest_of(&bytes);
    if let Some(expected) = reference.digest()
        && expected != actual
    {
        return Err(OciError::DigestMismatch {
            reference: reference.whole(),
            what: "the manifest".into(),
            expected: expected.into(),
            actual: actual.trim_start_matches("sha256:").into(),
        });
    }
    Ok((bytes.to_vec(), actual))
}

/// One blob, refused when it is longer or shorter than its descriptor or hashes to
/// another digest (check 4). Streamed, so an oversized body is cut off early.
pub async fn blob(
    client: &Client,
    reference: &Reference,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, OciError> {
    let oci = OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
        size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let mut stream = client
        .pull_blob_stream(reference, &oci)
        .await
        .map_err(|e| classify(reference, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0));
    let wrong_size = |got: usize| OciError::NotABundle {
        reference: reference.whole(),
        message: format!(
            "layer {} is {} bytes long, not the {} its descriptor says",
            descriptor.digest, got, descriptor.size
        ),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::Unreachable {
            reference: reference.whole(),
            message: format!("reading layer {}: {e}", descriptor.digest),
        })?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > descriptor.size {
            return Err(wrong_size(bytes.len()));
        }
    }
    if bytes.len() as u64 != descriptor.size {
        return Err(wrong_size(bytes.len()));
    }
    let actual = artifact::digest_of(&bytes);
    if actual != descriptor.digest {
        return Err(OciError::DigestMismatch {
            reference: reference.whole(),
            what: format!("layer {}", descriptor.digest),
            expected: descriptor.digest.clone(),
            actual: actual.trim_start_matches("sha256:").into(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(loopback(ok), "{ok}");
        }
        for bad in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "[2001:db8::1]:80",
            "localhost.example",
        ] {
            assert!(!loopback(bad), "{bad}");
        }
        let settings = OciConfig {
            plain_http: vec!["registry.example:5000".into()],
            ..OciConfig::default()
        };
        let err = client(&settings).err().expect("refused").to_string();
        assert!(err.contains("only to a registry on loopback"), "{err}");
    }
}
