//! Classification of a failed rsync run into an error class, and the retry backoff.
//!
//! The stunnel client's log is consulted first, since it knows why a connection failed
//! (refused, wrong key); rsync's exit code decides the rest. Transient classes are retried
//! by the source; permanent ones end the run at once. This module must never retry
//! anything itself.

use std::time::Duration;

use super::{
    exit::{ErrorClass, Failure},
    rsync_run::Report,
};

/// Maps a failed run to an error class: the stunnel client's view first (it knows why a
/// connection failed), then rsync's exit code.
pub fn check(step: &str, report: &Report) -> Result<(), Failure> {
    if report.succeeded() {
        return Ok(());
    }
    let tls = report.tls;
    let daemon_refused = report.errors.iter().any(|l| l.starts_with("@ERROR"));
    // The destination's session gate: another source's sync is running there. Its message
    // is often lost (the daemon exits and the connection is reset before the client reads
    // it); what remains is rsync's exit 4, "requested action not supported", which our
    // source otherwise only gets for an option the daemon refuses, and it sends none.
    let busy = report.code == Some(4)
        || report
            .errors
            .iter()
            .any(|l| l.contains(super::session::BUSY_MESSAGE));
    let class = if tls.auth_failed {
        ErrorClass::AuthFailed
    } else if busy {
        ErrorClass::ConnectionLost
    } else if report.out_of_space {
        ErrorClass::DestinationFull
    } else if tls.connect_failed && !tls.connected {
        ErrorClass::Unreachable
    } else {
        match report.code {
            Some(24) => ErrorClass::FilesVanished,
            // In a push, exit 11 is a write error on the receiving daemon, whose message
            // stays in the destination's log: almost always a full volume or quota.
            Some(11) => ErrorClass::DestinationFull,
            Some(5) if daemon_refused => ErrorClass::RsyncFailed,
            None | Some(5 | 10 | 12 | 14 | 20 | 21 | 30 | 35) => ErrorClass::ConnectionLost,
            Some(_) => ErrorClass::RsyncFailed,
        }
    };
    let what = match class {
        ErrorClass::AuthFailed => "authentication failed: the TLS-PSK handshake was refused, \
                                   so the source and destination keys differ"
            .to_owned(),
        ErrorClass::Unreachable => "destination unreachable".to_owned(),
        ErrorClass::ConnectionLost if busy => "the destination refused the transfer \
                                               (rsync exit 4): it serves another source's \
                                               session, or refuses an option"
            .to_owned(),
        ErrorClass::DestinationFull => "the destination volume is full (or rejects writes; \
                                        its mover's log names the error)"
            .to_owned(),
        _ => match report.code {
            Some(code) => format!("rsync exited with code {code}"),
            None => "rsync was killed by a signal".to_owned(),
        },
    };
    // rsync's last line only says "see previous errors"; name the first file instead.
    let detail = match report.file_errors.first() {
        Some(first) => format!(
            ": {} file error(s), the first: {first}",
            report.file_error_count
        ),
        // Unreachable: the TLS client's own line names the address and why; rsync's
        // last line ("error in rsync protocol data stream") says neither.
        None => report
            .errors
            .iter()
            .rev()
            .find(|l| {
                class == ErrorClass::Unreachable
                    && super::tunnel_client::classify(l)
                        == Some(super::stunnel::LogEvent::ConnectFailed)
            })
            .or(report.errors.last())
            .map(|l| format!(": {l}"))
            .unwrap_or_default(),
    };
    Err(Failure::new(class, format!("{step}: {what}{detail}")))
}

/// The delay before retry `n` (1-based): `base · 2^(n-1)`.
pub fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::rsync_run::TlsView;

    #[test]
    fn backoff_doubles_from_the_base() {
        let d: Vec<_> = (1..=5)
            .map(|n| backoff(Duration::from_secs(2), n).as_secs())
            .collect();
        assert_eq!(d, [2, 4, 8, 16, 32]);
    }

    #[test]
    fn classifies_failures_transient_or_permanent() {
        let report = |code, tls: TlsViewBuilder, err: &str| Report {
            code,
            tls: tls.0,
            errors: vec![err.to_owned()],
            out_of_space: rsync_out_of_space(err),
            ..Report::default()
        };
        let cases = [
            (
                report(Some(12), TlsViewBuilder::auth(), "x"),
                ErrorClass::AuthFailed,
            ),
            (
                report(Some(12), TlsViewBuilder::refused(), "x"),
                ErrorClass::Unreachable,
            ),
            (
                report(Some(12), TlsViewBuilder::connected(), "reset"),
                ErrorClass::ConnectionLost,
            ),
            (
                report(None, TlsViewBuilder::connected(), "x"),
                ErrorClass::ConnectionLost,
            ),
            (
                report(
                    Some(11),
                    TlsViewBuilder::connected(),
                    "write failed: No space left on device (28)",
                ),
                ErrorClass::DestinationFull,
            ),
            (
                report(Some(23), TlsViewBuilder::connected(), "Permission denied"),
                ErrorClass::RsyncFailed,
            ),
            (
                report(Some(24), TlsViewBuilder::connected(), "vanished"),
                ErrorClass::FilesVanished,
            ),
            (
                report(
                    Some(5),
                    TlsViewBuilder::connected(),
                    "@ERROR: Unknown module 'data'",
                ),
                ErrorClass::RsyncFailed,
            ),
            (
                report(
                    Some(4),
                    TlsViewBuilder::connected(),
                    "ferrosync destination busy: another source's session is in progress",
                ),
                ErrorClass::ConnectionLost,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(check("step", &r).expect_err("fails").class, want, "{r:?}");
        }
        assert!(
            check(
                "step",
                &Report {
                    code: Some(0),
                    ..Report::default()
                }
            )
            .is_ok()
        );
    }

    struct TlsViewBuilder(TlsView);
    impl TlsViewBuilder {
        fn auth() -> Self {
            Self(TlsView {
                connected: true,
                auth_failed: true,
                ..Default::default()
            })
        }
        fn refused() -> Self {
            Self(TlsView {
                connect_failed: true,
                ..Default::default()
            })
        }
        fn connected() -> Self {
            Self(TlsView {
                connected: true,
                ..Default::default()
            })
        }
    }

    fn rsync_out_of_space(line: &str) -> bool {
        crate::mover::rsync_out::is_out_of_space(line)
    }
}
