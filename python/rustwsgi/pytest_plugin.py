"""The `rustwsgi_server` pytest fixture: serve your WSGI application with rustwsgi for one test.

Registered through the `pytest11` entry point, so installing rustwsgi is enough:

    def test_home(rustwsgi_server):
        url = rustwsgi_server(app)                    # a WSGI callable: served from a thread of the test process
        url = rustwsgi_server('mysite.wsgi:app')      # a TARGET string: served by a `rustwsgi serve` subprocess
        assert requests.get(url + '/').status_code == 200

Keyword arguments are rustwsgi settings (`threads=2`, `root_path='/app'`, ...). Each server listens on a free port
of 127.0.0.1 unless `bind` says otherwise, and is stopped (gracefully) when the test ends. A subprocess gets the
test process's `sys.path` through PYTHONPATH; its output is printed at teardown, so pytest shows it for a failed test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import pytest

__all__ = ['rustwsgi_server']

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_LISTENING = re.compile(r'Listening at: (\S+)')


class _Running(Protocol):
    url: str

    def stop(self) -> None: ...


def _cli_arguments(options: Mapping[str, Any]) -> list[str]:
    """Settings as `rustwsgi serve` flags, checked first by building a `Config`."""
    from .config import Config, boolean, settings

    Config(**options)  # raises ConfigError for an unknown setting or a bad value, before anything starts
    specs = {spec.name: spec for spec in settings()}
    arguments: list[str] = []
    for name, value in options.items():
        spec = specs[name]
        if spec.kind == 'flag':
            arguments += [spec.flag] if boolean(value) else []
        elif spec.kind == 'list':
            items = [value] if isinstance(value, str) else [str(item) for item in value]
            for item in items or ['']:
                arguments += [spec.flag, item]
        else:
            arguments += [spec.flag, str(value)]
    return arguments


class _Subprocess:
    """`python -m rustwsgi serve TARGET` with this interpreter; its output is collected by a thread."""

    def __init__(self, target: str, options: Mapping[str, Any]) -> None:
        options = {'bind': '127.0.0.1:0', **options}
        command = [sys.executable, '-m', 'rustwsgi', 'serve', target, *_cli_arguments(options)]
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join([path for path in sys.path if path] + [env.get('PYTHONPATH', '')])
        self.url = ''
        self._lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, arguments from settings
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        self._reader = threading.Thread(target=self._read, name='rustwsgi-output', daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or not self.url:
            self.stop()
            raise RuntimeError(f'rustwsgi serve {target} did not start:\n{self.output()}')

    def _read(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - set by Popen(stdout=PIPE)
        for raw in self.proc.stdout:
            line = raw.decode('utf-8', 'replace')
            self._lines.append(line)
            match = _LISTENING.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return ''.join(self._lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        sys.stderr.write(self.output())


def _start(app: Any, options: Mapping[str, Any]) -> _Running:
    if isinstance(app, str):
        return _Subprocess(app, options)
    from .background import serve_in_background

    return serve_in_background(app, **options)


@pytest.fixture
def rustwsgi_server() -> Iterator[Callable[..., str]]:
    """A factory: `rustwsgi_server(app, **settings)` serves `app` for this test and returns its URL.

    `app` is a WSGI callable (served from a background thread of the test process) or a `module:attr` TARGET
    string (served by a `rustwsgi serve` subprocess). Every server is stopped at teardown.
    """
    running: list[_Running] = []

    def serve(app: Any, **options: Any) -> str:
        server = _start(app, options)
        running.append(server)
        return server.url

    yield serve
    for server in reversed(running):
        server.stop()
