//! Polling with a deadline: how tests wait for the cluster to converge, instead of
//! sleeping and hoping.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// How often conditions are re-checked.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Calls `check` every [`INTERVAL`] until it returns `Ok(Some(value))`, fails with `Err`,
/// or `timeout` passes. The error names `what` and the last reason `check` gave.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Like [`until`], for checks whose failures are transient (`Err` means "not yet"); the
/// last error is reported on timeout.
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}: {err}"
                ));
            }
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}
