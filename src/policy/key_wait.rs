//! A replication waiting for its key: the psk plugin answered "not available yet" (the
//! other side has not stored it), and the reconcile comes back every poll interval. The
//! vault is asked again only after a backoff that grows, with jitter, from
//! `engine.key_retry_min` to `engine.key_retry_max`; in between, the waiting answer is
//! repeated without running the plugin. A `key_retry_max` of 0 asks on every pass.
//!
//! Only "not available yet" is remembered; it holds no key material. A key answered, or
//! a failure, forgets the wait, so the next answer is fresh.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use sha2::{Digest as _, Sha256};

use super::types::{PskDecision, PskInput, Side};

/// Whose wait it is: one replication object and side, as the plugin saw it. A changed
/// input (another pair annotation, new labels) is asked about at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WaitKey {
    namespace: String,
    name: String,
    side: Side,
    input: [u8; 32],
}

impl WaitKey {
    pub fn of(input: &PskInput) -> Self {
        let json = serde_json::to_vec(input).unwrap_or_default();
        WaitKey {
            namespace: input.namespace.clone(),
            name: input.name.clone(),
            side: input.side,
            input: Sha256::digest(&json).into(),
        }
    }
}

struct Wait {
    backoff: ExponentialBackoff,
    /// Not asked again before this.
    next: Instant,
    /// The plugin's last "not available yet", repeated until then.
    answer: PskDecision,
    /// The sha256 of the plugin that answered: a reloaded plugin is asked at once.
    sha256: String,
}

/// The waits of all replications.
pub(crate) struct KeyWaits {
    builder: ExponentialBuilder,
    max: Duration,
    waits: Mutex<HashMap<WaitKey, Wait>>,
}

