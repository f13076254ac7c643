//! One client connection: its socket, its read buffer and who owns it right now.
//!
//! Ownership is a lock-free claim: exactly one thread (the poller reading a head, or the worker answering a
//! request) owns a connection at a time, and only the owner locks `io`, so that lock is never contended.
//! Readiness that arrives while another thread owns the connection is remembered in `SEEN`, because with
//! edge-triggered polling that edge will not be reported again.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use mio::net::{TcpStream, UnixStream};
use parking_lot::Mutex;

use crate::sys::{sendfile_until_full, SendfileEnd};

const OWNED: u8 = 1;
const SEEN: u8 = 2;

/// Smallest read buffer; it grows while a head or a buffered body needs more.
const INITIAL_BUFFER: usize = 4096;

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn shutdown_write(&self) {
        // The peer may already be gone; nothing to do about it.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

// Reads and writes go straight to the socket (see `sys::recv`); mio's streams are kept for registration,
// shutdown and closing.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv(self.raw_fd(), buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::send(self.raw_fd(), buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::send_vectored(self.raw_fd(), bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Ip(SocketAddr),
    Unix,
}

/// The socket and buffered bytes of a connection; only its owner touches it.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // independent flags of one connection, each set in one place
pub struct ConnIo {
    /// `None` once the connection is closed.
    pub stream: Option<Stream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read proved the socket empty; without a new edge there is nothing more to read.
    pub drained: bool,
    /// A `100 Continue` was already sent for the request being read.
    pub continue_sent: bool,
    /// Our side is shut down; remaining input is read and dropped until the peer closes.
    pub closing: bool,
    /// Response bytes owed to the client: the tail of a finished response it was not ready to take (the poller
    /// sends it), small blocks of a streamed response staged to leave in one write (see `stage`), or the end of
    /// a response held back to leave with the next ones (see `defer`).
    out: Vec<u8>,
    /// Close once `out` is sent instead of reading the next request.
    pub close_after_flush: bool,
    /// The end of a file body that follows `out` (see `park_file`).
    file_tail: Option<FileTail>,
    /// `out` ends with a finished response no write has tried yet (see `Conn::may_defer`): no writable edge will
    /// come for it, so whoever holds it must send it.
    pub deferred: bool,
    /// Requests read from this connection so far.
    pub requests: u64,
    /// Clock second at which the first byte of the request being read arrived (the head timeout counts from
    /// here, however slowly the rest trickles in).
    pub head_since: Option<u64>,
    /// A PROXY protocol header must come before the first request.
    pub proxy_pending: bool,
    /// The client address a PROXY protocol header gave, which replaces the peer's in environ.
    pub proxied: Option<std::net::SocketAddr>,
}

/// What is left of a file body sent with sendfile(2) once the client stopped taking it at once: the poller sends the
/// rest as the client makes room, from its own copy of the descriptor.
#[derive(Debug)]
struct FileTail {
    file: OwnedFd,
    offset: u64,
    remaining: u64,
}

/// Largest response tail parked for the poller; beyond it the answering thread waits for the client.
pub const OUT_BUFFER: usize = 256 * 1024;
/// Most bytes of a streamed response staged before they are written by the answering thread itself.
pub const STAGE_LIMIT: usize = 64 * 1024;

/// The first staging reserves this much, so a generator's small blocks do not regrow the buffer one by one. An
/// emptied buffer of at most this size is kept for the connection's next response (glibc treats an 8 KiB
/// allocation as a large one and consolidates its small free chunks each time), until the idle sweep frees it.
const STAGE_START: usize = 8 * 1024;

/// Writes of up to this many bytes in several pieces are joined and sent with one send(2): for a small response
/// that costs less, in the kernel, than writev(2) and its iovec.
const SMALL_WRITE: usize = 1024;

/// Pieces of one write kept on the stack: a response head, a block and its chunk framing need no allocation.
pub const INLINE_PIECES: usize = 8;

/// The slices of one write: on the stack up to `INLINE_PIECES`, on the heap past that.
pub struct Pieces<'a> {
    inline: [IoSlice<'a>; INLINE_PIECES],
    len: usize,
    spilled: Vec<IoSlice<'a>>,
}

