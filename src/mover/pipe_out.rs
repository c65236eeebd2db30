//! Where the receiving direction of the built-in tunnel puts opened records, and how their
//! plaintext reaches the plaintext peer.
//!
//! On the destination that peer is the rsync daemon's stdin, a pipe. Writing to a pipe
//! copies every byte into newly allocated pipe pages; `vmsplice(2)` instead puts
//! references to the tunnel's own pages into the pipe, and the daemon's `read` copies
//! from them. The pages must then stay untouched until the daemon has read them, so the
//! records are received into a ring of buffers, and a buffer is reused only once the pipe
//! holds nothing of it any more: everything written to the pipe minus what it still holds
//! (`FIONREAD`) is what the daemon has read. Any other peer (the source's socket to
//! rsync) gets a plain `writev` from a single buffer.
//!
//! A pipe also needs pacing. The daemon is usually the slowest stage, so the pipe is full,
//! and a writer blocked on a full pipe is woken as soon as the reader frees a single page
//! (`pipe_read` wakes the writer whenever it read from a full pipe): the tunnel then went
//! in lock-step with the daemon's reads of about 12 KB, one wake-up and one `vmsplice` per
//! read (54,604 of them for 1 GiB, 20 KB each, against 5,503 socket reads). Sockets have
//! a low-water mark for writers (woken once half the buffer is free); pipes have none. So
//! the pipe's write end is non-blocking, and once a write finds it full, the tunnel sleeps
//! until the daemon has drained it to a quarter, for the time the daemon's measured
//! reading rate needs, and then writes everything it has in one call.
//!
//! This module must never let a buffer be written, reused or freed while the pipe may
//! still hold a reference to it: the daemon would read other data than was received.

