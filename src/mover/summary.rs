//! What a mover run reports: the JSON summary written to the termination-message file, and
//! the progress lines printed while it runs.
//!
//! The controller deserialises [`Summary`] from `containerStatuses[].state.terminated.message`
//! and parses [`Progress`] from pod logs, so both formats are a contract. The summary must
//! never exceed [`MAX_SUMMARY_BYTES`] (the kubelet truncates at 4 KiB) and must never
//! contain key material.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

use super::exit::ErrorClass;

/// The kubelet keeps at most 4096 bytes of a termination message.
pub const MAX_SUMMARY_BYTES: usize = 4096;
/// The prefix of every progress line, so log readers can find them.
pub const PROGRESS_PREFIX: &str = "ferrosync-progress:";

/// Which side wrote a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `ferrosync mover source`.
    Source,
    /// `ferrosync mover destination`.
    Destination,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The sync completed: on the source, the destination acknowledged completion; on the
    /// destination, the data is restored and synced to disk.
    Succeeded,
    /// Anything else; see `errorClass`.
    Failed,
}

/// The termination-message summary of one mover run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Which side.
    pub role: Role,
    /// How it ended.
    pub result: Outcome,
    /// The process exit code.
    pub exit_code: u8,
    /// Why it failed; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Whether a later run may succeed unchanged; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient: Option<bool>,
    /// True when a TLS-PSK handshake failed because the keys differ.
    #[serde(default)]
    pub auth_failure: bool,
    /// One line for people; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Source: rsync's "Total bytes sent" summed over every rsync run of every attempt
    /// (both passes and the control upload): the bytes on the wire before TLS.
    /// Destination: what its rsync daemons logged as sent.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Source: rsync's "Total bytes received", summed likewise. Destination: what its
    /// rsync daemons logged as received.
    #[serde(default)]
    pub bytes_received: u64,
    /// Regular files transferred by the copy pass of the last attempt.
    #[serde(default)]
    pub files_transferred: u64,
    /// Files deleted on the destination by the deletion pass of the last attempt.
    #[serde(default)]
    pub files_deleted: u64,
    /// Attempts made (source only; 0 on the destination).
    #[serde(default)]
    pub attempts: u32,
    /// Wall time of the whole run, in seconds.
    pub duration_seconds: f64,
    /// The last rsync statistics lines (`sent … received …`, `total size is …`,
    /// `rsync completed in <N>s`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<String>,
    /// Source: rsync's per-file error lines of the last attempt (`rsync: [sender]
    /// send_files failed to open "dir/name": Permission denied (13)`), names relative to
    /// the volume, the first few only, each bounded; so a failed sync says which files it
    /// could not transfer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// How many per-file error lines were left out of `errors`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors_omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// Serialises within [`MAX_SUMMARY_BYTES`], dropping the last per-file errors (down to
    /// one, counting them in `errorsOmitted`), then the oldest stats lines, then shortening
    /// the message if needed.
    pub fn to_bounded_json(&self) -> String {
        let mut s = self.clone();
        loop {
            let json = serde_json::to_string(&s).unwrap_or_else(|_| "{}".to_owned());
            if json.len() <= MAX_SUMMARY_BYTES {
                return json;
            }
            if s.errors.len() > 1 {
                s.errors.pop();
                s.errors_omitted += 1;
            } else if !s.stats.is_empty() {
                s.stats.remove(0);
            } else if let Some(msg) = s.message.as_mut().filter(|m| m.len() > 64) {
                let keep = floor_char_boundary(msg, msg.len() / 2);
                msg.truncate(keep);
                msg.push('…');
            } else if let Some(line) = s.errors.first_mut().filter(|l| l.len() > 64) {
                let keep = floor_char_boundary(line, line.len() / 2);
                line.truncate(keep);
                line.push('…');
            } else {
                return json;
            }
        }
    }

    /// Writes the bounded JSON to `path` (the termination-message file).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bounded_json())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One progress report, printed at a bounded rate while the copy pass runs:
