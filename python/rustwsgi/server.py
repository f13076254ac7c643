"""Server lifecycle on the Python side: listening sockets, base environ, the Rust `Server`, signals, the wait loop.

Python owns everything that happens once per process (binding, logging set-up, signal policy); the Rust core owns
everything that happens per connection and per request. Sockets are created here and handed over by file
descriptor; Rust dup()s them, so the Python socket objects are closed once the `Server` exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ._version import __version__
from .config import BindAddress, Config, format_bind
from .errors import BindError, RustwsgiError
from .loader import load_app, prepare_path
from .logs import LOG_DATEFMT, LOG_FORMAT, access_hook, configure_logging, setup_logging
from .system import PidFile, systemd_sockets

__all__ = ['LOG_DATEFMT', 'LOG_FORMAT', 'configure_logging', 'serve', 'serve_target']

WAIT_INTERVAL = 0.5  # seconds between returns of Server.wait(), so Python signal handlers get to run

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger('rustwsgi.error')


@dataclass
class Listener:
    """One bound, listening socket and what rustwsgi says about it."""

    sock: socket.socket
    address: BindAddress
    url: str
    unix_inode: tuple[int, int] | None = None
    environ: dict[str, Any] = field(default_factory=dict)


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse if a server still answers on it or it is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f'{os.strerror(errno.EEXIST)} and is not a socket')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        except OSError:
            return  # cannot tell; let bind() report what is wrong
        else:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _tcp_socket(family: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # [::] then means IPv6 only, so 0.0.0.0 can be bound beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_socket(
    address: BindAddress, backlog: int, *, umask: int = 0, reuse_port: bool = False, sibling: bool = False
) -> Listener:
    """Bind and listen on one address. A unix socket file gets mode 0o777 & ~umask.

    `reuse_port` sets SO_REUSEPORT on a TCP socket so that the supervisor's worker slots can each have a socket on
    the same port; `sibling` marks such a further socket on an address this process already listens on.
    """
    if address.path is not None:
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            previous_umask = os.umask(umask)
            try:
                sock.bind(address.path)
            finally:
                os.umask(previous_umask)
            sock.listen(backlog)
            info = os.stat(address.path)
        except BaseException:
            sock.close()
            raise
        return Listener(sock, address, f'unix:{address.path}', (info.st_dev, info.st_ino))

    family = socket.AF_INET6 if address.is_ipv6 else socket.AF_INET
    target = (address.host, address.port)
    # SO_REUSEPORT would let this bind succeed on a port another server (of the same user) listens on with it
    # too, silently sharing its traffic. A plain probe socket fails there as usual; it stays bound (not
    # listening, so SO_REUSEADDR lets the real socket join it) until the real socket listens.
    probe = _tcp_socket(family, reuse_port=False) if reuse_port and not sibling else None
    sock = _tcp_socket(family, reuse_port=reuse_port)
    try:
        if probe is not None:
            probe.bind(target)
            target = (address.host, probe.getsockname()[1])
        sock.bind(target)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    finally:
        if probe is not None:
            probe.close()
    host, port = sock.getsockname()[:2]
    shown = f'[{host}]' if family == socket.AF_INET6 else host
    return Listener(sock, BindAddress(host, port), f'http://{shown}:{port}')


def _base_environ(
    listener: Listener, threads: int, file_wrapper: Any, multiprocess: bool = False, script_name: str = ''
) -> dict[str, Any]:
    """The constant part of environ for one listener; Rust copies it for each request and adds the rest.

    `script_name` is the `--root-path` mount point; Rust removes it from the front of PATH_INFO.
    """
    if listener.address.is_unix:
        server_name, server_port = 'localhost', '80'
    else:
        server_name, server_port = str(listener.address.host), str(listener.address.port)
    return {
        'SERVER_NAME': server_name,
        'SERVER_PORT': server_port,
        'SCRIPT_NAME': script_name,
        'SERVER_SOFTWARE': f'rustwsgi/{__version__}',
        'wsgi.version': (1, 0),
        'wsgi.url_scheme': 'http',
        'wsgi.errors': sys.stderr,
        'wsgi.multithread': threads > 1,
        'wsgi.multiprocess': multiprocess,
        'wsgi.run_once': False,
        'wsgi.input_terminated': True,
        'wsgi.file_wrapper': file_wrapper,
    }


def _remove_unix_socket(listener: Listener) -> None:
    """Remove our unix socket file, unless something else has replaced it since."""
    path = listener.address.path
    if path is None or listener.unix_inode is None:
        return
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == listener.unix_inode:
            os.unlink(path)


def _inherited_listener(sock: socket.socket) -> Listener:
    """A listener over a socket rustwsgi did not bind (systemd socket activation); its file is never removed."""
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        path = path.decode(errors='replace') if isinstance(path, bytes) else path
        return Listener(sock, BindAddress(None, None, path), f'unix:{path}')
    host, port = sock.getsockname()[:2]
    shown = f'[{host}]' if sock.family == socket.AF_INET6 else host
    return Listener(sock, BindAddress(host, port), f'http://{shown}:{port}')


def create_listeners(config: Config, *, reuse_port: bool = False) -> list[Listener]:
    """Bind and listen on every `bind` address; on failure close what was opened and raise `BindError`.

    Under systemd socket activation (`LISTEN_FDS`), the sockets systemd passed are used instead of `bind`.
    """
    inherited = systemd_sockets()
    if inherited:
        log.info('Using %d socket(s) from systemd socket activation; --bind is ignored', len(inherited))
        return [_inherited_listener(sock) for sock in inherited]
    listeners: list[Listener] = []
    try:
        for address in config.addresses():
            try:
                listeners.append(bind_socket(address, config.backlog, umask=config.umask, reuse_port=reuse_port))
            except OSError as exc:
                raise BindError(format_bind(address), exc) from exc
    except BaseException:
        close_listeners(listeners, remove_files=True)
        raise
    return listeners


def close_listeners(listeners: Iterable[Listener], *, remove_files: bool) -> None:
    """Close the Python socket objects; with `remove_files`, also remove unix socket files we created."""
    for listener in listeners:
        listener.sock.close()
        if remove_files:
            _remove_unix_socket(listener)


class ShutdownSignals:
    """Signal handlers of a process that runs a Rust `Server` (the single-process server, or one worker).

    `graceful` signals ask for a graceful shutdown; with `repeat_forces`, a second one forces it. SIGQUIT forces
    it at once. `ignored` signals are only logged (the single-process server cannot reload or add workers).
    The handlers only record the signal and call the thread-safe `shutdown()`; `poll()`, called from the wait
    loop, logs and forces the shutdown once `graceful_timeout` has passed. A signal that arrives before the server
    exists is applied by `attach()`.
    """

    def __init__(
        self,
        graceful_timeout: float,
        *,
        graceful: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        repeat_forces: bool = True,
        ignored: tuple[int, ...] = (),
        level: int = logging.INFO,
    ) -> None:
        self.graceful_timeout = graceful_timeout
        self._graceful = graceful
        self._repeat_forces = repeat_forces
        self._ignored = ignored
        self._level = level
        self._server: Any = None
        self._received: list[tuple[int, bool]] = []  # (signal, graceful)
        self._reported = 0
        self._deadline: float | None = None
        self._forced = False
        self._previous: dict[int, Any] = {}

    @property
    def stopping(self) -> bool:
        """True once a shutdown signal arrived."""
        return any(signum not in self._ignored for signum, _ in self._received)

    def attach(self, server: Any) -> None:
        """Start steering `server`; a shutdown asked for before it existed is applied now."""
        self._server = server
        stops = [graceful for signum, graceful in self._received if signum not in self._ignored]
        if stops:
            server.shutdown(graceful=all(stops))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in self._ignored:
            self._received.append((signum, True))
            return
        graceful = signum in self._graceful and not (self._repeat_forces and self.stopping)
        self._received.append((signum, graceful))
        if self._server is not None:
            self._server.shutdown(graceful=graceful)

    def request_stop(self, *, graceful: bool = True) -> None:
        """Ask for a shutdown as if SIGTERM (graceful) or SIGQUIT had arrived."""
        self._handle(signal.SIGTERM if graceful else signal.SIGQUIT, None)

    def install(self) -> None:
        """Install the handlers; `restore()` puts the previous ones back."""
        for signum in (*self._graceful, signal.SIGQUIT, *self._ignored):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers that `install()` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def poll(self) -> None:
        """Log signals received since the last call and enforce the graceful timeout."""
        for signum, graceful in self._received[self._reported :]:
            self._reported += 1
            name = signal.Signals(signum).name
            if signum in self._ignored:
                log.warning(
                    'Ignoring %s: with one worker rustwsgi serves in its main process; start it with --workers 2 or '
                    'more (or --max-requests) to reload or change the number of workers',
                    name,
                )
                continue
            log.log(self._level, 'Received %s, shutting down %s', name, 'gracefully' if graceful else 'now')
            if graceful and self._deadline is None:
                self._deadline = time.monotonic() + self.graceful_timeout
            if not graceful:
                self._forced = True
        if self._deadline is not None and not self._forced and time.monotonic() >= self._deadline:
            self._forced = True
            log.warning('Graceful timeout (%gs) passed, closing the remaining connections', self.graceful_timeout)
            if self._server is not None:
                self._server.shutdown(graceful=False)


def _wait(server: Any, policy: ShutdownSignals | None) -> None:
    """Block until the server has stopped. Without signal handlers, Ctrl-C (KeyboardInterrupt) stops it too."""
    graceful = True
    while True:
        try:
            while not server.wait(WAIT_INTERVAL):
                if policy is not None:
                    policy.poll()
            if policy is not None:
                policy.poll()
            return
        except KeyboardInterrupt:
            log.info('Interrupted, shutting down %s', 'gracefully' if graceful else 'now')
            server.shutdown(graceful=graceful)
            graceful = False


def create_server(app: WSGIApp, config: Config, listeners: list[Listener], *, multiprocess: bool = False) -> Any:
    """Build the Rust `Server` over `listeners`; it dup()s their descriptors."""
    # Imported here so `rustwsgi --help` and config errors never need the extension.
    try:
        from . import _rustwsgi
    except ImportError as exc:
        raise RustwsgiError(f'cannot load the compiled core rustwsgi._rustwsgi ({exc}); reinstall rustwsgi') from exc
    specs: list[tuple[int, bool, dict[str, Any]]] = []
    for listener in listeners:
        listener.environ = _base_environ(
            listener, config.threads, _rustwsgi.FileWrapper, multiprocess, script_name=config.root_path
        )
        specs.append((listener.sock.fileno(), listener.address.is_unix, listener.environ))
    # The access-log hook depends on the logging set-up, so it is made here rather than in server_config().
    return _rustwsgi.Server(app, specs, {**config.server_config(), 'access_log': access_hook(config)})


def _stop_now(server: Any) -> None:
    """Force a started server down and wait for it, on the way out of an error."""
    with contextlib.suppress(BaseException):
        server.shutdown(graceful=False)
        while not server.wait(WAIT_INTERVAL):
            pass


def needs_supervisor(config: Config) -> bool:
    """True when the settings need the supervisor process: several workers, worker recycling or reload."""
    return config.workers > 1 or config.max_requests > 0 or config.reload


def _announce(
    server: Any, listeners: list[Listener], threads: int, on_ready: Callable[[Any, list[Listener]], None] | None
) -> None:
    """Log the start-up lines (tests and tools wait for `Listening at: `) and call `on_ready`."""
    log.info('Starting rustwsgi %s', __version__)
    for listener in listeners:
        log.info('Listening at: %s (pid: %d, threads: %d)', listener.url, os.getpid(), threads)
    if on_ready is not None:
        on_ready(server, listeners)


def run(
    app: WSGIApp,
    config: Config,
    *,
    handle_signals: bool,
    on_ready: Callable[[Any, list[Listener]], None] | None = None,
) -> int:
    """Bind, serve `app` in this process until shut down, clean up; returns the exit status (0).

    `on_ready(server, listeners)` is called once the server is accepting (an embedding program's handshake).
    """
    listeners = create_listeners(config)
    try:
        server = create_server(app, config, listeners)
    except BaseException:
        close_listeners(listeners, remove_files=True)
        raise
    # Rust holds its own dup()ed descriptors now.
    close_listeners(listeners, remove_files=False)

    pid_file = PidFile(config.pid) if config.pid else None
    policy = None
    if handle_signals:
        policy = ShutdownSignals(config.graceful_timeout, ignored=(signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU))
    try:
        if pid_file is not None:
            pid_file.write()
        if policy is not None:
            policy.install()
            policy.attach(server)
        server.start()
        try:
            _announce(server, listeners, config.threads, on_ready)
            _wait(server, policy)
        except BaseException:
            _stop_now(server)
            raise
    finally:
        if policy is not None:
            policy.restore()
        for listener in listeners:
            _remove_unix_socket(listener)
        if pid_file is not None:
            pid_file.remove()
    log.info('Shutdown complete')
    return 0


def serve(app: WSGIApp | str, *, config: Config | None = None, **options: Any) -> int:
    """Serve a WSGI application until Ctrl-C (KeyboardInterrupt) or `Server.shutdown()`; returns 0.

    `app` is the WSGI callable, or a TARGET string as on the command line (`'mysite.wsgi:application'`).
    Options are `Config` fields, e.g. `serve(app, bind='127.0.0.1:8080', threads=8)`; or pass a whole `config`.
    No signal handlers are installed: the embedding program keeps control of its signals. The exception: settings
    that need the supervisor (`workers` > 1, `max_requests`, `reload`) make this process the supervisor, which
    installs its handlers while it runs and forks the workers; call it from a process that runs no other threads.

    Raises `ConfigError` for a bad option, `AppImportError` when a TARGET cannot be loaded and `BindError`
    (an `OSError`) when an address cannot be bound.
    """
    if config is None:
        config = Config(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    logging_setup = setup_logging(config, force=False)
    try:
        if isinstance(app, str):
            prepare_path(config.chdir, config.pythonpath)
        if needs_supervisor(config):
            from .supervisor import supervise

            return supervise(config, app)
        if isinstance(app, str):
            app = load_app(app, factory=config.factory)
        return run(app, config, handle_signals=False)
    finally:
        logging_setup.close()


def serve_target(target: str, config: Config) -> int:
    """The CLI path: set up logging, load TARGET (after --chdir/--pythonpath), then serve with signal handlers."""
    setup_logging(config, force=True)
    prepare_path(config.chdir, config.pythonpath)
    if needs_supervisor(config):
        from .supervisor import supervise

        return supervise(config, target)
    app = load_app(target, factory=config.factory)
    return run(app, config, handle_signals=True)
