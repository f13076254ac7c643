//! The seam between the event loop and what answers requests: the loop hands a parsed request on an owned
//! connection to a `Worker`; WSGI is one implementation, tests plug in plain Rust ones.

use std::sync::Arc;

use crate::http::{BodyDecoder, RequestHead};

use super::connection::Conn;

/// What the request body looks like when the request is handed over.
#[derive(Debug)]
pub enum Body {
    Empty,
    /// The whole body was already received with Content-Length framing: these many bytes follow the head in
    /// the connection's buffer, as sent (the worker copies them once, straight into what the app reads).
    Received(usize),
    /// The whole chunked body was already received and decoded.
    Decoded(Vec<u8>),
    /// The body is still arriving; the decoder continues from the connection's buffer and socket.
    Streaming(BodyDecoder),
}

/// One request, handed to a worker together with exclusive use of its connection.
#[derive(Debug)]
pub struct Exchange {
    pub conn: Arc<Conn>,
    pub head: RequestHead,
    /// Bytes of the connection buffer this request spans (head plus any buffered body). The worker consumes them
    /// after it has read the head.
    pub consumed: usize,
    pub body: Body,
    /// When it was queued, if queue waits are limited (`--max-queue-wait`).
    pub queued_at: Option<std::time::Instant>,
}

/// Whether the connection may carry another request after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    KeepAlive,
    Close,
}

/// Server-wide state a worker may consult while answering.
pub trait Control {
    /// True once a graceful shutdown began: answer with `Connection: close`.
    fn draining(&self) -> bool;
}

/// Answers requests on one server thread.
pub trait Worker {
    /// Runs `f` where blocking is harmless (for Python: detached from the interpreter).
    fn blocking(&self, f: &mut (dyn FnMut() + Send));
    /// Answers one request. The connection is owned by this thread until it returns.
    fn handle(&self, exchange: &mut Exchange, control: &dyn Control) -> Outcome;
    /// Answers after a panic inside `handle`, best effort.
    fn on_panic(&self, exchange: &mut Exchange);
    /// Reports requests that passed their deadline (where their threads are stuck).
    fn report_overdue(&self, overdue: &[super::deadline::Overdue]);
}

/// Builds one `Worker` per server thread for the thread's whole life.
pub trait Handler: Send + Sync + 'static {
    /// Runs `body` with this thread's worker. WSGI attaches the thread to the interpreter once, here.
    fn thread_scope(&self, body: &mut dyn FnMut(&dyn Worker));
}
