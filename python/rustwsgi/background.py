"""Serve a WSGI application from a background thread of this process: `rustwsgi.serve_in_background()`.

For tests and embedding. The call returns once the server accepts connections; `url` says where. `stop()`, or
leaving the `with` block, shuts it down gracefully and waits for it. No signal handlers are installed.
"""

from __future__ import annotations

import dataclasses
import threading
from types import TracebackType
from typing import Any

from .config import Config
from .errors import ConfigError, RustwsgiError
from .loader import load_app, prepare_path
from .logs import LoggingSetup, setup_logging
from .server import Listener, WSGIApp, needs_supervisor, run

__all__ = ['BackgroundServer', 'serve_in_background']

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class BackgroundServer:
    """A rustwsgi server running in a daemon thread of this process; build it with `serve_in_background()`."""

    def __init__(self, app: WSGIApp, config: Config, logging_setup: LoggingSetup | None = None) -> None:
        self.config = config
        self.urls: list[str] = []
        self._app = app
        self._logging_setup = logging_setup
        self._server: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name='rustwsgi-server', daemon=True)

    @property
    def url(self) -> str:
        """Where the first `bind` address listens: `http://127.0.0.1:54321` (the real port) or `unix:/path`."""
        return self.urls[0]

    def _on_ready(self, server: Any, listeners: list[Listener]) -> None:
        self._server = server
        self.urls = [listener.url for listener in listeners]
        self._ready.set()

    def _run(self) -> None:
        try:
            run(self._app, self.config, handle_signals=False, on_ready=self._on_ready)
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = START_TIMEOUT) -> BackgroundServer:
        """Start serving and return once connections are accepted; re-raises a failure to start (`BindError`)."""
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            self._close_logging()
            raise self._error
        if not self.urls:
            self.stop(graceful=False)
            raise RustwsgiError(f'the server did not start within {timeout:g} s')
        return self

    def stop(self, *, graceful: bool = True, timeout: float = STOP_TIMEOUT) -> None:
        """Shut down (gracefully: requests in progress finish) and wait; after `timeout` s, close connections."""
        if self._server is not None:
            self._server.shutdown(graceful=graceful)
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.shutdown(graceful=False)
        self._thread.join(timeout)
        self._close_logging()

    def _close_logging(self) -> None:
        if self._logging_setup is not None:
            self._logging_setup.close()
            self._logging_setup = None

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def serve_in_background(app: WSGIApp | str, *, config: Config | None = None, **options: Any) -> BackgroundServer:
    """Serve `app` from a background thread; returns a started `BackgroundServer` (a context manager).

    Options are `Config` fields as for `serve()`; without `config`, `bind` defaults to `127.0.0.1:0`, a free port.
    Settings that need a supervisor process (`workers` > 1, `max_requests`, `reload`) are refused: use `serve()` or
    the CLI for them.

        with rustwsgi.serve_in_background(app, threads=2) as server:
            requests.get(server.url + '/')
    """
    if config is None:
        config = Config(**{'bind': '127.0.0.1:0', **options})
    elif options:
        config = dataclasses.replace(config, **options)
    if needs_supervisor(config):
        raise ConfigError('workers > 1, max_requests and reload need a process of their own; use serve() or the CLI')
    logging_setup = setup_logging(config, force=False)
    try:
        if isinstance(app, str):
            prepare_path(config.chdir, config.pythonpath)
            app = load_app(app, factory=config.factory)
        return BackgroundServer(app, config, logging_setup).start()
    except BaseException:
        logging_setup.close()
        raise
