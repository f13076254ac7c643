//! One request through the application: build environ, call the app, send what it returns, call `close()`
//! exactly once, and turn every failure into a 500 (or an aborted connection once the head has left).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::http::response::encode_simple;
use crate::http::BodyKind;
use crate::server::connection::{Conn, Peer};
use crate::server::{Body, Control, Exchange, Outcome};
use crate::sys::regular_file_size;

use crate::server::deadline::Overdue;

use super::consts::PyConsts;
use super::environ::{build_environ, EnvironRules, EnvironTemplate};
use super::file_wrapper::FileWrapper;
use super::input::{BodyPace, ClientFault, Input};
use super::start_response::{RequestMeta, SendError, StartResponse};

/// Everything Python-side a worker needs, created once per server.
pub struct App {
    pub app: Py<PyAny>,
    pub consts: PyConsts,
    /// The constant part of environ, one per listener.
    pub templates: Vec<EnvironTemplate>,
    /// `logging.getLogger("rustwsgi.error")`.
    pub logger: Py<PyAny>,
    pub rules: EnvironRules,
    /// Called after each response with (environ, status, body bytes, seconds); None when access logging is off.
    pub access_log: Option<Py<PyAny>>,
    /// The `wsgi.input` of every request without a body.
    pub empty_input: Py<Input>,
    /// How long a streamed body may keep a read waiting.
    pub body_pace: BodyPace,
    /// How long a response write waits for a client that takes nothing.
    pub write_timeout: std::time::Duration,
}

/// Why a response failed.
enum Failure {
    /// The app (or its iterable) raised.
    Raised(PyErr),
    /// The app broke the WSGI contract; the message says how.
    Contract(String),
    /// The client went away or stopped reading.
    Io(io::Error),
}

impl From<SendError> for Failure {
    fn from(err: SendError) -> Self {
        match err {
            SendError::NoStatus => {
                Failure::Contract("the application returned body data without calling start_response()".into())
            }
            SendError::Io(e) => Failure::Io(e),
        }
    }
}

impl From<PyErr> for Failure {
    fn from(err: PyErr) -> Self {
        Failure::Raised(err)
    }
}

impl App {
    /// Answers one request. Never raises: failures are logged and answered here.
    pub fn serve(&self, py: Python<'_>, exchange: &mut Exchange, control: &dyn Control) -> Outcome {
        let started = self.access_log.is_some().then(Instant::now);
        let body = std::mem::replace(&mut exchange.body, Body::Empty);
        let exchange = &*exchange;
        // Borrowed, not cloned: each Arc clone and drop is an atomic update, and this runs for every request.
        let conn = &exchange.conn;
        let decoded_len = match (&body, exchange.head.body) {
            (Body::Decoded(bytes), BodyKind::Chunked) => Some(bytes.len() as u64),
            _ => None,
        };
        let (environ, is_head, input) = {
            let mut io = conn.io.lock();
            let buf = io.data();
            let is_head = exchange.head.method(buf) == b"HEAD";
            let Some(template) = self.templates.get(conn.listener) else {
                return Outcome::Close;
            };
            // A PROXY protocol header names the real client; it then stands in for the socket's peer.
            let peer = io.proxied.map_or(conn.peer, Peer::Ip);
            let environ = build_environ(
                py,
                &self.consts,
                template,
                &exchange.head,
                buf,
                &peer,
                decoded_len,
                &self.rules,
            );
            // A body that came with the head is copied once, from the buffer into the bytes object the app reads.
            let input = match body {
                Body::Empty => Ok(self.empty_input.clone_ref(py)),
                Body::Received(len) => {
                    let start = exchange.head.head_len;
                    Py::new(py, Input::buffered(PyBytes::new(py, &buf[start..start + len]).unbind()))
                }
                Body::Decoded(bytes) => Py::new(py, Input::buffered(PyBytes::new(py, &bytes).unbind())),
                Body::Streaming(decoder) => Py::new(py, Input::streaming(conn.clone(), decoder, self.body_pace)),
            };
            io.consume(exchange.consumed);
            (environ, is_head, input)
        };
        let meta = RequestMeta {
            minor_version: exchange.head.minor_version,
            is_head,
            keep_alive: exchange.head.keep_alive && !control.draining(),
        };
        let prepared = environ.and_then(|environ| {
            let input = input?;
            environ.set_item(self.consts.wsgi_input.bind(py), &input)?;
            let start_response = Bound::new(
                py,
                StartResponse::new(conn.clone(), meta, input.clone_ref(py), self.write_timeout),
            )?;
            Ok((environ, input, start_response))
        });
        let (environ, input, start_response) = match prepared {
            Ok(parts) => parts,
            Err(err) => {
                self.log_failure(py, None, &Failure::Raised(err));
                send_plain(conn, meta.minor_version, INTERNAL_ERROR, INTERNAL_ERROR_BODY);
                return Outcome::Close;
            }
        };
        let result = match self.app.bind(py).call1((&environ, &start_response)) {
            Ok(result) => {
                let sent = respond(py, start_response.get(), &result);
                let closed = close_iterable(&result);
                sent.and_then(|keep| closed.map(|()| keep))
            }
            Err(err) => Err(Failure::Raised(err)),
        };
        input.get().retire();
        // The answer the server gave itself in place of the app's, for the access log.
        let mut answered: Option<(&str, &str)> = None;
        let outcome = match result {
            Ok(true) => Outcome::KeepAlive,
            Ok(false) => Outcome::Close,
            Err(failure) => {
                let headers_sent = start_response.get().headers_sent();
                if let Some(fault) = input.get().client_fault() {
                    // The app failed because the client's body did: not an application error, and the
                    // client, if still there, hears why.
                    self.log_client_fault(py, &environ, fault);
                    if let (Some((status, detail)), false) = (fault.answer(), headers_sent) {
                        send_plain(conn, meta.minor_version, status, detail);
                        answered = Some((status, detail));
                    }
                } else {
                    self.log_failure(py, Some(&environ), &failure);
                    if !matches!(failure, Failure::Io(_)) && !headers_sent {
                        send_plain(conn, meta.minor_version, INTERNAL_ERROR, INTERNAL_ERROR_BODY);
                        answered = Some((INTERNAL_ERROR, INTERNAL_ERROR_BODY));
                    }
                }
                Outcome::Close
            }
        };
        if let (Some(access_log), Some(started)) = (&self.access_log, started) {
            let (status, body_bytes) = match answered {
                // The plain answer's body is the text and a newline.
                Some((status, body)) => (status.to_string(), body.len() as u64 + 1),
                None => start_response.get().summary(),
            };
            let seconds = started.elapsed().as_secs_f64();
            if let Err(err) = access_log.bind(py).call1((&environ, status, body_bytes, seconds)) {
                err.print(py);
            }
        }
        outcome
    }

