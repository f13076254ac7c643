//! `start_response` and the `write` callable it returns (PEP 3333), plus the response state both share:
//! the status and headers are validated and serialized when the app calls it, and the head leaves together
//! with the first body bytes.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::http::request::is_token_byte;
use crate::http::response::{
    body_allowed, chunk_size_line, encode_status_line, end_head, Framing, HeadOptions, LAST_CHUNK, STATUS_OFFSET,
};
use crate::server::connection::{Conn, Pieces, INLINE_PIECES};
use crate::sys::{sendfile_until_full, wait_fd, SendfileEnd};

use super::input::Input;

/// What the request says about the response it may get.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta {
    pub minor_version: u8,
    pub is_head: bool,
    /// The client allows keep-alive and the server is not draining.
    pub keep_alive: bool,
}

/// What `start_response` was given, validated. The head is built in place: the status line and the app's
/// headers now, the server's headers and the blank line once the framing is known.
struct Prepared {
    head: Vec<u8>,
    /// Where the status (`200 OK`) ends in `head`; it starts at `STATUS_OFFSET`.
    status_end: usize,
    code: u16,
    app_length: Option<u64>,
    app_close: bool,
    has_date: bool,
    has_server: bool,
}

/// Set once the head went out.
#[derive(Debug, Clone, Copy)]
struct Sent {
    framing: Framing,
    keep_alive: bool,
    body_bytes: u64,
    /// The chunked body's last chunk went out; nothing may follow it.
    terminated: bool,
}

impl Sent {
    /// The app's Content-Length is reached: iteration should stop here.
    fn length_reached(&self) -> bool {
        matches!(self.framing, Framing::AppLength(len) if self.body_bytes >= len)
    }
}

#[derive(Default)]
struct ResponseState {
    prepared: Option<Prepared>,
    sent: Option<Sent>,
}

/// Why a response could not be (fully) sent.
pub enum SendError {
    /// The app produced body bytes without calling `start_response` first.
    NoStatus,
    /// The client is gone or too slow.
    Io(io::Error),
}

#[pyclass(frozen, freelist = 64, module = "rustwsgi._rustwsgi")]
pub struct StartResponse {
    state: Mutex<ResponseState>,
    conn: Arc<Conn>,
    request: RequestMeta,
    input: Py<Input>,
    /// How long a write waits for a client that does not read.
    send_timeout: Duration,
}

impl StartResponse {
    #[must_use]
    pub fn new(conn: Arc<Conn>, request: RequestMeta, input: Py<Input>, send_timeout: Duration) -> Self {
        StartResponse {
            state: Mutex::new(ResponseState::default()),
            conn,
            request,
            input,
            send_timeout,
        }
    }

    /// The status the app chose (if any) and the body bytes sent, for the access log.
    pub fn summary(&self) -> (String, u64) {
        let state = self.state.lock();
        let status = state.prepared.as_ref().map_or_else(String::new, |p| {
            String::from_utf8_lossy(&p.head[STATUS_OFFSET..p.status_end]).into_owned()
        });
        (status, state.sent.map_or(0, |s| s.body_bytes))
    }

    /// True once the status line left.
    #[must_use]
    pub fn headers_sent(&self) -> bool {
        self.state.lock().sent.is_some()
    }

    /// Decides the framing and completes the prepared head with the server's headers. `body_len` is the whole
    /// body's length when the server knows it (a list, a last chunk, a file).
    fn prepare_head(&self, state: &mut ResponseState, body_len: Option<u64>) -> Result<(), SendError> {
        let prepared = state.prepared.as_mut().ok_or(SendError::NoStatus)?;
        let framing = if !body_allowed(prepared.code, self.request.is_head) {
            Framing::NoBody
        } else if let Some(len) = prepared.app_length {
            Framing::AppLength(len)
        } else if let Some(len) = body_len {
            Framing::KnownLength(len)
        } else if self.request.minor_version == 1 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
        let keep_alive = self.request.keep_alive
            && !prepared.app_close
            && framing != Framing::UntilClose
            && self.input.get().body_complete();
        let options = HeadOptions {
            minor_version: self.request.minor_version,
            framing,
            keep_alive,
            add_date: !prepared.has_date,
            add_server: !prepared.has_server,
        };
        self.conn
            .response_started
            .store(true, std::sync::atomic::Ordering::Release);
        end_head(&mut prepared.head, &options);
        state.sent = Some(Sent {
            framing,
            keep_alive,
            body_bytes: 0,
            terminated: false,
        });
        Ok(())
    }

