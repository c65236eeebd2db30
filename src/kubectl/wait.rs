//! Waiting with something on screen: a spinner on a terminal (none when output is piped),
//! a deadline, and a clear error when it passes.

use std::{future::Future, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use super::Error;

/// How often a wait polls the apiserver.
pub const POLL: Duration = Duration::from_millis(500);

/// A spinner that says what is awaited; hidden when stderr is not a terminal.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Polls `check` until it yields a value, at most `timeout`. `what` names the wait in the
/// timeout error, which says what to look at.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    within(what, timeout, check).await?.ok_or_else(|| {
        Error::NotReady(format!(
            "timed out after {}s waiting for {what}",
            timeout.as_secs()
        ))
    })
}

/// Polls `check`, with a spinner saying `what`, until it yields a value (`Some`) or
/// `timeout` passes (`None`, for a caller whose timeout error says more than [`until`]'s).
pub async fn within<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let bar = spinner(what);
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        match check().await {
            Ok(None) if tokio::time::Instant::now() < deadline => {}
            other => break other,
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    outcome
}
