"""WSGI apps that exercise PEP 3333 one rule at a time.

Targets:
- `pep:environ_app` answers every request with a JSON dump of its environ (type and value of every key).
- `pep:app` dispatches on PATH_INFO to the small apps below (input, write(), exc_info, close(), file_wrapper, ...).
- `pep:validated_app` is a plain app wrapped in `wsgiref.validate.validator`.

Events the client cannot see (close() calls, re-raised exceptions) are appended as JSON lines to the file named by
the `PEP_EVENT_LOG` environment variable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

# A WSGIWarning means the server broke the spec: make it an exception so the validated app fails loudly.
warnings.filterwarnings('error', category=WSGIWarning)

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]

TEXT = [('Content-Type', 'text/plain')]
JSON = [('Content-Type', 'application/json')]

_lock = threading.Lock()
_local = threading.local()


def record(event: str, **fields: object) -> None:
    """Append one event as a JSON line to the file named by PEP_EVENT_LOG (no-op without it)."""
    path = os.environ.get('PEP_EVENT_LOG')
    if not path:
        return
    line = json.dumps({'event': event, **fields}) + '\n'
    with _lock, open(path, 'a', encoding='utf-8') as fh:
        fh.write(line)
        fh.flush()


def query(environ: Environ) -> dict[str, str]:
    """The query string as a dict of first values."""
    return {key: values[0] for key, values in parse_qs(environ.get('QUERY_STRING', '')).items()}


def as_json(start_response: StartResponse, payload: object, status: str = '200 OK') -> list[bytes]:
    """Answer with a JSON document and an explicit Content-Length."""
    body = json.dumps(payload).encode('ascii')
    start_response(status, [*JSON, ('Content-Length', str(len(body)))])
    return [body]


def describe(value: object) -> dict[str, object]:
    """Type name and a JSON-safe rendering of one environ value."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        rendered: object = value
    elif isinstance(value, tuple) and all(isinstance(item, int) for item in value):
        rendered = list(value)
    else:
        rendered = repr(value)
    return {'type': type(value).__name__, 'value': rendered}


def environ_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Dump the environ: {'environ': {key: {'type', 'value'}}, 'key_types': [...], 'is_dict': bool, ...}."""
    wsgi_input = environ.get('wsgi.input')
    errors = environ.get('wsgi.errors')
    payload = {
        'is_dict': type(environ) is dict,
        'key_types': sorted({type(key).__name__ for key in environ}),
        'environ': {str(key): describe(value) for key, value in environ.items()},
        'input_methods': sorted(m for m in ('read', 'readline', 'readlines', '__iter__') if hasattr(wsgi_input, m)),
        'errors_methods': sorted(m for m in ('write', 'writelines', 'flush') if hasattr(errors, m)),
        'body': wsgi_input.read().decode('latin-1') if wsgi_input is not None else None,
    }
    return as_json(start_response, payload)


# --- wsgi.input ---------------------------------------------------------------------------------------------------


def input_script(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Run the input operations named in ?ops=read:3,readline,readline:4,readlines,iter,read and return the results.

    Each result is a latin-1 string (bytes results) or a list of them (readlines, iteration).
    """
    stream = environ['wsgi.input']
    results: list[object] = []
    for op in query(environ).get('ops', '').split(','):
        name, _, arg = op.partition(':')
        args = [int(arg)] if arg else []
        if name == 'read':
            results.append(stream.read(*args).decode('latin-1'))
        elif name == 'readline':
            results.append(stream.readline(*args).decode('latin-1'))
        elif name == 'readlines':
            results.append([line.decode('latin-1') for line in stream.readlines(*args)])
        elif name == 'iter':
            results.append([line.decode('latin-1') for line in stream])
        else:
            raise ValueError(f'unknown input op {op!r}')
    return as_json(start_response, {'results': results})


