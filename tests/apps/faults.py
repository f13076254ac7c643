"""Fixture app for fault tests: iterables that count their close() calls.

`/upload` reads the body inside its iterable (so a client vanishing mid-upload fails the iteration),
`/download` streams 64 MiB in 1 MiB chunks, `/closes` reports how many iterables were closed so far.
"""

import threading

_lock = threading.Lock()
_closed = 0
CHUNK = b'x' * (1 << 20)


class Counted:
    """Wraps an iterator and counts close()."""

    def __init__(self, iterator):
        self._iterator = iterator

    def __iter__(self):
        return self._iterator

    def close(self):
        global _closed
        with _lock:
            _closed += 1


def _upload(environ):
    total = 0
    while chunk := environ['wsgi.input'].read(65536):
        total += len(chunk)
    yield str(total).encode()


def _download():
    for _ in range(64):
        yield CHUNK


def app(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/closes':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [str(_closed).encode()]
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return Counted(_upload(environ) if path == '/upload' else _download())
