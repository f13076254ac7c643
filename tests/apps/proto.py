"""Small WSGI apps for the HTTP/1.1 protocol, malformed-input and corpus tests.

Every app here is plain PEP 3333 with no dependencies, so the tests exercise the server and nothing else.
Serve one with `rustwsgi serve proto:NAME`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO = b'Hello, world'
STREAM_CHUNKS = (b'first chunk\n', b'second\n', b'', b'third, after an empty one\n', b'last')
SHORT_BODY = b'only ten!!'
SHORT_DECLARED = 100
OVER_DECLARED = 5
OVER_BODY = b'12345'
OVER_EXTRA = b'EXTRA-BYTES-THAT-MUST-NOT-BE-SENT'
NO_BODY_STATUSES = {
    '204': '204 No Content',
    '304': '304 Not Modified',
}
APP_RAN = 'APP-RAN'


def read_body(environ: Environ) -> bytes:
    """Read the whole request body: CONTENT_LENGTH bytes if given, else until EOF (wsgi.input_terminated)."""
    stream = environ['wsgi.input']
    length = environ.get('CONTENT_LENGTH', '')
    if length:
        return stream.read(int(length))
    if not environ.get('wsgi.input_terminated'):
        return b''
    parts = []
    while True:
        part = stream.read(65536)
        if not part:
            break
        parts.append(part)
    return b''.join(parts)


def hello(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """`200 OK` with a sized `Hello, world` body."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(HELLO)))])
    return [HELLO]


def echo(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Return the request body; X-Method and X-Path carry REQUEST_METHOD and PATH_INFO (latin-1 safe)."""
    body = read_body(environ)
    start_response(
        '200 OK',
        [
            ('Content-Type', 'application/octet-stream'),
            ('Content-Length', str(len(body))),
            ('X-Method', environ['REQUEST_METHOD']),
            ('X-Path', environ.get('PATH_INFO', '')),
            ('X-Query', environ.get('QUERY_STRING', '')),
        ],
    )
    return [body]


def environ_dump(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """JSON of every `str` environ value, the non-str keys' type names, a few wsgi.* values and the body (latin-1)."""
    body = read_body(environ)
    payload = {
        'environ': {key: value for key, value in environ.items() if isinstance(value, str)},
        'types': {key: type(value).__name__ for key, value in environ.items()},
        'input_terminated': environ.get('wsgi.input_terminated'),
        'url_scheme': environ.get('wsgi.url_scheme'),
        'body': body.decode('latin-1'),
    }
    data = json.dumps(payload, sort_keys=True).encode('ascii')
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(data)))])
    return [data]


def stream(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """An unsized response: a generator of several chunks (one empty) and no Content-Length; `/empty` yields none."""
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if environ.get('PATH_INFO') != '/empty':
        yield from STREAM_CHUNKS


def shortfall(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Declares Content-Length 100 but sends only 10 bytes: the server must close the connection after them."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(SHORT_DECLARED))])
    return [SHORT_BODY]


def overflow(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Declares Content-Length 5 but produces more: `/one` in one chunk, anything else as a generator."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(OVER_DECLARED))])
    if environ.get('PATH_INFO') == '/one':
        return [OVER_BODY + OVER_EXTRA]
    return _overflow_chunks()


def _overflow_chunks() -> Iterator[bytes]:
    yield OVER_BODY[:2]
    yield OVER_BODY[2:]
    yield OVER_EXTRA


def status(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """`/204` or `/304` answer that status while still offering a body; anything else is a sized 200."""
    line = NO_BODY_STATUSES.get(environ.get('PATH_INFO', '').strip('/'), '200 OK')
    start_response(line, [('Content-Type', 'text/plain'), ('X-Status', line.split()[0])])
    return [b'this body must never reach the client']


def closing(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """A sized response with an app-supplied `Connection: close`."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '6'), ('Connection', 'close')])
    return [b'bye!\r\n']


def slow(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """`/slow` sleeps briefly before answering (for pipelining order); the reply body is the path."""
    path = environ.get('PATH_INFO', '')
    if path == '/slow':
        time.sleep(0.3)
    data = path.encode('latin-1')
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(data)))])
    return [data]


def record(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Write `APP-RAN <method> <path>` to stderr, then echo the body: proves whether the app ran at all."""
    sys.stderr.write(f'{APP_RAN} {environ["REQUEST_METHOD"]} {environ.get("PATH_INFO", "")}\n')
    sys.stderr.flush()
    return echo(environ, start_response)


class _Tracked:
    """An iterable response that reports its close() on stderr as `CLOSED <method> <path>`."""

    def __init__(self, environ: Environ, chunks: Iterable[bytes]) -> None:
        self._label = f'{environ["REQUEST_METHOD"]} {environ.get("PATH_INFO", "")}'
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        sys.stderr.write(f'CLOSED {self._label}\n')
        sys.stderr.flush()


def tracked(environ: Environ, start_response: StartResponse) -> _Tracked:
    """Like `status` (first path segment picks 204/304, else 200), but its iterable logs close() to stderr."""
    segment = environ.get('PATH_INFO', '').strip('/').split('/')[0]
    line = NO_BODY_STATUSES.get(segment, '200 OK')
    start_response(line, [('Content-Type', 'text/plain')])
    return _Tracked(environ, [b'tracked ', b'body'])


def lazy(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """A generator that calls start_response only when first iterated (allowed by PEP 3333)."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-Lazy', 'yes')])
    yield b'lazy '
    yield b'body'
