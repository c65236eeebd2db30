//! TLS contexts of the built-in tunnel: TLS 1.3 with an external pre-shared key, wire
//! compatible with stunnel's `PSKsecrets` (the same identity, the key as its hex-decoded
//! bytes, and TLS_AES_128_GCM_SHA256, the TLS 1.3 suite a SHA-256 PSK negotiates).
//!
//! No certificates are loaded: a peer that does not present our identity and key cannot
//! complete a handshake. This module must never log, print or copy the key bytes beyond
//! the closures OpenSSL calls.

use std::sync::{Arc, Mutex, OnceLock};

use openssl::{
    error::ErrorStack,
    ex_data::Index,
    ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef, SslVersion},
};

use super::record::Secret;
use crate::api::psk::Psk;

/// The one TLS 1.3 suite offered: what stunnel's PSK handshakes negotiate.
pub const TLS13_SUITE: &str = "TLS_AES_128_GCM_SHA256";
/// TLS 1.2 PSK suites (only with `SSL_VERSION_MIN=TLSv1.2`), as stunnel's `ciphers = PSK`.
const TLS12_CIPHERS: &str = "PSK";

/// Why a TLS context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// OpenSSL refused a setting.
    #[error("setting up TLS: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// The key's hex did not decode (the key file checks make this unreachable).
    #[error("the pre-shared key is not hex")]
    KeyNotHex,
}

/// A pre-shared key as OpenSSL needs it. Its Debug output never shows the key.
#[derive(Clone)]
pub struct Key {
    identity: Arc<[u8]>,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field(
                "secret",
                &format_args!("<{} bytes redacted>", self.secret.len()),
            )
            .finish()
    }
}

impl Key {
    /// The identity and key bytes of a validated `psk.txt`.
    pub fn from_psk(psk: &Psk) -> Result<Self, TlsError> {
        let secret = hex::decode(psk.key_hex()).map_err(|_| TlsError::KeyNotHex)?;
        Ok(Self {
            identity: psk.identity().as_bytes().into(),
            secret: secret.into(),
        })
    }
}

/// The lowest protocol version to accept: `TLSv1.3` (default) or `TLSv1.2`.
fn min_version(ssl_version_min: &str) -> SslVersion {
    if ssl_version_min == "TLSv1.2" {
        SslVersion::TLS1_2
    } else {
        SslVersion::TLS1_3
    }
}

fn common(ssl_version_min: &str) -> Result<SslContextBuilder, TlsError> {
    let mut b = SslContextBuilder::new(SslMethod::tls())?;
    b.set_min_proto_version(Some(min_version(ssl_version_min)))?;
    b.set_ciphersuites(TLS13_SUITE)?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    // Session tickets are useless to a tunnel that never resumes, and cost a message.
    b.set_options(SslOptions::NO_TICKET | SslOptions::NO_COMPRESSION);
    // The relay owns its buffers between calls; OpenSSL must accept a moved buffer.
    b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    // The application traffic secrets go to the connection's own record layer
    // ([`bulk_secrets`]); nothing is written anywhere.
    b.set_keylog_callback(capture_secret);
    Ok(b)
}

/// The TLS 1.3 application traffic secrets of one connection, from OpenSSL's key log.
#[derive(Default)]
pub struct TrafficSecrets {
    client: Option<Secret>,
    server: Option<Secret>,
}

type SecretsSlot = Arc<Mutex<TrafficSecrets>>;

