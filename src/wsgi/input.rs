//! `wsgi.input`: the request body as a file-like object (PEP 3333 "Input and Error Streams").
//! Buffered bodies are served from memory; streaming ones are decoded from the connection on demand, waiting
//! for bytes outside the interpreter. Once the request is over the object is retired and reads return b"".

use std::io;
use std::sync::Arc;
use std::time::Duration;

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
    data: Vec<u8>,
    pos: usize,
    source: Option<Source>,
}

/// The rest of a body still on the connection.
struct Source {
    conn: Arc<Conn>,
    decoder: BodyDecoder,
    /// How long a read waits for the next body bytes.
    timeout: Duration,
}

impl Input {
    #[must_use]
    pub fn buffered(data: Vec<u8>) -> Self {
        Input {
            state: Mutex::new(InputState {
                data,
                pos: 0,
                source: None,
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
    pub fn streaming(conn: Arc<Conn>, decoder: BodyDecoder, timeout: Duration) -> Self {
        Input {
            state: Mutex::new(InputState {
                data: Vec::new(),
                pos: 0,
                source: Some(Source { conn, decoder, timeout }),
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

    /// Detaches the object from its connection at the end of the request.
    pub fn retire(&self) {
        if self.empty {
            return;
        }
        if let Some(mut state) = self.state.try_lock() {
            state.source = None;
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
    fn available(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len() - self.pos);
        let out = self.data[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
        out
    }

    /// Decodes more of the body into `data`; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
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
                let used = source.decoder.decode(io.data(), &mut self.data).map_err(body_error)?;
                io.consume(used);
                if self.data.len() > before || source.decoder.is_done() {
                    return Ok(true);
                }
            }
            let max = io.data().len() + STREAM_READ;
            match io.read_more(max) {
                Ok(ReadStatus::Data { .. }) => {}
                Ok(ReadStatus::WouldBlock) => {
                    let fd = io.stream.as_ref().map(crate::server::connection::Stream::raw_fd);
                    let Some(fd) = fd else { return Err(closed()) };
                    let timeout = source.timeout;
                    py.detach(|| wait_fd(fd, false, timeout))
                        .map_err(|e| PyOSError::new_err(e.to_string()))?;
                }
                Ok(ReadStatus::Eof) => return Err(closed()),
                Err(e) => return Err(PyOSError::new_err(e.to_string())),
            }
        }
    }

    fn read(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Vec<u8>> {
        if let Some(n) = size {
            while self.available().len() < n && self.fill(py)? {}
            Ok(self.take(n))
        } else {
            while self.fill(py)? {}
            Ok(self.take(usize::MAX))
        }
    }

    fn readline(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut scanned = 0;
        loop {
            let avail = self.available();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(limit.map_or(end, |l| l.min(end))));
            }
            scanned = avail.len();
            if limit.is_some_and(|l| scanned >= l) || !self.fill(py)? {
                return Ok(self.take(limit.unwrap_or(usize::MAX)));
            }
        }
    }
}

fn body_error(err: HttpError) -> PyErr {
    PyOSError::new_err(format!("invalid request body: {}", err.detail()))
}

fn closed() -> PyErr {
    PyOSError::new_err(
        io::Error::from(io::ErrorKind::UnexpectedEof).to_string()
            + ": client closed the connection before the body was complete",
    )
}

/// Python passes -1 or None for "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with_state(|state| state.read(py, limit(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.with_state(|state| state.readline(py, limit(size)))?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = self.with_state(|state| {
            let mut lines = Vec::new();
            let mut total = 0;
            loop {
                let line = state.readline(py, None)?;
                if line.is_empty() {
                    break;
                }
                total += line.len();
                lines.push(line);
                if hint.is_some_and(|h| total >= h) {
                    break;
                }
            }
            Ok(lines)
        })?;
        PyList::new(py, lines.iter().map(|l| PyBytes::new(py, l)))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_state(|state| state.readline(py, None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
