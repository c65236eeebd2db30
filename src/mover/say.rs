//! The mover's log output: plain lines on stdout, which become the pod's log.
//!
//! Lines are written whole (one `println!` each) so rsync statistics lines stay verbatim for
//! the controller. This module must never be handed key material.

use std::io::Write as _;

/// Prints a line as it is (rsync statistics, progress lines).
pub fn raw(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints one of the mover's own messages, prefixed by its role.
pub fn info(role: &str, message: &str) {
    raw(&format!("ferrosync mover {role}: {message}"));
}
