//! The built-in tunnel's data path: TLS done in memory between a TCP socket and a plaintext
//! peer (rsync's pipes or socket), so one system call carries many TLS records.
//!
//! stunnel reads and writes one record (at most 16 KiB) per `poll`/`read`/`write` and
//! wakes the next process for each. Here each direction has its own thread doing blocking
//! I/O with large buffers: it reads what the kernel has (up to [`CHUNK`]), encrypts or
//! decrypts all of it under the TLS lock without any system call ([`MemIo`] is the BIO),
//! and writes the result with one `write`. The socket-write lock keeps records in
//! sequence when the receiving direction has to answer (a TLS 1.3 KeyUpdate).
//! This module must never log data or key material.

use std::{
    io::{self, ErrorKind, Read, Write},
    net::{Shutdown, TcpStream},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use openssl::ssl::{ErrorCode, Ssl, SslStream};

/// The most read from either side at once.
pub const CHUNK: usize = 256 * 1024;
/// Room for one record's plaintext in a single `SSL_read`.
const RECORD: usize = 16 * 1024 + 256;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the TLS handshake")]
    Eof,
    /// TLS refused: keys, identity, version or suite differ.
    #[error("{0}")]
    Tls(String),
}

/// The ciphertext side of an in-memory TLS stream: what came from the socket, waiting for
/// OpenSSL, and what OpenSSL produced, waiting for the socket.
#[derive(Default)]
pub struct MemIo {
    /// `inbound[pos..end]` is unread; the buffer is swapped in whole, never copied.
    inbound: Vec<u8>,
    pos: usize,
    end: usize,
    outbound: Vec<u8>,
}

impl MemIo {
    /// Hands `buf[..n]` to OpenSSL by swapping buffers: `buf` gets the old one back, to
    /// read the socket into next. The relay decrypts until WANT_READ, which OpenSSL only
    /// reports once it consumed all input (it keeps a partial record in its own buffer),
    /// so the swap is the rule; input left unread (after the handshake) is kept by copying.
    fn swap_in(&mut self, buf: &mut Vec<u8>, n: usize) {
        if self.pos < self.end {
            self.inbound.truncate(self.end);
            self.inbound.drain(..self.pos);
            self.inbound.extend_from_slice(&buf[..n]);
            self.pos = 0;
            self.end = self.inbound.len();
            return;
        }
        std::mem::swap(&mut self.inbound, buf);
        self.pos = 0;
        self.end = n;
        if buf.len() < self.inbound.len() {
            buf.resize(self.inbound.len(), 0);
        }
    }

    /// Copies `data` in (the handshake's small reads).
    fn feed(&mut self, data: &[u8]) {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        self.inbound.truncate(self.end);
        self.inbound.extend_from_slice(data);
        self.end = self.inbound.len();
    }

    /// Ciphertext received but not yet read by OpenSSL.
    pub fn take_unread(&mut self) -> Vec<u8> {
        let rest = self.inbound[self.pos..self.end].to_vec();
        self.pos = self.end;
        rest
    }

    /// Moves the produced ciphertext into `out` (left empty by the caller).
    fn take_outbound(&mut self, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.outbound, out);
    }
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = &self.inbound[self.pos..self.end];
        if left.is_empty() {
            // OpenSSL turns this into SSL_ERROR_WANT_READ.
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which end of the handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source, connecting.
    Client,
    /// The destination, accepting.
    Server,
}

/// Runs the TLS handshake over `sock` (whose read timeout bounds it). On failure the
/// alert OpenSSL produced is still sent, so the peer learns why.
pub fn handshake(
    ssl: Ssl,
    sock: &TcpStream,
    side: Side,
) -> Result<SslStream<MemIo>, HandshakeError> {
    let mut tls =
        SslStream::new(ssl, MemIo::default()).map_err(|e| HandshakeError::Tls(e.to_string()))?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        let step = match side {
            Side::Client => tls.connect(),
            Side::Server => tls.accept(),
        };
        tls.get_mut().take_outbound(&mut out);
        if !out.is_empty() {
            let sent = (&*sock).write_all(&out);
            out.clear();
            if step.is_ok() {
                sent?;
            }
        }
        match step {
            Ok(()) => return Ok(tls),
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                let n = (&*sock).read(&mut buf)?;
                if n == 0 {
                    return Err(HandshakeError::Eof);
                }
                tls.get_mut().feed(&buf[..n]);
            }
            Err(e) => {
                let text = e
                    .ssl_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                return Err(HandshakeError::Tls(text));
            }
        }
    }
}

