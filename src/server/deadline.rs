//! Per-request deadlines (`--timeout`): the table of requests inside the application, checked by the watcher.
//! A request past its deadline gets a 504 (if its response has not started) and its connection is shut for
//! writing; the thread keeps running the app until it returns, and its Python stack is reported.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::http::response::encode_simple;

use super::connection::Conn;

/// A request the application is running.
struct Running {
    id: u64,
    conn: Arc<Conn>,
    /// OS identity of the thread running it (equal to Python's `threading.get_ident()`).
    thread: u64,
    started: Instant,
    describe: String,
    timed_out: bool,
}

/// A request that just passed its deadline, for the report.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub thread: u64,
    pub describe: String,
    pub elapsed: Duration,
}

/// The requests currently inside the application.
#[derive(Default)]
pub struct Deadlines {
    running: Mutex<Vec<Running>>,
    next_id: Mutex<u64>,
    timed_out_total: Mutex<u64>,
}

impl Deadlines {
    /// Records a request entering the application; returns its ticket for `leave`.
    pub fn enter(&self, conn: &Arc<Conn>, thread: u64, describe: String) -> u64 {
        let id = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next
        };
        self.running.lock().push(Running {
            id,
            conn: conn.clone(),
            thread,
            started: Instant::now(),
            describe,
            timed_out: false,
        });
        id
    }

    /// The request left the application. Must happen before its connection is closed (see `expire`).
    pub fn leave(&self, id: u64) {
        self.running.lock().retain(|r| r.id != id);
    }

    /// Marks requests older than `timeout`, answers them with 504 where still possible, and returns them.
    pub fn expire(&self, timeout: Duration) -> Vec<Overdue> {
        let mut overdue = Vec::new();
        // Holding the table lock keeps each listed connection open: its owner removes it (`leave`) before it
        // may close the socket, so the descriptor below cannot have been reused.
        let mut running = self.running.lock();
        for request in running.iter_mut().filter(|r| !r.timed_out) {
            let elapsed = request.started.elapsed();
            if elapsed < timeout {
                continue;
            }
            request.timed_out = true;
            let conn = &request.conn;
            if !conn.response_started.load(Ordering::Acquire) {
                if let Some(mut io) = conn.io.try_lock() {
                    let body = b"the application did not answer in time";
                    io.write_nonblocking(&encode_simple(1, b"504 Gateway Timeout", body, false));
                }
            }
            // The client sees the end of the response now; the app's later writes fail and it is not waited for.
            crate::sys::shutdown_write(conn.fd);
            overdue.push(Overdue {
                thread: request.thread,
                describe: request.describe.clone(),
                elapsed,
            });
        }
        if !overdue.is_empty() {
            *self.timed_out_total.lock() += overdue.len() as u64;
        }
        overdue
    }

    /// Requests past their deadline that are still inside the application.
    pub fn stuck(&self) -> usize {
        self.running.lock().iter().filter(|r| r.timed_out).count()
    }

    /// Requests that ever passed their deadline.
    pub fn timed_out_total(&self) -> u64 {
        *self.timed_out_total.lock()
    }
}
