//! Debug mode (`DEBUG_MOVER=1`, set by the controller for an object annotated
//! `volsync.backube/enable-debug-mover`): the mover starts, moves no data and waits, so a
//! person can exec into the Pod and look at its volumes, key and network. Deleting the
//! marker file ends it, as with VolSync's movers.

use std::{path::Path, time::Duration};

use tokio::sync::watch;

use super::say;

/// The variable that turns debug mode on.
pub const ENV: &str = "DEBUG_MOVER";
/// The file whose removal ends a debug mover.
pub const MARKER: &str = "exit-debug-if-removed";

/// Whether debug mode was asked for.
pub fn requested() -> bool {
    std::env::var(ENV).is_ok_and(|v| v.trim() == "1")
}

/// Waits until `<tmp_dir>/exit-debug-if-removed` is removed or the Pod is stopped; moves
/// nothing. Returns whether it ended because the marker went (else: a signal, or the
/// marker could not be made).
pub async fn hold(role: &str, tmp_dir: &Path, term: &mut watch::Receiver<bool>) -> bool {
    let marker = tmp_dir.join(MARKER);
    if let Err(e) = std::fs::write(&marker, b"") {
        say::info(
            role,
            &format!("debug mode: cannot create {}: {e}", marker.display()),
        );
        return false;
    }
    say::info(
        role,
        &format!(
            "debug mode ({ENV}=1): no data will be moved. Exec into this pod to investigate; \
             run `ferrosync mover {role}` to try a transfer by hand; delete {} to end this pod.",
            marker.display()
        ),
    );
    loop {
        if !marker.exists() {
            say::info(role, "debug mode: marker removed, exiting");
            return true;
        }
        tokio::select! {
            _ = term.wait_for(|stop| *stop) => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_until_the_marker_goes_and_touches_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_tx, mut rx) = watch::channel(false);
        let path = dir.path().to_path_buf();
        let task = tokio::spawn(async move { hold("source", &path, &mut rx).await });
        let marker = dir.path().join(MARKER);
        for _ in 0..50 {
            if marker.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(marker.exists(), "the marker is made");
        assert!(!task.is_finished(), "it waits while the marker exists");
        std::fs::remove_file(&marker).expect("remove");
        assert!(task.await.expect("joins"), "ends because the marker went");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[tokio::test]
    async fn a_signal_ends_it_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = watch::channel(false);
        tx.send_replace(true);
        assert!(!hold("destination", dir.path(), &mut rx).await);
    }
}
