"""An app for the logging, proxy, config-file, plugin and nginx tests; `proxied:app` dispatches on PATH_INFO.

- `/whoami`: JSON with what the server says about the client and the mount point (REMOTE_ADDR, wsgi.url_scheme,
  HTTP_HOST, SCRIPT_NAME, PATH_INFO, ...), the instance name (env INSTANCE_NAME), the pid and the call count.
- `/upload`: reads the whole body; JSON with its length and sha256.
- `/stream?chunks=N&size=S`: N chunks of S bytes (chunk i is the byte i % 256 repeated), no Content-Length.
- `/status/NNN`: answers with that status.
- `/error`: raises.
- `/hold`: appends `started` to the file named by the EVENT_FILE environment variable, then reads the body.
- anything else: `hello`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_calls = 0
_lock = threading.Lock()


def stream_chunk(index: int, size: int) -> bytes:
    """Chunk `index` of `/stream`; the tests rebuild the expected body with it."""
    return bytes([index % 256]) * size


def _json(start_response: StartResponse, payload: object, status: str = '200 OK') -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]


def _whoami(environ: Environ, start_response: StartResponse) -> list[bytes]:
    keys = (
        'REMOTE_ADDR',
        'REMOTE_PORT',
        'wsgi.url_scheme',
        'HTTP_HOST',
        'SCRIPT_NAME',
        'PATH_INFO',
        'QUERY_STRING',
        'HTTP_X_FORWARDED_FOR',
        'HTTP_X_FORWARDED_PROTO',
        'HTTP_X_FORWARDED_HOST',
        'HTTP_FORWARDED',
    )
    payload: dict[str, Any] = {key: environ.get(key) for key in keys}
    payload.update(instance=os.environ.get('INSTANCE_NAME', ''), pid=os.getpid(), calls=_calls)
    return _json(start_response, payload)


def _upload(environ: Environ, start_response: StartResponse) -> list[bytes]:
    digest = hashlib.sha256()
    length = 0
    while chunk := environ['wsgi.input'].read(65536):
        digest.update(chunk)
        length += len(chunk)
    return _json(start_response, {'length': length, 'sha256': digest.hexdigest()})


def _stream(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    query = parse_qs(environ.get('QUERY_STRING', ''))
    chunks = int(query.get('chunks', ['16'])[0])
    size = int(query.get('size', ['65536'])[0])
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    for index in range(chunks):
        yield stream_chunk(index, size)


def _hold(environ: Environ, start_response: StartResponse) -> list[bytes]:
    with open(os.environ['EVENT_FILE'], 'a', encoding='utf-8') as events:
        events.write('started\n')
    return _upload(environ, start_response)


def app(environ: Environ, start_response: StartResponse) -> Any:
    """Dispatch on PATH_INFO (see the module docstring)."""
    global _calls
    with _lock:
        _calls += 1
    path = environ.get('PATH_INFO', '')
    if path == '/whoami':
        return _whoami(environ, start_response)
    if path == '/upload':
        return _upload(environ, start_response)
    if path == '/stream':
        return _stream(environ, start_response)
    if path == '/hold':
        return _hold(environ, start_response)
    if path == '/error':
        raise RuntimeError('proxied app failure marker')
    if path.startswith('/status/'):
        code = path.rsplit('/', 1)[1]
        body = f'status {code}'.encode()
        start_response(f'{code} Custom', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '5')])
    return [b'hello']
