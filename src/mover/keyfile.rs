//! Checks of the pre-shared key file (`<key dir>/psk.txt`) before any connection is made.
//!
//! The key stays out of process arguments and environment: stunnel reads it from the file
//! (`PSKsecrets`), and the built-in tunnel loads it from the file into memory per process.
//! This module must never put key material into an error, a log line or a copy of the file.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::api::psk::{KeyRing, PskError};

use super::exit::{ErrorClass, Failure};

/// The key file's name inside the key directory, as the reference mover expects.
pub const KEY_FILE_NAME: &str = "psk.txt";

/// Why the key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No file at the path.
    #[error("pre-shared key not found: {0} does not exist")]
    Missing(PathBuf),
    /// The file exists but cannot be read by this user.
    #[error("pre-shared key {path} cannot be read: {source}")]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Other users may read or write it; stunnel and the reference refuse that too.
    #[error(
        "pre-shared key {path} is accessible to other users (mode {mode:04o}); it must not be world-readable or world-writable, e.g. mode 0600 or 0400"
    )]
    WorldAccessible {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file (a directory, a device).
    #[error("pre-shared key {0} is not a regular file")]
    NotAFile(PathBuf),
    /// The contents are not `<identity>:<hex key>` lines (the current key, and during a
    /// rotation the previous one).
    #[error("pre-shared key {path} is malformed: {source}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without the key itself.
        source: PskError,
    },
}

impl From<KeyError> for Failure {
    fn from(err: KeyError) -> Self {
        Failure::new(ErrorClass::KeyInvalid, err.to_string())
    }
}

/// Validates `<key_dir>/psk.txt` and returns its path for stunnel's `PSKsecrets`.
pub fn check(key_dir: &Path) -> Result<PathBuf, KeyError> {
    load(key_dir).map(|(path, _)| path)
}

/// Validates `<key_dir>/psk.txt` and returns its path and the key.
pub fn load(key_dir: &Path) -> Result<(PathBuf, KeyRing), KeyError> {
    let path = key_dir.join(KEY_FILE_NAME);
    // Follows symlinks on purpose: Secret volumes present psk.txt as a link into ..data/.
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Err(KeyError::Missing(path)),
        Err(source) => return Err(KeyError::Unreadable { path, source }),
    };
    if !meta.is_file() {
        return Err(KeyError::NotAFile(path));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o006 != 0 {
        return Err(KeyError::WorldAccessible { path, mode });
    }
    let contents = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) => return Err(KeyError::Unreadable { path, source }),
    };
    let text = String::from_utf8(contents).map_err(|_| KeyError::Format {
        path: path.clone(),
        source: PskError::NotHex,
    })?;
    // A destination mid-rotation holds two keys: the server accepts either (by identity),
    // a client presents the first.
    match KeyRing::parse(&text) {
        Ok(ring) => Ok((path, ring)),
        Err(source) => Err(KeyError::Format { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "volsync:0123456789abcdef0123456789abcdef";

    fn key_dir(contents: &str, mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE_NAME);
        fs::write(&path, contents).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        dir
    }

    #[test]
    fn accepts_a_private_well_formed_key() {
        let dir = key_dir(KEY, 0o600);
        assert_eq!(
            check(dir.path()).expect("ok"),
            dir.path().join(KEY_FILE_NAME)
        );
        let dir = key_dir(&format!("{KEY}\n"), 0o440);
        assert!(check(dir.path()).is_ok());
    }

    #[test]
    fn refuses_missing_world_readable_and_malformed_keys_without_echoing_them() {
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(check(empty.path()), Err(KeyError::Missing(_))));

        let dir = key_dir(KEY, 0o644);
        let err = check(dir.path()).expect_err("world-readable");
        assert!(matches!(err, KeyError::WorldAccessible { mode: 0o644, .. }));
        assert!(!err.to_string().contains("0123456789abcdef"), "{err}");

        let dir = key_dir("volsync:0123456789abcdef", 0o600);
        let err = check(dir.path()).expect_err("short");
        assert!(matches!(err, KeyError::Format { .. }), "{err}");
        assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
    }
}
