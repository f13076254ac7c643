"""Fixture apps for the process, signal and reload tests (`tests/test_processes.py`).

`pid` answers with the worker's process id so tests can tell workers apart; `slow` announces on stderr that it
started, then sleeps, so a test can signal the server while the request is in flight; `nap` does the same with
the worker's pid, so a test under load can tell which worker has a request in flight.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

SLOW_STARTED = 'SLOW-REQUEST-STARTED'
NAP_STARTED = 'NAP-STARTED'


def _text(start_response: StartResponse, body: str) -> list[bytes]:
    data = body.encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(data)))])
    return [data]


def pid(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The worker's pid and `wsgi.multiprocess`, as `PID MULTIPROCESS`."""
    return _text(start_response, f'{os.getpid()} {environ["wsgi.multiprocess"]}')


def slow(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Log `SLOW-REQUEST-STARTED` to stderr, sleep `?seconds=` (default 1), then answer `done PID`."""
    seconds = float(parse_qs(environ.get('QUERY_STRING', '')).get('seconds', ['1'])[0])
    print(SLOW_STARTED, flush=True, file=sys.stderr)
    time.sleep(seconds)
    return _text(start_response, f'done {os.getpid()}')


def nap(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Log `NAP-STARTED PID` to stderr, sleep `?seconds=` (default 0.3), then answer the worker's pid."""
    seconds = float(parse_qs(environ.get('QUERY_STRING', '')).get('seconds', ['0.3'])[0])
    # One write: with several workers on the same stderr pipe, the line must not be split.
    sys.stderr.write(f'{NAP_STARTED} {os.getpid()}\n')
    sys.stderr.flush()
    time.sleep(seconds)
    return _text(start_response, str(os.getpid()))


IMPORTED_BY = os.getpid()


def imported_by(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """`IMPORTER SERVER`: the pid that imported this module and the pid serving the request (differ with --preload)."""
    return _text(start_response, f'{IMPORTED_BY} {os.getpid()}')


def activation(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """`PID LISTEN_FDS`: the serving pid and the socket-activation variable as the application sees it (`-`: unset)."""
    return _text(start_response, f'{os.getpid()} {os.environ.get("LISTEN_FDS", "-")}')
