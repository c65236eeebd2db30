//! stunnel configurations and the reading of stunnel's log.
//!
//! The destination runs one long-lived stunnel server that `exec`s an rsync daemon per
//! connection. The source runs a short-lived stunnel client per rsync connection, in
//! stunnel's inetd mode (no service section), started by rsync through
//! `RSYNC_CONNECT_PROG`: each attempt's TLS errors then arrive on that rsync's stderr,
//! and no local port is needed. Only the file path of the key is written here: this module
//! must never read or copy the key.

use std::path::Path;

/// TCP keepalive as the reference sets it, so a vanished peer is noticed on long transfers.
const KEEPALIVE: &str = "socket = l:SO_KEEPALIVE=1\n\
                         socket = l:TCP_KEEPIDLE=180\n\
                         socket = r:SO_KEEPALIVE=1\n\
                         socket = r:TCP_KEEPIDLE=180\n";

/// The destination's server config: TLS-PSK on `accept`, an rsync daemon per connection.
pub fn render_server(
    accept: &str,
    key_file: &Path,
    ssl_version_min: &str,
    rsync_bin: &Path,
    rsyncd_conf: &Path,
) -> String {
    format!(
        "; Written by ferrosync mover destination.\n\
         foreground = yes\n\
         syslog = no\n\
         pid =\n\
         debug = info\n\
         {KEEPALIVE}\n\
         [rsync]\n\
         ciphers = kPSK\n\
         PSKsecrets = {key}\n\
         sslVersionMin = {ssl_version_min}\n\
         accept = {accept}\n\
         exec = {rsync}\n\
         execArgs = rsync --server --daemon --config={conf} .\n",
        key = key_file.display(),
        rsync = rsync_bin.display(),
        conf = rsyncd_conf.display(),
    )
}

/// The source's client config, in inetd mode: stdin/stdout is rsync's end.
pub fn render_client(connect: &str, key_file: &Path, ssl_version_min: &str) -> String {
    format!(
        "; Written by ferrosync mover source; started by rsync once per connection.\n\
         foreground = yes\n\
         syslog = no\n\
         pid =\n\
         debug = notice\n\
         socket = r:SO_KEEPALIVE=1\n\
         socket = r:TCP_KEEPIDLE=180\n\
         client = yes\n\
         ciphers = PSK\n\
         PSKsecrets = {key}\n\
         sslVersionMin = {ssl_version_min}\n\
         connect = {connect}\n",
        key = key_file.display(),
    )
}

/// What one stunnel log line tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// The server's listening socket is bound.
    Bound,
    /// Binding the listening socket failed.
    BindFailed,
    /// A TLS handshake failed because the pre-shared keys differ.
    AuthFailed,
    /// Another TLS handshake failure (version mismatch, peer gone mid-handshake).
    HandshakeFailed,
    /// The TCP connection to the peer could not be made.
    ConnectFailed,
    /// A connection was accepted (the server's peer, or the client's local rsync end).
    Accepted,
    /// The client's TCP connection to the destination was made.
    Connected,
    /// Nothing we act on.
    Other,
}

/// Classifies a stunnel log line.
pub fn classify(line: &str) -> LogEvent {
    // Wrong key: the server fails the PSK binder. Wrong identity: the server finds no PSK,
    // falls back to certificates it does not have, and the client sees a handshake_failure.
    const AUTH: [&str; 8] = [
        "binder does not verify",
        "alert handshake failure",
        "no suitable signature algorithm",
        "alert illegal parameter",
        "alert decrypt error",
        "bad record mac",
        "psk identity not found",
        "unknown psk identity",
    ];
    let lower = line.to_ascii_lowercase();
    if lower.contains("bound to") && lower.contains("service [") {
        LogEvent::Bound
    } else if lower.contains("binding service")
        && (lower.contains("failed") || lower.contains("in use"))
    {
        LogEvent::BindFailed
    } else if AUTH.iter().any(|s| lower.contains(s)) {
        LogEvent::AuthFailed
    } else if lower.contains("ssl_connect:") || lower.contains("ssl_accept:") {
        LogEvent::HandshakeFailed
    } else if lower.contains("s_connect: connect ")
        || lower.contains("no more addresses")
        || lower.contains("error resolving")
        || lower.contains("unknown host")
    {
        LogEvent::ConnectFailed
    } else if lower.contains("s_connect: connected") {
        LogEvent::Connected
    } else if lower.contains("accepted connection") {
        LogEvent::Accepted
    } else {
        LogEvent::Other
    }
}