impl Default for Pieces<'_> {
    fn default() -> Self {
        Pieces {
            inline: [IoSlice::new(&[]); INLINE_PIECES],
            len: 0,
            spilled: Vec::new(),
        }
    }
}

impl<'a> Pieces<'a> {
    pub fn push(&mut self, piece: &'a [u8]) {
        if self.spilled.is_empty() && self.len < INLINE_PIECES {
            self.inline[self.len] = IoSlice::new(piece);
            self.len += 1;
            return;
        }
        if self.spilled.is_empty() {
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.push(IoSlice::new(piece));
    }

    pub fn as_mut_slice(&mut self) -> &mut [IoSlice<'a>] {
        if self.spilled.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spilled
        }
    }
}

/// Result of one read attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// New bytes arrived; `drained` says whether the socket is now empty.
    Data {
        drained: bool,
    },
    WouldBlock,
    Eof,
}

impl ConnIo {
    /// The received bytes not consumed yet.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from the socket into the buffer, growing it up to `max` buffered bytes.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn read_more(&mut self, max: usize) -> io::Result<ReadStatus> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(ReadStatus::Eof);
        };
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER, max.max(INITIAL_BUFFER));
                if grown <= self.buf.len() {
                    return Err(io::Error::new(io::ErrorKind::OutOfMemory, "read buffer limit"));
                }
                self.buf.resize(grown, 0);
            }
        }
        let space = self.buf.len() - self.end;
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(ReadStatus::Eof),
                Ok(n) => {
                    self.end += n;
                    // A short read on a stream socket means the kernel queue is empty (safe with edge triggering).
                    self.drained = n < space;
                    return Ok(ReadStatus::Data { drained: self.drained });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(ReadStatus::WouldBlock);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `bufs`, calling `wait(fd)` whenever the socket is full.
    ///
    /// # Errors
    /// Socket errors, a closed connection, or an error from `wait` (such as a timeout).
    pub fn write_all_vectored(
        &mut self,
        bufs: &mut [IoSlice<'_>],
        wait: &mut dyn FnMut(RawFd) -> io::Result<()>,
    ) -> io::Result<()> {
        self.write_vectored_with(bufs, wait, false)
    }

    /// Like `write_all_vectored`, for the last bytes of a response: when the socket is full and what is left
    /// fits in `OUT_BUFFER`, it is parked for the poller to send, so a slow reader holds no thread.
    ///
    /// # Errors
    /// As `write_all_vectored`.
    pub fn write_or_park(
        &mut self,
        bufs: &mut [IoSlice<'_>],
        wait: &mut dyn FnMut(RawFd) -> io::Result<()>,
    ) -> io::Result<()> {
        self.write_vectored_with(bufs, wait, true)
    }

    /// Appends `bufs` to the bytes owed to the client without writing, if they fit in `STAGE_LIMIT` with what
    /// is already staged; false when they do not (the caller writes them, after the staged ones).
    pub fn stage(&mut self, bufs: &[IoSlice<'_>]) -> bool {
        // Room for a few more blocks at once rather than growing by doubling from the first one.
        self.append_out(bufs, STAGE_START)
    }

    /// Keeps the end of a response in `out` without writing (see `Conn::may_defer`), if it fits in `STAGE_LIMIT`
    /// with what is already there; false when it does not (the caller writes it).
    pub fn defer(&mut self, bufs: &[IoSlice<'_>]) -> bool {
        // Sent within the moment: no room for more is reserved.
        let kept = self.append_out(bufs, 0);
        self.deferred |= kept;
        kept
    }

    /// Appends `bufs` to `out` if they fit in `STAGE_LIMIT` with what is there, reserving at least `first_room`
    /// bytes when `out` has no allocation yet.
    fn append_out(&mut self, bufs: &[IoSlice<'_>], first_room: usize) -> bool {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.out.len() + len > STAGE_LIMIT {
            return false;
        }
        if self.out.capacity() == 0 {
            self.out.reserve(len.max(first_room));
        }
        for buf in bufs {
            self.out.extend_from_slice(buf);
        }
        true
    }

    fn write_vectored_with(
        &mut self,
        bufs: &mut [IoSlice<'_>],
        wait: &mut dyn FnMut(RawFd) -> io::Result<()>,
        park: bool,
    ) -> io::Result<()> {
        debug_assert!(self.file_tail.is_none(), "a parked file body ends its response");
        self.deferred = false;
        // Staged bytes go first, in the same write.
        if !self.out.is_empty() {
            let staged = std::mem::take(&mut self.out);
            let mut all = Pieces::default();
            all.push(&staged);
            for buf in bufs.iter() {
                all.push(buf);
            }
            let written = self.write_slices(all.as_mut_slice(), wait, park);
            // Nothing was parked in its place: the allocation may serve the next response.
            if self.out.is_empty() {
                self.out = staged;
                self.reset_out();
            }
            return written;
        }
        self.write_slices(bufs, wait, park)
    }

    /// Empties the output buffer, keeping an allocation small enough to reuse (see `STAGE_START`).
    fn reset_out(&mut self) {
        if self.out.capacity() <= STAGE_START {
            self.out.clear();
        } else {
            self.out = Vec::new();
        }
    }

    /// Frees the output buffer kept for reuse, for a connection gone idle.
    pub fn trim_idle(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    fn write_slices(
        &mut self,
        bufs: &mut [IoSlice<'_>],
        wait: &mut dyn FnMut(RawFd) -> io::Result<()>,
        park: bool,
    ) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() > 1 && total <= SMALL_WRITE {
            let mut joined = [0u8; SMALL_WRITE];
            let mut len = 0;
            for buf in bufs.iter() {
                joined[len..len + buf.len()].copy_from_slice(buf);
                len += buf.len();
            }
            return self.write_slices(&mut [IoSlice::new(&joined[..len])], wait, park);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut bufs = bufs;
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let written = if let [only] = bufs {
                stream.write(only)
            } else {
                stream.write_vectored(bufs)
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if park && bufs.iter().map(|b| b.len()).sum::<usize>() <= OUT_BUFFER {
                        for buf in bufs.iter() {
                            self.out.extend_from_slice(buf);
                        }
                        return Ok(());
                    }
                    wait(stream.raw_fd())?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True while a parked response tail waits to be sent.
    #[must_use]
    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty() || self.file_tail.is_some()
    }

    /// Bytes of parked response tail still to send, to tell whether a flush made progress.
    #[must_use]
    pub fn pending_len(&self) -> u64 {
        self.out.len() as u64 + self.file_tail.as_ref().map_or(0, |tail| tail.remaining)
    }

    /// Parks the last `remaining` bytes of a file body, from `offset` in `fd`, for the poller to send after `out`
    /// (the response must end with them). The caller's descriptor may be closed as soon as this returns.
    ///
    /// # Errors
    /// As dup(2).
    pub fn park_file(&mut self, fd: RawFd, offset: u64, remaining: u64) -> io::Result<()> {
        let file = crate::sys::dup_owned(fd)?;
        self.file_tail = Some(FileTail {
            file,
            offset,
            remaining,
        });
        Ok(())
    }

    /// Sends as much of the parked tail as the socket takes; true once all of it is gone.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock`.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        self.deferred = false;
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let socket = stream.raw_fd();
        self.reset_out();
        if let Some(tail) = self.file_tail.as_mut() {
            match sendfile_until_full(socket, tail.file.as_raw_fd(), &mut tail.offset, &mut tail.remaining)? {
                SendfileEnd::Sent => self.file_tail = None,
                SendfileEnd::SocketFull => return Ok(false),
                // The file shrank under the response: it cannot be completed.
                SendfileEnd::FileEnded => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        Ok(true)
    }

    /// Best-effort write of a small response that must not block (errors from the server itself).
    pub fn write_nonblocking(&mut self, bytes: &[u8]) {
        if let Some(stream) = self.stream.as_mut() {
            // Nothing more can be done for a client that does not take a small error response.
            let _ = stream.write(bytes);
        }
    }

    /// Stops sending and starts discarding input until the peer closes (avoids a reset that could destroy the
    /// response still in flight, RFC 9112 §9.6).
    pub fn begin_close(&mut self) {
        if let Some(stream) = &self.stream {
            stream.shutdown_write();
        }
        self.closing = true;
        self.start = 0;
        self.end = 0;
    }

    /// Reads and drops whatever arrived; true once the peer has closed or failed.
    pub fn discard_input(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return true;
        };
        let mut scratch = [0u8; 4096];
        loop {
            match stream.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

/// A connection as shared between the poller and the workers.
#[derive(Debug)]
pub struct Conn {
    pub token: usize,
    /// Index of the listener it came from (selects the environ template).
    pub listener: usize,
    pub peer: Peer,
    pub io: Mutex<ConnIo>,
    /// The socket's descriptor, for the request-deadline watcher, which may not take `io` from its owner.
    pub fd: RawFd,
    /// Set once the head of the current response left (a timed-out request can then no longer get a 504).
    pub response_started: AtomicBool,
    /// The current response has staged blocks in `ConnIo::out` that the watcher sends if the application takes
    /// long to produce the next one; cleared when the response ends.
    pub streaming: AtomicBool,
    /// The server lets the end of the current response wait in `ConnIo::out` instead of writing it (set while the
    /// thread answering it has more queued requests to answer next): that thread sends it together with their
    /// responses, before it polls, rests or keeps it waiting too long, so that a client is woken once for several
    /// responses rather than once for each.
    pub may_defer: AtomicBool,
    /// Milliseconds since `PROGRESS_EPOCH` when the current response last sent a block; 0 before the first.
    progress_ms: AtomicU64,
    state: AtomicU8,
    /// Coarse clock second of the last activity, for idle and read timeouts.
    last_active: AtomicU64,
}

impl Conn {
    /// A new connection, owned by nobody until its first readiness event.
    #[must_use]
    pub fn new(token: usize, listener: usize, peer: Peer, stream: Stream, now: u64) -> Self {
        Conn {
            token,
            listener,
            peer,
            fd: stream.raw_fd(),
            response_started: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            may_defer: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            io: Mutex::new(ConnIo {
                stream: Some(stream),
                buf: vec![0; INITIAL_BUFFER],
                start: 0,
                end: 0,
                drained: false,
                continue_sent: false,
                closing: false,
                out: Vec::new(),
                close_after_flush: false,
                file_tail: None,
                deferred: false,
                requests: 0,
                head_since: None,
                proxy_pending: false,
                proxied: None,
            }),
            state: AtomicU8::new(0),
            last_active: AtomicU64::new(now),
        }
    }

    /// The current response just sent a block to the client.
    pub fn note_progress(&self) {
        self.progress_ms.store(progress_clock().max(1), Ordering::Relaxed);
    }

    /// Forgets the previous response's progress (a new request starts).
    pub fn reset_progress(&self) {
        self.progress_ms.store(0, Ordering::Relaxed);
    }

    /// Time since the current response last sent a block, if it sent any.
    #[must_use]
    pub fn since_progress(&self) -> Option<std::time::Duration> {
        let at = self.progress_ms.load(Ordering::Relaxed);
        (at != 0).then(|| std::time::Duration::from_millis(progress_clock().saturating_sub(at)))
    }

    /// Records readiness; true if the caller now owns the connection and must drive it.
    pub fn notify(&self) -> bool {
        self.state.fetch_or(SEEN | OWNED, Ordering::AcqRel) & OWNED == 0
    }

    /// Claims an idle connection (for timers); false if someone else owns it.
    pub fn try_claim(&self) -> bool {
        self.state
            .compare_exchange(0, OWNED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The owner takes the remembered readiness: true if an edge arrived since the last call.
    pub fn take_seen(&self) -> bool {
        // Read first: usually nothing was seen, and a plain load spares the locked read-modify-write.
        self.state.load(Ordering::Acquire) & SEEN != 0 && self.state.fetch_and(!SEEN, Ordering::AcqRel) & SEEN != 0
    }

    /// The owner gives the connection up; false if readiness arrived meanwhile, in which case the caller still
    /// owns it and must read again.
    pub fn release(&self) -> bool {
        self.state
            .compare_exchange(OWNED, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn touch(&self, now: u64) {
        self.last_active.store(now, Ordering::Relaxed);
    }

    #[must_use]
    pub fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }
}

/// Milliseconds on the coarse monotonic clock, for response progress (noted on every block sent; compared with
/// timeouts of seconds).
fn progress_clock() -> u64 {
    u64::try_from(crate::sys::coarse_now().as_millis()).unwrap_or(u64::MAX)
}
