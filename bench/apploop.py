#!/usr/bin/env python3
"""The application's own rate: the WSGI app called in a loop, with no server and no socket.

    python bench/apploop.py apps:flask_app /json --seconds 4

This is the framework's limit that issue targets compare a server against ("0.95x the app's own rate when
called in a loop"). Each call gets what a server would give it for ``GET PATH HTTP/1.1`` from wrk: a fresh
environ (a copy of a template with the request's keys), an empty ``wsgi.input``, a ``start_response``
that checks its arguments, and the body iterated to the end and closed. Prints one line:
``APPLOOP {"calls": N, "seconds": S, "rps": R, "cpu_us_per_call": C}``. The runner pins it to the server's core.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import time
from typing import Any

WARMUP_S = 0.5


def load(target: str) -> Any:
    """``module:attribute``, imported from bench/ (the script's directory, first on ``sys.path``)."""
    module, _, attr = target.partition(':')
    return getattr(importlib.import_module(module), attr)


def template(path: str) -> dict[str, Any]:
    """The environ a server builds for wrk's ``GET path HTTP/1.1`` (wrk sends only ``Host``)."""
    return {
        'REQUEST_METHOD': 'GET',
        'SCRIPT_NAME': '',
        'PATH_INFO': path,
        'QUERY_STRING': '',
        'SERVER_NAME': '127.0.0.1',
        'SERVER_PORT': '8000',
        'SERVER_PROTOCOL': 'HTTP/1.1',
        'REMOTE_ADDR': '127.0.0.1',
        'REMOTE_PORT': '40000',
        'HTTP_HOST': '127.0.0.1:8000',
        'wsgi.version': (1, 0),
        'wsgi.url_scheme': 'http',
        'wsgi.errors': sys.stderr,
        'wsgi.multithread': True,
        'wsgi.multiprocess': False,
        'wsgi.run_once': False,
    }


def call_once(app: Any, base: dict[str, Any]) -> int:
    """One request through the app; returns the body length."""
    environ = dict(base)
    environ['wsgi.input'] = io.BytesIO(b'')
    status = []

    def start_response(st: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not isinstance(st, str) or not isinstance(headers, list):
            raise TypeError('bad start_response arguments')
        status.append(st)
        return lambda data: None

    result = app(environ, start_response)
    try:
        size = sum(len(block) for block in result)
    finally:
        close = getattr(result, 'close', None)
        if close is not None:
            close()
    if not status or not status[-1].startswith('200'):
        raise RuntimeError(f'app answered {status!r}')
    return size


def measure(app: Any, path: str, seconds: float) -> dict[str, float]:
    """Calls ``app`` for ``seconds`` after a warm-up; rate and CPU time per call."""
    base = template(path)
    deadline = time.perf_counter() + WARMUP_S
    while time.perf_counter() < deadline:
        call_once(app, base)
    calls = 0
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + seconds
    while True:
        for _ in range(100):  # read the clock every 100 calls, not every call
            call_once(app, base)
        calls += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu = time.process_time() - c0
    elapsed = now - t0
    return {
        'calls': calls,
        'seconds': round(elapsed, 3),
        'rps': round(calls / elapsed, 1),
        'cpu_us_per_call': round(1e6 * cpu / calls, 2),
    }


def main() -> None:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('target', help='module:attribute, e.g. apps:flask_app')
    p.add_argument('path', nargs='?', default='/', help='PATH_INFO (default: /)')
    p.add_argument('--seconds', type=float, default=4.0, help='measured time (default: %(default)s)')
    a = p.parse_args()
    print('APPLOOP ' + json.dumps(measure(load(a.target), a.path, a.seconds)), flush=True)


if __name__ == '__main__':
    main()