/// Whether a stunnel line is worth forwarding to the mover's log: errors, warnings and
/// connection notices, not the per-connection version banner.
pub fn is_noteworthy(line: &str) -> bool {
    // Always printed with PSK-only configs, where certificates are not used at all.
    if line.contains("No trusted certificates found") {
        return false;
    }
    ["LOG3[", "LOG4[", "LOG2[", "LOG1[", "[!]"]
        .iter()
        .any(|p| line.contains(p))
        || !matches!(classify(line), LogEvent::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_config_matches_the_reference_section() {
        let conf = render_server(
            ":::8000",
            Path::new("/keys/psk.txt"),
            "TLSv1.3",
            Path::new("/usr/bin/rsync"),
            Path::new("/tmp/rsyncd.conf"),
        );
        for line in [
            "[rsync]",
            "ciphers = kPSK",
            "PSKsecrets = /keys/psk.txt",
            "sslVersionMin = TLSv1.3",
            "accept = :::8000",
            "exec = /usr/bin/rsync",
            "execArgs = rsync --server --daemon --config=/tmp/rsyncd.conf .",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
    }

    #[test]
    fn client_config_is_inetd_mode_without_a_section() {
        let conf = render_client("10.0.0.1:8000", Path::new("/keys/psk.txt"), "TLSv1.3");
        assert!(!conf.contains('['), "{conf}");
        assert!(conf.lines().any(|l| l == "client = yes"));
        assert!(conf.lines().any(|l| l == "connect = 10.0.0.1:8000"));
        assert!(conf.lines().any(|l| l == "ciphers = PSK"));
    }

    #[test]
    fn classifies_the_lines_stunnel_really_prints() {
        let cases = [
            (
                "LOG6[ui]: Service [rsync] (FD=8) bound to 127.0.0.1:18000",
                LogEvent::Bound,
            ),
            (
                "[.] Binding service [rsync] to 127.0.0.1:18000: Address already in use (98)",
                LogEvent::BindFailed,
            ),
            (
                "LOG3[1]: SSL_accept: ../ssl/statem/extensions.c:1578: error:0A0000FD:SSL routines::binder does not verify",
                LogEvent::AuthFailed,
            ),
            (
                "LOG3[0]: SSL_connect: ../ssl/record/rec_layer_s3.c:1601: error:0A000417:SSL routines::sslv3 alert illegal parameter",
                LogEvent::AuthFailed,
            ),
            (
                "LOG3[0]: SSL_connect: ../ssl/record/rec_layer_s3.c:1601: error:0A000410:SSL routines::sslv3 alert handshake failure",
                LogEvent::AuthFailed,
            ),
            (
                "LOG3[0]: SSL_connect: ssl/record/rec_layer_s3.c: unexpected eof while reading",
                LogEvent::HandshakeFailed,
            ),
            (
                "LOG3[0]: s_connect: connect 127.0.0.1:18999: Connection refused (111)",
                LogEvent::ConnectFailed,
            ),
            (
                "LOG5[0]: s_connect: connected 127.0.0.1:18000",
                LogEvent::Connected,
            ),
            (
                "LOG5[ui]: stunnel 5.68 on x86_64-pc-linux-gnu platform",
                LogEvent::Other,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }
}