impl KeyWaits {
    pub fn new(min: Duration, max: Duration) -> Self {
        KeyWaits {
            builder: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max.max(min))
                .with_jitter()
                .without_max_times(),
            max: max.max(min),
            waits: Mutex::new(HashMap::new()),
        }
    }

    /// The remembered waiting answer while `key`'s backoff runs (for the plugin with
    /// `sha256`), with the time left; `None` when the plugin should be asked.
    pub fn pending(
        &self,
        key: &WaitKey,
        sha256: &str,
        now: Instant,
    ) -> Option<(PskDecision, Duration)> {
        if self.max.is_zero() {
            return None;
        }
        let waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let wait = waits.get(key)?;
        (wait.sha256 == sha256 && now < wait.next).then(|| (wait.answer.clone(), wait.next - now))
    }

    /// Records a "not available yet" answer: the next ask waits one more backoff step.
    /// Returns that wait.
    pub fn not_available(
        &self,
        key: WaitKey,
        sha256: &str,
        answer: PskDecision,
        now: Instant,
    ) -> Duration {
        if self.max.is_zero() {
            return Duration::ZERO;
        }
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        // Objects deleted while waiting leave entries behind; anything not asked about
        // for well over the longest backoff is gone (jitter at most doubles a step).
        let stale = self.max * 4;
        waits.retain(|_, w| now.saturating_duration_since(w.next) < stale);
        let wait = waits.entry(key).or_insert_with(|| Wait {
            backoff: self.builder.build(),
            next: now,
            answer: answer.clone(),
            sha256: sha256.to_owned(),
        });
        if wait.sha256 != sha256 {
            wait.backoff = self.builder.build();
            wait.sha256 = sha256.to_owned();
        }
        let delay = wait.backoff.next().unwrap_or(self.max);
        wait.next = now + delay;
        wait.answer = answer;
        delay
    }

    /// Forgets `key`'s wait: it got its key, or something else happened worth a fresh ask.
    pub fn forget(&self, key: &WaitKey) {
        self.waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waits.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::PskAnswer;

    fn input(name: &str) -> PskInput {
        PskInput {
            side: Side::Source,
            namespace: "ns".into(),
            name: name.into(),
            labels: Default::default(),
            annotations: Default::default(),
            key_secret_name: format!("volsync-rsync-tls-{name}"),
            key_secret_exists: false,
            member: String::new(),
        }
    }

    fn waiting() -> PskDecision {
        PskDecision {
            answer: PskAnswer::NotAvailableYet,
            reason: "no key at secret/ferrosync/psk/p yet".into(),
        }
    }

    #[test]
    fn asks_again_only_after_a_growing_jittered_backoff() {
        let waits = KeyWaits::new(Duration::from_secs(2), Duration::from_secs(60));
        let key = WaitKey::of(&input("db"));
        let t0 = Instant::now();
        assert!(
            waits.pending(&key, "a", t0).is_none(),
            "first ask goes through"
        );
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let d = waits.not_available(key.clone(), "a", waiting(), now);
            delays.push(d);
            // Within the backoff the answer is repeated, without asking.
            let (answer, left) = waits.pending(&key, "a", now).expect("waiting");
            assert_eq!(answer, waiting());
            assert_eq!(left, d);
            let just_before = now + d - Duration::from_millis(1);
            assert!(waits.pending(&key, "a", just_before).is_some());
            now += d;
            assert!(waits.pending(&key, "a", now).is_none(), "due at {d:?}");
        }
        // Jitter adds up to one step: each delay is in [step, 2 step).
        let mut step = Duration::from_secs(2);
        for d in &delays {
            assert!(*d >= step && *d < step * 2, "{d:?} for step {step:?}");
            step = (step * 2).min(Duration::from_secs(60));
        }
        assert!(
            delays[7] >= Duration::from_secs(60),
            "capped at the max: {delays:?}"
        );
    }

    #[test]
    fn a_key_or_a_new_plugin_ends_the_wait() {
        let waits = KeyWaits::new(Duration::from_secs(2), Duration::from_secs(60));
        let key = WaitKey::of(&input("db"));
        let now = Instant::now();
        waits.not_available(key.clone(), "a", waiting(), now);
        assert!(
            waits.pending(&key, "b", now).is_none(),
            "a reloaded plugin is asked"
        );
        assert!(waits.pending(&key, "a", now).is_some());
        waits.forget(&key);
        assert!(waits.pending(&key, "a", now).is_none());
        // Another object's wait is its own.
        waits.not_available(key.clone(), "a", waiting(), now);
        assert!(
            waits
                .pending(&WaitKey::of(&input("other")), "a", now)
                .is_none()
        );
    }

    #[test]
    fn a_changed_input_or_no_backoff_asks_at_once() {
        let waits = KeyWaits::new(Duration::from_secs(2), Duration::from_secs(60));
        let now = Instant::now();
        let before = input("db");
        waits.not_available(WaitKey::of(&before), "a", waiting(), now);
        let mut repaired = before.clone();
        repaired
            .annotations
            .insert("ferrosync.io/psk-pair".into(), "db-eu-us".into());
        assert!(waits.pending(&WaitKey::of(&before), "a", now).is_some());
        assert!(waits.pending(&WaitKey::of(&repaired), "a", now).is_none());

        let off = KeyWaits::new(Duration::ZERO, Duration::ZERO);
        off.not_available(WaitKey::of(&before), "a", waiting(), now);
        assert!(off.pending(&WaitKey::of(&before), "a", now).is_none());
    }

    #[test]
    fn deleted_objects_do_not_accumulate() {
        let waits = KeyWaits::new(Duration::from_secs(1), Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..100 {
            waits.not_available(WaitKey::of(&input(&format!("o{i}"))), "a", waiting(), now);
        }
        assert_eq!(waits.len(), 100);
        let later = now + Duration::from_secs(120);
        waits.not_available(WaitKey::of(&input("new")), "a", waiting(), later);
        assert_eq!(waits.len(), 1);
    }
}
