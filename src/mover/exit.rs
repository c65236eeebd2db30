//! Exit codes and error classes of the mover, shared with the controller.
//!
//! The code tells the controller whether retrying can help: 10–19 are permanent (nothing
//! changes until a person or the controller changes the inputs), 20–29 are transient (a
//! later run may succeed). This module must never change the meaning of a published code:
//! the controller and already-running Jobs depend on it.

use serde::{Deserialize, Serialize};

/// Why a mover run failed. Serialised by name into the termination-message summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// A bug or an unexpected local error. Exit code 1.
    Internal,
    /// A setting is missing or malformed (`DESTINATION_ADDRESS`, a port, a duration). Exit 10.
    Config,
    /// `psk.txt` is missing, unreadable, malformed or world-readable. Exit 11.
    KeyInvalid,
    /// The data directory is missing or not a directory. Exit 12.
    DataDirMissing,
    /// The TLS-PSK handshake was refused: the two sides hold different keys. Exit 13.
    AuthFailed,
    /// The destination volume is full (ENOSPC or EDQUOT). Exit 14.
    DestinationFull,
    /// rsync failed in a way retrying will not fix (file errors, protocol mismatch). Exit 15.
    RsyncFailed,
    /// The mover could not set itself up: temp dir not writable, stunnel or rsync missing,
    /// listen address unavailable. Exit 16.
    SetupFailed,
    /// The destination could not be reached (refused, no route, DNS) on every attempt. Exit 20.
    Unreachable,
    /// The connection broke during the transfer on every attempt. Exit 21.
    ConnectionLost,
    /// SIGTERM or SIGINT arrived before the sync completed. Exit 22.
    Interrupted,
    /// Destination only: no source connected within the idle timeout. Exit 23.
    IdleTimeout,
    /// Files kept vanishing while being sent (rsync exit 24) on every attempt. Exit 24.
    FilesVanished,
}

impl ErrorClass {
    /// Every class, for tables and tests.
    pub const ALL: [ErrorClass; 13] = [
        Self::Internal,
        Self::Config,
        Self::KeyInvalid,
        Self::DataDirMissing,
        Self::AuthFailed,
        Self::DestinationFull,
        Self::RsyncFailed,
        Self::SetupFailed,
        Self::Unreachable,
        Self::ConnectionLost,
        Self::Interrupted,
        Self::IdleTimeout,
        Self::FilesVanished,
    ];

    /// The process exit code for this class.
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Internal => 1,
            Self::Config => 10,
            Self::KeyInvalid => 11,
            Self::DataDirMissing => 12,
            Self::AuthFailed => 13,
            Self::DestinationFull => 14,
            Self::RsyncFailed => 15,
            Self::SetupFailed => 16,
            Self::Unreachable => 20,
            Self::ConnectionLost => 21,
            Self::Interrupted => 22,
            Self::IdleTimeout => 23,
            Self::FilesVanished => 24,
        }
    }

    /// The class of an exit code, if it is one of ours (0 and 2, clap's usage error, are not).
    pub fn from_exit_code(code: i32) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| i32::from(c.exit_code()) == code)
    }

    /// Whether a later run may succeed without anyone changing anything.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Unreachable
                | Self::ConnectionLost
                | Self::Interrupted
                | Self::IdleTimeout
                | Self::FilesVanished
        )
    }
}

/// A failed mover run: its class and a message for people. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure, which fixes the exit code.
    pub class: ErrorClass,
    /// One line for the log and the summary.
    pub message: String,
}

impl Failure {
    /// A failure of `class` with `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_round_trip_and_split_by_range() {
        let mut seen = std::collections::HashSet::new();
        for class in ErrorClass::ALL {
            let code = class.exit_code();
            assert!(seen.insert(code), "duplicate code {code}");
            assert_eq!(ErrorClass::from_exit_code(i32::from(code)), Some(class));
            if code >= 10 {
                assert_eq!(class.is_transient(), code >= 20, "{class:?}");
            }
        }
        assert_eq!(ErrorClass::from_exit_code(0), None);
        assert_eq!(ErrorClass::from_exit_code(2), None);
    }
}
