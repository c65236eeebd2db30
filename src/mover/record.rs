//! The TLS 1.3 record layer for bulk data, once OpenSSL has completed the handshake: AES-128-
//! GCM (TLS_AES_128_GCM_SHA256) sealed and opened in place, as kernel TLS would do it.
//!
//! With OpenSSL's own record layer each byte is copied three more times in user space
//! (into and out of OpenSSL's buffers, and between the relay's). Here plaintext is read
//! straight into the record slots of the send buffer (`readv`), sealed where it lies and
//! sent with one `write`; received records are opened where they were read and handed to
//! rsync with one `writev`. The traffic secrets come from OpenSSL's key log callback
//! (RFC 8446 §7.1 derives the key and IV from them; §5.2–5.4 frame the records).
//! Post-handshake messages are handled as RFC 8446 §4.6 requires: NewSessionTicket is
//! ignored, KeyUpdate updates the keys (and is answered when the peer asks).
//! This module must never log or return secrets, keys or plaintext.

use std::{
    io::{self, ErrorKind, IoSliceMut, Read, Write},
    net::{Shutdown, TcpStream},
    os::fd::AsFd,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ring::{aead, hkdf};

use super::pipe_out::PlainOut;

/// Content types (RFC 8446 §5.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Handshake message types after the handshake (RFC 8446 §4).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// The largest plaintext of a record, and what sealing adds: content type and tag.
const MAX_PLAIN: usize = 1 << 14;
const HEADER: usize = 5;
const TAG: usize = 16;
const SLOT: usize = HEADER + MAX_PLAIN + 1 + TAG;
/// The largest record a peer may send (RFC 8446 §5.2: 2^14 + 256).
const MAX_RECORD: usize = HEADER + MAX_PLAIN + 256;
/// Records per send: 16 slots, 256 KiB of plaintext per system call.
const SLOTS: usize = 16;

/// Why the record layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A record failed authentication or broke the framing: the stream is not trusted.
    #[error("TLS record rejected: {0}")]
    Protocol(&'static str),
    /// The peer sent a fatal alert.
    #[error("the peer sent TLS alert {0}")]
    Alert(u8),
}

impl From<RecordError> for io::Error {
    fn from(e: RecordError) -> Self {
        io::Error::new(ErrorKind::InvalidData, e)
    }
}

/// One direction's traffic secret (32 bytes for SHA-256 suites).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps a secret from the key log.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(secret: &[u8], label: &[u8], out: &mut [u8]) -> Result<(), RecordError> {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, secret);
    let length = u16::try_from(out.len()).map_err(|_| RecordError::Protocol("label length"))?;
    let full_len = u8::try_from(6 + label.len()).map_err(|_| RecordError::Protocol("label"))?;
    let info: [&[u8]; 5] = [&length.to_be_bytes(), &[full_len], b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| RecordError::Protocol("key derivation"))
}

/// The keys of one direction and its record sequence number.
struct Keys {
    secret: Vec<u8>,
    key: aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(secret: &[u8]) -> Result<Self, RecordError> {
        let mut key = [0u8; 16];
        let mut iv = [0u8; 12];
        expand_label(secret, b"key", &mut key)?;
        expand_label(secret, b"iv", &mut iv)?;
        let key = aead::UnboundKey::new(&aead::AES_128_GCM, &key)
            .map_err(|_| RecordError::Protocol("key"))?;
        Ok(Self {
            secret: secret.to_vec(),
            key: aead::LessSafeKey::new(key),
            iv,
            seq: 0,
        })
    }

