//! `wsgi.input`: the request body as a file-like object (PEP 3333 "Input and Error Streams").
//! Buffered bodies are served from memory; streaming ones are decoded from the connection on demand, waiting
//! for bytes outside the interpreter. Once the request is over the object is retired and reads return b"".
//!
//! A streamed body is held to a pace: no pause between bytes longer than `BodyPace::idle`, and in all no more
//! waiting than `idle` plus one second per `min_rate` bytes received (the rule of Apache's `mod_reqtimeout`), so a
//! client cannot hold an application thread by sending a byte just before each pause would expire. Only time
//! spent waiting for the client counts: an application that reads slowly is not held against the client.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::{BodyDecoder, HttpError};
use crate::server::connection::{Conn, ReadStatus};
use crate::sys::wait_fd;

/// Bytes fetched from the socket per read while streaming.
const STREAM_READ: usize = 64 * 1024;

#[pyclass(frozen, freelist = 64, module = "rustwsgi._rustwsgi")]
pub struct Input {
    state: Mutex<InputState>,
    /// The shared input of every request without a body: stateless, so any thread may read it at once.
    empty: bool,
}

#[derive(Default)]
struct InputState {
    /// A body received whole with its head: reads are served from it, and a read of all of it returns it.
    whole: Option<Py<PyBytes>>,
    /// Decoded bytes of a streamed body, not yet read.
    data: Vec<u8>,
    /// How much of `whole`, or of `data`, was read.
    pos: usize,
    source: Option<Source>,
    /// Why reading the body failed, when the client is to blame.
    fault: Option<ClientFault>,
}

/// How long a streamed request body may keep the application waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// The longest pause between bytes.
    pub idle: Duration,
    /// The average rate, in bytes per second, the body must keep once `idle` of waiting is used up (0: none).
    pub min_rate: u64,
}

impl BodyPace {
    /// How long the next wait may last, having waited `waited` in all for `received` bytes; `None` when the
    /// body has used up its allowance.
    #[must_use]
    pub fn next_wait(&self, waited: Duration, received: u64) -> Option<Duration> {
        if self.min_rate == 0 {
            return Some(self.idle);
        }
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate);
        let left = (self.idle + earned).saturating_sub(waited);
        (!left.is_zero()).then(|| left.min(self.idle))
    }
}

/// A body read that failed because of the client, and the answer it gets if no response has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// A pause between bytes longer than `BodyPace::idle`.
    Stalled,
    /// The body arrived slower than `BodyPace::min_rate`.
    TooSlow,
    /// The connection closed before the body was complete.
    Closed,
    /// The body broke its framing or a limit.
    Invalid(HttpError),
}

impl ClientFault {
    /// The status line and body text of the answer, or `None` when nobody is left to answer.
    #[must_use]
    pub fn answer(self) -> Option<(&'static str, &'static str)> {
        match self {
            ClientFault::Stalled => Some(("408 Request Timeout", "request body timed out")),
            ClientFault::TooSlow => Some(("408 Request Timeout", "request body arrived too slowly")),
            ClientFault::Closed => None,
            ClientFault::Invalid(err) => Some((err.status_line(), err.detail())),
        }
    }

    fn to_py(self) -> PyErr {
        let kind = match self {
            ClientFault::Stalled | ClientFault::TooSlow => io::ErrorKind::TimedOut,
            ClientFault::Closed => io::ErrorKind::UnexpectedEof,
            ClientFault::Invalid(_) => io::ErrorKind::InvalidData,
        };
        PyOSError::new_err(format!("{}: {self}", io::Error::from(kind)))
    }
}

impl std::fmt::Display for ClientFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientFault::Stalled => f.write_str("client paused longer than the body timeout"),
            ClientFault::TooSlow => f.write_str("client sent the body slower than the minimum rate"),
            ClientFault::Closed => f.write_str("client closed the connection before the body was complete"),
            ClientFault::Invalid(err) => write!(f, "invalid request body: {}", err.detail()),
        }
    }
}

/// The rest of a body still on the connection.
struct Source {
    conn: Arc<Conn>,
    decoder: BodyDecoder,
    pace: BodyPace,
    /// Time spent waiting for the client so far, and the bytes it sent meanwhile.
    waited: Duration,
    received: u64,
}