/// Relays a connection whose handshake is done: with the built-in record layer when the
/// handshake negotiated TLS 1.3 with AES-128-GCM ([`super::record`]), else with OpenSSL's.
pub fn run(
    mut tls: SslStream<MemIo>,
    secrets: &std::sync::Arc<Mutex<super::psk_tls::TrafficSecrets>>,
    side: Side,
    sock: &TcpStream,
    plain_in: impl Read + Send,
    plain_out: impl Write + std::os::fd::AsFd + Send,
    linger: Duration,
) -> Relayed {
    match super::psk_tls::bulk_secrets(tls.ssl(), secrets, side == Side::Client) {
        Some((tx, rx)) => {
            let pending = tls.get_mut().take_unread();
            super::record::relay(&tx, &rx, pending, sock, plain_in, plain_out, linger)
        }
        None => relay(tls, sock, plain_in, plain_out, linger),
    }
}

/// How a relay ended.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Plaintext bytes from the plaintext peer to the TLS peer.
    pub up: u64,
    /// Plaintext bytes from the TLS peer to the plaintext peer.
    pub down: u64,
    /// The first error of either direction, if any.
    pub error: Option<io::Error>,
}

/// Relays until both directions ended: plaintext from `plain_in` goes out encrypted on
/// `sock`, records from `sock` come out decrypted on `plain_out`. `plain_out` is dropped as
/// soon as the TLS peer is done, so rsync sees its end of input (a socket must shut itself
/// down on drop, see [`ShutdownOnDrop`]). After the plaintext peer closed, the TLS peer
/// gets `linger` to finish before the relay stops waiting for it.
pub fn relay(
    tls: SslStream<MemIo>,
    sock: &TcpStream,
    plain_in: impl Read + Send,
    plain_out: impl Write + Send,
    linger: Duration,
) -> Relayed {
    let tls = Mutex::new(tls);
    let wlock = Mutex::new(());
    let up_done = AtomicBool::new(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (up, down) = std::thread::scope(|s| {
        let up = s.spawn(|| {
            // Moved in: a receiver cannot be shared between threads.
            let done_rx = done_rx;
            let r = pump_up(&tls, &wlock, sock, plain_in);
            if r.is_err() {
                // Wakes the other direction, whose peer is gone too.
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
        let down = pump_down(&tls, &wlock, sock, plain_out, &up_done);
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
    let mut out = Relayed::default();
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked peer thread leaves consistent buffers; keep going to shut down cleanly.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Plaintext peer → TLS → socket.
fn pump_up(
    tls: &Mutex<SslStream<MemIo>>,
    wlock: &Mutex<()>,
    sock: &TcpStream,
    mut plain_in: impl Read,
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut total = 0u64;
    loop {
        let n = match plain_in.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // rsync gone: end the stream as at EOF.
            Err(_) => 0,
        };
        let _w = lock(wlock);
        {
            let mut t = lock(tls);
            if n == 0 {
                // close_notify; the peer may still be sending, which is fine in TLS 1.3.
                let _ = t.shutdown();
            } else {
                let mut done = 0;
                while done < n {
                    done += t.ssl_write(&buf[done..n]).map_err(io::Error::other)?;
                }
            }
            t.get_mut().take_outbound(&mut out);
        }
        (&*sock).write_all(&out)?;
        out.clear();
        if n == 0 {
            let _ = sock.shutdown(Shutdown::Write);
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Socket → TLS → plaintext peer.
fn pump_down(
    tls: &Mutex<SslStream<MemIo>>,
    wlock: &Mutex<()>,
    sock: &TcpStream,
    mut plain_out: impl Write,
    up_done: &AtomicBool,
) -> io::Result<u64> {
    let mut net = vec![0u8; CHUNK];
    let mut plain = vec![0u8; CHUNK + 4 * RECORD];
    let mut total = 0u64;
    // Records that arrived with the end of the handshake are decrypted before any read.
    let mut fed = false;
    loop {
        let mut closed = false;
        if fed {
            let n = match (&*sock).read(&mut net) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The linger after the plaintext peer left has passed: nobody is waiting.
                Err(e)
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                        && up_done.load(Ordering::Acquire) =>
                {
                    return Ok(total);
                }
                Err(e) => return Err(e),
            };
            // A TCP close without close_notify: rsync judges a truncated stream itself.
            closed = n == 0;
            lock(tls).get_mut().swap_in(&mut net, n);
        }
        // Decrypt everything fed, in as few plaintext writes as the buffer allows.
        let mut len = 0;
        let answer;
        {
            let mut t = lock(tls);
            fed = true;
            loop {
                if plain.len() - len < RECORD {
                    // Full: write this out, then come back without reading the socket.
                    fed = false;
                    break;
                }
                match t.ssl_read(&mut plain[len..]) {
                    Ok(k) => len += k,
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        closed = true;
                        break;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            answer = !t.get_ref().outbound.is_empty();
        }
        if answer {
            let _w = lock(wlock);
            let mut out = Vec::new();
            lock(tls).get_mut().take_outbound(&mut out);
            (&*sock).write_all(&out)?;
        }
        if len > 0 {
            plain_out.write_all(&plain[..len])?;
            total += len as u64;
        }
        if closed && fed {
            plain_out.flush()?;
            return Ok(total);
        }
    }
}

/// A plaintext writer on a socket that other descriptors share (the connect helper's
/// stdout is rsync's socketpair, also open as stdin): dropping it shuts the socket's
/// sending side down, so rsync sees the end of input even while stdin stays open.
pub struct ShutdownOnDrop(pub std::fs::File);

impl Write for ShutdownOnDrop {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl std::os::fd::AsFd for ShutdownOnDrop {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        // ENOTSOCK for a pipe, whose close on drop is enough.
        let _ = socket2::SockRef::from(&self.0).shutdown(Shutdown::Write);
    }
}

/// Unacknowledged data older than this ends the connection (a peer gone without a reset).
const USER_TIMEOUT: Duration = Duration::from_secs(600);

/// TCP settings of both ends: no Nagle delay (the relay writes whole batches, and rsync's
/// protocol has round trips); keepalive as the reference sets it, so a vanished peer is
/// noticed on long transfers; and a bound on unacknowledged data, which keepalive does not
/// cover, as rsync's default `--timeout` of the source.
pub fn tune_socket(sock: &TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(180));
    let sref = socket2::SockRef::from(sock);
    sref.set_tcp_keepalive(&keepalive)?;
    sref.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memio_reads_what_was_fed_then_would_block() {
        let mut io = MemIo::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            io.read(&mut buf).expect_err("empty").kind(),
            ErrorKind::WouldBlock
        );
        io.feed(b"abcdef");
        assert_eq!(io.read(&mut buf).expect("read"), 4);
        assert_eq!(&buf, b"abcd");
        io.feed(b"gh");
        assert_eq!(io.read(&mut buf).expect("read"), 4);
        assert_eq!(&buf, b"efgh");
        let mut next = b"ijkl-not-read".to_vec();
        io.swap_in(&mut next, 4);
        assert_eq!(io.read(&mut buf).expect("read"), 4);
        assert_eq!(&buf, b"ijkl");
        assert!(io.read(&mut buf).is_err());
        assert!(
            next.len() >= 13,
            "the old buffer comes back, at least as long"
        );
        // Unread input survives a swap.
        let mut more = b"mnop".to_vec();
        io.feed(b"xy");
        io.swap_in(&mut more, 2);
        assert_eq!(io.read(&mut buf).expect("read"), 4);
        assert_eq!(&buf, b"xymn");
        io.write_all(b"out").expect("write");
        let mut out = Vec::new();
        io.take_outbound(&mut out);
        assert_eq!(out, b"out");
    }
}
