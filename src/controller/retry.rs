//! When a failed mover gets its next Job: pure, so that tests pass any `now`.
//!
//! A transient failure (exit 20–29: unreachable, connection lost...) retries at once: the
//! Job controller already retried its pods with backoff. A permanent one (exit 10–19: a
//! wrong key, a full destination) cannot clear by itself, so the failed Job stays and the
//! next one waits, doubling from `mover.failure_backoff_min` up to
//! `mover.failure_backoff_max` per consecutive failure; the fix may be on the other
//! cluster, so it never stops for good. It retries at once when something the failed Job
//! depended on changed: the object's spec (its generation) or its key Secret (its
//! resourceVersion).
//!
//! The state lives on the failed Job itself (a label counting the failures before it and
//! an annotation naming what it depended on), so a restarted controller decides alike.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::mover::{exit::ErrorClass, summary::Summary};

/// Label on a mover Job: how many failed Jobs of the same iteration came before it.
pub const FAILURES: &str = "ferrosync.io/failures-before";
/// Annotation on a mover Job: what it depended on (see [`depends_on`]).
pub const DEPENDS_ON: &str = "ferrosync.io/depends-on";

/// What kind of failure a mover reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A later run may succeed without any change.
    Transient(ErrorClass),
    /// Nothing changes until a person changes something.
    Permanent(ErrorClass),
    /// The mover wrote no summary (it crashed or was killed): treated as permanent, so a
    /// crashing mover does not get a new Job every few seconds.
    Unknown,
}

impl Kind {
    /// The kind of a mover's summary.
    pub fn of(summary: Option<&Summary>) -> Kind {
        let class = summary.and_then(|s| {
            s.error_class
                .or_else(|| ErrorClass::from_exit_code(i32::from(s.exit_code)))
        });
        match class {
            Some(c) if c.is_transient() => Kind::Transient(c),
            Some(c) => Kind::Permanent(c),
            None => Kind::Unknown,
        }
    }

    /// What a person should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Kind::Transient(_) => "retrying",
            Kind::Unknown => {
                "the mover ended without a summary (crashed or killed); see the Job's pod events and log"
            }
            Kind::Permanent(class) => match class {
                ErrorClass::AuthFailed => {
                    "the source and destination keys differ: give both the same key Secret contents (copy the destination's status.rsyncTLS.keySecret to the source's namespace and name it in spec.rsyncTLS.keySecret)"
                }
                ErrorClass::DestinationFull => {
                    "the destination volume is full: give it more room (spec.rsyncTLS.capacity, or expand the destinationPVC)"
                }
                ErrorClass::KeyInvalid => {
                    "the key Secret's psk.txt is missing or malformed: it must be <identity>:<hex key>"
                }
                ErrorClass::DataDirMissing => "the mover found no data volume at /data",
                ErrorClass::Config => "the mover's settings are invalid (see latestMoverStatus)",
                ErrorClass::RsyncFailed => {
                    "rsync failed on files it cannot transfer (see latestMoverStatus for which)"
                }
                ErrorClass::SetupFailed => {
                    "the mover could not set itself up (see latestMoverStatus)"
                }
                _ => "see latestMoverStatus",
            },
        }
    }
}

/// What a decision needs to know about the failed Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// What the mover reported.
    pub kind: Kind,
    /// When the Job failed.
    pub at: Timestamp,
    /// Failed Jobs of this iteration before this one (its [`FAILURES`] label).
    pub failures_before: u32,
    /// What it depended on (its [`DEPENDS_ON`] annotation).
    pub depended_on: Option<String>,
}

/// The backoff of permanent failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures_before + 1` consecutive failures: doubling, capped.
    pub fn delay(&self, failures_before: u32) -> Duration {
        self.min
            .saturating_mul(1u32 << failures_before.min(24))
            .min(self.max)
    }
}

/// When the next Job may start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Now; the string says why, for the Event.
    Now(&'static str),
    /// Not before this time, unless a dependency changes first.
    At(Timestamp),
}

/// Decides the retry of `failed`, given what the object depends on now.
pub fn decide(failed: &Failed, depends_on_now: &str, backoff: Backoff, now: Timestamp) -> Retry {
    if let Kind::Transient(_) = failed.kind {
        return Retry::Now("the failure is transient");
    }
    if failed
        .depended_on
        .as_deref()
        .is_some_and(|then| then != depends_on_now)
    {
        return Retry::Now("the spec or the key Secret changed since the failure");
    }
    let wait = SignedDuration::try_from(backoff.delay(failed.failures_before))
        .unwrap_or(SignedDuration::MAX);
    let at = failed.at.saturating_add(wait).unwrap_or(Timestamp::MAX);
    if now >= at {
        Retry::Now("the backoff ended")
    } else {
        Retry::At(at)
    }
}

