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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ._version import __version__
from .config import BindAddress, Config, format_bind
from .errors import BindError, RustwsgiError
from .loader import load_app, prepare_path

__all__ = ['LOG_DATEFMT', 'LOG_FORMAT', 'configure_logging', 'serve', 'serve_target']

LOG_FORMAT = '[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s'
LOG_DATEFMT = '%Y-%m-%d %H:%M:%S %z'
WAIT_INTERVAL = 0.5  # seconds between returns of Server.wait(), so Python signal handlers get to run

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger('rustwsgi.error')


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler rustwsgi installs on `rustwsgi.error`; its own class so it is never installed twice."""


def configure_logging(level: str = 'info', *, force: bool = True) -> logging.Logger:
    """Send the `rustwsgi.error` logger to stderr in rustwsgi's format at `level`.

    With `force=False` (the Python API), an application that already configured logging keeps its handlers.
    """
    logger = logging.getLogger('rustwsgi.error')
    logger.setLevel(level.upper())
    ours = any(isinstance(handler, _StderrHandler) for handler in logger.handlers)
    configured = bool(logger.handlers or logging.getLogger().handlers)
    if not ours and (force or not configured):
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
        logger.addHandler(handler)
        logger.propagate = False
    return logger


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


def _bind_socket(address: BindAddress, backlog: int) -> Listener:
    if address.path is not None:
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            sock.listen(backlog)
            info = os.stat(address.path)
        except BaseException:
            sock.close()
            raise
        return Listener(sock, address, f'unix:{address.path}', (info.st_dev, info.st_ino))

    family = socket.AF_INET6 if address.is_ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::] then means IPv6 only, so 0.0.0.0 can be bound beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f'[{host}]' if family == socket.AF_INET6 else host
    return Listener(sock, BindAddress(host, port), f'http://{shown}:{port}')


def _base_environ(listener: Listener, threads: int, file_wrapper: Any) -> dict[str, Any]:
    """The constant part of environ for one listener; Rust copies it for each request and adds the rest."""
    if listener.address.is_unix:
        server_name, server_port = 'localhost', '80'
    else:
        server_name, server_port = str(listener.address.host), str(listener.address.port)
    return {
        'SERVER_NAME': server_name,
        'SERVER_PORT': server_port,
        'SCRIPT_NAME': '',
        'SERVER_SOFTWARE': f'rustwsgi/{__version__}',
        'wsgi.version': (1, 0),
        'wsgi.url_scheme': 'http',
        'wsgi.errors': sys.stderr,
        'wsgi.multithread': threads > 1,
        'wsgi.multiprocess': False,
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


def create_listeners(config: Config) -> list[Listener]:
    """Bind and listen on every `bind` address; on failure close what was opened and raise `BindError`."""
    listeners: list[Listener] = []
    try:
        for address in config.addresses():
            try:
                listeners.append(_bind_socket(address, config.backlog))
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


class _SignalPolicy:
    """SIGTERM/SIGINT handlers for the CLI: the first asks for a graceful shutdown, a second forces it.

    The handlers only call the thread-safe `shutdown()` and record the signal; logging happens in the wait loop.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, server: Any) -> None:
        self._server = server
        self._received: list[int] = []
        self._reported = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)
        self._server.shutdown(graceful=len(self._received) == 1)

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def report(self) -> None:
        """Log signals received since the last call."""
        for signum in self._received[self._reported :]:
            how = 'gracefully' if self._reported == 0 else 'now'
            log.info('Received %s, shutting down %s', signal.Signals(signum).name, how)
            self._reported += 1


def _wait(server: Any, policy: _SignalPolicy | None) -> None:
    """Block until the server has stopped. Without signal handlers, Ctrl-C (KeyboardInterrupt) stops it too."""
    graceful = True
    while True:
        try:
            while not server.wait(WAIT_INTERVAL):
                if policy is not None:
                    policy.report()
            if policy is not None:
                policy.report()
            return
        except KeyboardInterrupt:
            log.info('Interrupted, shutting down %s', 'gracefully' if graceful else 'now')
            server.shutdown(graceful=graceful)
            graceful = False


def _create_server(app: WSGIApp, config: Config, listeners: list[Listener]) -> Any:
    """Build the Rust `Server` over `listeners`; it dup()s their descriptors."""
    # Imported here so `rustwsgi --help` and config errors never need the extension.
    try:
        from . import _rustwsgi
    except ImportError as exc:
        raise RustwsgiError(f'cannot load the compiled core rustwsgi._rustwsgi ({exc}); reinstall rustwsgi') from exc
    specs: list[tuple[int, bool, dict[str, Any]]] = []
    for listener in listeners:
        listener.environ = _base_environ(listener, config.threads, _rustwsgi.FileWrapper)
        specs.append((listener.sock.fileno(), listener.address.is_unix, listener.environ))
    return _rustwsgi.Server(app, specs, config.server_config())


def _stop_now(server: Any) -> None:
    """Force a started server down and wait for it, on the way out of an error."""
    with contextlib.suppress(BaseException):
        server.shutdown(graceful=False)
        while not server.wait(WAIT_INTERVAL):
            pass


def run(app: WSGIApp, config: Config, *, handle_signals: bool) -> int:
    """Bind, serve `app` until shut down, clean up; returns the exit status (0)."""
    listeners = create_listeners(config)
    try:
        server = _create_server(app, config, listeners)
    except BaseException:
        close_listeners(listeners, remove_files=True)
        raise
    # Rust holds its own dup()ed descriptors now.
    close_listeners(listeners, remove_files=False)

    policy = _SignalPolicy(server) if handle_signals else None
    try:
        if policy is not None:
            policy.install()
        server.start()
        try:
            log.info('Starting rustwsgi %s', __version__)
            for listener in listeners:
                log.info('Listening at: %s (pid: %d, threads: %d)', listener.url, os.getpid(), config.threads)
            _wait(server, policy)
        except BaseException:
            _stop_now(server)
            raise
    finally:
        if policy is not None:
            policy.restore()
        for listener in listeners:
            _remove_unix_socket(listener)
    log.info('Shutdown complete')
    return 0


def serve(app: WSGIApp | str, *, config: Config | None = None, **options: Any) -> int:
    """Serve a WSGI application until Ctrl-C (KeyboardInterrupt) or `Server.shutdown()`; returns 0.

    `app` is the WSGI callable, or a TARGET string as on the command line (`'mysite.wsgi:application'`).
    Options are `Config` fields, e.g. `serve(app, bind='127.0.0.1:8080', threads=8)`; or pass a whole `config`.
    No signal handlers are installed: the embedding program keeps control of its signals.

    Raises `ConfigError` for a bad option, `AppImportError` when a TARGET cannot be loaded and `BindError`
    (an `OSError`) when an address cannot be bound.
    """
    if config is None:
        config = Config(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    configure_logging(config.log_level, force=False)
    if isinstance(app, str):
        prepare_path(config.chdir, config.pythonpath)
        app = load_app(app, factory=config.factory)
    return run(app, config, handle_signals=False)


def serve_target(target: str, config: Config) -> int:
    """The CLI path: set up logging, load TARGET (after --chdir/--pythonpath), then serve with signal handlers."""
    configure_logging(config.log_level, force=True)
    prepare_path(config.chdir, config.pythonpath)
    app = load_app(target, factory=config.factory)
    return run(app, config, handle_signals=True)
