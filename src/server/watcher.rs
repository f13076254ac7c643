//! The watcher thread: it never runs the application. It wakes every millisecond while a request is in the
//! application, enforces deadlines, sends what streamed responses staged and responses held back too long, and when
//! the app threads stall while work waits (a request blocked on I/O, or only long requests computing) it hands the
//! work to a free thread, starts one, or polls in their place.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::deadline::Overdue;
use super::{send_deferred, Idle, Shared, Worker, LONG_REQUEST, STALL};
use crate::sys::ThreadActivity;

/// Requests computing side by side beyond which the watcher starts no thread for a stall of long requests: more of
/// them at once only share the GIL, so none finishes sooner and each finishes later. The watcher then polls in the
/// app threads' place, as when all `threads` are busy, so that health checks are still answered and excess work is
/// still shed. (Requests blocked on I/O are not bound by it: see `Shared::app_blocks`.)
const LONG_REQUESTS_SIDE_BY_SIDE: usize = 4;
/// The watcher takes a request younger than this to be running without asking the kernel: under a load of short
/// requests it looks every millisecond, and a read of `/proc` costs more than most such requests take.
const ASK_KERNEL_AFTER: Duration = Duration::from_micros(100);
/// How long after the watcher last saw a request blocked on I/O it keeps looking every `STALL / 4` and free threads
/// start work beside those in the application (`Shared::app_blocks`).
const BLOCKED_MEMORY: Duration = Duration::from_millis(50);
/// Idle watcher ticks before the watcher stops ticking until the next request enters the application.
const IDLE_TICKS: u32 = 50;

/// Why the watcher stopped watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Work waits while a request is blocked on I/O.
    BlockedOnIo,
    /// Work waits while only long requests are in the application and none completed for a tick.
    LongRequests,
    /// A deadline passed, or the server is stopping.
    Other,
}

impl Shared {
    /// The watcher: checks deadlines, and when the app threads stall (none free, or none polling while requests
    /// wait), polls in their place: accepting, shedding and answering health checks while the app is saturated.
    pub(super) fn watcher_main(&self, worker: &dyn Worker) {
        loop {
            // Detached from the interpreter until there is something to report: re-taking the GIL after every
            // look would make the thread running the app give it up.
            let mut overdue = Vec::new();
            worker.blocking(&mut || overdue = self.watch_until_overdue());
            if !overdue.is_empty() {
                worker.report_overdue(&overdue);
            }
            if self.stopping() {
                return;
            }
        }
    }

    /// The watcher's work without Python: returns requests that passed their deadline, or nothing when stopping.
    fn watch_until_overdue(&self) -> Vec<Overdue> {
        loop {
            let stall = self.watch();
            let overdue = std::mem::take(&mut *self.overdue.lock());
            if !overdue.is_empty() || self.stopping() {
                return overdue;
            }
            if self.no_thread_may_join(stall) {
                // Every app thread is busy, or another would only queue for the GIL: poll in their place, one
                // bounded wait at a time so that deadlines are still checked. Queued work is no reason to return
                // at once: the watcher never runs it.
                if let Some(mut state) = self.poll.try_lock() {
                    self.poll_once(&mut state, STALL);
                }
            }
            if !self.no_thread_may_join(stall) {
                let mut idle = self.idle.lock();
                if stall == Stall::BlockedOnIo && idle.spares == 0 {
                    // While requests block on I/O (`app_blocks`) a new thread takes queued work, or polls, without
                    // a hand-off (one left over would be taken only once some thread rests). One starts at each
                    // look that `thread_would_help`: until it is in the application, the next is held back.
                    let _ = self.start_app_thread(&mut idle);
                    continue;
                }
                // An app thread is free, or may start: hand it the poll and the queued work. Not while an earlier
                // hand-off is still on its way: a thread just started may wait for the GIL before it takes it.
                if idle.handoffs == 0 && (idle.spares > 0 || self.start_app_thread(&mut idle).is_ok()) {
                    idle.handoffs += 1;
                    self.spare_cv.notify_one();
                }
            }
        }
    }

    /// True when no app thread should start the queued work after `stall`: all `threads` are in the application,
    /// or long requests stalled with `LONG_REQUESTS_SIDE_BY_SIDE` app threads already at work. Those count whether
    /// or not they are inside the application at this moment: one between two requests, or waiting for the GIL to
    /// start the next, is about to compute beside the others.
    fn no_thread_may_join(&self, stall: Stall) -> bool {
        if self.in_app.load(Ordering::Acquire) >= self.config.threads {
            return true;
        }
        stall == Stall::LongRequests && {
            let idle = self.idle.lock();
            idle.app_threads_started - idle.spares >= LONG_REQUESTS_SIDE_BY_SIDE
        }
    }

