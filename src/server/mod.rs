//! The event loop and its threads: run-to-completion with lazy takeover.
//!
//! A process has up to `threads` app threads sharing one mio `Poll`, plus one watcher thread; app threads beyond the
//! first start when work waits and none rests. Whichever app thread holds the poll lock waits for events, accepts,
//! reads and parses (never touching Python), queues complete requests and then answers them itself: no hand-off
//! between threads on the common path. App threads with nothing to do rest. The watcher (`watcher.rs`) never runs
//! the application: it wakes every millisecond while a request is in the application, enforces deadlines, and when
//! nothing has completed since its last look while work waits, it polls in the app threads' place and hands queued
//! requests to a free one, so an app blocked on I/O does not stall the other connections, and a saturated app still
//! gets its health checks answered and its excess shed.
//! Once it sees a request blocked on I/O, and for a while after, free threads poll and take queued work beside
//! those in the application without waiting for it, as in a classic thread pool. The watcher starts threads for it
//! one at a time, and only while every thread at work is in the application and none of them computes: beside a
//! request that does, another thread would only queue for the GIL, and started threads stay.
//! A thread answering queued requests back to back holds each finished response (up to `DEFER_LIMIT`) to send it
//! with the next ones, so that a client is woken once for several; a file body the client does not take at once
//! is left to the poller.

#![forbid(unsafe_code)]

pub mod connection;
pub mod deadline;
pub mod handler;
pub mod listener;
pub mod slab;
mod watcher;

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::{Condvar, Mutex};

use crate::http::body::decode_complete;
use crate::http::response::{encode_error, encode_simple, encode_simple_with, CONTINUE};
use crate::http::{parse_request, BodyDecoder, BodyKind, HttpError, Limits, Parsed, RequestHead};

use crate::http::proxy_protocol::parse_proxy_header;
use crate::sys::{ThreadActivity, ThreadProbe};
use connection::{Conn, ConnIo, Peer, ReadStatus};
use deadline::{Deadlines, Overdue};
pub use handler::{Body, Control, Exchange, Handler, Outcome, Worker};
use listener::Listener;
use slab::Slab;

const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX / 2;
/// Requests of one connection answered back to back before its next one goes through the queue.
const MAX_INLINE: usize = 16;
/// Queued requests a thread answers back to back before it looks at the sockets again and sends the responses it
/// holds (or sooner, once `DEFER_LIMIT` has passed since the first of them entered the application). Each look
/// costs a poll and a GIL hand-back, and each batch of responses wakes the client once: batches of 32 within 2 ms,
/// against 16 within 500 µs, gave Flask and Django 7 % more responses a second on one core.
const POLL_EVERY: usize = 32;
/// The watcher's tick while requests are in the application.
const STALL: Duration = Duration::from_millis(1);
/// A request running (not blocked) for longer than this no longer holds back queued work: another thread starts
/// beside it. Shorter requests are waited for, since two threads computing at once only trade the GIL. Well above
/// a scheduler time slice, so a worker preempted by another process on the same core is not taken as stalled.
const LONG_REQUEST: Duration = Duration::from_millis(20);
/// How long a finished response may wait for the responses its thread finishes after it (see `Conn::may_defer`).
/// Sending several at once wakes the client (a proxy, a load balancer) once for all of them: on a busy server
/// that saves a cross-CPU wake-up per response, which costs more than many small requests do. Bounded so that
/// an application slower than this adds at most one request's time to the response before; long enough for a
/// framework's requests (50-100 µs each) to leave in batches of 20 or more.
const DEFER_LIMIT: Duration = Duration::from_millis(2);
/// Most responses a thread holds back at once.
const DEFER_MAX: usize = 32;
/// Bodies up to this size are read completely before the application runs (slow uploads hold no app thread).
pub const BUFFER_BODY: usize = 64 * 1024;
/// While draining, how long a new connection may take to send its first request.
const FRESH_GRACE_SECS: u64 = 2;
/// How long a closing connection may take to send its FIN before it is dropped.
const LINGER_SECS: u64 = 2;

/// Settings the loop needs; the WSGI layer converts the Python config into this.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Requests that may be inside the application at once; the loop runs one thread more than this.
    pub threads: usize,
    pub keep_alive: Duration,
    pub limits: Limits,
    /// Path answered by the loop itself, never reaching the app.
    pub health_path: Option<String>,
    /// Drain and stop after this many responses (0: never).
    pub max_requests: u64,
    /// A client must send its complete request head (and a buffered body) within this time.
    pub header_timeout: Duration,
    /// A client that takes no bytes of a response for this long is dropped.
    pub write_timeout: Duration,
    /// Expect a PROXY protocol header (v1 or v2) first on connections from `proxy_trusted` peers.
    pub proxy_protocol: bool,
    pub proxy_trusted: crate::http::forwarded::TrustedProxies,
    /// Per-request deadline inside the application (`--timeout`); None: no deadline.
    pub timeout: Option<Duration>,
    /// Open connections beyond which accepting pauses (the kernel backlog holds the rest); 0: no limit.
    pub max_connections: usize,
    /// Requests waiting for a thread beyond which new ones are answered 503 at once.
    pub max_queue: usize,
    /// A request waiting longer than this for a thread is answered 503 instead; None: no limit.
    pub max_queue_wait: Option<Duration>,
}

/// A running server: threads, poll, connections.
pub struct Server {
    shared: Arc<Shared>,
}

