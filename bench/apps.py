"""WSGI applications served by every server in the benchmark, addressable as ``apps:NAME``.

    hello       12-byte body, Content-Length set
    chunked     generator body (4 x 1 KiB) without Content-Length: the server picks the framing; with
                ``?pause=S`` it sleeps S seconds after the first block (the runner's streaming probe)
    big         1 MiB body returned as one bytes object, Content-Length set
    echo        reads the whole wsgi.input and answers with its length as text
    flask_app   Flask app, JSON route at /json
    django_app  single-file Django project (django_project.py), JSON view at /json
    file_app    a 10 MiB file returned through environ['wsgi.file_wrapper']

flask_app, django_app and file_app are built on first access (module ``__getattr__``), so serving
``apps:hello`` imports neither Flask nor Django and keeps the memory figures of the small apps honest.
Deviations from PEP 3333 that the apps notice are reported in an ``X-WSGI-Issues`` response header,
which the runner's correctness probe records.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

HELLO_BODY = b'Hello, World'
CHUNK = b'x' * 1024
CHUNK_COUNT = 4
BIG_BODY = b'b' * (1024 * 1024)
FILE_SIZE = 10 * 1024 * 1024
FILE_BLOCK = 65536

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Twelve bytes with a Content-Length."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '12')])
    return [HELLO_BODY]


def io_wait(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Waits 1 ms with the GIL released, like a view waiting on its database."""
    time.sleep(0.001)
    body = b'waited 1 ms\n' * 8
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def _chunks(pause: float) -> Iterator[bytes]:
    for i in range(CHUNK_COUNT):
        yield CHUNK
        if i == 0 and pause:
            time.sleep(pause)


def chunked(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A generator body and no Content-Length."""
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    query = environ.get('QUERY_STRING', '')
    pause = float(query[len('pause=') :]) if query.startswith('pause=') else 0.0
    return _chunks(pause)


def big(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """One 1 MiB bytes object with a Content-Length."""
    start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(len(BIG_BODY)))])
    return [BIG_BODY]


_CGI_STR_KEYS = (
    'REQUEST_METHOD',
    'SCRIPT_NAME',
    'PATH_INFO',
    'QUERY_STRING',
    'CONTENT_TYPE',
    'CONTENT_LENGTH',
    'SERVER_NAME',
    'SERVER_PORT',
    'SERVER_PROTOCOL',
)
_REQUIRED = ('REQUEST_METHOD', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_PROTOCOL', 'wsgi.input', 'wsgi.url_scheme')


def _environ_issues(environ: Environ) -> list[str]:
    """PEP 3333 spot checks, reported rather than enforced."""
    bad = [f'{k}:{type(environ[k]).__name__}' for k in _CGI_STR_KEYS if k in environ and type(environ[k]) is not str]
    bad += [f'missing:{k}' for k in _REQUIRED if k not in environ]
    return bad


def _read_body(environ: Environ) -> int:
    stream = environ['wsgi.input']
    total = 0
    length = str(environ.get('CONTENT_LENGTH') or '').strip()
    remaining = int(length) if length else -1  # -1: read to EOF (chunked request body)
    while remaining:
        data = stream.read(FILE_BLOCK if remaining < 0 else min(remaining, FILE_BLOCK))
        if not data:
            break
        total += len(data)
        if remaining > 0:
            remaining -= len(data)
    return total


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the complete request body; answer with its length."""
    body = str(_read_body(environ)).encode('ascii')
    headers = [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))]
    issues = _environ_issues(environ)
    if issues:
        headers.append(('X-WSGI-Issues', ' '.join(issues)))
    start_response('200 OK', headers)
    return [body]


def stream_gib(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """1 GiB from a generator in 1 MiB chunks, without Content-Length: for the slow-reader memory check."""
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    chunk = b'z' * MIB_CHUNK
    for _ in range(1024):
        yield chunk


MIB_CHUNK = 1024 * 1024


def data_file() -> Path:
    """The 10 MiB file served by ``file_app``, created once (atomically) in the temp directory."""
    path = Path(os.environ.get('RUSTWSGI_BENCH_DATA', tempfile.gettempdir())) / 'rustwsgi-bench-10mib.bin'
    if path.exists() and path.stat().st_size == FILE_SIZE:
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name)
    with os.fdopen(fd, 'wb') as f:
        block = bytes(range(256)) * (FILE_BLOCK // 256)
        for _ in range(FILE_SIZE // FILE_BLOCK):
            f.write(block)
    os.replace(tmp, path)
    return path


def _read_file(f: Any) -> Iterator[bytes]:
    with f:
        while block := f.read(FILE_BLOCK):
            yield block


def _make_file_app() -> Callable[..., Iterable[bytes]]:
    path = data_file()
    size = str(path.stat().st_size)

    def file_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The 10 MiB file through wsgi.file_wrapper (a plain read loop where the server offers none)."""
        headers = [('Content-Type', 'application/octet-stream'), ('Content-Length', size)]
        wrapper = environ.get('wsgi.file_wrapper')
        f = path.open('rb')
        if wrapper is None:
            headers.append(('X-WSGI-Issues', 'no wsgi.file_wrapper'))
            start_response('200 OK', headers)
            return _read_file(f)
        start_response('200 OK', headers)
        return wrapper(f, FILE_BLOCK)

    return file_app


def _make_file_read_app() -> Callable[..., Iterable[bytes]]:
    path = data_file()
    size = str(path.stat().st_size)

    def file_read_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The same 10 MiB file read in Python, block by block: what file_wrapper is measured against."""
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', size)])
        return _read_file(path.open('rb'))

    return file_read_app


def _make_flask() -> Callable[..., Iterable[bytes]]:
    from flask import Flask, jsonify

    app = Flask('bench_flask')

    @app.get('/json')
    def json_view() -> Any:
        return jsonify(message='Hello, World!')

    return app


def _make_django() -> Callable[..., Iterable[bytes]]:
    import django_project

    return django_project.application


_LAZY = {
    'flask_app': _make_flask,
    'django_app': _make_django,
    'file_app': _make_file_app,
    'file_read_app': _make_file_read_app,
}


def __getattr__(name: str) -> Any:
    """Build the heavier apps only when a server asks for them (PEP 562)."""
    if name in _LAZY:
        app = _LAZY[name]()
        globals()[name] = app
        return app
    raise AttributeError(f"module 'apps' has no attribute {name!r}")