    /// Waits until the app threads stall while work waits (a request is blocked on I/O, or nothing completed for a
    /// tick while only requests that have run for `LONG_REQUEST` are in the application), a request passes its
    /// deadline, or the server stops.
    fn watch(&self) -> Stall {
        let mut idle = self.idle.lock();
        let mut last = self.completed();
        let mut last_at = Instant::now();
        let mut quiet_ticks = 0;
        loop {
            if idle.watcher_deep {
                // SeqCst pairs with `enter_app`: either it sees the flag and notifies, or this sees its count.
                if self.in_app.load(Ordering::SeqCst) == 0 {
                    self.watch_cv.wait_for(&mut idle, Duration::from_secs(1));
                }
                idle.watcher_deep = false;
                self.watcher_deep.store(false, Ordering::Release);
                quiet_ticks = 0;
            } else {
                // Requests that block on I/O were seen lately: look more often, so threads join them sooner.
                let blocking_lately = idle.blocked_seen.is_some_and(|seen| seen.elapsed() < BLOCKED_MEMORY);
                if !blocking_lately && self.app_blocks.load(Ordering::Relaxed) {
                    self.app_blocks.store(false, Ordering::Release);
                }
                let tick = if blocking_lately { STALL / 4 } else { STALL };
                self.watch_cv.wait_for(&mut idle, tick);
            }
            if self.stopping() {
                return Stall::Other;
            }
            let in_app = self.in_app.load(Ordering::Acquire);
            if in_app > 0 {
                self.send_staged();
                self.send_held_back();
            }
            if let (Some(timeout), true) = (self.config.timeout, in_app > 0) {
                let overdue = self.deadlines.expire(timeout, self.app_clock());
                if !overdue.is_empty() {
                    self.overdue.lock().extend(overdue);
                    return Stall::Other;
                }
            }
            let work_waiting = in_app > 0 && (!self.queue.lock().is_empty() || !self.poll.is_locked());
            let app_blocks = self.app_blocks.load(Ordering::Relaxed);
            // A request blocked on I/O has released the GIL: while work waits, hand it to a free thread, and let free
            // threads start work beside blocked ones from now on. While they do, keep looking now and then (each
            // look reads `/proc`), so that the app's blocking is still known when no work waits.
            let look_again = idle
                .blocked_seen
                .is_none_or(|seen| seen.elapsed() >= BLOCKED_MEMORY / 4);
            if (work_waiting || (app_blocks && in_app > 0 && look_again)) && self.request_blocked_on_io() {
                idle.blocked_seen = Some(Instant::now());
                if !app_blocks {
                    self.app_blocks.store(true, Ordering::Release);
                }
                if work_waiting && self.thread_would_help(&idle) {
                    return Stall::BlockedOnIo;
                }
            }
            if last_at.elapsed() < STALL {
                continue;
            }
            let now = self.completed();
            // Nothing completed for a whole tick while work waits behind long requests only: stalled (long
            // computations, or waits the kernel did not show as I/O at the moment of looking).
            if work_waiting && now == last && self.only_long_requests_running() {
                return Stall::LongRequests;
            }
            if now == last && in_app == 0 {
                quiet_ticks += 1;
                if quiet_ticks >= IDLE_TICKS {
                    idle.watcher_deep = true;
                    self.watcher_deep.store(true, Ordering::SeqCst);
                }
            } else {
                quiet_ticks = 0;
            }
            last = now;
            last_at = Instant::now();
        }
    }

    /// Sends, without waiting, the blocks streamed responses staged while their application produces the next
    /// one (see `StartResponse::send_block`); what the socket does not take now waits for the next look.
    fn send_staged(&self) {
        for (index, _) in self.requests_in_app() {
            let token = self.app_threads[index].serving.load(Ordering::Relaxed);
            let Some(conn) = self.conns.get(token) else { continue };
            if !conn.streaming.load(Ordering::Acquire) {
                continue;
            }
            // Never wait for the answering thread: it holds the connection only for short moments.
            let Some(mut io) = conn.io.try_lock() else { continue };
            // Checked again under the lock: once the response has ended, its tail belongs to its thread.
            if conn.streaming.load(Ordering::Acquire) && io.has_pending_output() {
                let _ = io.flush_pending();
            }
        }
    }

    /// Sends the responses an app thread has held back (see `Conn::may_defer`) for `DEFER_LIMIT` or more: its
    /// thread is in the application with a request that takes long, and would send them only after it.
    fn send_held_back(&self) {
        let now = self.app_clock();
        for thread in &self.app_threads[..] {
            if !thread.holds_too_long(now) {
                continue;
            }
            // Never wait: the thread holds its list only for short moments, and a connection's `io` while it
            // answers or reads on it; a connection busy now is looked at again next tick.
            let Some(mut list) = thread.deferred.try_lock() else {
                continue;
            };
            list.retain(|conn| match conn.io.try_lock() {
                Some(mut io) => {
                    send_deferred(&mut io);
                    false
                }
                None => true,
            });
            if list.is_empty() {
                thread.deferred_since.store(0, Ordering::Relaxed);
            }
        }
    }

    /// True when another app thread would get queued work done sooner: every app thread at work (not resting; `idle`
    /// is held) is inside the application, and none runs a request younger than `LONG_REQUEST` (they block on
    /// I/O, or compute long). One between requests takes the work itself, and beside one that computes, another
    /// thread would only queue for the GIL.
    fn thread_would_help(&self, idle: &Idle) -> bool {
        // The cheap answers first: the kernel is asked only about requests older than `ASK_KERNEL_AFTER`.
        idle.app_threads_started - idle.spares <= self.in_app.load(Ordering::Acquire)
            && self.requests_in_app().all(|(_, age)| age >= ASK_KERNEL_AFTER)
            && !self.fresh_request_elsewhere(self.config.threads)
    }

    /// True when every request in the application has been there for `LONG_REQUEST` or more. While one is younger,
    /// its thread is getting through short work beside the long ones, and another thread would only queue for the
    /// GIL with it.
    fn only_long_requests_running(&self) -> bool {
        let mut any = false;
        for (_, age) in self.requests_in_app() {
            if age < LONG_REQUEST {
                return false;
            }
            any = true;
        }
        any
    }

    /// True when a thread inside the application for `ASK_KERNEL_AFTER` or more is blocked on I/O (it has released
    /// the GIL). One waiting on a futex does not count: that is most often the GIL itself, taken by another app
    /// thread, and starting more beside them would only add to the queue for it.
    fn request_blocked_on_io(&self) -> bool {
        self.requests_in_app()
            .any(|(i, age)| age >= ASK_KERNEL_AFTER && self.app_thread_activity(i) == ThreadActivity::Blocked)
    }
}