    /// The next record's nonce: the IV XOR the sequence number (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<aead::Nonce, RecordError> {
        // One XOR of the IV's last eight bytes, not a loop per byte: this runs once per
        // record, and the crate's own code is not optimised in the dev profile.
        let mut nonce = self.iv;
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&nonce[4..]);
        let tail = u64::from_be_bytes(tail) ^ self.seq;
        nonce[4..].copy_from_slice(&tail.to_be_bytes());
        // A 64-bit sequence never wraps in practice; refusing is what the RFC asks.
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(RecordError::Protocol("sequence number exhausted"))?;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }

    /// Moves to the next generation of keys (KeyUpdate, RFC 8446 §7.2).
    fn update(&mut self) -> Result<(), RecordError> {
        let mut next = vec![0u8; self.secret.len()];
        expand_label(&self.secret, b"traffic upd", &mut next)?;
        *self = Self::new(&next)?;
        Ok(())
    }

    /// Seals `slot[HEADER..HEADER + n]` (plaintext in place) as one record of `kind`;
    /// returns the record's length.
    fn seal(&mut self, slot: &mut [u8], n: usize, kind: u8) -> Result<usize, RecordError> {
        let body = n + 1 + TAG;
        let len = u16::try_from(body).map_err(|_| RecordError::Protocol("record too long"))?;
        slot[..HEADER].copy_from_slice(&[APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8]);
        slot[HEADER + n] = kind;
        let nonce = self.next_nonce()?;
        let (header, rest) = slot.split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(&header[..]), &mut rest[..n + 1])
            .map_err(|_| RecordError::Protocol("seal"))?;
        rest[n + 1..n + 1 + TAG].copy_from_slice(tag.as_ref());
        Ok(HEADER + body)
    }
}

/// What the sending side shares with the receiving one: its keys (a KeyUpdate the peer
/// requests is answered on the sending keys) and the socket's write half.
struct Tx {
    keys: Keys,
    buf: Vec<u8>,
}