fn secrets_index() -> Option<Index<Ssl, SecretsSlot>> {
    static INDEX: OnceLock<Option<Index<Ssl, SecretsSlot>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

fn capture_secret(ssl: &SslRef, line: &str) {
    let Some(slot) = secrets_index().and_then(|i| ssl.ex_data(i)) else {
        return;
    };
    // "<LABEL> <client random hex> <secret hex>"
    let mut words = line.split(' ');
    let (Some(label), Some(_), Some(secret)) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let Ok(secret) = hex::decode(secret) else {
        return;
    };
    let mut s = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match label {
        "CLIENT_TRAFFIC_SECRET_0" => s.client = Some(Secret::new(secret)),
        "SERVER_TRAFFIC_SECRET_0" => s.server = Some(Secret::new(secret)),
        _ => {}
    }
}

/// A connection of `ctx`, with a slot for its traffic secrets.
pub fn new_connection(ctx: &SslContext) -> Result<(Ssl, SecretsSlot), TlsError> {
    let mut ssl = Ssl::new(ctx)?;
    let slot = SecretsSlot::default();
    if let Some(index) = secrets_index() {
        ssl.set_ex_data(index, slot.clone());
    }
    Ok((ssl, slot))
}

/// The (sending, receiving) secrets for the built-in record layer, when the handshake
/// negotiated what it implements: TLS 1.3 with TLS_AES_128_GCM_SHA256. `None` (TLS 1.2,
/// another suite) leaves the records to OpenSSL.
pub fn bulk_secrets(ssl: &SslRef, slot: &SecretsSlot, client: bool) -> Option<(Secret, Secret)> {
    if ssl.version2() != Some(SslVersion::TLS1_3)
        || ssl.current_cipher().map(|c| c.name()) != Some(TLS13_SUITE)
    {
        return None;
    }
    let s = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (c, v) = (s.client.clone()?, s.server.clone()?);
    Some(if client { (c, v) } else { (v, c) })
}

/// The source's context: presents the identity and key.
pub fn client_context(key: &Key, ssl_version_min: &str) -> Result<SslContext, TlsError> {
    let mut b = common(ssl_version_min)?;
    let key = key.clone();
    b.set_psk_client_callback(move |_ssl, _hint, identity, psk| {
        // The identity goes out NUL-terminated; both buffers are sized by OpenSSL.
        if key.identity.len() >= identity.len() || key.secret.len() > psk.len() {
            return Ok(0);
        }
        identity[..key.identity.len()].copy_from_slice(&key.identity);
        identity[key.identity.len()] = 0;
        psk[..key.secret.len()].copy_from_slice(&key.secret);
        Ok(key.secret.len())
    });
    Ok(b.build())
}

/// The destination's context: accepts only our identities, each with its key (two while
/// a key rotates: the new one and the previous).
pub fn server_context(keys: &[Key], ssl_version_min: &str) -> Result<SslContext, TlsError> {
    let mut b = common(ssl_version_min)?;
    b.set_num_tickets(0)?;
    let keys = keys.to_vec();
    b.set_psk_server_callback(move |_ssl, identity, psk| {
        // An unknown identity gets no key: OpenSSL then falls back to certificates, which
        // there are none of, and the handshake fails as it does with stunnel.
        let Some(key) = keys.iter().find(|k| identity == Some(&k.identity[..])) else {
            return Ok(0);
        };
        if key.secret.len() > psk.len() {
            return Ok(0);
        }
        psk[..key.secret.len()].copy_from_slice(&key.secret);
        Ok(key.secret.len())
    });
    Ok(b.build())
}

/// Whether an OpenSSL handshake error means the two sides hold different keys or
/// identities, as opposed to a broken connection.
pub fn is_auth_error(text: &str) -> bool {
    // Wrong key: the server fails the PSK binder, the client gets the alert. Wrong
    // identity: the server finds no key and no certificate to fall back to.
    const AUTH: [&str; 9] = [
        "binder does not verify",
        "alert handshake failure",
        "no suitable signature algorithm",
        "alert illegal parameter",
        "alert decrypt error",
        "bad record mac",
        "psk identity not found",
        "unknown psk identity",
        "no shared cipher",
    ];
    let lower = text.to_ascii_lowercase();
    AUTH.iter().any(|s| lower.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_never_shows_the_secret() {
        let psk = Psk::parse("volsync:0123456789abcdef0123456789abcdef").expect("psk");
        let key = Key::from_psk(&psk).expect("key");
        let shown = format!("{key:?}");
        assert!(shown.contains("volsync") && shown.contains("16 bytes redacted"));
        assert!(!shown.contains("0123456789abcdef") && !shown.contains("[1, 35"));
    }

    #[test]
    fn contexts_build_for_both_versions() {
        let psk = Psk::parse("volsync:0123456789abcdef0123456789abcdef").expect("psk");
        let key = Key::from_psk(&psk).expect("key");
        for v in ["TLSv1.3", "TLSv1.2"] {
            client_context(&key, v).expect("client");
            server_context(std::slice::from_ref(&key), v).expect("server");
        }
        assert!(is_auth_error(
            "error:0A0000FD:SSL routines::binder does not verify"
        ));
        assert!(!is_auth_error("unexpected eof while reading"));
    }
}