    /// Sends `chunks` as body bytes (the head first if it has not left yet). `last` says no more body follows,
    /// which lets an unsized response get a Content-Length. Returns true once the app's Content-Length is
    /// reached: iteration should stop there.
    ///
    /// # Errors
    /// `NoStatus` before `start_response`, `Io` when the client is gone.
    pub fn send(&self, py: Python<'_>, chunks: &[&[u8]], last: bool) -> Result<bool, SendError> {
        Ok(self.deliver(py, chunks, last, false)?.length_reached())
    }

    /// Sends `chunks` as the whole body (the head first if it has not left) and ends the response, like `send`
    /// with `last` followed by `finish`, under one lock. Returns whether the connection may carry another
    /// request.
    ///
    /// # Errors
    /// As `send`.
    pub fn send_whole(&self, py: Python<'_>, chunks: &[&[u8]]) -> Result<bool, SendError> {
        // Nothing was staged: only `send_block` stages, and an iterable that is sent whole has no blocks.
        let sent = self.deliver(py, chunks, true, false)?;
        Ok(self.keeps_connection(&sent))
    }

    /// Like `send(chunk, false)` for one block of an iterated body, except that a small block may be staged
    /// instead of written: blocks a generator yields back to back then leave in one write. PEP 3333 allows this
    /// as long as transmission goes on while the application produces its next block: the watcher sends what
    /// is staged within a millisecond or so, and `finish` sends the rest.
    ///
    /// # Errors
    /// As `send`.
    pub fn send_block(&self, py: Python<'_>, chunk: &[u8]) -> Result<bool, SendError> {
        Ok(self.deliver(py, &[chunk], false, true)?.length_reached())
    }

    /// Sends (or stages) `chunks`; returns the response's state after them.
    fn deliver(&self, py: Python<'_>, chunks: &[&[u8]], last: bool, may_stage: bool) -> Result<Sent, SendError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let head_now = state.sent.is_none();
        if head_now {
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            self.prepare_head(state, last.then_some(total as u64))?;
        }
        let (Some(sent), Some(prepared)) = (state.sent.as_mut(), state.prepared.as_ref()) else {
            return Err(SendError::NoStatus);
        };
        // Chunk size lines are built first so the pieces below can borrow them; a few fit on the stack.
        let chunked = sent.framing == Framing::Chunked;
        let size_line_count = if chunked { chunks.len() } else { 0 };
        let mut inline_lines = [([0u8; 18], 0usize); INLINE_PIECES];
        let mut spilled_lines = Vec::new();
        let size_lines: &mut [([u8; 18], usize)] = if size_line_count <= INLINE_PIECES {
            &mut inline_lines[..size_line_count]
        } else {
            spilled_lines.resize(size_line_count, ([0u8; 18], 0));
            &mut spilled_lines
        };
        for ((line, start), chunk) in size_lines.iter_mut().zip(chunks) {
            *start = 18 - chunk_size_line(chunk.len(), line).len();
        }
        let mut slices = Pieces::default();
        if head_now {
            slices.push(&prepared.head);
        }
        let mut body_total = 0u64;
        match sent.framing {
            Framing::NoBody => {}
            Framing::AppLength(len) => {
                let mut room = len - sent.body_bytes;
                for chunk in chunks {
                    // Never send more than the app's Content-Length (RFC 9112 §6.2).
                    let take = usize::try_from(room).map_or(chunk.len(), |r| r.min(chunk.len()));
                    slices.push(&chunk[..take]);
                    room -= take as u64;
                    body_total += take as u64;
                }
            }
            Framing::Chunked => {
                for (chunk, (line, start)) in chunks.iter().zip(size_lines.iter()) {
                    if chunk.is_empty() {
                        continue;
                    }
                    slices.push(&line[*start..]);
                    slices.push(chunk);
                    slices.push(b"\r\n");
                    body_total += chunk.len() as u64;
                }
                if last && !sent.terminated {
                    slices.push(LAST_CHUNK);
                    sent.terminated = true;
                }
            }
            Framing::KnownLength(_) | Framing::UntilClose => {
                for chunk in chunks {
                    slices.push(chunk);
                    body_total += chunk.len() as u64;
                }
            }
        }
        let slices = slices.as_mut_slice();
        sent.body_bytes += body_total;
        let sent = *sent;
        let mut io = self.conn.io.lock();
        if (last || sent.length_reached())
            && self.conn.may_defer.load(std::sync::atomic::Ordering::Relaxed)
            && io.defer(slices)
        {
            return Ok(sent);
        }
        if may_stage && !sent.length_reached() && io.stage(slices) {
            self.conn.streaming.store(true, std::sync::atomic::Ordering::Release);
            self.conn.note_progress();
            return Ok(sent);
        }
        if !slices.is_empty() || io.has_pending_output() {
            let mut wait = |fd| py.detach(|| wait_fd(fd, true, self.send_timeout));
            // The end of a response may be parked for the poller, so a slow reader holds no app thread.
            let written = if last {
                io.write_or_park(slices, &mut wait)
            } else {
                io.write_all_vectored(slices, &mut wait)
            };
            written.map_err(SendError::Io)?;
            self.conn.note_progress();
        }
        Ok(sent)
    }