    /// Logs a request that passed its deadline, with the Python stack of the thread still running it.
    pub fn report_overdue(&self, py: Python<'_>, overdue: &Overdue) {
        let stack = thread_stack(py, overdue.thread).unwrap_or_else(|_| "(stack unavailable)".into());
        let logged = self.logger.bind(py).call_method1(
            "error",
            (
                "Request timed out after %.1fs, answered 504: %s\nThe application thread is still running here:\n%s",
                overdue.elapsed.as_secs_f64(),
                &overdue.describe,
                stack,
            ),
        );
        if let Err(err) = logged {
            err.print(py);
        }
    }

    fn log_client_fault(&self, py: Python<'_>, environ: &Bound<'_, PyDict>, fault: ClientFault) {
        let level = if fault.answer().is_some() { "warning" } else { "debug" };
        let description = describe_request(environ);
        let logged = self
            .logger
            .bind(py)
            .call_method1(level, ("Request body of %s failed: %s", description, fault.to_string()));
        if let Err(err) = logged {
            err.print(py);
        }
    }

    fn log_failure(&self, py: Python<'_>, environ: Option<&Bound<'_, PyDict>>, failure: &Failure) {
        let description = environ.map_or_else(String::new, describe_request);
        let logger = self.logger.bind(py);
        let result = match failure {
            Failure::Raised(err) => {
                let kwargs = PyDict::new(py);
                kwargs
                    .set_item("exc_info", (err.get_type(py), err.value(py), err.traceback(py)))
                    .and_then(|()| {
                        logger.call_method("error", ("Error handling request %s", description), Some(&kwargs))
                    })
            }
            Failure::Contract(message) => logger.call_method1("error", ("%s (request %s)", message, description)),
            Failure::Io(err) => {
                logger.call_method1("debug", ("Connection lost during %s: %s", description, err.to_string()))
            }
        };
        if let Err(err) = result {
            // The logging system itself failed: fall back to stderr so the failure is not lost.
            err.print(py);
        }
    }
}

/// The formatted Python stack of the thread whose `threading.get_ident()` is `thread`.
fn thread_stack(py: Python<'_>, thread: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let Some(frame) = frames.cast::<PyDict>()?.get_item(thread)? else {
        return Ok("(thread has no Python frame)".into());
    };
    let lines = py.import("traceback")?.call_method1("format_stack", (frame,))?;
    lines
        .try_iter()?
        .map(|line| line.and_then(|l| l.extract::<String>()))
        .collect()
}