impl Input {
    #[must_use]
    pub fn buffered(body: Py<PyBytes>) -> Self {
        Input {
            state: Mutex::new(InputState {
                whole: Some(body),
                ..InputState::default()
            }),
            empty: false,
        }
    }

    /// The input shared by all requests without a body.
    #[must_use]
    pub fn empty() -> Self {
        Input {
            state: Mutex::new(InputState::default()),
            empty: true,
        }
    }

    #[must_use]
    pub fn streaming(conn: Arc<Conn>, decoder: BodyDecoder, pace: BodyPace) -> Self {
        Input {
            state: Mutex::new(InputState {
                source: Some(Source {
                    conn,
                    decoder,
                    pace,
                    waited: Duration::ZERO,
                    received: 0,
                }),
                ..InputState::default()
            }),
            empty: false,
        }
    }

    /// True when the whole body has been taken off the connection.
    #[must_use]
    pub fn body_complete(&self) -> bool {
        self.empty
            || self
                .state
                .try_lock()
                .is_some_and(|state| state.source.as_ref().is_none_or(|s| s.decoder.is_done()))
    }

    /// Why reading the body failed, when the client was to blame.
    #[must_use]
    pub fn client_fault(&self) -> Option<ClientFault> {
        if self.empty {
            return None;
        }
        self.state.try_lock().and_then(|state| state.fault)
    }

    /// Detaches the object from its connection at the end of the request.
    pub fn retire(&self) {
        if self.empty {
            return;
        }
        if let Some(mut state) = self.state.try_lock() {
            state.source = None;
            state.whole = None;
            state.data = Vec::new();
            state.pos = 0;
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut InputState) -> PyResult<R>) -> PyResult<R> {
        if self.empty {
            return f(&mut InputState::default());
        }
        // Two threads reading one wsgi.input at once would race on the socket; refuse rather than block with
        // the interpreter held.
        let mut state = self
            .state
            .try_lock()
            .ok_or_else(|| PyRuntimeError::new_err("wsgi.input is being read by another thread"))?;
        f(&mut state)
    }
}

impl InputState {
    fn available<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match &self.whole {
            Some(whole) => &whole.as_bytes(py)[self.pos..],
            None => &self.data[self.pos..],
        }
    }

    /// The next `n` bytes (or fewer) as a bytes object: the received body itself when all of it is asked for,
    /// else copied once, straight from the buffer.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let available = self.available(py);
        let n = n.min(available.len());
        if let Some(whole) = &self.whole {
            if self.pos == 0 && n == available.len() {
                self.pos = n;
                return whole.bind(py).clone();
            }
        }
        let out = PyBytes::new(py, &available[..n]);
        self.pos += n;
        if self.whole.is_none() && self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
        out
    }

    /// Decodes more of the body into `data`; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        let result = self.fill_from_source(py);
        if let Err(Failed::Client(fault)) = result {
            self.fault = Some(fault);
        }
        result.map_err(Failed::into_py)
    }

    fn fill_from_source(&mut self, py: Python<'_>) -> Result<bool, Failed> {
        let Some(source) = self.source.as_mut() else {
            return Ok(false);
        };
        if source.decoder.is_done() {
            return Ok(false);
        }
        if self.pos > 0 {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        let before = self.data.len();
        let mut io = source.conn.io.lock();
        loop {
            if !io.data().is_empty() {
                let used = source
                    .decoder
                    .decode(io.data(), &mut self.data)
                    .map_err(|err| Failed::Client(ClientFault::Invalid(err)))?;
                io.consume(used);
                source.received += used as u64;
                if self.data.len() > before || source.decoder.is_done() {
                    return Ok(true);
                }
            }
            let max = io.data().len() + STREAM_READ;
            match io.read_more(max) {
                Ok(ReadStatus::Data { .. }) => {}
                Ok(ReadStatus::WouldBlock) => {
                    let fd = io.stream.as_ref().map(crate::server::connection::Stream::raw_fd);
                    let fd = fd.ok_or(Failed::Client(ClientFault::Closed))?;
                    let Some(timeout) = source.pace.next_wait(source.waited, source.received) else {
                        return Err(Failed::Client(ClientFault::TooSlow));
                    };
                    // The connection is not held while waiting: a response write from another thread must not
                    // block on it with the interpreter held, which would keep this read from resuming.
                    drop(io);
                    let started = Instant::now();
                    let waited = py.detach(|| wait_fd(fd, false, timeout));
                    source.waited += started.elapsed();
                    io = source.conn.io.lock();
                    match waited {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            let fault = if timeout < source.pace.idle {
                                ClientFault::TooSlow
                            } else {
                                ClientFault::Stalled
                            };
                            return Err(Failed::Client(fault));
                        }
                        Err(e) => return Err(Failed::Os(e)),
                    }
                }
                Ok(ReadStatus::Eof) => return Err(Failed::Client(ClientFault::Closed)),
                Err(e) => return Err(Failed::Os(e)),
            }
        }
    }

    fn read<'py>(&mut self, py: Python<'py>, size: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(n) = size {
            while self.available(py).len() < n && self.fill(py)? {}
            Ok(self.take(py, n))
        } else {
            while self.fill(py)? {}
            Ok(self.take(py, usize::MAX))
        }
    }

    fn readline<'py>(&mut self, py: Python<'py>, limit: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            let avail = self.available(py);
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            scanned = avail.len();
            if limit.is_some_and(|l| scanned >= l) || !self.fill(py)? {
                return Ok(self.take(py, limit.unwrap_or(usize::MAX)));
            }
        }
    }
}

