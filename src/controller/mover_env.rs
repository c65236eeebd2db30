//! ferrosync-only mover settings that VolSync's API has no field for, turned into mover
//! Job environment: the TLS tunnel from the controller's configuration (`mover.tls_tunnel`),
//! and per ReplicationSource the rsync compression, bandwidth cap and delta block size from
//! annotations, so admission stays exactly VolSync's.
//!
//! Values are validated with the mover's own parsers: a bad annotation stops the iteration
//! with an InvalidSpec condition and Event naming the annotation, instead of a Job that
//! would fail at start. This module must never pass an unvalidated value into a Job.

use std::collections::BTreeMap;

use super::error::Error;
use crate::{
    config::{MoverConfig, TlsTunnel},
    mover::settings::{BlockSize, Compress, parse_bwlimit},
};

/// Annotation on a ReplicationSource: `none` (default), `auto` (rsync negotiates, as
/// VolSync's `-z`), `zstd`, `lz4` or `zlib`.
pub const COMPRESS: &str = "ferrosync.io/rsync-compress";
/// Annotation on a ReplicationSource: rsync `--bwlimit`, e.g. `10m` (bytes per second).
pub const BWLIMIT: &str = "ferrosync.io/rsync-bwlimit";
/// Annotation on a ReplicationSource: `auto` (default), `rsync`, or bytes (512–131072).
pub const BLOCK_SIZE: &str = "ferrosync.io/rsync-block-size";

/// Environment of every mover Job.
pub fn common(config: &MoverConfig) -> Vec<(String, String)> {
    let tunnel = match config.tls_tunnel {
        TlsTunnel::Builtin => "builtin",
        TlsTunnel::Stunnel => "stunnel",
    };
    vec![("TLS_TUNNEL".into(), tunnel.into())]
}

/// Environment of a source mover Job: [`common`] and the owner's rsync annotations.
pub fn source(
    config: &MoverConfig,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, Error> {
    let mut env = common(config);
    let invalid = |name: &str, why: String| {
        Error::Invalid(format!(
            "annotation {name}: {why}; fix or remove the annotation"
        ))
    };
    if let Some(v) = annotations.get(COMPRESS) {
        Compress::parse(v).map_err(|e| invalid(COMPRESS, e))?;
        env.push(("RSYNC_COMPRESS".into(), v.trim().to_ascii_lowercase()));
    }
    if let Some(v) = annotations.get(BWLIMIT) {
        let v = parse_bwlimit(v).map_err(|e| invalid(BWLIMIT, e))?;
        env.push(("RSYNC_BWLIMIT".into(), v));
    }
    if let Some(v) = annotations.get(BLOCK_SIZE) {
        BlockSize::parse(v).map_err(|e| invalid(BLOCK_SIZE, e))?;
        env.push(("RSYNC_BLOCK_SIZE".into(), v.trim().to_owned()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tls_tunnel: TlsTunnel) -> MoverConfig {
        MoverConfig {
            image: "mover:1".into(),
            backoff_limit: 2,
            progress_interval: std::time::Duration::from_secs(10),
            image_pull_secrets: Vec::new(),
            failure_backoff_min: std::time::Duration::from_secs(60),
            failure_backoff_max: std::time::Duration::from_secs(3600),
            start_timeout: std::time::Duration::from_secs(300),
            tls_tunnel,
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_become_validated_source_env() {
        let env = source(
            &config(TlsTunnel::Builtin),
            &annotations(&[
                (COMPRESS, "ZSTD"),
                (BWLIMIT, "10m"),
                (BLOCK_SIZE, "4096"),
                ("unrelated", "x"),
            ]),
        )
        .expect("valid");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TLS_TUNNEL"), Some("builtin"));
        assert_eq!(get("RSYNC_COMPRESS"), Some("zstd"));
        assert_eq!(get("RSYNC_BWLIMIT"), Some("10m"));
        assert_eq!(get("RSYNC_BLOCK_SIZE"), Some("4096"));

        let plain = source(&config(TlsTunnel::Stunnel), &BTreeMap::new()).expect("valid");
        assert_eq!(plain, [("TLS_TUNNEL".to_owned(), "stunnel".to_owned())]);
    }

    #[test]
    fn a_bad_annotation_is_an_invalid_spec_naming_it() {
        for (name, value) in [
            (COMPRESS, "gzip"),
            (BWLIMIT, "fast"),
            (BWLIMIT, "10m --rsh=evil"),
            (BLOCK_SIZE, "7"),
        ] {
            let err = source(&config(TlsTunnel::Builtin), &annotations(&[(name, value)]))
                .expect_err("invalid");
            assert!(err.is_permanent(), "{err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