    /// Sends `length` bytes of file `fd` from `offset` with sendfile(2), after the head if it has not left.
    /// The app's Content-Length, if any, still bounds what is sent. What the client does not take at once is left
    /// to the poller (`ConnIo::park_file`), so the file body must end the response.
    ///
    /// # Errors
    /// As `send`.
    pub fn send_file(&self, py: Python<'_>, fd: RawFd, offset: u64, length: u64) -> Result<(), SendError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        if state.sent.is_none() {
            self.prepare_head(state, Some(length))?;
            let head = state.prepared.as_ref().map_or(&[][..], |p| &p.head);
            let mut io = self.conn.io.lock();
            io.write_all_vectored(&mut [IoSlice::new(head)], &mut |fd| {
                py.detach(|| wait_fd(fd, true, self.send_timeout))
            })
            .map_err(SendError::Io)?;
        }
        let Some(sent) = state.sent.as_mut() else {
            return Err(SendError::NoStatus);
        };
        let mut remaining = match sent.framing {
            Framing::NoBody => 0,
            Framing::AppLength(len) => length.min(len - sent.body_bytes),
            _ => length,
        };
        let mut offset = offset;
        let mut io = self.conn.io.lock();
        let Some(socket) = io.stream.as_ref().map(crate::server::connection::Stream::raw_fd) else {
            return Err(SendError::Io(io::ErrorKind::NotConnected.into()));
        };
        let before = remaining;
        let end = sendfile_until_full(socket, fd, &mut offset, &mut remaining);
        sent.body_bytes += before - remaining;
        if remaining < before {
            self.conn.note_progress();
        }
        // A file that ended early leaves the response short of its length: `keeps_connection` closes it.
        if end.map_err(SendError::Io)? == SendfileEnd::SocketFull {
            // The rest leaves from the poller as the client takes it: a slow reader of a large file holds no app
            // thread. The file body ends the response (`send_file` callers finish next).
            io.park_file(fd, offset, remaining).map_err(SendError::Io)?;
            sent.body_bytes += remaining;
        }
        Ok(())
    }

    /// Ends the response: sends the head if nothing was sent, the last chunk if chunked. Returns whether the
    /// connection may carry another request.
    ///
    /// # Errors
    /// As `send`.
    pub fn finish(&self, py: Python<'_>) -> Result<bool, SendError> {
        let mut sent = self.state.lock().sent;
        let staged = self.conn.streaming.load(std::sync::atomic::Ordering::Acquire);
        if staged || sent.is_none_or(|s| s.framing == Framing::Chunked && !s.terminated) {
            sent = Some(self.deliver(py, &[], true, false)?);
        }
        Ok(sent.is_some_and(|sent| self.keeps_connection(&sent)))
    }

    /// Whether the connection may carry another request after a response that ended as `sent`.
    fn keeps_connection(&self, sent: &Sent) -> bool {
        let length_kept = match sent.framing {
            // A response shorter than its Content-Length leaves the client waiting: close to end it.
            Framing::AppLength(len) => sent.body_bytes == len,
            _ => true,
        };
        let complete = matches!(sent.framing, Framing::KnownLength(len) if sent.body_bytes == len)
            || !matches!(sent.framing, Framing::KnownLength(_));
        sent.keep_alive && length_kept && complete && self.input.get().body_complete()
    }
}

