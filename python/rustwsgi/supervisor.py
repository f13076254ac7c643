"""The supervisor: a small Python process that binds the sockets, forks the worker processes and keeps them running.

Its shape follows gunicorn's arbiter, reduced to what rustwsgi needs. The supervisor never creates a Rust `Server`
and starts no thread, so every `fork()` happens in a single-threaded process; each worker builds its own `Server`
after the fork. The supervisor keeps the listening sockets open for the whole run, so connections that wait in the
kernel's accept queue while a worker is replaced are served by the next one instead of being reset.

Socket model: each worker slot has its own SO_REUSEPORT socket per TCP address, bound and kept by the supervisor; a
replacement worker (crash, SIGHUP, --max-requests) takes over its slot's socket, so connections the kernel queued on
it wait for the new worker instead of being reset. Unix sockets and sockets passed by systemd cannot be split
this way and are shared by all workers. Measured on 2 CPUs with `wrk -t2 -c64 -d3s` against 2 workers (hello app,
9 runs each, noisy machine): with per-slot sockets the busier worker served 2-24 % more requests than the other
(median 6 %), median 132 k requests/s; with one shared socket one worker took every connection in 2 of 9 runs and
50-230 % more in 4 others, median 91 k requests/s: whichever process wakes first accepts the whole burst of new
connections. The cost: while a slot's worker is replaced, the connections the kernel assigns to that slot wait
until the replacement serves (a delay, never a reset). See REUSE_PORT.

Signals (the handlers only record the signal; the main loop acts on it):

    SIGTERM, SIGINT   graceful stop: workers finish what they have, then exit; a second one stops at once
    SIGQUIT           immediate stop: workers close their connections at once
    SIGHUP            rolling reload: a new worker (with a freshly imported application) starts beside each old
                      one, and the old one drains once the new one is serving
    SIGTTIN, SIGTTOU  one worker more, one worker less
    SIGCHLD           a worker exited: it is replaced unless it was asked to stop

Workers tell the supervisor over a pipe when they are serving (`R`) and when they started draining by themselves
after `--max-requests` (`D`), so a replacement starts before the old worker has stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ._version import __version__
from .config import Config
from .errors import AppImportError, ConfigError, RustwsgiError
from .loader import load_app, parse_target
from .server import (
    Listener,
    ShutdownSignals,
    bind_socket,
    close_listeners,
    create_listeners,
    create_server,
)
from .system import PidFile, set_parent_death_signal

__all__ = ['WORKER_BOOT_ERROR', 'Supervisor', 'supervise']

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# One SO_REUSEPORT socket per worker slot for each TCP address (True), or one socket shared by all workers (False);
# the module docstring has the measurement behind this choice.
REUSE_PORT = True

WORKER_BOOT_ERROR = 3  # a worker's exit status when it could not load the application
TICK = 1.0  # the longest the main loop sleeps
WORKER_TICK = 0.2  # how often a worker looks at its supervisor and its own drain state
BOOT_BACKOFF_FIRST = 0.5  # seconds before a worker that died while booting is started again; doubles each time
BOOT_BACKOFF_MAX = 30.0
KILL_GRACE = 1.0  # after --graceful-timeout, a worker gets this long to close its connections before SIGKILL
WATCH_TICK_MS = 500  # --reload watcher: longest wait for a file event before it looks at its supervisor

READY = b'R'
DRAINING = b'D'

SUPERVISOR_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)

log = logging.getLogger('rustwsgi.error')


@dataclass(eq=False)
class Worker:
    """What the supervisor knows about one worker process."""

    pid: int
    slot: int
    generation: int
    status_fd: int
    ready: bool = False
    retiring: bool = False  # asked to stop, or stopping by itself after --max-requests
    kill_at: float | None = None
    stop_signal: int = 0  # the strongest stop signal sent so far: 0, SIGTERM or SIGQUIT
    killed: bool = False


@dataclass(eq=False)
class Slot:
    """A worker position: its listening sockets and its boot back-off."""

    listeners: list[Listener]
    own: list[Listener] = field(default_factory=list)  # sockets created for this slot, closed with it
    failures: int = 0
    not_before: float = 0.0


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """A no-op handler; unlike SIG_IGN it is not inherited by programs the application executes."""


def _describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f'was killed by {signal.Signals(-code).name}'
    return f'exited with status {code}'


def _reload_paths(target: str) -> list[str]:
    """Where `--reload` looks for changed files: the directory of TARGET's top-level package or module.

    Found without importing anything, so the supervisor stays free of application code.
    """
    top = parse_target(target)[0].split('.')[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return [os.path.abspath(path) for path in spec.submodule_search_locations]
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
        return [os.path.dirname(os.path.abspath(spec.origin))]
    return [os.getcwd()]


class Supervisor:
    """Binds the sockets, forks and watches the workers; `run()` returns the exit status."""

    def __init__(self, config: Config, target: str | None = None, app: WSGIApp | None = None) -> None:
        if (target is None) == (app is None):
            raise ValueError('give exactly one of target and app')
        self.config = config
        self.target = target
        self.app = app
        self.pid = os.getpid()
        self.wanted = config.workers
        self.generation = 0
        self.workers: dict[int, Worker] = {}
        self.slots: list[Slot] = []
        self.listeners: list[Listener] = []
        self.signals: list[int] = []
        self.stopping: bool | None = None  # None: running; True: stopping gracefully; False: stopping now
        self.stop_deadline = 0.0
        self.booted = False  # a worker has served at least once
        self.boot_failed: str | None = None
        self.watcher_pid: int | None = None
        self.wake_r = self.wake_w = -1

    # ---- start and stop ----

    def _check(self) -> None:
        if self.config.reload:
            if self.target is None:
                raise ConfigError('reload needs the application as a TARGET string')
            if self.config.preload:
                raise ConfigError(
                    '--reload cannot be combined with --preload: a preloaded application is not re-imported'
                )
            if importlib.util.find_spec('watchfiles') is None:
                raise RustwsgiError('--reload needs the watchfiles package: pip install "rustwsgi[reload]"')

    def run(self) -> int:
        """Serve until stopped by a signal; returns 0, or raises `RustwsgiError` if no worker could boot."""
        self._check()
        if self.config.preload and self.app is None and self.target is not None:
            self.app = load_app(self.target, factory=self.config.factory)
        self.listeners = create_listeners(self.config, reuse_port=REUSE_PORT)
        pid_file = PidFile(self.config.pid) if self.config.pid else None
        previous: dict[int, Any] = {}
        try:
            self.slots = [Slot(self.listeners)]
            if pid_file is not None:
                pid_file.write()
            self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            for signum in SUPERVISOR_SIGNALS:
                previous[signum] = signal.signal(signum, self._on_signal)
            previous_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
            try:
                self._serve()
            finally:
                signal.set_wakeup_fd(previous_wakeup)
        finally:
            self._kill_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (self.wake_r, self.wake_w):
                if fd >= 0:
                    os.close(fd)
            for slot in self.slots:
                close_listeners(slot.own, remove_files=False)
            close_listeners(self.listeners, remove_files=True)
            if pid_file is not None:
                pid_file.remove()
        if self.boot_failed is not None:
            raise RustwsgiError(self.boot_failed)
        log.info('Shutdown complete')
        return 0

    def _serve(self) -> None:
        log.info('Starting rustwsgi %s', __version__)
        for listener in self.listeners:
            log.info('Listening at: %s (pid: %d, threads: %d)', listener.url, self.pid, self.config.threads)
        if self.config.reload and self.target is not None:
            self._start_watcher(self.target)
        self._loop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The wake-up fd tells the main loop; SIGCHLD needs no record because every loop reaps.
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def _kill_all(self) -> None:
        """On the way out after an error: no worker or watcher may outlive the supervisor."""
        pids = [*self.workers, *([self.watcher_pid] if self.watcher_pid else [])]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for worker in self.workers.values():
            self._close_status(worker)
        self.workers.clear()
        self.watcher_pid = None

    # ---- the main loop ----

    def _loop(self) -> None:
        while True:
            self._handle_signals()
            self._reap()
            if self.stopping is None:
                self._manage()
            elif not self.workers and self.watcher_pid is None:
                return
            self._enforce_deadlines()
            self._sleep()

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                graceful = self.stopping is None
                log.info('Received %s, shutting down %s', name, 'gracefully' if graceful else 'now')
                self._stop(graceful=graceful)
            elif signum == signal.SIGQUIT:
                log.info('Received %s, shutting down now', name)
                self._stop(graceful=False)
            elif self.stopping is not None:
                log.info('Ignoring %s while shutting down', name)
            elif signum == signal.SIGHUP:
                self.generation += 1
                for slot in self.slots:
                    slot.failures, slot.not_before = 0, 0.0
                how = 'restarting the workers' if self.app is not None else 'starting workers with a fresh import'
                log.info('Received %s, reloading: %s', name, how)
            elif signum == signal.SIGTTIN:
                self.wanted += 1
                log.info('Received %s, workers: %d', name, self.wanted)
            elif signum == signal.SIGTTOU:
                if self.wanted > 1:
                    self.wanted -= 1
                log.info('Received %s, workers: %d', name, self.wanted)

    def _stop(self, *, graceful: bool) -> None:
        now = time.monotonic()
        if self.stopping is None:
            self.stop_deadline = now + self.config.graceful_timeout + KILL_GRACE
            if self.watcher_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.watcher_pid, signal.SIGTERM)
            # As in _remove_slots: once the workers have taken what is queued, new connections are refused rather
            # than queued on sockets nobody will accept from. Unix socket files are removed at exit.
            for listener in [*self.listeners, *(lst for slot in self.slots for lst in slot.own)]:
                listener.sock.close()
        self.stopping = graceful if self.stopping is None else self.stopping and graceful
        for worker in self.workers.values():
            self._signal_stop(worker, signal.SIGTERM if graceful else signal.SIGQUIT)

    def _signal_stop(self, worker: Worker, signum: int) -> None:
        """Send SIGTERM (drain) or SIGQUIT (stop now) unless that or a stronger one was sent already."""
        if worker.stop_signal == signal.SIGQUIT or worker.stop_signal == signum:
            return
        worker.stop_signal = signum
        worker.retiring = True
        if worker.kill_at is None:
            worker.kill_at = time.monotonic() + self.config.graceful_timeout + KILL_GRACE
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)

    def _manage(self) -> None:
        """Bring the workers to what is wanted: one current worker per slot, old generations and extra slots drained."""
        now = time.monotonic()
        self._add_slots()
        for index, slot in enumerate(self.slots[: self.wanted]):
            live = [w for w in self.workers.values() if w.slot == index and not w.retiring]
            current = [w for w in live if w.generation == self.generation]
            if not current:
                if now >= slot.not_before:
                    self._spawn(index)
            elif any(w.ready for w in current):
                for worker in live:
                    if worker.generation != self.generation:
                        self._signal_stop(worker, signal.SIGTERM)
        self._remove_slots()

    def _add_slots(self) -> None:
        while len(self.slots) < self.wanted:
            try:
                self.slots.append(self._new_slot())
            except OSError as exc:
                log.error('Cannot add a worker: %s', exc)
                self.wanted = len(self.slots)

    def _remove_slots(self) -> None:
        """Drop the slots beyond `wanted` and drain their workers.

        The supervisor closes its copy of a dropped slot's sockets first, so that the draining worker holds the last
        one: the kernel stops queueing connections on the socket as soon as that worker has taken the queued ones,
        rather than piling up more until the supervisor sees the worker exit and has to reset them.
        """
        while len(self.slots) > self.wanted:
            close_listeners(self.slots.pop().own, remove_files=False)
        for worker in list(self.workers.values()):
            if worker.slot >= self.wanted:
                self._signal_stop(worker, signal.SIGTERM)

    def _new_slot(self) -> Slot:
        """A slot's sockets: a new SO_REUSEPORT socket per TCP address we bound, the shared socket otherwise."""
        if not REUSE_PORT:
            return Slot(self.listeners)
        listeners: list[Listener] = []
        own: list[Listener] = []
        try:
            for base in self.listeners:
                if not self._reusable(base):
                    listeners.append(base)
                    continue
                sibling = bind_socket(base.address, self.config.backlog, reuse_port=True, sibling=True)
                own.append(sibling)
                listeners.append(sibling)
        except BaseException:
            close_listeners(own, remove_files=False)
            raise
        return Slot(listeners, own)

    @staticmethod
    def _reusable(listener: Listener) -> bool:
        """True for a TCP socket with SO_REUSEPORT (ours; systemd's only with ReusePort=yes)."""
        if listener.address.is_unix:
            return False
        return bool(listener.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            due = worker.kill_at is not None and now >= worker.kill_at
            if (due or (self.stopping is not None and now >= self.stop_deadline)) and not worker.killed:
                log.warning('Worker (pid: %d) did not stop within --graceful-timeout; killing it', worker.pid)
                worker.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
        if self.stopping is not None and now >= self.stop_deadline and self.watcher_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.watcher_pid, signal.SIGKILL)

    def _next_wake(self, now: float) -> float:
        """When the main loop must look again: a slot's back-off ends, a kill or the stop deadline is due."""
        wake = now + TICK
        if self.stopping is None:
            for index, slot in enumerate(self.slots[: self.wanted]):
                if slot.not_before > now and not any(w.slot == index for w in self.workers.values()):
                    wake = min(wake, slot.not_before)
        for worker in self.workers.values():
            if worker.kill_at is not None and not worker.killed:
                wake = min(wake, worker.kill_at)
        if self.stopping is not None:
            wake = min(wake, self.stop_deadline)
        return wake

    def _sleep(self) -> None:
        now = time.monotonic()
        wake = self._next_wake(now)
        readers = [self.wake_r, *(w.status_fd for w in self.workers.values() if w.status_fd >= 0)]
        try:
            ready, _, _ = select.select(readers, [], [], max(0.0, wake - now))
        except InterruptedError:
            return
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 4096):
                    pass
        for worker in list(self.workers.values()):
            if worker.status_fd in ready:
                self._read_status(worker)

    # ---- worker bookkeeping ----

    def _read_status(self, worker: Worker) -> None:
        if worker.status_fd < 0:
            return
        try:
            data = os.read(worker.status_fd, 64)
        except BlockingIOError:
            return
        if not data:
            self._close_status(worker)
            return
        if READY in data and not worker.ready:
            worker.ready = True
            self.booted = True
            if worker.slot < len(self.slots):
                self.slots[worker.slot].failures = 0
        if DRAINING in data and not worker.retiring:
            log.info('Worker (pid: %d) reached --max-requests; starting its replacement', worker.pid)
            worker.retiring = True
            worker.kill_at = time.monotonic() + self.config.graceful_timeout + KILL_GRACE

    @staticmethod
    def _close_status(worker: Worker) -> None:
        if worker.status_fd >= 0:
            os.close(worker.status_fd)
            worker.status_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.watcher_pid:
                self.watcher_pid = None
                if self.stopping is None:
                    log.warning('The --reload file watcher (pid: %d) %s', pid, _describe_exit(status))
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._read_status(worker)
            self._close_status(worker)
            self._worker_exited(worker, status)

    def _worker_exited(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        expected = worker.retiring or self.stopping is not None
        if expected and (code == 0 or worker.killed or self.boot_failed is not None):
            log.debug('Worker (pid: %d) %s', worker.pid, _describe_exit(status))
            return
        if worker.ready or expected:
            log.warning('Worker (pid: %d) %s', worker.pid, _describe_exit(status))
            return
        # It died while booting: back off before the next try on its slot.
        if worker.slot >= len(self.slots):
            return
        slot = self.slots[worker.slot]
        slot.failures += 1
        delay = min(BOOT_BACKOFF_MAX, BOOT_BACKOFF_FIRST * 2 ** (slot.failures - 1))
        slot.not_before = time.monotonic() + delay
        if code == WORKER_BOOT_ERROR and not self.booted and not self.config.reload:
            log.error('Worker (pid: %d) could not load the application; shutting down', worker.pid)
            self.boot_failed = 'the workers could not load the application'
            self._stop(graceful=False)
            return
        log.warning('Worker (pid: %d) %s while booting; next try in %.1fs', worker.pid, _describe_exit(status), delay)

    # ---- forking ----

    def _spawn(self, slot_index: int) -> None:
        jitter = random.randint(0, self.config.max_requests_jitter) if self.config.max_requests_jitter else 0  # noqa: S311
        max_requests = self.config.max_requests + jitter if self.config.max_requests else 0
        multiprocess = self.wanted > 1
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(status_r)
            os.close(status_w)
            log.error('Cannot fork a worker: %s', exc)
            self.slots[slot_index].not_before = time.monotonic() + BOOT_BACKOFF_FIRST
            return
        if pid == 0:
            code = 1
            try:
                os.close(status_r)
                code = self._worker_main(slot_index, status_w, max_requests, multiprocess, blocked)
            except BaseException:
                log.exception('Worker (pid: %d) failed', os.getpid())
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(status_w)
        os.set_blocking(status_r, False)
        self.workers[pid] = Worker(pid, slot_index, self.generation, status_r)

    def _child_setup(self, keep: Iterable[int], *, keep_sockets: bool) -> None:
        """In a freshly forked child: drop the supervisor's signal handling and the descriptors it needs alone."""
        signal.set_wakeup_fd(-1)
        for signum in SUPERVISOR_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        keep = set(keep)
        fds = [self.wake_r, self.wake_w, *(w.status_fd for w in self.workers.values())]
        for fd in fds:
            if fd >= 0 and fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if not keep_sockets:
            for listener in [*self.listeners, *(lst for slot in self.slots for lst in slot.own)]:
                listener.sock.close()
        set_parent_death_signal(signal.SIGTERM)

    def _worker_main(
        self, slot_index: int, status_w: int, max_requests: int, multiprocess: bool, blocked: Iterable[int]
    ) -> int:
        """The whole life of a worker process; returns its exit status."""
        self._child_setup(keep=(status_w,), keep_sockets=True)
        # Ctrl-C reaches the whole process group; the supervisor turns it into SIGTERM for the workers.
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, _ignore_signal)
        policy = ShutdownSignals(
            self.config.graceful_timeout, graceful=(signal.SIGTERM,), repeat_forces=False, level=logging.DEBUG
        )
        policy.install()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if os.getppid() != self.pid:
            return 0  # the supervisor died before the parent-death signal was armed

        log.info('Booting worker with pid: %d', os.getpid())
        listeners = self.slots[slot_index].listeners
        others = [lst for slot in self.slots for lst in slot.own if lst not in listeners]
        close_listeners(others, remove_files=False)
        app = self.app
        if app is None:
            try:
                app = load_app(self.target or '', factory=self.config.factory)
            except AppImportError as exc:
                log.error('%s', exc)
                return WORKER_BOOT_ERROR
        if policy.stopping:
            return 0
        config = dataclasses.replace(self.config, max_requests=max_requests)
        server = create_server(app, config, listeners, multiprocess=multiprocess)
        # The Rust server holds its own duplicates of the listening descriptors.
        close_listeners([*self.listeners, *listeners], remove_files=False)
        policy.attach(server)
        server.start()
        os.write(status_w, READY)
        told_draining = False
        stuck = StuckThreads(config.timeout, config.graceful_timeout)
        while not server.wait(WORKER_TICK):
            policy.poll()
            told_draining = stuck.check(server, status_w, told_draining, stopping=policy.stopping)
            if not told_draining and not policy.stopping and server.draining():
                told_draining = True
                with contextlib.suppress(OSError):
                    os.write(status_w, DRAINING)
            if not policy.stopping and os.getppid() != self.pid:
                log.warning('Supervisor (pid: %d) is gone; worker (pid: %d) stopping', self.pid, os.getpid())
                policy.request_stop()
        policy.poll()
        if not told_draining and not policy.stopping:
            # Stopped by itself after --max-requests before the loop noticed the drain.
            with contextlib.suppress(OSError):
                os.write(status_w, DRAINING)
        log.info('Worker exiting (pid: %d)', os.getpid())
        return 0

    def _start_watcher(self, target: str) -> None:
        """Fork the `--reload` watcher: it sends SIGHUP to the supervisor when a Python file changes."""
        paths = _reload_paths(target)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    self._child_setup(keep=(), keep_sockets=False)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                    code = self._watch(paths)
                except BaseException:
                    log.exception('The --reload file watcher failed')
                finally:
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.watcher_pid = pid

    def _watch(self, paths: list[str]) -> int:
        import watchfiles

        watching = False
        # Every WATCH_TICK_MS without a change the loop comes back empty: the first time tells that the watches are
        # in place, later ones let the watcher notice that the supervisor is gone.
        for changes in watchfiles.watch(
            *paths, watch_filter=watchfiles.PythonFilter(), yield_on_timeout=True, rust_timeout=WATCH_TICK_MS
        ):
            if not watching:
                watching = True
                log.info('Reloading on changes to Python files in %s', ', '.join(paths))
            if os.getppid() != self.pid:
                return 0
            if changes:
                changed = sorted({os.path.relpath(path) for _, path in changes})
                log.info('Changed: %s; reloading', ', '.join(changed))
                os.kill(self.pid, signal.SIGHUP)
        return 0


