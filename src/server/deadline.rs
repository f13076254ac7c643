//! Per-request deadlines (`--timeout`): one slot per server thread saying which request it runs, checked by
//! the watcher. A request past its deadline gets a 504 (if its response has not started) and its connection is
//! shut for writing; the thread keeps running the app until it returns, and its Python stack is reported.
//! Each thread writes only its own slot, so the hot path takes one uncontended lock and allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::http::response::encode_simple;

use super::connection::Conn;

/// What one server thread is running.
#[derive(Default)]
struct Slot {
    conn: Option<Arc<Conn>>,
    /// OS identity of the thread (equal to Python's `threading.get_ident()`).
    thread: u64,
    /// When the request entered the application, on the caller's nanosecond clock; 0 while none runs.
    started: u64,
    /// `METHOD target` as the client sent it, reusing its allocation from request to request; made text only
    /// for a report.
    describe: Vec<u8>,
    timed_out: bool,
}

/// A request that just passed its deadline, for the report.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub thread: u64,
    pub describe: String,
    pub elapsed: Duration,
}

/// The requests currently inside the application, one slot per server thread.
pub struct Deadlines {
    slots: Vec<Mutex<Slot>>,
    timed_out_total: AtomicU64,
}

impl Deadlines {
    #[must_use]
    pub fn new(threads: usize) -> Self {
        Deadlines {
            slots: (0..threads).map(|_| Mutex::default()).collect(),
            timed_out_total: AtomicU64::new(0),
        }
    }

    /// Thread `index` starts running a request on `conn` at `started` (nanoseconds on the caller's clock,
    /// never 0, the same clock `expire` is given); `describe` writes its `METHOD target`.
    pub fn enter(&self, index: usize, conn: &Arc<Conn>, started: u64, describe: impl FnOnce(&mut Vec<u8>)) {
        let Some(slot) = self.slots.get(index) else { return };
        let mut slot = slot.lock();
        slot.conn = Some(conn.clone());
        slot.thread = crate::sys::thread_ident();
        slot.started = started;
        slot.describe.clear();
        describe(&mut slot.describe);
        slot.timed_out = false;
    }

    /// Thread `index` left the application. Must happen before it may close the connection (see `expire`).
    pub fn leave(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            let mut slot = slot.lock();
            slot.conn = None;
            slot.started = 0;
        }
    }

    /// Marks requests older than `timeout` at `now` (the clock of `enter`), answers them with 504 where still
    /// possible, and returns them.
    pub fn expire(&self, timeout: Duration, now: u64) -> Vec<Overdue> {
        let mut overdue = Vec::new();
        for slot in &self.slots {
            // Holding the slot keeps its connection open: the owner clears the slot (`leave`) before it may
            // close the socket, so the descriptor below cannot have been reused.
            let mut slot = slot.lock();
            let (started @ 1.., Some(conn), false) = (slot.started, slot.conn.as_ref(), slot.timed_out) else {
                continue;
            };
            let elapsed = Duration::from_nanos(now.saturating_sub(started));
            // A response that keeps reaching the client is progress: the deadline counts from its last block,
            // so a long stream (or a slow reader) is not cut off, while an app that stops producing is.
            let idle = conn.since_progress().map_or(elapsed, |since| since.min(elapsed));
            if idle < timeout {
                continue;
            }
            if !conn.response_started.load(Ordering::Acquire) {
                if let Some(mut io) = conn.io.try_lock() {
                    let body = b"the application did not answer in time";
                    io.write_nonblocking(&encode_simple(1, b"504 Gateway Timeout", body, false));
                }
            }
            // The client sees the end of the response now; the app's later writes fail and it is not waited for.
            crate::sys::shutdown_write(conn.fd);
            slot.timed_out = true;
            overdue.push(Overdue {
                thread: slot.thread,
                describe: String::from_utf8_lossy(&slot.describe).into_owned(),
                elapsed,
            });
        }
        self.timed_out_total.fetch_add(overdue.len() as u64, Ordering::Relaxed);
        overdue
    }

    /// Requests past their deadline that are still inside the application.
    pub fn stuck(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| {
                let slot = slot.lock();
                slot.timed_out && slot.started != 0
            })
            .count()
    }

    /// Requests that ever passed their deadline.
    pub fn timed_out_total(&self) -> u64 {
        self.timed_out_total.load(Ordering::Relaxed)
    }
}