/// What a mover Job depends on, as the [`DEPENDS_ON`] annotation records it.
pub fn depends_on(generation: Option<i64>, key_secret: &str, key_version: Option<&str>) -> String {
    format!(
        "generation={};key={key_secret}@{}",
        generation.unwrap_or(0),
        key_version.unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::summary::{Outcome, Role};

    const MIN: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(3600);
    const BACKOFF: Backoff = Backoff { min: MIN, max: MAX };

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn summary(class: ErrorClass) -> Summary {
        Summary {
            role: Role::Source,
            result: Outcome::Failed,
            exit_code: class.exit_code(),
            error_class: Some(class),
            transient: Some(class.is_transient()),
            auth_failure: class == ErrorClass::AuthFailed,
            message: None,
            bytes_sent: 0,
            bytes_received: 0,
            files_transferred: 0,
            files_deleted: 0,
            attempts: 1,
            duration_seconds: 0.0,
            stats: Vec::new(),
            errors: Vec::new(),
            errors_omitted: 0,
        }
    }

    fn wrong_key(failures_before: u32) -> Failed {
        Failed {
            kind: Kind::of(Some(&summary(ErrorClass::AuthFailed))),
            at: at(0),
            failures_before,
            depended_on: Some(depends_on(Some(1), "k", Some("100"))),
        }
    }

    #[test]
    fn exit_codes_map_to_kinds() {
        assert_eq!(
            Kind::of(Some(&summary(ErrorClass::AuthFailed))),
            Kind::Permanent(ErrorClass::AuthFailed)
        );
        assert_eq!(
            Kind::of(Some(&summary(ErrorClass::DestinationFull))),
            Kind::Permanent(ErrorClass::DestinationFull)
        );
        assert_eq!(
            Kind::of(Some(&summary(ErrorClass::Unreachable))),
            Kind::Transient(ErrorClass::Unreachable)
        );
        // Only the exit code: still classified.
        let mut s = summary(ErrorClass::DestinationFull);
        s.error_class = None;
        assert_eq!(
            Kind::of(Some(&s)),
            Kind::Permanent(ErrorClass::DestinationFull)
        );
        assert_eq!(Kind::of(None), Kind::Unknown);
        assert!(
            Kind::Permanent(ErrorClass::AuthFailed)
                .advice()
                .contains("keys differ")
        );
        assert!(
            Kind::Permanent(ErrorClass::DestinationFull)
                .advice()
                .contains("full")
        );
    }

    #[test]
    fn a_wrong_key_waits_for_the_backoff_then_retries() {
        let now_deps = depends_on(Some(1), "k", Some("100"));
        let failed = wrong_key(0);
        assert_eq!(
            decide(&failed, &now_deps, BACKOFF, at(1)),
            Retry::At(at(60))
        );
        assert_eq!(
            decide(&failed, &now_deps, BACKOFF, at(59)),
            Retry::At(at(60))
        );
        assert!(matches!(
            decide(&failed, &now_deps, BACKOFF, at(60)),
            Retry::Now(_)
        ));
    }

    #[test]
    fn consecutive_failures_double_up_to_the_cap_and_never_stop() {
        let now_deps = depends_on(Some(1), "k", Some("100"));
        let waits: Vec<Retry> = (0..10)
            .map(|n| decide(&wrong_key(n), &now_deps, BACKOFF, at(1)))
            .collect();
        let expected: Vec<Retry> = [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
            .into_iter()
            .map(|s| Retry::At(at(s)))
            .collect();
        assert_eq!(waits, expected);
        // Even after a thousand failures the next Job comes at the cap.
        assert!(matches!(
            decide(&wrong_key(1000), &now_deps, BACKOFF, at(3600)),
            Retry::Now(_)
        ));
    }

    #[test]
    fn a_changed_key_secret_or_spec_retries_at_once() {
        let failed = wrong_key(5);
        for changed in [
            depends_on(Some(1), "k", Some("101")),
            depends_on(Some(2), "k", Some("100")),
            depends_on(Some(1), "other", Some("100")),
        ] {
            assert_eq!(
                decide(&failed, &changed, BACKOFF, at(1)),
                Retry::Now("the spec or the key Secret changed since the failure"),
                "{changed}"
            );
        }
    }

    #[test]
    fn transient_failures_retry_at_once_and_unknown_ones_back_off() {
        let deps = depends_on(Some(1), "k", Some("100"));
        let mut failed = wrong_key(3);
        failed.kind = Kind::Transient(ErrorClass::ConnectionLost);
        assert!(matches!(
            decide(&failed, &deps, BACKOFF, at(1)),
            Retry::Now(_)
        ));
        failed.kind = Kind::Unknown;
        assert_eq!(decide(&failed, &deps, BACKOFF, at(1)), Retry::At(at(480)));
    }
}