fn describe_request(environ: &Bound<'_, PyDict>) -> String {
    let get = |key: &str| {
        environ
            .get_item(key)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let query = get("QUERY_STRING");
    let target = if query.is_empty() {
        get("PATH_INFO")
    } else {
        format!("{}?{query}", get("PATH_INFO"))
    };
    format!("{} {target}", get("REQUEST_METHOD"))
}

const INTERNAL_ERROR: &str = "500 Internal Server Error";
const INTERNAL_ERROR_BODY: &str = "Internal Server Error";

/// A short plain-text answer from the server itself; the connection closes after it.
fn send_plain(conn: &Arc<Conn>, minor_version: u8, status: &str, body: &str) {
    let response = encode_simple(minor_version, status.as_bytes(), body.as_bytes(), false);
    conn.io.lock().write_nonblocking(&response);
}

/// Sends the app's iterable; returns whether the connection may be kept.
fn respond(py: Python<'_>, start_response: &StartResponse, result: &Bound<'_, PyAny>) -> Result<bool, Failure> {
    // Fast path: a list or tuple is known whole, so it leaves in one write with a computed length.
    let items = if let Ok(list) = result.cast_exact::<PyList>() {
        if list.len() == 1 {
            // The most common answer: one bytes object, sent with the head in one write.
            let item = list.get_item(0)?;
            return Ok(start_response.send_whole(py, &[as_bytes(&item)?.as_bytes()])?);
        }
        Some(list.iter().collect::<Vec<_>>())
    } else if let Ok(tuple) = result.cast_exact::<PyTuple>() {
        Some(tuple.iter().collect::<Vec<_>>())
    } else {
        None
    };
    if let Some(items) = items {
        let chunks = items.iter().map(as_bytes).collect::<Result<Vec<_>, _>>()?;
        let slices: Vec<&[u8]> = chunks.iter().map(|b| b.as_bytes()).collect();
        return Ok(start_response.send_whole(py, &slices)?);
    }
    if let Ok(wrapper) = result.cast_exact::<FileWrapper>() {
        if let Some(sent) = send_file(py, start_response, wrapper.get()) {
            return sent;
        }
    }
    if result.is_instance_of::<PyString>() || result.is_instance_of::<PyBytes>() {
        return Err(Failure::Contract(format!(
            "the application returned a {} instead of an iterable of bytes (wrap it in a list: [body])",
            if result.is_instance_of::<PyString>() {
                "str"
            } else {
                "bytes object"
            }
        )));
    }
    for item in result.try_iter()? {
        let item = item?;
        let chunk = as_bytes(&item)?;
        if chunk.as_bytes().is_empty() {
            continue;
        }
        // PEP 3333: stop once the app's Content-Length is satisfied.
        if start_response.send_block(py, chunk.as_bytes())? {
            break;
        }
    }
    Ok(start_response.finish(py)?)
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> Result<&'a Bound<'py, PyBytes>, Failure> {
    item.cast::<PyBytes>().map_err(|_| {
        let kind = if item.is_instance_of::<PyString>() {
            "str".to_string()
        } else {
            item.get_type()
                .name()
                .map_or_else(|_| "non-bytes".into(), |n| n.to_string())
        };
        Failure::Contract(format!(
            "the application returned a {kind} body chunk, not bytes (WSGI bodies are bytes: encode str with .encode())"
        ))
    })
}

/// sendfile(2) for a file wrapper around a regular file; `None` means "iterate it instead".
fn send_file(py: Python<'_>, start_response: &StartResponse, wrapper: &FileWrapper) -> Option<Result<bool, Failure>> {
    // After write() the body may already be chunked; raw file bytes cannot follow then.
    if start_response.headers_sent() {
        return None;
    }
    let file = wrapper.filelike.bind(py);
    let fd: i32 = file.call_method0("fileno").ok()?.extract().ok()?;
    let size = regular_file_size(fd)?;
    let offset: u64 = file.call_method0("tell").ok()?.extract().ok()?;
    let length = size.saturating_sub(offset);
    Some(
        start_response
            .send_file(py, fd, offset, length)
            .map_err(Failure::from)
            .and_then(|()| start_response.finish(py).map_err(Failure::from)),
    )
}

/// Calls the iterable's `close()` if it has one (PEP 3333: exactly once, whatever happened).
fn close_iterable(result: &Bound<'_, PyAny>) -> Result<(), Failure> {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if let Some(close) = result.getattr_opt(pyo3::intern!(result.py(), "close"))? {
        close.call0()?;
    }
    Ok(())
}