/// `ferrosync-progress: bytes=<n> rate=<bytes/s> percent=<0-100> files=<n> elapsed=<s>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes of file data processed so far in this pass (rsync's progress2 counter).
    pub bytes: u64,
    /// Average rate since the previous progress line, in bytes per second.
    pub rate: u64,
    /// rsync's overall percentage; approximate while the file list is still growing.
    pub percent: u8,
    /// Files transferred so far in this pass.
    pub files: u64,
    /// Seconds since the mover started.
    pub elapsed: u64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PROGRESS_PREFIX} bytes={} rate={} percent={} files={} elapsed={}",
            self.bytes, self.rate, self.percent, self.files, self.elapsed
        )
    }
}

impl Progress {
    /// Parses a progress line as printed by [`Progress`]'s `Display`, anywhere in a log line
    /// (log collectors may add a timestamp in front).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find(PROGRESS_PREFIX)? + PROGRESS_PREFIX.len()..];
        let mut p = Progress::default();
        let mut seen = 0;
        for field in rest.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "bytes" => p.bytes = value.parse().ok()?,
                "rate" => p.rate = value.parse().ok()?,
                "percent" => p.percent = value.parse().ok()?,
                "files" => p.files = value.parse().ok()?,
                "elapsed" => p.elapsed = value.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 5).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Summary {
        Summary {
            role: Role::Source,
            result: Outcome::Failed,
            exit_code: 13,
            error_class: Some(ErrorClass::AuthFailed),
            transient: Some(false),
            auth_failure: true,
            message: Some("authentication failed".into()),
            bytes_sent: 1,
            bytes_received: 2,
            files_transferred: 3,
            files_deleted: 0,
            attempts: 1,
            duration_seconds: 0.5,
            stats: vec!["sent 1 bytes  received 2 bytes  6.00 bytes/sec".into()],
            errors: Vec::new(),
            errors_omitted: 0,
        }
    }

    #[test]
    fn summary_round_trips_with_camel_case_names() {
        let s = failed();
        let json = s.to_bounded_json();
        assert!(json.contains("\"errorClass\":\"AuthFailed\""), "{json}");
        assert!(json.contains("\"authFailure\":true"), "{json}");
        assert_eq!(serde_json::from_str::<Summary>(&json).expect("parses"), s);
    }

    #[test]
    fn summary_is_bounded_to_4_kib() {
        let mut s = failed();
        s.stats = (0..200)
            .map(|i| format!("sent {i} bytes  received 0 bytes"))
            .collect();
        s.message = Some("é".repeat(5000));
        let json = s.to_bounded_json();
        assert!(json.len() <= MAX_SUMMARY_BYTES, "{}", json.len());
        assert!(serde_json::from_str::<Summary>(&json).is_ok());
    }

    #[test]
    fn per_file_errors_fit_and_are_dropped_first_when_too_many() {
        let mut s = failed();
        let line = |i: usize| {
            format!(
                "rsync: [sender] send_files failed to open \"dir/{}-{i}\": Permission denied (13)",
                "x".repeat(100)
            )
        };
        s.errors = (0..20).map(line).collect();
        s.errors_omitted = 5;
        let json = s.to_bounded_json();
        assert!(json.len() <= MAX_SUMMARY_BYTES, "{}", json.len());
        let back: Summary = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.errors.len() as u64 + back.errors_omitted, 25);
        assert_eq!(back.errors[0], line(0), "the first error is kept");
        assert_eq!(back.stats, s.stats, "stats are kept while errors can go");

        s.errors = vec!["é".repeat(3000)];
        s.errors_omitted = 0;
        let json = s.to_bounded_json();
        assert!(json.len() <= MAX_SUMMARY_BYTES, "{}", json.len());
        assert_eq!(
            serde_json::from_str::<Summary>(&json)
                .expect("parses")
                .errors
                .len(),
            1
        );
    }

    #[test]
    fn progress_round_trips_through_a_log_line() {
        let p = Progress {
            bytes: 123_456_789,
            rate: 10_000_000,
            percent: 42,
            files: 7,
            elapsed: 12,
        };
        let line = format!("2026-11-24T06:00:00Z {p}");
        assert_eq!(Progress::parse(&line), Some(p));
        assert_eq!(Progress::parse("sent 1 bytes"), None);
    }
}