struct PollState {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    /// Clock second of the last timeout scan.
    last_scan: u64,
    /// Requests read during one poll, queued together (one lock for all of them).
    ready: Vec<Exchange>,
}

struct Shared {
    config: LoopConfig,
    poll: Mutex<PollState>,
    registry: mio::Registry,
    waker: Waker,
    conns: Slab,
    queue: Mutex<VecDeque<Exchange>>,
    draining: AtomicBool,
    stopped: AtomicBool,
    /// Set by `shutdown(false)`: stop at once, without finishing requests.
    aborted: AtomicBool,
    in_app: AtomicUsize,
    /// The watcher saw a request blocked on I/O within `BLOCKED_MEMORY`. A blocked thread has released the
    /// GIL, so while this holds, free threads poll and start queued requests beside those in the application, as
    /// in a classic thread pool, instead of waiting for the watcher to hand work over one thread a tick.
    app_blocks: AtomicBool,
    /// What each app thread is doing, read by the others and by the watcher.
    app_threads: Box<[AppThread]>,
    idle: Mutex<Idle>,
    watcher_deep: AtomicBool,
    deadlines: Deadlines,
    /// Requests answered 503 because the queue was full or they waited too long.
    shed: AtomicU64,
    /// Accepting stopped at `max_connections`; resumed when connections close.
    accept_paused: AtomicBool,
    /// Requests that passed their deadline, waiting for a thread that can reach Python to report them.
    overdue: Mutex<Vec<Overdue>>,
    /// The watcher waits here.
    watch_cv: Condvar,
    /// Other idle threads wait here.
    spare_cv: Condvar,
    /// Signalled when the last thread exits.
    done_cv: Condvar,
    clock: Instant,
    /// `sys::coarse_now()` when the server started: the origin of `now()`.
    coarse_start: Duration,
    /// Starts threads (set by `Server::start`).
    spawner: OnceLock<Spawner>,
    /// Every thread started, joined by `Server::wait`.
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// What a new thread needs: the server (weakly, so that the server does not own itself) and the handler.
struct Spawner {
    shared: Weak<Shared>,
    handler: Arc<dyn Handler>,
}

/// One app thread as the other threads see it.
#[derive(Default)]
struct AppThread {
    /// When its current request entered the application (nanoseconds on `Shared::clock`, plus one), or 0 while
    /// it is outside. Tells a request that is running fresh from one that has been inside for a while.
    entered: AtomicU64,
    /// Its `/proc` probe, to ask the kernel whether it is blocked, and on what (unset until the thread starts).
    probe: OnceLock<ThreadProbe>,
    /// The token of the connection whose request it runs (meaningful while `entered` is set).
    serving: AtomicUsize,
    /// Requests it completed. Only this thread writes it, so counting needs no locked instruction; readers sum
    /// all threads' counts.
    completed: AtomicU64,
    /// Connections whose finished responses it holds back (see `Conn::may_defer`). Only this thread adds to it,
    /// and only while it holds the connection's `io`; the watcher takes from it without waiting for any lock.
    deferred: Mutex<Vec<Arc<Conn>>>,
    /// When the oldest of them finished (on `app_clock`), or 0 while there are none; 1 once it holds `DEFER_MAX`.
    deferred_since: AtomicU64,
}

impl AppThread {
    /// True when its held-back responses must leave now (`now` on `app_clock`): the oldest has waited
    /// `DEFER_LIMIT`, or it holds `DEFER_MAX` of them.
    fn holds_too_long(&self, now: u64) -> bool {
        let since = self.deferred_since.load(Ordering::Relaxed);
        since != 0 && now.saturating_sub(since) >= DEFER_LIMIT.as_nanos() as u64
    }
}

#[derive(Default)]
struct Idle {
    /// Resting app threads the watcher asked to take over polling.
    handoffs: usize,
    /// The watcher is in its long sleep and needs a wake-up when a request enters the application
    /// (mirrored in `Shared::watcher_deep` so the hot path can check it without the lock).
    watcher_deep: bool,
    spares: usize,
    /// App threads started so far (at most `LoopConfig::threads`); they take the indexes below this.
    app_threads_started: usize,
    running_threads: usize,
    /// When the watcher last saw a request blocked on I/O (see `ThreadActivity::Blocked`).
    blocked_seen: Option<Instant>,
}

impl Server {
    /// Takes over the listening sockets and prepares the poll; no thread runs until `start`.
    ///
    /// # Errors
    /// Poll creation or registration failures.
    pub fn new(mut listeners: Vec<Listener>, config: LoopConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            registry.register(listener.source(), Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let waker = Waker::new(&registry, WAKER)?;
        let deadlines = Deadlines::new(config.threads.max(1) + 1);
        let app_threads = (0..config.threads.max(1)).map(|_| AppThread::default()).collect();
        let shared = Arc::new(Shared {
            config,
            poll: Mutex::new(PollState {
                poll,
                events: Events::with_capacity(256),
                listeners,
                last_scan: 0,
                ready: Vec::new(),
            }),
            registry,
            waker,
            conns: Slab::default(),
            queue: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            in_app: AtomicUsize::new(0),
            app_blocks: AtomicBool::new(false),
            app_threads,
            idle: Mutex::new(Idle::default()),
            watcher_deep: AtomicBool::new(false),
            deadlines,
            shed: AtomicU64::new(0),
            accept_paused: AtomicBool::new(false),
            overdue: Mutex::new(Vec::new()),
            watch_cv: Condvar::new(),
            spare_cv: Condvar::new(),
            done_cv: Condvar::new(),
            clock: Instant::now(),
            coarse_start: crate::sys::coarse_now(),
            spawner: OnceLock::new(),
            handles: Mutex::new(Vec::new()),
        });
        Ok(Server { shared })
    }

    /// Starts the watcher and the first app thread; the others start when requests block or run long (see
    /// `Shared::start_app_thread`).
    ///
    /// # Errors
    /// Thread creation failures.
    pub fn start(&self, handler: &Arc<dyn Handler>) -> io::Result<()> {
        let spawner = Spawner {
            shared: Arc::downgrade(&self.shared),
            handler: handler.clone(),
        };
        if self.shared.spawner.set(spawner).is_err() {
            return Err(io::Error::other("server already started"));
        }
        let mut idle = self.shared.idle.lock();
        let started = self
            .shared
            .spawn_thread(&mut idle, self.shared.config.threads)
            .and_then(|()| self.shared.start_app_thread(&mut idle));
        drop(idle);
        if started.is_err() {
            self.shutdown(false);
        }
        started
    }

    /// Begins stopping. Graceful: stop accepting, close idle connections, finish the requests in progress.
    /// Thread-safe and non-blocking.
    pub fn shutdown(&self, graceful: bool) {
        self.shared.begin_shutdown(graceful);
    }

    /// Counters: requests past their deadline so far, those still inside the application.
    #[must_use]
    pub fn deadline_stats(&self) -> (u64, usize) {
        (self.shared.deadlines.timed_out_total(), self.shared.deadlines.stuck())
    }

    /// Requests answered 503 for lack of capacity so far.
    #[must_use]
    pub fn shed_count(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// True once a shutdown began, by request or after `max_requests`.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for every thread to exit; true once they all have. `block` runs the wait.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut idle = self.shared.idle.lock();
        while idle.running_threads > 0 {
            if self.shared.done_cv.wait_until(&mut idle, deadline).timed_out() {
                return idle.running_threads == 0;
            }
        }
        drop(idle);
        let handles = std::mem::take(&mut *self.shared.handles.lock());
        for handle in handles {
            // A thread that panicked outside a request has already been reported by the panic hook.
            let _ = handle.join();
        }
        true
    }

    /// Open connections right now.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.conns.len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

impl Control for Shared {
    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

enum Drive {
    /// A request is ready; the caller still owns the connection.
    Request(Exchange),
    /// The connection was released or closed.
    Done,
}

impl Shared {
    /// Whole seconds since the server started, on the coarse clock (read several times per request).
    fn now(&self) -> u64 {
        crate::sys::coarse_now().saturating_sub(self.coarse_start).as_secs()
    }

    /// Starts another app thread, unless all `threads` run already or the server is stopping. Threads start on
    /// demand, when work waits and no started thread rests, so an app whose requests never block or run long keeps
    /// one app thread however many it may have; once started, a thread stays.
    fn start_app_thread(&self, idle: &mut Idle) -> io::Result<()> {
        if idle.app_threads_started >= self.config.threads {
            return Err(io::Error::other("no app thread left to start"));
        }
        self.spawn_thread(idle, idle.app_threads_started)?;
        idle.app_threads_started += 1;
        Ok(())
    }

    /// Starts thread `index` (the watcher for `index == threads`). Called under `idle`, which the thread's exit
    /// takes too, so it is counted as running before it could end.
    fn spawn_thread(&self, idle: &mut Idle, index: usize) -> io::Result<()> {
        let (Some(spawner), false) = (self.spawner.get(), self.stopping()) else {
            return Err(io::Error::other("server not running"));
        };
        let Some(shared) = spawner.shared.upgrade() else {
            return Err(io::Error::other("server gone"));
        };
        let handler = spawner.handler.clone();
        let handle = std::thread::Builder::new()
            .name(format!("rustwsgi-{index}"))
            .spawn(move || {
                handler.thread_scope(&mut |worker| shared.thread_main(index, worker));
                shared.thread_exited();
            })?;
        idle.running_threads += 1;
        self.handles.lock().push(handle);
        Ok(())
    }

    /// The life of server thread `index`. Threads `0..threads` run the application; the one beyond them, the
    /// watcher, never does (so `--threads` bounds both concurrency and the threads an app ever sees).
    fn thread_main(&self, index: usize, worker: &dyn Worker) {
        if index >= self.config.threads {
            self.watcher_main(worker);
            return;
        }
        if let Some(probe) = crate::sys::own_thread_probe() {
            let _ = self.app_threads[index].probe.set(probe);
        }
        let mut since_poll = 0;
        // When the first request answered since the last look at the sockets entered the application.
        let mut batch_start = 0;
        loop {
            if self.stopping() {
                self.flush_deferred(index);
                return;
            }
            // Attached to the interpreter, having just answered a request: take the next queued one directly.
            if let Some((exchange, more)) = self.take_queued(index) {
                let entered = self.run(index, exchange, more, worker);
                if since_poll == 0 {
                    batch_start = entered;
                }
                since_poll += 1;
                // Between queued requests, look at the sockets now and then so that a long queue (or a pipelining
                // client) does not hold back accepts and reads for everyone else.
                if since_poll >= POLL_EVERY || entered.saturating_sub(batch_start) >= DEFER_LIMIT.as_nanos() as u64 {
                    if let Some(mut state) = self.poll.try_lock() {
                        since_poll = 0;
                        let state: &mut PollState = &mut state;
                        worker.blocking(&mut || {
                            self.flush_deferred(index);
                            self.poll_once(state, Duration::ZERO);
                        });
                    }
                }
                continue;
            }
            since_poll = 0;
            // Detached while polling, resting and deciding: a thread that re-took the GIL only to find it has
            // nothing to run would still make the thread in the application give the GIL up.
            let mut job = None;
            worker.blocking(&mut || {
                self.flush_deferred(index);
                job = self.wait_for_work(index);
            });
            if let Some((exchange, more)) = job {
                batch_start = self.run(index, exchange, more, worker);
                since_poll += 1;
            }
        }
    }

    /// Polls or rests, without the interpreter, until this thread may run a queued request; `None` when stopping.
    fn wait_for_work(&self, index: usize) -> Option<(Exchange, bool)> {
        loop {
            if self.stopping() {
                return None;
            }
            if let Some(taken) = self.take_queued(index) {
                return Some(taken);
            }
            // While another thread is in the application, this one polls only when the watcher says that thread
            // stalled, or while requests block on I/O: otherwise a CPU-bound app would have two threads fighting
            // over the GIL. (A hand-off is taken in either case: `rest` returns at once while one is left.)
            if self.in_app.load(Ordering::Acquire) == 0
                || self.take_handoff()
                || self.app_blocks.load(Ordering::Acquire)
            {
                if let Some(mut state) = self.poll.try_lock() {
                    self.poll_once(&mut state, Duration::ZERO);
                    continue;
                }
            }
            self.rest();
        }
    }

    /// The next queued request, unless app thread `index` should leave it to another (see
    /// `fresh_request_elsewhere`; not asked while requests block on I/O, see `app_blocks`), and whether more
    /// requests wait behind it.
    fn take_queued(&self, index: usize) -> Option<(Exchange, bool)> {
        if !self.app_blocks.load(Ordering::Acquire) && self.fresh_request_elsewhere(index) {
            return None;
        }
        let mut queue = self.queue.lock();
        queue.pop_front().map(|exchange| (exchange, !queue.is_empty()))
    }

    /// True while another app thread is running (not blocked) a request that entered the application less than
    /// `LONG_REQUEST` ago.
    ///
    /// Queued work waits for that thread rather than start beside it: two threads running Python at once only
    /// trade the GIL back and forth (a context switch per hand-over, and up to the interpreter's 5 ms switch
    /// interval of waiting), which for short requests costs more than running them one after another. A thread
    /// the kernel reports blocked on I/O (on a database, a sleep, a slow upstream) has released the GIL, and a
    /// request that has been inside longer is likely blocked too: then work starts beside it at once. A thread
    /// waiting on a futex counts as running: it most often waits for the GIL.
    fn fresh_request_elsewhere(&self, index: usize) -> bool {
        if self.in_app.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.requests_in_app()
            .any(|(i, age)| i != index && age < LONG_REQUEST && self.app_thread_activity(i) != ThreadActivity::Blocked)
    }

    /// The app threads inside the application, with how long their current request has been there.
    fn requests_in_app(&self) -> impl Iterator<Item = (usize, Duration)> + '_ {
        let now = self.app_clock();
        self.app_threads.iter().enumerate().filter_map(move |(i, thread)| {
            let entered = thread.entered.load(Ordering::Acquire);
            (entered != 0).then(|| (i, Duration::from_nanos(now.saturating_sub(entered))))
        })
    }

    /// What app thread `index` is doing.
    fn app_thread_activity(&self, index: usize) -> ThreadActivity {
        self.app_threads[index]
            .probe
            .get()
            .map_or(ThreadActivity::Running, crate::sys::thread_activity)
    }

    /// Nanoseconds since the server started, never 0 (0 marks a thread outside the application).
    fn app_clock(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Takes one of the watcher's hand-offs, if there is one.
    fn take_handoff(&self) -> bool {
        let mut idle = self.idle.lock();
        if idle.handoffs > 0 {
            idle.handoffs -= 1;
            true
        } else {
            false
        }
    }

    /// An app thread with nothing to do waits while another thread polls or runs the application, until the
    /// watcher hands it work.
    fn rest(&self) {
        let mut idle = self.idle.lock();
        // Checked under `idle`: the watcher adds a hand-off and notifies under `idle`, so none is missed.
        loop {
            if self.stopping() || idle.handoffs > 0 {
                return;
            }
            // Nobody is in the app (or those in it block on I/O) and work waits, or nobody polls: this thread takes
            // it. (A leading thread between two queued requests is briefly in neither state; it takes the next
            // request itself, and at worst this thread finds nothing and rests again.)
            let may_start = self.in_app.load(Ordering::Acquire) == 0 || self.app_blocks.load(Ordering::Acquire);
            if may_start && (!self.poll.is_locked() || !self.queue.lock().is_empty()) {
                return;
            }
            idle.spares += 1;
            let waited = self.spare_cv.wait_for(&mut idle, Duration::from_secs(1));
            idle.spares -= 1;
            if !waited.timed_out() {
                return;
            }
        }
    }

    fn begin_shutdown(&self, graceful: bool) {
        if !graceful {
            self.aborted.store(true, Ordering::SeqCst);
        }
        self.draining.store(true, Ordering::SeqCst);
        // A failed wake only delays shutdown until the next poll timeout.
        let _ = self.waker.wake();
        self.wake_all();
    }

    fn thread_exited(&self) {
        let mut idle = self.idle.lock();
        idle.running_threads -= 1;
        if idle.running_threads == 0 {
            self.done_cv.notify_all();
        }
    }

    fn wake_all(&self) {
        let _guard = self.idle.lock();
        self.watch_cv.notify_all();
        self.spare_cv.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.aborted.load(Ordering::Acquire)
    }

    /// Waits for socket events and handles them. With requests already queued the wait is at most
    /// `queued_wait` (zero for an app thread that goes on to run them).
    fn poll_once(&self, state: &mut PollState, queued_wait: Duration) {
        let PollState {
            poll,
            events,
            listeners,
            last_scan,
            ready,
        } = state;
        // With work queued, wait no longer than the caller can afford, and short enough to shed requests that
        // waited too long; else once a second for the timers.
        let queued = !self.queue.lock().is_empty();
        let timeout = if queued {
            match self.config.max_queue_wait {
                Some(limit) => queued_wait.min((limit / 4).max(Duration::from_millis(1))),
                None => queued_wait,
            }
        } else if self.draining.load(Ordering::Acquire) {
            // While draining, look again soon at connections still on their way to a first request.
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        let mut accept_from = Vec::new();
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                Token(t) if t >= LISTENER_BASE => accept_from.push(t - LISTENER_BASE),
                Token(t) => {
                    if let Some(conn) = self.conns.get(t) {
                        if conn.notify() {
                            if let Drive::Request(exchange) = self.drive(&conn, None) {
                                ready.push(exchange);
                            }
                        }
                    }
                }
            }
        }
        let queued = self.queue_all(ready);
        if queued > 0 && self.app_blocks.load(Ordering::Acquire) {
            self.wake_spares(queued);
        }
        if self.accept_paused.load(Ordering::Acquire) && !self.at_connection_limit() {
            // Edge-triggered listeners will not report the connections left queued while paused.
            self.accept_paused.store(false, Ordering::Release);
            accept_from = (0..listeners.len()).collect();
        }
        for index in accept_from {
            self.accept(listeners, index);
        }
        self.shed_stale();
        if self.draining.load(Ordering::Acquire) {
            self.drain_step(listeners);
        } else if self.now() != *last_scan {
            *last_scan = self.now();
            self.expire_idle();
        }
    }

    fn accept(&self, listeners: &[Listener], index: usize) {
        let Some(listener) = listeners.get(index) else { return };
        loop {
            if self.at_connection_limit() {
                self.accept_paused.store(true, Ordering::Release);
                return;
            }
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let now = self.now();
                    let conn = self.conns.insert(|token| {
                        let registered = self.registry.register(
                            stream.source(),
                            Token(token),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                        let conn = Conn::new(token, index, peer, stream, now);
                        if registered.is_err() {
                            conn.io.lock().stream = None;
                        }
                        conn
                    });
                    if self.config.proxy_protocol && self.trusts_proxy(peer) {
                        conn.io.lock().proxy_pending = true;
                    }
                    if conn.io.lock().stream.is_none() {
                        self.conns.remove(&conn);
                    } else if self.draining.load(Ordering::Acquire) && conn.notify() {
                        // No readiness event will be polled for it any more: read what it sent now.
                        self.drive_and_queue(&conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A connection reset before it was accepted: take the next one.
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                // Out of descriptors or memory: pause like at the connection limit, so the next close (or the
                // next poll) takes the queued connections; the edge-triggered listener would not report them.
                Err(_) => {
                    self.accept_paused.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Once draining: stop listening, close idle connections, and stop when none is left.
    fn drain_step(&self, listeners: &mut Vec<Listener>) {
        // Connections already queued in the kernel are taken and answered (with `Connection: close`), not reset.
        for index in 0..listeners.len() {
            self.accept(listeners, index);
        }
        for mut listener in listeners.drain(..) {
            // The socket is closed right after; deregistering only keeps epoll tidy.
            let _ = self.registry.deregister(listener.source());
        }
        let aborted = self.aborted.load(Ordering::Acquire);
        let now = self.now();
        for conn in self.conns.all() {
            if !aborted && !conn.try_claim() {
                continue;
            }
            let mut io = conn.io.lock();
            let idle = io.data().is_empty() && !io.has_pending_output();
            // A connection that has not sent its first request may have it on the way: give it a moment.
            let fresh = io.requests == 0 && now.saturating_sub(conn.last_active()) < FRESH_GRACE_SECS;
            if io.closing && !aborted {
                // Lingering after an error response: closing now could reset it; the linger timeout ends it.
                drop(io);
                if !conn.release() {
                    self.drive_and_queue(&conn);
                }
                continue;
            }
            if aborted || (idle && !fresh) {
                self.close(&conn, &mut io);
                continue;
            }
            drop(io);
            // A request on its way or partly read: read on (it is answered with `Connection: close`); the head
            // timeout still applies.
            if let Drive::Request(exchange) = self.drive(&conn, None) {
                self.queue.lock().push_back(exchange);
            }
        }
        self.expire_idle();
        if self.conns.is_empty() && self.queue.lock().is_empty() {
            self.stopped.store(true, Ordering::Release);
            self.wake_all();
        }
    }

    /// Closes connections idle past keep-alive, heads that take too long, and lingering closes.
    fn expire_idle(&self) {
        let now = self.now();
        let keep_alive = whole_seconds(self.config.keep_alive);
        for conn in self.conns.all() {
            let age = now.saturating_sub(conn.last_active());
            if !conn.try_claim() {
                continue;
            }
            let mut io = conn.io.lock();
            let expired = if io.closing {
                age >= LINGER_SECS
            } else if io.has_pending_output() {
                age >= whole_seconds(self.config.write_timeout)
            } else if io.data().is_empty() {
                age >= keep_alive
            } else {
                let head_age = io.head_since.map_or(age, |since| now.saturating_sub(since));
                head_age >= whole_seconds(self.config.header_timeout)
            };
            if expired {
                self.close(&conn, &mut io);
            } else {
                if age >= 1 && io.data().is_empty() {
                    // Idle for a second or more: it no longer needs the output buffer kept for its next response.
                    io.trim_idle();
                }
                drop(io);
                if !conn.release() {
                    self.drive_and_queue(&conn);
                }
            }
        }
    }

    fn close(&self, conn: &Conn, io: &mut ConnIo) {
        io.stream = None;
        self.conns.remove(conn);
        if self.accept_paused.load(Ordering::Acquire) {
            // Room again: let the poller take connections the kernel queued meanwhile.
            let _ = self.waker.wake();
        }
    }

    fn trusts_proxy(&self, peer: Peer) -> bool {
        match peer {
            Peer::Ip(addr) => self.config.proxy_trusted.contains(addr.ip()),
            Peer::Unix => true,
        }
    }

    fn at_connection_limit(&self) -> bool {
        self.config.max_connections != 0 && self.conns.len() >= self.config.max_connections
    }

    fn drive_and_queue(&self, conn: &Arc<Conn>) {
        if let Drive::Request(exchange) = self.drive(conn, None) {
            let mut queue = self.queue.lock();
            if queue.len() < self.config.max_queue.max(1) {
                queue.push_back(exchange);
            } else {
                drop(queue);
                self.shed(exchange);
            }
        }
    }

    /// Queues the requests in `ready` in their order, leaving it empty; those beyond the queue's room are shed.
    /// Returns how many were queued.
    fn queue_all(&self, ready: &mut Vec<Exchange>) -> usize {
        if ready.is_empty() {
            return 0;
        }
        let mut queue = self.queue.lock();
        let room = self.config.max_queue.max(1).saturating_sub(queue.len());
        let excess = ready.split_off(room.min(ready.len()));
        let queued = ready.len();
        queue.extend(ready.drain(..));
        drop(queue);
        for exchange in excess {
            self.shed(exchange);
        }
        queued
    }

    /// Wakes up to `count` resting app threads to take queued requests (while requests block on I/O): the polling
    /// thread runs one itself, so one of those woken may find nothing left and poll in its place. Starting more
    /// threads is the watcher's (`thread_would_help`): started threads stay, and beside a request that computes,
    /// another would only queue for the GIL.
    fn wake_spares(&self, count: usize) {
        let idle = self.idle.lock();
        for _ in 0..count.min(idle.spares) {
            self.spare_cv.notify_one();
        }
    }

    /// Answers a request the server has no capacity for: 503 with `Retry-After`, from Rust, without the app.
    fn shed(&self, exchange: Exchange) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        let conn = exchange.conn;
        let mut io = conn.io.lock();
        let response = encode_simple_with(
            exchange.head.minor_version,
            b"503 Service Unavailable",
            b"Retry-After: 1\r\n",
            b"server busy, retry shortly",
        );
        io.write_nonblocking(&response);
        io.begin_close();
        drop(io);
        if !conn.release() {
            self.drive_and_queue(&conn);
        }
    }

    /// Sheds queued requests that waited longer than `max_queue_wait`.
    fn shed_stale(&self) {
        let Some(limit) = self.config.max_queue_wait else {
            return;
        };
        loop {
            let stale = {
                let mut queue = self.queue.lock();
                match queue.front().and_then(|e| e.queued_at) {
                    Some(at) if at.elapsed() > limit => queue.pop_front(),
                    _ => None,
                }
            };
            match stale {
                Some(exchange) => self.shed(exchange),
                None => return,
            }
        }
    }

    /// Reads and parses on an owned connection until a request is ready, or releases it. `answered_by` is the app
    /// thread that has just answered on it: a response it held back stays held (and listed with that thread)
    /// while no further request has arrived; anyone else sends it first.
    fn drive(&self, conn: &Arc<Conn>, answered_by: Option<usize>) -> Drive {
        let mut io = conn.io.lock();
        loop {
            if conn.take_seen() {
                io.drained = false;
            }
            let held = match answered_by {
                Some(index) if io.deferred && io.data().is_empty() => {
                    self.list_deferred(index, conn);
                    true
                }
                _ => false,
            };
            if io.has_pending_output() && !held {
                let pending = io.pending_len();
                match io.flush_pending() {
                    Ok(true) => {
                        conn.touch(self.now());
                        if io.close_after_flush {
                            io.close_after_flush = false;
                            io.begin_close();
                        }
                        continue;
                    }
                    // The rest goes when the client makes room (a writable edge). A client that takes some of
                    // a long file tail each time is active: the write timeout counts from its last progress.
                    Ok(false) => {
                        if io.pending_len() < pending {
                            conn.touch(self.now());
                        }
                        drop(io);
                        if conn.release() {
                            return Drive::Done;
                        }
                        io = conn.io.lock();
                        continue;
                    }
                    Err(_) => {
                        self.close(conn, &mut io);
                        return Drive::Done;
                    }
                }
            }
            if io.closing {
                if io.discard_input() {
                    self.close(conn, &mut io);
                    return Drive::Done;
                }
                io.drained = true;
            } else if io.proxy_pending && !io.data().is_empty() {
                match parse_proxy_header(io.data()) {
                    Ok(Some(header)) => {
                        io.consume(header.len);
                        io.proxied = header.client;
                        io.proxy_pending = false;
                        continue;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        io.write_nonblocking(&encode_error(err));
                        io.begin_close();
                        continue;
                    }
                }
            } else if !io.data().is_empty() {
                match self.parse(conn, &mut io) {
                    Ok(Some(exchange)) => return Drive::Request(exchange),
                    Ok(None) => {}
                    Err(err) => {
                        io.write_nonblocking(&encode_error(err));
                        io.begin_close();
                        conn.touch(self.now());
                        continue;
                    }
                }
            }
            if io.drained {
                drop(io);
                if conn.release() {
                    return Drive::Done;
                }
                io = conn.io.lock();
                continue;
            }
            let max = self.max_buffer();
            match io.read_more(max) {
                Ok(ReadStatus::Data { .. }) => {
                    let now = self.now();
                    conn.touch(now);
                    if io.head_since.is_none() {
                        io.head_since = Some(now);
                    }
                }
                Ok(ReadStatus::WouldBlock) => {}
                Ok(ReadStatus::Eof) | Err(_) => {
                    self.close(conn, &mut io);
                    return Drive::Done;
                }
            }
        }
    }

    /// Largest number of bytes a connection may buffer: a maximal head plus a buffered body.
    fn max_buffer(&self) -> usize {
        let limits = &self.config.limits;
        limits.request_line + limits.fields * (limits.field_size + 2) + BUFFER_BODY + 4096
    }

    /// Tries to turn the buffered bytes into a request ready to run.
    fn parse(&self, conn: &Arc<Conn>, io: &mut ConnIo) -> Result<Option<Exchange>, HttpError> {
        let limits = &self.config.limits;
        let head = loop {
            let mut head = match parse_request(io.data(), limits)? {
                Parsed::Incomplete => return Ok(None),
                Parsed::Complete(head) => head,
            };
            // `--keep-alive 0`: one request per connection, announced with `Connection: close`.
            head.keep_alive &= !self.config.keep_alive.is_zero();
            if !self.answer_health_check(&head, io) {
                break head;
            }
            if io.closing {
                return Ok(None);
            }
        };
        let head_len = head.head_len;
        // Whether a body is buffered depends only on the request (its size), never on how it arrived, so the
        // app sees the same environ however the bytes were split.
        let raw = &io.data()[head_len..];
        let complete = match head.body {
            BodyKind::Empty => Some((Body::Empty, 0)),
            BodyKind::Length(len) if len > BUFFER_BODY as u64 => None,
            #[allow(clippy::cast_possible_truncation)] // at most BUFFER_BODY
            BodyKind::Length(len) => (raw.len() as u64 >= len).then_some((Body::Received(len as usize), len as usize)),
            kind @ BodyKind::Chunked => decode_complete(kind, limits.body, raw)?
                .filter(|&(_, used)| used <= BUFFER_BODY)
                .map(|(bytes, used)| (Body::Decoded(bytes), used)),
        };
        let waiting_for_small_body = complete.is_none()
            && match head.body {
                BodyKind::Length(len) => len <= BUFFER_BODY as u64,
                _ => raw.len() <= BUFFER_BODY,
            };
        let (body, consumed) = if let Some((body, used)) = complete {
            (body, head_len + used)
        } else {
            if head.expect_continue && !io.continue_sent {
                io.continue_sent = true;
                io.write_nonblocking(CONTINUE);
            }
            if waiting_for_small_body {
                return Ok(None);
            }
            (Body::Streaming(BodyDecoder::new(head.body, limits.body)), head_len)
        };
        io.continue_sent = false;
        io.requests += 1;
        // Bytes of a pipelined request after this one start its own head clock.
        io.head_since = (io.data().len() > consumed).then(|| self.now());
        let queued_at = self.config.max_queue_wait.map(|_| Instant::now());
        Ok(Some(Exchange {
            conn: conn.clone(),
            head,
            consumed,
            body,
            queued_at,
        }))
    }

    /// Answers a health check without the app: 200 while serving, 503 once draining so a load balancer stops
    /// sending. Returns false when `head` is not one.
    fn answer_health_check(&self, head: &RequestHead, io: &mut ConnIo) -> bool {
        let Some(path) = &self.config.health_path else {
            return false;
        };
        let buf = io.data();
        let method = head.method(buf);
        if head.target(buf) != path.as_bytes()
            || head.body != BodyKind::Empty
            || !(method == b"GET" || method == b"HEAD")
        {
            return false;
        }
        let draining = self.draining.load(Ordering::Acquire);
        let keep_alive = head.keep_alive && !draining;
        let (status, body): (&[u8], &[u8]) = if draining {
            (b"503 Service Unavailable", b"draining")
        } else {
            (b"200 OK", b"ok")
        };
        let mut response = encode_simple(head.minor_version, status, body, keep_alive);
        if method == b"HEAD" {
            response.truncate(response.len() - body.len() - 1);
        }
        let head_len = head.head_len;
        io.write_nonblocking(&response);
        io.consume(head_len);
        if !keep_alive {
            io.begin_close();
        }
        true
    }

    /// Answers one request and then keeps serving its connection while requests are already buffered. `more`: other
    /// requests were queued behind it when it was taken. Returns when the last of them entered the application
    /// (on `app_clock`).
    fn run(&self, index: usize, mut exchange: Exchange, more: bool, worker: &dyn Worker) -> u64 {
        let mut inline = 1;
        loop {
            exchange.conn.response_started.store(false, Ordering::Release);
            exchange.conn.reset_progress();
            let entered = self.app_clock();
            if self.app_threads[index].holds_too_long(entered) {
                self.flush_deferred(index);
            }
            // Only when this thread has more requests to answer right after this one, whose responses this one's
            // can leave with; never otherwise, so that a response is not kept waiting for the work its own request
            // does after it (the iterable's `close()`). Not while requests block on I/O either: the next one
            // could keep this one waiting until the watcher looks.
            let may_defer = more && !self.app_blocks.load(Ordering::Acquire);
            exchange.conn.may_defer.store(may_defer, Ordering::Relaxed);
            if self.config.timeout.is_some() {
                self.deadlines
                    .enter(index, &exchange.conn, entered, |text| describe(&exchange, text));
            }
            self.app_threads[index]
                .serving
                .store(exchange.conn.token, Ordering::Relaxed);
            self.enter_app(index, entered);
            let outcome = catch_unwind(AssertUnwindSafe(|| worker.handle(&mut exchange, self)));
            self.leave_app(index);
            // Whatever the response left staged is now sent by the code below (or the poller), not the watcher.
            exchange.conn.streaming.store(false, Ordering::Release);
            if self.config.timeout.is_some() {
                self.deadlines.leave(index);
            }
            let count = &self.app_threads[index].completed;
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Release);
            if self.config.max_requests != 0 && self.completed() >= self.config.max_requests && !self.draining() {
                // Recycling: stop taking new work and let the supervisor start a fresh process.
                self.begin_shutdown(true);
            }
            let outcome = outcome.unwrap_or_else(|_| {
                let _ = catch_unwind(AssertUnwindSafe(|| worker.on_panic(&mut exchange)));
                Outcome::Close
            });
            let conn = exchange.conn;
            conn.touch(self.now());
            if self.draining.load(Ordering::Acquire) {
                // Let the poller notice promptly that this connection is done.
                let _ = self.waker.wake();
            }
            if outcome == Outcome::Close || self.aborted.load(Ordering::Acquire) {
                let mut io = conn.io.lock();
                // Output still held here may be staged blocks no write has tried yet, so no writable edge would
                // come for them: send now, and leave the rest to the poller only once the socket is full.
                if matches!(io.flush_pending(), Ok(false)) {
                    io.close_after_flush = true;
                } else {
                    io.begin_close();
                }
                drop(io);
                if !conn.release() {
                    self.drive_and_queue(&conn);
                }
                return entered;
            }
            match self.drive(&conn, Some(index)) {
                // A client that keeps its pipeline full must not keep this thread from polling for the others:
                // after a few requests its next one waits in the queue behind theirs.
                Drive::Request(next) if inline >= MAX_INLINE => {
                    self.queue.lock().push_back(next);
                    return entered;
                }
                Drive::Request(next) => {
                    exchange = next;
                    inline += 1;
                }
                Drive::Done => return entered,
            }
        }
    }

    /// Notes that `conn` holds back a response of app thread `index`, which must send it (`flush_deferred`).
    /// Called with the connection's `io` held.
    fn list_deferred(&self, index: usize, conn: &Arc<Conn>) {
        let thread = &self.app_threads[index];
        let mut list = thread.deferred.lock();
        // Pipelined requests answered back to back hold their responses on the same connection.
        if list.last().is_some_and(|last| Arc::ptr_eq(last, conn)) {
            return;
        }
        list.push(conn.clone());
        if list.len() == 1 {
            thread.deferred_since.store(self.app_clock(), Ordering::Relaxed);
        }
        if list.len() >= DEFER_MAX {
            // Makes `holds_too_long` true at the next look, as if the limit in time were reached.
            thread.deferred_since.store(1, Ordering::Relaxed);
        }
    }

    /// Sends the responses app thread `index` holds back.
    fn flush_deferred(&self, index: usize) {
        let thread = &self.app_threads[index];
        if thread.deferred_since.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut list = thread.deferred.lock();
        for conn in list.drain(..) {
            send_deferred(&mut conn.io.lock());
        }
        thread.deferred_since.store(0, Ordering::Relaxed);
    }

    /// Requests completed by all app threads so far.
    fn completed(&self) -> u64 {
        self.app_threads
            .iter()
            .map(|t| t.completed.load(Ordering::Acquire))
            .sum()
    }

    fn leave_app(&self, index: usize) {
        self.app_threads[index].entered.store(0, Ordering::Release);
        self.in_app.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks app thread `index` inside the application since `entered` (from `app_clock`).
    fn enter_app(&self, index: usize, entered: u64) {
        self.app_threads[index].entered.store(entered, Ordering::Release);
        self.in_app.fetch_add(1, Ordering::SeqCst);
        if self.watcher_deep.load(Ordering::SeqCst) {
            let _idle = self.idle.lock();
            self.watch_cv.notify_one();
        }
    }
}

/// Sends a held-back response. What the socket does not take now is parked: a writable edge will bring the
/// poller to it. An error is left for the poller too, which sees the connection fail.
fn send_deferred(io: &mut ConnIo) {
    if io.deferred {
        let _ = io.flush_pending();
    }
}

/// Writes `METHOD target` of a request into `out`, for reports about it.
fn describe(exchange: &Exchange, out: &mut Vec<u8>) {
    let io = exchange.conn.io.lock();
    let buf = io.data();
    out.extend_from_slice(exchange.head.method(buf));
    out.push(b' ');
    out.extend_from_slice(exchange.head.target(buf));
}

/// A duration in the loop's one-second clock ticks, rounded up so a fractional timeout never becomes zero.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}