/// Relays between the plaintext peer and `sock` with the TLS 1.3 application traffic
/// secrets `tx` (ours) and `rx` (the peer's). `pending` holds ciphertext that arrived
/// with the end of the handshake. Same contract as [`super::relay::relay`].
pub fn relay(
    tx: &Secret,
    rx: &Secret,
    pending: Vec<u8>,
    sock: &TcpStream,
    plain_in: impl Read + Send,
    plain_out: impl Write + AsFd + Send,
    linger: Duration,
) -> super::relay::Relayed {
    let keys = match (Keys::new(&tx.0), Keys::new(&rx.0)) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => {
            return super::relay::Relayed {
                error: Some(e.into()),
                ..Default::default()
            };
        }
    };
    let tx = Mutex::new(Tx {
        keys: keys.0,
        buf: vec![0u8; SLOT * SLOTS],
    });
    let rx = keys.1;
    let up_done = AtomicBool::new(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (up, down) = std::thread::scope(|s| {
        let up = s.spawn(|| {
            // Moved in: a receiver cannot be shared between threads.
            let done_rx = done_rx;
            let r = seal_up(&tx, sock, plain_in);
            if r.is_err() {
                let _ = sock.shutdown(Shutdown::Both);
            } else {
                // A read already blocked ignores a new timeout: end it after the linger.
                if done_rx.recv_timeout(linger).is_err() {
                    let _ = sock.shutdown(Shutdown::Both);
                }
            }
            up_done.store(true, Ordering::Release);
            r
        });
        let down = open_down(rx, &tx, pending, sock, plain_out, &up_done);
        let _ = done_tx.send(());
        if down.is_err() {
            let _ = sock.shutdown(Shutdown::Both);
        }
        (
            up.join()
                .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked"))),
            down,
        )
    });
    let mut out = super::relay::Relayed::default();
    match up {
        Ok(n) => out.up = n,
        Err(e) => out.error = Some(e),
    }
    match down {
        Ok(n) => out.down = n,
        Err(e) => out.error = out.error.take().or(Some(e)),
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Plaintext peer → records → socket: `readv` into the record slots, seal in place, one
/// `write` of all records.
fn seal_up(tx: &Mutex<Tx>, sock: &TcpStream, mut plain_in: impl Read) -> io::Result<u64> {
    let mut total = 0u64;
    // The reading buffer is swapped with the shared one only to seal and send, so a
    // KeyUpdate answer never waits for rsync to write.
    let mut buf = vec![0u8; SLOT * SLOTS];
    loop {
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> = buf
                .chunks_mut(SLOT)
                .map(|slot| IoSliceMut::new(&mut slot[HEADER..HEADER + MAX_PLAIN]))
                .collect();
            match plain_in.read_vectored(&mut slices) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // rsync gone: end the stream as at EOF.
                Err(_) => 0,
            }
        };
        let mut t = lock(tx);
        let Tx { keys, buf: shared } = &mut *t;
        std::mem::swap(shared, &mut buf);
        let mut end = 0;
        if n == 0 {
            // close_notify (RFC 8446 §6.1): alert level 1 (warning), description 0.
            shared[HEADER] = 1;
            shared[HEADER + 1] = 0;
            end = keys.seal(&mut shared[..SLOT], 2, ALERT)?;
        } else {
            // Full slots are contiguous records; only the last one may be short, so the
            // records form one contiguous run ending in the last slot.
            let mut left = n;
            let mut i = 0;
            while left > 0 {
                let take = left.min(MAX_PLAIN);
                let len = keys.seal(
                    &mut shared[i * SLOT..(i + 1) * SLOT],
                    take,
                    APPLICATION_DATA,
                )?;
                // A full slot's record fills it exactly, so the next starts right after.
                end = i * SLOT + len;
                left -= take;
                i += 1;
            }
        }
        let sent = (&*sock).write_all(&shared[..end]);
        std::mem::swap(shared, &mut buf);
        drop(t);
        sent?;
        if n == 0 {
            let _ = sock.shutdown(Shutdown::Write);
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Socket → records → plaintext peer: open records where they were read, and hand their
/// contents over in one call per read ([`PlainOut`]: spliced into a pipe by reference, or
/// one `writev`).
fn open_down<W: Write + AsFd>(
    mut rx: Keys,
    tx: &Mutex<Tx>,
    pending: Vec<u8>,
    sock: &TcpStream,
    plain_out: W,
    up_done: &AtomicBool,
) -> io::Result<u64> {
    let mut out = PlainOut::new(plain_out, SLOT * SLOTS + MAX_RECORD);
    let mut cur = out.next_buffer()?;
    let mut have = {
        let buf = out.buf(cur);
        let have = pending.len().min(buf.len());
        buf[..have].copy_from_slice(&pending[..have]);
        have
    };
    let mut total = 0u64;
    let mut first = true;
    loop {
        let buf = out.buf(cur);
        if !first || have == 0 {
            let n = match (&*sock).read(&mut buf[have..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                        && up_done.load(Ordering::Acquire) =>
                {
                    return Ok(total);
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                // A TCP close without close_notify: rsync judges a truncated stream.
                out.flush()?;
                return Ok(total);
            }
            have += n;
        }
        first = false;
        // Open every complete record in place; note where each one's plaintext lies.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        let mut closed = false;
        while have - at >= HEADER {
            let h = &buf[at..at + HEADER];
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if h[0] != APPLICATION_DATA || !(1 + TAG..=MAX_RECORD - HEADER).contains(&len) {
                return Err(RecordError::Protocol("bad record header").into());
            }
            if have - at < HEADER + len {
                break;
            }
            let (header, body) = buf[at..at + HEADER + len].split_at_mut(HEADER);
            let nonce = rx.next_nonce()?;
            let plain = rx
                .key
                .open_in_place(nonce, aead::Aad::from(&header[..]), body)
                .map_err(|_| RecordError::Protocol("authentication failed"))?;
            // The content type is the last non-zero byte (RFC 8446 §5.4).
            let inner = plain
                .iter()
                .rposition(|b| *b != 0)
                .ok_or(RecordError::Protocol("no content type"))?;
            let kind = plain[inner];
            match kind {
                APPLICATION_DATA if inner > 0 => spans.push((at + HEADER, inner)),
                APPLICATION_DATA => {}
                HANDSHAKE => {
                    let request = post_handshake(&plain[..inner])?;
                    // The receiving keys change after this record, whatever is asked.
                    if let Some(requested) = request {
                        rx.update()?;
                        if requested {
                            answer_key_update(tx, sock)?;
                        }
                    }
                }
                ALERT => {
                    // [level, description]; description 0 is close_notify.
                    let description = plain[..inner].get(1).copied().unwrap_or(255);
                    if description == 0 {
                        closed = true;
                        at += HEADER + len;
                        break;
                    }
                    return Err(RecordError::Alert(description).into());
                }
                _ => return Err(RecordError::Protocol("unexpected content type").into()),
            }
            at += HEADER + len;
        }
        total += out.send(cur, &spans)?;
        if closed {
            out.flush()?;
            return Ok(total);
        }
        // Carry the partial record (at most one) to the front of the next buffer, which
        // is this one again unless the contents just went into a pipe by reference.
        let next = out.next_buffer()?;
        if next == cur {
            out.buf(cur).copy_within(at..have, 0);
        } else {
            let (from, to) = out.pair(cur, next);
            to[..have - at].copy_from_slice(&from[at..have]);
        }
        cur = next;
        have -= at;
    }
}

/// Reads post-handshake messages: `Some(update_requested)` for a KeyUpdate, `None` for
/// the rest (NewSessionTicket, which a tunnel never uses).
fn post_handshake(mut msgs: &[u8]) -> Result<Option<bool>, RecordError> {
    let mut update = None;
    while !msgs.is_empty() {
        if msgs.len() < 4 {
            return Err(RecordError::Protocol("split handshake message"));
        }
        let len = usize::from(msgs[1]) << 16 | usize::from(msgs[2]) << 8 | usize::from(msgs[3]);
        let body = msgs
            .get(4..4 + len)
            .ok_or(RecordError::Protocol("split handshake message"))?;
        match msgs[0] {
            NEW_SESSION_TICKET => {}
            KEY_UPDATE if len == 1 && body[0] <= 1 => update = Some(body[0] == 1),
            _ => return Err(RecordError::Protocol("unexpected handshake message")),
        }
        msgs = &msgs[4 + len..];
    }
    Ok(update)
}

/// Sends KeyUpdate(update_not_requested) on the old sending keys, then moves them on.
fn answer_key_update(tx: &Mutex<Tx>, sock: &TcpStream) -> io::Result<()> {
    let mut t = lock(tx);
    let mut record = [0u8; HEADER + 5 + 1 + TAG];
    record[HEADER..HEADER + 5].copy_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
    let len = t.keys.seal(&mut record, 5, HANDSHAKE)?;
    (&*sock).write_all(&record[..len])?;
    t.keys.update()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 (simple 1-RTT handshake): the server's application traffic secret
    /// and the key and IV derived from it.
    #[test]
    fn derives_the_rfc_8448_keys() {
        let secret =
            hex::decode("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
                .expect("hex");
        let mut key = [0u8; 16];
        let mut iv = [0u8; 12];
        expand_label(&secret, b"key", &mut key).expect("key");
        expand_label(&secret, b"iv", &mut iv).expect("iv");
        assert_eq!(hex::encode(key), "9f02283b6c9c07efc26bb9f2ac92e356");
        assert_eq!(hex::encode(iv), "cf782b88dd83549aadf1e984");
    }

    #[test]
    fn sealed_records_open_with_the_same_secret_in_sequence() {
        let secret = vec![7u8; 32];
        let mut tx = Keys::new(&secret).expect("keys");
        let mut rx = Keys::new(&secret).expect("keys");
        for round in 0..3u8 {
            let mut slot = vec![0u8; SLOT];
            slot[HEADER..HEADER + 4].copy_from_slice(&[round, 1, 2, 3]);
            let len = tx.seal(&mut slot, 4, APPLICATION_DATA).expect("seal");
            assert_eq!(len, HEADER + 4 + 1 + TAG);
            let (header, body) = slot[..len].split_at_mut(HEADER);
            let nonce = rx.next_nonce().expect("nonce");
            let plain = rx
                .key
                .open_in_place(nonce, aead::Aad::from(&header[..]), body)
                .expect("opens");
            assert_eq!(plain, [round, 1, 2, 3, APPLICATION_DATA]);
        }
        // After a KeyUpdate on one side only, records no longer open.
        tx.update().expect("update");
        let mut slot = vec![0u8; SLOT];
        let len = tx.seal(&mut slot, 1, APPLICATION_DATA).expect("seal");
        let (header, body) = slot[..len].split_at_mut(HEADER);
        let nonce = rx.next_nonce().expect("nonce");
        assert!(
            rx.key
                .open_in_place(nonce, aead::Aad::from(&header[..]), body)
                .is_err()
        );
    }

    #[test]
    fn post_handshake_messages_are_ticket_or_key_update() {
        assert_eq!(post_handshake(&[4, 0, 0, 2, 9, 9]).expect("ticket"), None);
        assert_eq!(
            post_handshake(&[24, 0, 0, 1, 1]).expect("update"),
            Some(true)
        );
        assert_eq!(
            post_handshake(&[4, 0, 0, 0, 24, 0, 0, 1, 0]).expect("both"),
            Some(false)
        );
        assert!(post_handshake(&[24, 0, 0, 1, 2]).is_err());
        assert!(post_handshake(&[1, 0, 0, 9]).is_err());
    }
}