def input_digest(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Read the whole body with ?mode=read (read(n) loop), readline (readline(size) loop) or iter.

    Returns the size and sha256 of what was read, the chunk count, the longest chunk and what a read after EOF gave.
    """
    stream = environ['wsgi.input']
    mode = query(environ).get('mode', 'read')
    size = int(query(environ).get('size', '65536'))
    digest = hashlib.sha256()
    total = 0
    calls = 0
    if mode == 'iter':
        chunks: Iterable[bytes] = stream
    elif mode == 'readline':
        chunks = iter(lambda: stream.readline(size), b'')
    else:
        chunks = iter(lambda: stream.read(size), b'')
    max_len = 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
        calls += 1
        max_len = max(max_len, len(chunk))
    after_eof = stream.read(size)
    payload = {
        'size': total,
        'sha256': digest.hexdigest(),
        'calls': calls,
        'max_len': max_len,
        'after_eof': after_eof.decode('latin-1'),
    }
    return as_json(start_response, payload)


# --- write() --------------------------------------------------------------------------------------------------------


def write_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Use the write() callable; ?variant=plain|cl|gen|only."""
    variant = query(environ).get('variant', 'plain')
    if variant == 'cl':
        write = start_response('200 OK', [*TEXT, ('Content-Length', '14')])
    else:
        write = start_response('200 OK', TEXT)
    write(b'one,')
    write(b'')
    write(b'two,')
    if variant == 'only':
        write(b'three')
        return []
    if variant == 'gen':
        return (part for part in (b'th', b'ree'))
    return [b'three', b'!' if variant == 'cl' else b'']


# --- exc_info -------------------------------------------------------------------------------------------------------


def exc_before(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """start_response twice: the second call carries exc_info and nothing has been sent, so it replaces the first."""
    start_response('200 OK', [*TEXT, ('X-First', 'yes')])
    try:
        raise ValueError('exc-before marker')
    except ValueError:
        start_response('503 Replaced Status', [*TEXT, ('X-Second', 'yes')], sys.exc_info())
    return [b'replaced body']


def exc_gen_before(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Like exc_before, but the replacement happens inside the iterable after an empty (unsent) chunk."""
    start_response('200 OK', [*TEXT, ('X-First', 'yes')])
    yield b''
    try:
        raise ValueError('exc-gen-before marker')
    except ValueError:
        start_response('503 Replaced Status', [*TEXT, ('X-Second', 'yes')], sys.exc_info())
    yield b'replaced in generator'


def exc_after(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """After a body chunk went out, start_response(..., exc_info) must re-raise that very exception."""
    tag = query(environ).get('tag', '')
    start_response('200 OK', TEXT)
    yield b'first chunk\n'
    try:
        raise LookupError('exc-after marker')
    except LookupError as original:
        try:
            start_response('500 Internal Server Error', TEXT, sys.exc_info())
        except BaseException as raised:
            record('exc_after', tag=tag, reraised=True, same=raised is original, type=type(raised).__name__)
            raise
        record('exc_after', tag=tag, reraised=False)
    yield b'should-not-appear\n'


def start_response_twice(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Calling start_response a second time without exc_info is a fatal error: the server must raise."""
    tag = query(environ).get('tag', '')
    start_response('200 OK', [*TEXT, ('X-First', 'yes')])
    try:
        start_response('201 Created', TEXT)
    except BaseException as raised:
        record('twice', tag=tag, raised=True, type=type(raised).__name__)
        raise
    record('twice', tag=tag, raised=False)
    return [b'second call accepted']


def lazy_start(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """A generator: start_response is first called during the first iteration."""
    start_response('201 Lazy Created', [*TEXT, ('X-Lazy', 'yes')])
    yield b'lazy '
    yield b'body'


# --- close() --------------------------------------------------------------------------------------------------------


class ClosingIterable:
    """An iterable that records how often close() was called and how far iteration got.

    mode: 'ok' (three chunks), 'raise-first' (fails on the first next()), 'raise-mid' (fails after one chunk),
    'stream' (up to 1 GiB in 64 KiB chunks, for clients that go away).
    """

    def __init__(self, tag: str, mode: str) -> None:
        self.tag = tag
        self.mode = mode
        self.yielded = 0
        self.exhausted = False
        self.closes = 0
        self.chunks: list[bytes]
        if mode == 'stream':
            self.chunks = []
            self.limit = 16384
        else:
            self.chunks = [b'alpha,', b'beta,', b'gamma']
            self.limit = len(self.chunks)

    def __iter__(self) -> ClosingIterable:
        return self

    def __next__(self) -> bytes:
        if self.mode == 'raise-first' or (self.mode == 'raise-mid' and self.yielded == 1):
            raise RuntimeError(f'close-{self.mode} marker')
        if self.yielded >= self.limit:
            self.exhausted = True
            raise StopIteration
        chunk = self.chunks[self.yielded] if self.chunks else b'x' * 65536
        self.yielded += 1
        return chunk

    def close(self) -> None:
        self.closes += 1
        record(
            'close',
            tag=self.tag,
            mode=self.mode,
            yielded=self.yielded,
            exhausted=self.exhausted,
            nth=self.closes,
            thread=threading.get_ident(),
        )


class ClosingList(list):  # type: ignore[type-arg]
    """A list subclass with close(): a list fast path must still call close()."""

    def __init__(self, tag: str, items: list[bytes]) -> None:
        super().__init__(items)
        self.tag = tag

    def close(self) -> None:
        record('close', tag=self.tag, mode='list', yielded=len(self), exhausted=True, nth=1)


def close_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """/close/<mode>?tag=T with mode in ok, raise-first, raise-mid, stream, list, cl-short, write."""
    mode = environ['PATH_INFO'].rsplit('/', 1)[1]
    tag = query(environ).get('tag', '')
    if mode == 'list':
        start_response('200 OK', TEXT)
        return ClosingList(tag, [b'list-', b'body'])
    if mode == 'cl-short':
        start_response('200 OK', [*TEXT, ('Content-Length', '8')])
        return ClosingIterable(tag, 'ok')
    if mode == 'write':
        write = start_response('200 OK', TEXT)
        write(b'written,')
        return ClosingIterable(tag, 'ok')
    start_response('200 OK', TEXT)
    return ClosingIterable(tag, mode)


# --- wsgi.file_wrapper ----------------------------------------------------------------------------------------------


class RecordingFile(io.FileIO):
    """A real file (it has a fileno, so sendfile is possible) that records its close()."""

    tag = ''

    def close(self) -> None:
        if not self.closed:
            record('file_close', tag=self.tag)
        super().close()


class RecordingBytesIO(io.BytesIO):
    """A file-like object without a usable fileno() that records its close()."""

    tag = ''

    def close(self) -> None:
        if not self.closed:
            record('file_close', tag=self.tag)
        super().close()


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking test content of `size` bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, 'big')).digest()
        counter += 1
    return bytes(out[:size])


def file_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Serve ?path=P (from ?offset=N, with optional ?cl=M) or, without path, ?size=N pattern bytes from a BytesIO."""
    args = query(environ)
    tag = args.get('tag', '')
    blksize = int(args.get('blksize', '8192'))
    filelike: io.RawIOBase | io.BytesIO
    if 'path' in args:
        real = RecordingFile(args['path'], 'r')
        real.tag = tag
        filelike = real
    else:
        fake = RecordingBytesIO(pattern(int(args.get('size', '100000'))))
        fake.tag = tag
        filelike = fake
    filelike.seek(int(args.get('offset', '0')))
    headers = [('Content-Type', 'application/octet-stream')]
    if 'cl' in args:
        headers.append(('Content-Length', args['cl']))
    start_response('200 OK', headers)
    return environ['wsgi.file_wrapper'](filelike, blksize)


# --- bad apps -------------------------------------------------------------------------------------------------------


def str_body(environ: Environ, start_response: StartResponse) -> list[str]:
    """The classic tutorial mistake: a list of str instead of bytes."""
    start_response('200 OK', TEXT)
    return ['hello from a str body']


def str_direct(environ: Environ, start_response: StartResponse) -> str:
    """A bare str as the response iterable."""
    start_response('200 OK', TEXT)
    return 'hello from a bare str'


def raising(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """An app that raises before start_response."""
    raise RuntimeError('pep boom marker')


# --- misc -----------------------------------------------------------------------------------------------------------


def errors_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Write ?text=... to wsgi.errors (with write, writelines and flush)."""
    text = query(environ).get('text', 'wsgi-errors marker')
    errors = environ['wsgi.errors']
    errors.write(text + '\n')
    errors.writelines([text + ' (writelines)\n'])
    errors.flush()
    start_response('200 OK', TEXT)
    return [b'logged']


def thread_local_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Count requests in a threading.local: a fresh thread state per request would reset it."""
    _local.count = getattr(_local, 'count', 0) + 1
    return as_json(start_response, {'thread': threading.get_ident(), 'count': _local.count})


_gates: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    """The named event shared by /gated and /release."""
    with _lock:
        return _gates.setdefault(name, threading.Event())


def gated_stream(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Yield one chunk, then wait (up to 30 s) until /release?gate=G is requested, then finish."""
    name = query(environ).get('gate', '')
    event = gate(name)
    start_response('200 OK', TEXT)
    yield b'before-gate\n'
    yield b'released\n' if event.wait(30) else b'gate-timeout\n'


def release(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Open the gate named by ?gate=G."""
    gate(query(environ).get('gate', '')).set()
    start_response('200 OK', TEXT)
    return [b'released']


ROUTES: dict[str, Callable[[Environ, StartResponse], Iterable[Any]]] = {
    '/environ': environ_app,
    '/input': input_script,
    '/digest': input_digest,
    '/write': write_app,
    '/exc-before': exc_before,
    '/exc-gen-before': exc_gen_before,
    '/exc-after': exc_after,
    '/start-twice': start_response_twice,
    '/lazy-start': lazy_start,
    '/file': file_app,
    '/str': str_body,
    '/str-direct': str_direct,
    '/raise': raising,
    '/errors': errors_app,
    '/thread-local': thread_local_app,
    '/gated': gated_stream,
    '/release': release,
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
    """Dispatch on PATH_INFO; /close/<mode> goes to close_app, unknown paths get 404."""
    path = environ.get('PATH_INFO', '')
    if path.startswith('/close/'):
        return close_app(environ, start_response)
    handler = ROUTES.get(path)
    if handler is None:
        start_response('404 Not Found', TEXT)
        return [b'no such route: ' + path.encode('latin-1')]
    return handler(environ, start_response)


# --- validated --------------------------------------------------------------------------------------------------------


class _PlainClosing:
    """A plain iterable with close(), used behind the validator."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.parts = iter([b'closing ', b'iterable'])

    def __iter__(self) -> _PlainClosing:
        return self

    def __next__(self) -> bytes:
        return next(self.parts)

    def close(self) -> None:
        record('close', tag=self.tag, mode='validated')


def _plain_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Well-behaved app for `validator`: every route follows the spec to the letter."""
    path = environ['PATH_INFO']
    if path == '/post':
        stream = environ['wsgi.input']
        head = stream.read(4)
        line = stream.readline()
        rest_lines = stream.readlines()
        tail = b''.join(stream)
        body = b'|'.join([head, line, b''.join(rest_lines), tail])
        start_response('200 OK', [*TEXT, ('Content-Length', str(len(body)))])
        return [body]
    if path == '/gen':
        start_response('200 OK', TEXT)
        return (part for part in (b'gen', b'erated'))
    if path == '/write':
        write = start_response('200 OK', TEXT)
        write(b'via write')
        return []
    if path == '/closing':
        start_response('200 OK', TEXT)
        return _PlainClosing(query(environ).get('tag', ''))
    if path == '/no-content':
        start_response('204 No Content', [])
        return []
    if path == '/errors':
        environ['wsgi.errors'].write(query(environ).get('text', '') + '\n')
        environ['wsgi.errors'].flush()
        start_response('200 OK', TEXT)
        return [b'flushed']
    start_response('200 OK', [*TEXT, ('Content-Length', '5')])
    return [b'plain']


validated_app = validator(_plain_app)