use std::{
    io::{self, IoSlice, Write},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

/// Buffers in the ring when splicing: a pipe of 1 MiB holds at most 256 page references,
/// about three full buffers' worth of records, so the next buffer is normally free.
const RING: usize = 8;
/// How often a full ring looks again whether the reader has moved on.
const WAIT_POLL: Duration = Duration::from_millis(1);
/// How long the end of a relay waits for the reader to take what the pipe holds; after
/// that the buffers are leaked rather than freed under the reader.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// A full pipe is written to again once it holds at most this fraction of its size.
const REFILL_AT: u64 = 4;
/// Bounds of one pause while the reader drains a full pipe: short enough that a reader
/// faster than measured never waits long for more, long enough to be worth a wake-up.
const PAUSE_MIN: Duration = Duration::from_micros(20);
const PAUSE_MAX: Duration = Duration::from_millis(2);
/// The longest pause while the reader takes nothing at all: at most this long of a
/// resumed reader waiting on an empty pipe, at least this long between two looks.
const STALLED_MAX: Duration = Duration::from_millis(5);
/// The reader's rate assumed before one was measured (bytes per second): high, so the
/// first pause errs short.
const FIRST_RATE: f64 = 2e9;

/// The plaintext peer of the receiving direction, with the buffers records are read into.
pub struct PlainOut<W: Write + AsFd> {
    out: W,
    /// `vmsplice` works on this peer (a pipe) and has not failed.
    splice: bool,
    /// The ring's buffers, `len` bytes each, one after the other.
    bufs: Region,
    len: usize,
    count: usize,
    /// Per buffer: the stream position the reader must pass before it is free again.
    ends: Vec<u64>,
    /// Bytes written to the peer so far.
    written: u64,
    /// Some bytes went in by reference: the pipe may point into the buffers.
    spliced: bool,
    next: usize,
    /// The pipe's size in bytes, when the peer is a pipe (paced, see the module's notes).
    pipe_size: Option<u64>,
    /// The last write found the pipe full: wait for it to drain before the next one.
    full: bool,
    /// The reader's rate seen while it last drained the pipe, bytes per second.
    drain_rate: f64,
}

impl<W: Write + AsFd> PlainOut<W> {
    /// Wraps `out`; every buffer has `len` bytes.
    pub fn new(out: W, len: usize) -> Self {
        let splice = is_pipe(&out);
        let count = if splice { RING } else { 1 };
        // Paced only if the write end could be made non-blocking (it is ours alone: the
        // daemon holds the other end); otherwise a write waits in the kernel as before.
        let pipe_size = if splice && set_nonblocking(&out).is_ok() {
            pipe_size(&out).ok()
        } else {
            None
        };
        Self {
            out,
            splice,
            bufs: Region::new(len * count, splice),
            len,
            count,
            ends: vec![0; count],
            written: 0,
            spliced: false,
            next: 0,
            pipe_size,
            full: false,
            drain_rate: FIRST_RATE,
        }
    }

    /// The next buffer to receive into, once the reader is done with it; returns its index.
    pub fn next_buffer(&mut self) -> io::Result<usize> {
        let i = self.next;
        self.next = (i + 1) % self.count;
        if self.splice {
            self.wait_consumed(self.ends[i], None)?;
        }
        Ok(i)
    }

    /// Buffer `i`.
    pub fn buf(&mut self, i: usize) -> &mut [u8] {
        let len = self.len;
        &mut self.bufs.as_mut_slice()[i * len..(i + 1) * len]
    }

    /// Buffers `from` and `to` at once (distinct), to carry a partial record over.
    pub fn pair(&mut self, from: usize, to: usize) -> (&[u8], &mut [u8]) {
        assert_ne!(from, to, "two different buffers");
        let len = self.len;
        let all = self.bufs.as_mut_slice();
        if from < to {
            let (a, b) = all.split_at_mut(to * len);
            (&a[from * len..(from + 1) * len], &mut b[..len])
        } else {
            let (a, b) = all.split_at_mut(from * len);
            (&b[..len], &mut a[to * len..(to + 1) * len])
        }
    }

    /// Writes `buf(i)[start..start + len]` for every span, in order; returns the bytes.
    pub fn send(&mut self, i: usize, spans: &[(usize, usize)]) -> io::Result<u64> {
        let buf = &self.bufs.as_slice()[i * self.len..(i + 1) * self.len];
        let mut slices: Vec<IoSlice<'_>> = spans
            .iter()
            .map(|&(start, len)| IoSlice::new(&buf[start..start + len]))
            .collect();
        let mut left = &mut slices[..];
        let mut total = 0u64;
        while !left.is_empty() {
            if std::mem::take(&mut self.full)
                && let Some(size) = self.pipe_size
            {
                wait_for_room(&self.out, size, &mut self.drain_rate)?;
            }
            let want: usize = left.iter().map(|s| s.len()).sum();
            let wrote = if self.splice {
                match vmsplice(&self.out, left, self.pipe_size.is_some()) {
                    Ok(n) => {
                        self.spliced = true;
                        Ok(n)
                    }
                    // Not allowed here (a seccomp profile, say): copy from now on.
                    Err(e) if e.raw_os_error().is_some_and(not_supported) => {
                        self.splice = false;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.out.write_vectored(left)
            };
            let n = match wrote {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Only a paced (non-blocking) pipe says this: it is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.full = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // A short write to a pipe means it filled up.
            self.full = self.pipe_size.is_some() && n < want;
            total += n as u64;
            IoSlice::advance_slices(&mut left, n);
        }
        self.written += total;
        self.ends[i] = self.written;
        Ok(total)
    }

    /// Flushes the peer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Waits until the reader has taken the stream up to `end`, or is gone (then nothing
    /// will read the pages any more), or `limit` passed (`Ok(false)`).
    fn wait_consumed(&self, end: u64, limit: Option<Duration>) -> io::Result<bool> {
        let start = Instant::now();
        loop {
            let unread = unread(&self.out)?;
            if self.written.saturating_sub(unread) >= end || reader_gone(&self.out) {
                return Ok(true);
            }
            if limit.is_some_and(|l| start.elapsed() >= l) {
                return Ok(false);
            }
            std::thread::sleep(WAIT_POLL);
        }
    }
}

impl<W: Write + AsFd> Drop for PlainOut<W> {
    fn drop(&mut self) {
        if self.spliced
            && !matches!(
                self.wait_consumed(self.written, Some(DRAIN_LIMIT)),
                Ok(true)
            )
        {
            // The pipe may still point into the buffers: never hand them back.
            std::mem::forget(std::mem::replace(&mut self.bufs, Region::empty()));
        }
    }
}

/// Transparent huge pages are this large on x86-64 (and arm64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// The ring's memory. When spliced, it is aligned to and advised for transparent huge
/// pages: `vmsplice` pins every page it hands to the pipe (`get_user_pages`), which for
/// 4 KiB pages was the largest part of its cost (9 % of the destination tunnel's CPU); a
/// huge page is pinned as a whole. Without huge pages (`never`), it still works.
struct Region {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: the region is plain memory owned by one `PlainOut`, moved with it.
unsafe impl Send for Region {}

impl Region {
    fn new(len: usize, huge: bool) -> Self {
        let (size, align) = if huge {
            (len.next_multiple_of(HUGE_PAGE), HUGE_PAGE)
        } else {
            (len.max(1), 4096)
        };
        let layout = std::alloc::Layout::from_size_align(size, align).expect("a valid layout");
        // SAFETY: the layout's size is not zero.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        if huge {
            // SAFETY: advice only, on memory this region owns; before the first touch, so
            // the faults below already map huge pages.
            unsafe {
                nix::libc::madvise(ptr.as_ptr().cast(), size, nix::libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: `size` bytes from `ptr` are ours; zeroed once, so they are initialised.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Self { ptr, layout }
    }

    /// A region of nothing, left in place of one that is leaked.
    fn empty() -> Self {
        Self::new(1, false)
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: initialised in `new`, owned by `self`, borrowed through `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

fn not_supported(errno: i32) -> bool {
    use nix::libc::{EINVAL, ENOSYS, EPERM};
    matches!(errno, EINVAL | ENOSYS | EPERM)
}

/// Waits until the full pipe `out` of `size` bytes holds at most a [`REFILL_AT`]th of it,
/// or its reader is gone (the next write then fails with EPIPE), pausing for as long as
/// the reader needs at `rate`, the rate it drained the pipe at last (updated here).
fn wait_for_room(out: &impl AsFd, size: u64, rate: &mut f64) -> io::Result<()> {
    let low = size / REFILL_AT;
    let mut seen = (Instant::now(), unread(out)?);
    if seen.1 <= low {
        // Full of small pieces (each record's contents takes a page slot of its own, so
        // 256 short records fill 1 MiB of pipe): wait for a free slot as a blocking write
        // would, rather than retry at once.
        return wait_writable(out);
    }
    let mut stalled = PAUSE_MIN;
    while seen.1 > low && !reader_gone(out) {
        let pause = Duration::from_secs_f64((seen.1 - low) as f64 / *rate);
        std::thread::sleep(pause.clamp(PAUSE_MIN, PAUSE_MAX).max(stalled));
        let now = (Instant::now(), unread(out)?);
        let dt = now.0.duration_since(seen.0).as_secs_f64();
        if now.1 < seen.1 && dt > 0.0 {
            *rate = (seen.1 - now.1) as f64 / dt;
            stalled = PAUSE_MIN;
        } else {
            // The reader took nothing (busy elsewhere, or stuck until its I/O timeout):
            // look less and less often.
            stalled = (stalled * 2).min(STALLED_MAX);
        }
        seen = now;
    }
    Ok(())
}

/// Waits until the pipe has a free slot, its reader is gone, or [`STALLED_MAX`] passed.
fn wait_writable(out: &impl AsFd) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
    let millis = u16::try_from(STALLED_MAX.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn set_nonblocking(fd: &impl AsFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// The pipe's size in bytes.
fn pipe_size(fd: &impl AsFd) -> nix::Result<u64> {
    let n = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn is_pipe(fd: &impl AsFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
            .contains(nix::sys::stat::SFlag::S_IFIFO)
    })
}

/// Bytes the pipe holds unread.
fn unread(fd: &impl AsFd) -> io::Result<u64> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for it.
    let r = unsafe { nix::libc::ioctl(fd.as_fd().as_raw_fd(), nix::libc::FIONREAD, &raw mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether the pipe's reading end is closed.
fn reader_gone(fd: &impl AsFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|_| {
        fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
    })
}

/// `vmsplice(2)` of `slices` into the pipe `fd`, without gifting the pages; `nonblock`:
/// a full pipe fails with EAGAIN instead of waiting for room.
fn vmsplice(fd: &impl AsFd, slices: &[IoSlice<'_>], nonblock: bool) -> io::Result<usize> {
    let count = slices.len().min(1024);
    // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the slices stay alive and
    // unmodified until the reader has consumed them (see the ring's bookkeeping).
    let n = unsafe {
        nix::libc::vmsplice(
            fd.as_fd().as_raw_fd(),
            slices.as_ptr().cast::<nix::libc::iovec>(),
            count,
            if nonblock {
                nix::libc::SPLICE_F_NONBLOCK
            } else {
                0
            },
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Many rounds through a pipe whose reader lags: every byte arrives as written, although
    /// the ring's buffers are overwritten round after round.
    #[test]
    fn spliced_rounds_arrive_intact_through_a_slow_reader() {
        let (mut rx, tx) = std::io::pipe().expect("pipe");
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = vec![0u8; 7000];
            loop {
                std::thread::sleep(Duration::from_micros(200));
                match rx.read(&mut chunk).expect("read") {
                    0 => return all,
                    n => all.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let mut expected = Vec::new();
        {
            let mut out = PlainOut::new(tx, 64 * 1024);
            assert!(out.splice, "a pipe is spliced into");
            for round in 0u32..200 {
                let i = out.next_buffer().expect("buffer");
                let buf = out.buf(i);
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = (round as usize * 31 + k) as u8;
                }
                // Two spans with a gap, as records' contents lie between headers.
                let spans = [(5, 20_000), (20_100, 30_000 + round as usize)];
                for &(s, l) in &spans {
                    expected.extend_from_slice(&out.buf(i)[s..s + l]);
                }
                out.send(i, &spans).expect("send");
            }
        }
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the pipe delivered other bytes than were sent"
        );
    }

    /// Records of a few bytes each take a pipe slot of their own, so the pipe fills up
    /// while holding almost nothing: the writer waits for a free slot, and nothing is lost
    /// or reordered.
    #[test]
    fn short_spans_that_fill_the_pipe_arrive_intact() {
        let (mut rx, tx) = std::io::pipe().expect("pipe");
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = vec![0u8; 64];
            loop {
                std::thread::sleep(Duration::from_micros(50));
                match rx.read(&mut chunk).expect("read") {
                    0 => return all,
                    n => all.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let mut expected = Vec::new();
        {
            let mut out = PlainOut::new(tx, 8 * 1024);
            assert!(out.pipe_size.is_some(), "a pipe is paced");
            for round in 0u32..40 {
                let i = out.next_buffer().expect("buffer");
                for (k, b) in out.buf(i).iter_mut().enumerate() {
                    *b = (round as usize * 7 + k) as u8;
                }
                // 400 spans of 5 bytes: far more pieces than the pipe has slots.
                let spans: Vec<(usize, usize)> = (0..400).map(|k| (k * 10, 5)).collect();
                for &(s, l) in &spans {
                    expected.extend_from_slice(&out.buf(i)[s..s + l]);
                }
                assert_eq!(out.send(i, &spans).expect("send"), 2000);
            }
        }
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the pipe delivered other bytes than were sent"
        );
    }

    #[test]
    fn other_peers_get_a_copy_from_one_buffer() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut out = PlainOut::new(a, 1024);
        assert!(!out.splice);
        let i = out.next_buffer().expect("buffer");
        out.buf(i)[..4].copy_from_slice(b"abcd");
        out.send(i, &[(1, 2)]).expect("send");
        assert_eq!(
            out.next_buffer().expect("buffer"),
            i,
            "one buffer, reused at once"
        );
        drop(out);
        let mut got = Vec::new();
        b.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"bc");
    }
}
