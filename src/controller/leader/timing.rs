//! When a holder renews and when it must stop, and when a standby may take the Lease:
//! pure arithmetic on the monotonic clock, so that tests pass any instant.
//!
//! Safety rests on one order of events: a renewal's request starts before the apiserver
//! stores it, and a standby can only see the stored renewal after that. So a standby that
//! waits a full lease duration from when *it saw* the last renewal can never take the Lease
//! before the holder, counting from when *it sent* that renewal, has stopped. Neither side
//! trusts the wall-clock times written in the Lease (clocks of two nodes differ).

use std::time::{Duration, Instant};

/// The timing of one election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease: Duration,
    /// How long before the Lease would expire the holder stops reconciling when it could
    /// not renew: a margin for clock drift and for stopping itself.
    pub margin: Duration,
}

impl Timing {
    /// How often the holder renews: a third of the time it may go without renewing, so
    /// that two failed attempts still leave a third.
    pub fn renew_every(&self) -> Duration {
        (self.lease.saturating_sub(self.margin) / 3).max(Duration::from_millis(100))
    }

    /// When a holder whose last successful renewal was *sent* at `renewed_at` must have
    /// stopped reconciling.
    pub fn step_down_at(&self, renewed_at: Instant) -> Instant {
        renewed_at + self.lease.saturating_sub(self.margin)
    }

    /// How long a standby waits between looks at a Lease someone else holds.
    pub fn poll_every(&self) -> Duration {
        self.renew_every()
    }
}

/// A standby's view of the Lease: the version it last saw and when it first saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The Lease's resourceVersion: any renewal changes it.
    pub version: String,
    /// Its holder; `None` or empty when released.
    pub holder: Option<String>,
    /// Its `leaseDurationSeconds`, as the holder wrote it.
    pub duration: Duration,
    /// When this replica first saw this version.
    pub seen_at: Instant,
}

impl Sighting {
    /// The view after reading the Lease at `now`: the first sighting of a version keeps its
    /// time, so an unrenewed Lease ages, and a renewed one starts over.
    pub fn update(
        previous: Option<&Sighting>,
        version: String,
        holder: Option<String>,
        duration: Duration,
        now: Instant,
    ) -> Sighting {
        let seen_at = match previous {
            Some(p) if p.version == version => p.seen_at,
            _ => now,
        };
        Sighting {
            version,
            holder: holder.filter(|h| !h.is_empty()),
            duration,
            seen_at,
        }
    }

    /// When the Lease may be taken: at once when nobody holds it, else a full duration
    /// after this replica first saw the current renewal.
    pub fn free_at(&self) -> Instant {
        match self.holder {
            None => self.seen_at,
            Some(_) => self.seen_at + self.duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            lease: 15 * SEC,
            margin: 5 * SEC,
        }
    }

    #[test]
    fn the_holder_stops_before_any_standby_may_take_over() {
        let t0 = Instant::now();
        let t = timing();
        // The holder sent its last successful renewal at t0; the apiserver stored it at
        // some time after, and a standby saw it no earlier than that.
        for seen_after in [Duration::ZERO, 10 * Duration::from_millis(1), 3 * SEC] {
            let standby =
                Sighting::update(None, "7".into(), Some("a".into()), t.lease, t0 + seen_after);
            assert!(t.step_down_at(t0) + t.margin <= standby.free_at());
            assert!(t.step_down_at(t0) < standby.free_at());
        }
        assert_eq!(t.step_down_at(t0), t0 + 10 * SEC);
    }

    #[test]
    fn renewals_leave_room_for_failed_attempts() {
        let t = timing();
        let every = t.renew_every();
        assert!(every * 3 <= t.lease - t.margin, "{every:?}");
        assert!(every * 2 < t.lease - t.margin);
        let tiny = Timing {
            lease: SEC,
            margin: SEC,
        };
        assert_eq!(tiny.renew_every(), Duration::from_millis(100), "never zero");
    }

    #[test]
    fn an_unrenewed_lease_ages_and_a_renewed_one_starts_over() {
        let t0 = Instant::now();
        let d = 15 * SEC;
        let first = Sighting::update(None, "1".into(), Some("a".into()), d, t0);
        let same = Sighting::update(Some(&first), "1".into(), Some("a".into()), d, t0 + 9 * SEC);
        assert_eq!(
            same.free_at(),
            t0 + d,
            "the same version keeps its first sighting"
        );
        let renewed = Sighting::update(Some(&same), "2".into(), Some("a".into()), d, t0 + 10 * SEC);
        assert_eq!(renewed.free_at(), t0 + 10 * SEC + d);
        let released = Sighting::update(
            Some(&renewed),
            "3".into(),
            Some(String::new()),
            d,
            t0 + 11 * SEC,
        );
        assert_eq!(
            released.free_at(),
            t0 + 11 * SEC,
            "a released Lease is free at once"
        );
    }
}
