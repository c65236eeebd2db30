//! Pulled blobs kept on disk by digest (`blobs/sha256/<hex>`), and the bundle directories
//! made from them (`bundles/<manifest hex>/`). A restarted container finds its bundles
//! here and pulls nothing; every blob is hashed again when read, so a damaged or altered
//! file is dropped and pulled anew, never used.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::{OciConfig, OciError, artifact::digest_of};

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The configured directory (created, owner-only), or this process's private one.
    pub fn open(settings: &OciConfig) -> Result<Cache, OciError> {
        let dir = match &settings.cache_dir {
            Some(dir) => dir.clone(),
            None => private_dir()?,
        };
        let err = |e: std::io::Error| OciError::Cache {
            dir: dir.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(err)?;
        std::fs::create_dir_all(dir.join("bundles")).map_err(err)?;
        // Owner-only where we own it; a mount point owned by root stays as mounted (every
        // blob is verified when read anyway).
        if let Err(e) = restrict(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "policy cache permissions left as they are");
        }
        Ok(Cache { dir })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The blob, when cached and still hashing to `digest`.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        if digest_of(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "cached policy blob does not match its digest; pulling it again");
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores a blob already checked against `digest`.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), OciError> {
        let path = self.blob_path(digest);
        write_atomically(&path, bytes).map_err(|e| OciError::Cache {
            dir: self.dir.clone(),
            message: format!("{}: {e}", path.display()),
        })
    }

    /// Writes the bundle of manifest `digest` as a directory of `files` (name, bytes).
    /// Each file is replaced whole, so a reader never sees half of one.
    pub fn write_bundle(&self, digest: &str, files: &[(&str, &[u8])]) -> Result<PathBuf, OciError> {
        let dir = self
            .dir
            .join("bundles")
            .join(digest.trim_start_matches("sha256:"));
        let err = |e: std::io::Error| OciError::Cache {
            dir: dir.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        for (name, bytes) in files {
            write_atomically(&dir.join(name), bytes).map_err(err)?;
        }
        Ok(dir)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Without a configured directory: one private directory for this process, removed at
/// exit (a CLI run, a test).
fn private_dir() -> Result<PathBuf, OciError> {
    static DIR: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("ferrosync-policy-cache-")
            .tempdir()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(|d| d.path().to_owned())
    .map_err(|message| OciError::Cache {
        dir: std::env::temp_dir(),
        message: message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_found_by_digest_and_damaged_ones_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = OciConfig {
            cache_dir: Some(tmp.path().join("c")),
            ..OciConfig::default()
        };
        let cache = Cache::open(&settings).unwrap();
        let digest = digest_of(b"blob");
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, b"blob").unwrap();
        assert_eq!(cache.get(&digest).as_deref(), Some(&b"blob"[..]));
        std::fs::write(cache.blob_path(&digest), b"altered").unwrap();
        assert_eq!(cache.get(&digest), None);
        assert!(!cache.blob_path(&digest).exists());
        let dir = cache
            .write_bundle(&digest, &[("policy.toml", b"x"), ("p.wasm", b"y")])
            .unwrap();
        assert_eq!(std::fs::read(dir.join("p.wasm")).unwrap(), b"y");
    }
}
