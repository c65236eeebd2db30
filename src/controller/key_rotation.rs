//! What a generated key Secret holds at the start of an iteration, given the key the PSK
//! policy supplies for the pair now. Pure.
//!
//! A rotation must never leave a moment where neither side's key works. The sides check
//! the pair's key at the start of each iteration, so:
//! - a source always takes the supplied key: its next connection uses it;
//! - a destination that sees a new key keeps the previous one too (stunnel accepts either,
//!   by identity), from `since`, until a sync that completed after `since`. That sync
//!   ended after the new key was in the vault, so the source's next iteration, which
//!   starts after it, reads the new key; only then is the previous one dropped.
//!
//! A source iteration begun before the rotation still holds the previous key, which the
//! destination accepts; one begun after it holds the new key, which the destination's
//! listener (started at its own iteration start, after the rotation) accepts too.

use k8s_openapi::jiff::Timestamp;

use crate::{
    api::psk::{KeyRing, Psk},
    resources::Side,
};

/// What to do with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It holds what it should.
    Keep,
    /// Write `ring`; `previous_since` is when the previous key (if `ring` has one) began
    /// to be superseded.
    Write {
        ring: KeyRing,
        previous_since: Option<Timestamp>,
    },
}

/// The next contents of a key Secret holding `held` (with its previous key superseded
/// since `previous_since`), when the policy supplies `supplied`, the last sync completed
/// at `last_sync`, and it is `now`.
pub fn next(
    side: Side,
    held: &KeyRing,
    previous_since: Option<Timestamp>,
    supplied: &Psk,
    last_sync: Option<Timestamp>,
    now: Timestamp,
) -> Step {
    let current = held.current();
    if supplied != current {
        return match side {
            Side::Source => Step::Write {
                ring: KeyRing::single(supplied.clone()),
                previous_since: None,
            },
            // Same identity: stunnel could not hold both, so the new key replaces the old
            // at once (the vault plugin gives each rotation an identity of its own).
            Side::Destination => match KeyRing::rotated(supplied.clone(), current.clone()) {
                Ok(ring) => Step::Write {
                    ring,
                    previous_since: Some(now),
                },
                Err(_) => Step::Write {
                    ring: KeyRing::single(supplied.clone()),
                    previous_since: None,
                },
            },
        };
    }
    match (held.previous(), previous_since) {
        (None, _) => Step::Keep,
        // A previous key without a start (the annotation was lost): start now.
        (Some(_), None) => Step::Write {
            ring: held.clone(),
            previous_since: Some(now),
        },
        (Some(_), Some(since)) if last_sync.is_some_and(|l| l > since) => Step::Write {
            ring: KeyRing::single(current.clone()),
            previous_since: None,
        },
        (Some(_), Some(_)) => Step::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(identity: &str, byte: &str) -> Psk {
        Psk::new(identity, &byte.repeat(32)).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// Whether a client presenting `client` gets through a server holding `server`.
    fn connects(client: &KeyRing, server: &KeyRing) -> bool {
        let presented = client.current();
        server.current() == presented || server.previous() == Some(presented)
    }

    fn apply(step: Step, held: &mut KeyRing, since: &mut Option<Timestamp>) {
        if let Step::Write {
            ring,
            previous_since,
        } = step
        {
            *held = ring;
            *since = previous_since;
        }
    }

    #[test]
    fn a_rotation_never_leaves_the_sides_without_a_common_key() {
        let (old, new) = (key("ferrosync", "ab"), key("ferrosync.v2", "cd"));
        let mut dst = KeyRing::single(old.clone());
        let mut src = KeyRing::single(old.clone());
        let mut since = None;
        let mut last_sync = Some(at(0));

        // t=10: the destination's iteration starts after the vault got the new key.
        let step = next(Side::Destination, &dst, since, &new, last_sync, at(10));
        apply(step, &mut dst, &mut since);
        assert_eq!(dst.current(), &new);
        assert_eq!(dst.previous(), Some(&old));
        // A source iteration begun before the rotation still gets through.
        assert!(connects(&src, &dst));
        last_sync = Some(at(20));

        // t=30: the source's next iteration starts: it takes the new key, and connects.
        let mut src_since = None;
        let step = next(Side::Source, &src, src_since, &new, None, at(30));
        apply(step, &mut src, &mut src_since);
        assert_eq!(src.current(), &new);
        assert!(connects(&src, &dst));

        // t=40: the destination's next iteration: a sync completed after the rotation
        // (t=20 > t=10), so the previous key goes; the source already has the new one.
        let step = next(Side::Destination, &dst, since, &new, last_sync, at(40));
        apply(step, &mut dst, &mut since);
        assert_eq!((dst.current(), dst.previous()), (&new, None));
        assert_eq!(since, None);
        assert!(connects(&src, &dst));
    }

    #[test]
    fn the_previous_key_stays_until_a_sync_completes_after_the_rotation() {
        let (old, new) = (key("ferrosync", "ab"), key("ferrosync.v2", "cd"));
        let held = KeyRing::rotated(new.clone(), old).unwrap();
        for last in [None, Some(at(5)), Some(at(10))] {
            assert_eq!(
                next(Side::Destination, &held, Some(at(10)), &new, last, at(99)),
                Step::Keep,
                "{last:?}"
            );
        }
        assert_eq!(
            next(Side::Destination, &held, None, &new, None, at(99)),
            Step::Write {
                ring: held.clone(),
                previous_since: Some(at(99))
            }
        );
    }

    #[test]
    fn an_unchanged_key_is_kept_and_a_same_identity_change_replaces() {
        let k = key("ferrosync", "ab");
        let held = KeyRing::single(k.clone());
        for side in [Side::Source, Side::Destination] {
            assert_eq!(next(side, &held, None, &k, None, at(1)), Step::Keep);
        }
        let same_identity = key("ferrosync", "cd");
        assert_eq!(
            next(Side::Destination, &held, None, &same_identity, None, at(1)),
            Step::Write {
                ring: KeyRing::single(same_identity),
                previous_since: None
            }
        );
    }
}
