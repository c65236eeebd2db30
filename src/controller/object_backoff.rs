//! Per-object backoff of transient reconcile errors and waits: each object doubles from
//! `requeue.error_min` up to `requeue.error_max` on its own, with jitter (up to the delay
//! again, still capped), so a thousand objects that failed together neither retry in step
//! nor slow one another down, and one object's clean pass forgets only its own failures.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The backoff state of every object that is failing or waiting, by key.
pub struct ObjectBackoffs {
    min: Duration,
    max: Duration,
    by_key: Mutex<HashMap<String, ExponentialBackoff>>,
}

impl ObjectBackoffs {
    /// Backoffs doubling from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// The next delay of the object `key`: its own sequence, independent of any other's.
    pub fn next(&self, key: &str) -> Duration {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .entry(key.to_string())
            .or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(self.min)
                    .with_max_delay(self.max)
                    .with_factor(2.0)
                    .with_jitter()
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Forgets the object's failures after a clean reconcile.
    pub fn reset(&self, key: &str) {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// The first `n` delays of `key`.
    fn delays(b: &ObjectBackoffs, key: &str, n: usize) -> Vec<Duration> {
        (0..n).map(|_| b.next(key)).collect()
    }

    #[test]
    fn each_object_doubles_within_its_jitter_up_to_the_cap() {
        let b = ObjectBackoffs::new(MIN, MAX);
        // Without jitter: 1, 2, 4, 8, 16, 32, 60, 60 s; jitter adds at most as much again.
        let base = [1, 2, 4, 8, 16, 32, 60, 60, 60].map(Duration::from_secs);
        for (i, (got, base)) in delays(&b, "ns/a", base.len())
            .into_iter()
            .zip(base)
            .enumerate()
        {
            assert!(
                got >= base && got <= (base * 2).min(MAX),
                "delay {i}: {got:?}, expected {base:?} up to {:?}",
                (base * 2).min(MAX)
            );
        }
    }

    #[test]
    fn objects_back_off_independently_and_a_reset_forgets_only_its_own() {
        let b = ObjectBackoffs::new(MIN, MAX);
        delays(&b, "ns/busy", 6);
        // Another object's failures do not lengthen this one's first wait.
        assert!(b.next("ns/other") <= MIN * 2);
        b.reset("ns/other");
        assert!(b.next("ns/other") <= MIN * 2, "a reset starts over");
        // The busy one keeps its place in its own sequence.
        assert!(b.next("ns/busy") >= Duration::from_secs(60));
        b.reset("ns/busy");
        assert!(b.next("ns/busy") <= MIN * 2);
    }

    #[test]
    fn objects_that_failed_together_do_not_retry_together() {
        let b = ObjectBackoffs::new(MIN, MAX);
        let first: Vec<Duration> = (0..50).map(|i| b.next(&format!("ns/o{i}"))).collect();
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        // Jitter spreads the first retries over [1 s, 2 s): 50 objects in step would give
        // one value, which random jitter gives with negligible probability.
        assert!(
            distinct.len() > 40,
            "{} distinct delays: {first:?}",
            distinct.len()
        );
        assert!(
            first.iter().all(|d| *d >= MIN && *d <= MIN * 2),
            "{first:?}"
        );
    }
}