/// Why a body read failed: the client's doing, or the socket's.
enum Failed {
    Client(ClientFault),
    Os(io::Error),
}

impl Failed {
    fn into_py(self) -> PyErr {
        match self {
            Failed::Client(fault) => fault.to_py(),
            Failed::Os(err) => PyOSError::new_err(err.to_string()),
        }
    }
}

/// Python passes -1 or None for "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_state(|state| state.read(py, limit(size)))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_state(|state| state.readline(py, limit(size)))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = self.with_state(|state| {
            let mut lines = Vec::new();
            let mut total = 0;
            loop {
                let line = state.readline(py, None)?;
                if line.as_bytes().is_empty() {
                    break;
                }
                total += line.as_bytes().len();
                lines.push(line);
                if hint.is_some_and(|h| total >= h) {
                    break;
                }
            }
            Ok(lines)
        })?;
        PyList::new(py, lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_state(|state| state.readline(py, None))?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: BodyPace = BodyPace {
        idle: Duration::from_secs(10),
        min_rate: 100,
    };

    #[test]
    fn a_body_may_wait_the_idle_timeout_before_its_first_byte() {
        assert_eq!(PACE.next_wait(Duration::ZERO, 0), Some(Duration::from_secs(10)));
        assert_eq!(PACE.next_wait(Duration::from_secs(4), 0), Some(Duration::from_secs(6)));
        assert_eq!(PACE.next_wait(Duration::from_secs(10), 0), None);
    }

    #[test]
    fn each_min_rate_bytes_received_earn_one_more_second_of_waiting() {
        // 30 s waited, 2500 bytes earned 25 s on top of the first 10: 5 s left.
        assert_eq!(
            PACE.next_wait(Duration::from_secs(30), 2500),
            Some(Duration::from_secs(5))
        );
        assert_eq!(PACE.next_wait(Duration::from_secs(35), 2500), None);
    }

    #[test]
    fn no_single_wait_exceeds_the_idle_timeout() {
        assert_eq!(PACE.next_wait(Duration::ZERO, 1_000_000), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_zero_min_rate_leaves_only_the_idle_timeout() {
        let pace = BodyPace { min_rate: 0, ..PACE };
        assert_eq!(
            pace.next_wait(Duration::from_secs(1000), 0),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn faults_answer_408_or_the_framing_error_and_a_closed_client_nothing() {
        assert_eq!(ClientFault::Stalled.answer().map(|a| a.0), Some("408 Request Timeout"));
        assert_eq!(ClientFault::TooSlow.answer().map(|a| a.0), Some("408 Request Timeout"));
        assert_eq!(ClientFault::Closed.answer(), None);
        let too_large = ClientFault::Invalid(HttpError::PayloadTooLarge).answer();
        assert_eq!(too_large.map(|a| a.0), Some("413 Content Too Large"));
    }
}
