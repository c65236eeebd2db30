//! Reload on change: watches the files the policy configuration depends on (bundle
//! `policy.toml`s and components) and reloads the engine when their contents change.
//!
//! Polling contents rather than inotify: a ConfigMap mount changes by swapping a symlink,
//! which content hashing sees reliably. A failed reload must never stop the watcher or
//! replace the serving set; it is logged, counted, and retried on the next change.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::{config::PolicyConfig, engine::PolicyEngine, plugin::watched_files};

/// A digest of every watched file's path and contents (missing files included as such).
pub fn fingerprint(config: &PolicyConfig) -> String {
    let mut hasher = Sha256::new();
    let keys = config.signatures.public_keys.iter().cloned();
    let points = config
        .all_points()
        .into_iter()
        .flat_map(|(_, point, cfg, _)| watched_files(point, cfg));
    for file in keys.chain(points) {
        hasher.update(file.to_string_lossy().as_bytes());
        match std::fs::read(&file) {
            Ok(bytes) => hasher.update(Sha256::digest(&bytes)),
            Err(e) => hasher.update(format!("unreadable: {}", e.kind())),
        }
    }
    hex::encode(hasher.finalize())
}

/// Polls every `interval` and reloads `engine` when the files behind `config` change.
/// The baseline fingerprint is taken before this returns.
pub fn spawn_watcher(
    engine: PolicyEngine,
    config: PolicyConfig,
    interval: Duration,
) -> JoinHandle<()> {
    // The baseline is taken now, not in the task, so a change made right after this call
    // returns is never mistaken for the starting state. (A few small files: cheap.)
    let mut seen = fingerprint(&config);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A registry that refused or could not serve a bundle is asked again with
        // backoff, without waiting for a file to change.
        let mut retry: Option<(std::time::Instant, backon::ExponentialBackoff)> = None;
        loop {
            ticker.tick().await;
            let fp_config = config.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&fp_config)).await else {
                continue;
            };
            let due = retry
                .as_ref()
                .is_some_and(|(at, _)| std::time::Instant::now() >= *at);
            if now == seen && !due {
                continue;
            }
            // Remember the new state even if it fails to load: a broken bundle is retried
            // when it changes again, not recompiled every interval.
            seen = now;
            // Errors are logged, counted and kept for status by `reload` itself.
            match engine.reload(&config).await {
                Err(e) if e.is_retryable() => {
                    let (at, waits) = retry.get_or_insert_with(|| {
                        (std::time::Instant::now(), super::oci::retry_backoff())
                    });
                    *at = std::time::Instant::now()
                        + waits.next().unwrap_or(Duration::from_secs(120));
                }
                _ => retry = None,
            }
        }
    })
}