def supervise(config: Config, app: WSGIApp | str) -> int:
    """Run the supervisor for `app` (a TARGET string, imported in each worker, or an already loaded callable)."""
    if isinstance(app, str):
        return Supervisor(config, target=app).run()
    return Supervisor(config, app=app).run()


class StuckThreads:
    """Decides when a worker with a request thread stuck past `--timeout` is recycled: once the thread has stayed
    stuck for another `timeout` (its grace period), and ended for good `graceful_timeout` after that."""

    def __init__(self, timeout: float, graceful_timeout: float) -> None:
        self.timeout = timeout
        self.graceful_timeout = graceful_timeout
        self._stuck_since: float | None = None
        self._recycling_since: float | None = None

    def should_recycle(self, stuck: int) -> bool:
        """Called every tick with the number of stuck threads; True once, when recycling should start."""
        if not self.timeout or self._recycling_since is not None:
            return False
        now = time.monotonic()
        if not stuck:
            self._stuck_since = None
            return False
        if self._stuck_since is None:
            self._stuck_since = now
        if now - self._stuck_since >= self.timeout:
            self._recycling_since = now
            return True
        return False

    def check(self, server: Any, status_w: int, told_draining: bool, *, stopping: bool) -> bool:
        """One tick of the worker loop: start recycling, or end the process, as due. Returns `told_draining`."""
        if not stopping and self.should_recycle(server.stats()['stuck']):
            # A request thread that never comes back cannot be stopped from Python: start a replacement, drain,
            # and end the process if the thread is still stuck after the graceful timeout.
            log.error(
                'A request thread is still stuck %gs after --timeout; recycling worker (pid: %d)',
                self.timeout,
                os.getpid(),
            )
            if not told_draining:
                told_draining = True
                with contextlib.suppress(OSError):
                    os.write(status_w, DRAINING)
            server.shutdown(graceful=True)
        if self.past_grace():
            log.error('The stuck request thread did not return; worker (pid: %d) exits now', os.getpid())
            os._exit(0)
        return told_draining

    def past_grace(self) -> bool:
        """True when recycling started more than `graceful_timeout` ago and the process is still here."""
        return self._recycling_since is not None and time.monotonic() - self._recycling_since > self.graceful_timeout