/// Checks a status such as `200 OK`: three digits, a space, a reason without control characters.
fn parse_status(status: &str) -> Result<u16, PyErr> {
    let bytes = status.as_bytes();
    let valid = bytes.len() >= 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b' '
        && bytes[4..].iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if !valid {
        return Err(PyValueError::new_err(format!(
            "invalid status {status:?}: expected e.g. '200 OK'"
        )));
    }
    Ok(bytes[..3].iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// Encodes a header value as latin-1, refusing CR, LF and NUL (response splitting).
fn encode_value(value: &str, out: &mut Vec<u8>) -> Result<(), PyErr> {
    if value.is_ascii() && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        out.extend_from_slice(value.as_bytes());
        return Ok(());
    }
    for ch in value.chars() {
        let code = u32::from(ch);
        if code > 0xff {
            return Err(PyValueError::new_err(format!("header value {value:?} is not latin-1")));
        }
        if ch == '\r' || ch == '\n' || ch == '\0' {
            return Err(PyValueError::new_err(format!(
                "header value {value:?} contains a control character"
            )));
        }
        out.push(code as u8);
    }
    Ok(())
}

/// Response headers the server treats specially.
enum Special {
    ContentLength,
    Connection,
    /// `Transfer-Encoding` and `Keep-Alive`: the server frames the body itself.
    Framing,
    Date,
    Server,
    None,
}

/// Case-insensitive match without allocating (this runs for every response header).
fn special_header(name: &str) -> Special {
    let is = |known: &str| name.len() == known.len() && name.eq_ignore_ascii_case(known);
    match name.len() {
        14 if is("content-length") => Special::ContentLength,
        10 if is("connection") => Special::Connection,
        10 if is("keep-alive") => Special::Framing,
        17 if is("transfer-encoding") => Special::Framing,
        4 if is("date") => Special::Date,
        6 if is("server") => Special::Server,
        _ => Special::None,
    }
}

fn prepare(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>, minor_version: u8) -> PyResult<Prepared> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str"))?
        .to_str()?;
    let code = parse_status(status)?;
    // Room for the app's headers (about 64 bytes each) and the server's (about 128).
    let mut head = Vec::with_capacity(STATUS_OFFSET + status.len() + 64 * headers.len().unwrap_or(4) + 160);
    encode_status_line(&mut head, minor_version, status.as_bytes());
    let mut prepared = Prepared {
        status_end: head.len() - 2,
        head,
        code,
        app_length: None,
        app_close: false,
        has_date: false,
        has_server: false,
    };
    let list = headers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("response headers must be a list"))?;
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("each header must be a (name, value) tuple"));
        }
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let name = name
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("header names must be str"))?
            .to_str()?;
        let value = value
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("value of header {name:?} must be a str")))?
            .to_str()?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(PyValueError::new_err(format!("invalid header name {name:?}")));
        }
        match special_header(name) {
            Special::ContentLength => {
                let trimmed = value.trim();
                if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PyValueError::new_err(format!("invalid Content-Length {value:?}")));
                }
                let len = trimmed
                    .parse::<u64>()
                    .map_err(|_| PyValueError::new_err("Content-Length too large"))?;
                if prepared.app_length.is_some_and(|old| old != len) {
                    return Err(PyValueError::new_err("conflicting Content-Length headers"));
                }
                if prepared.app_length.is_some() {
                    continue;
                }
                prepared.app_length = Some(len);
            }
            // Hop-by-hop headers are the server's (PEP 3333): honour `close`, frame the body ourselves.
            Special::Connection => {
                prepared.app_close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
                continue;
            }
            Special::Framing => continue,
            Special::Date => prepared.has_date = true,
            Special::Server => prepared.has_server = true,
            Special::None => {}
        }
        prepared.head.extend_from_slice(name.as_bytes());
        prepared.head.extend_from_slice(b": ");
        encode_value(value, &mut prepared.head)?;
        prepared.head.extend_from_slice(b"\r\n");
    }
    Ok(prepared)
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        if let Some(exc_info) = exc_info {
            if this.headers_sent() {
                // PEP 3333: too late to change the response; re-raise the app's error.
                return Err(PyErr::from_value(exc_info.get_item(1)?));
            }
        }
        // Validate before taking the lock: reading the headers may run Python code.
        let prepared = prepare(status, headers, this.request.minor_version)?;
        {
            let mut state = this.state.lock();
            if exc_info.is_none() && state.prepared.is_some() {
                return Err(PyRuntimeError::new_err(
                    "start_response() called again without exc_info",
                ));
            }
            state.prepared = Some(prepared);
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// The PEP 3333 `write()` callable: sends `data` at once.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        match self.send(py, &[data.as_bytes()], false) {
            Ok(_) => Ok(()),
            Err(SendError::NoStatus) => Err(PyRuntimeError::new_err("write() called before start_response()")),
            Err(SendError::Io(e)) => Err(pyo3::exceptions::PyOSError::new_err(format!(
                "client connection lost: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_status_accepts_code_and_reason() {
        assert_eq!(parse_status("200 OK").unwrap(), 200);
        assert_eq!(parse_status("404 ").unwrap(), 404);
    }

    #[test]
    fn parse_status_rejects_malformed() {
        Python::initialize();
        for bad in ["200", "20 OK", "abc OK", "200OK", "200 OK\r\nX: y"] {
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
    }
}
