"""PEP 3333 conformance, checked from outside: real requests against `tests/apps/pep.py` under `rustwsgi serve`."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import raw_request

EVENT_WAIT = 20.0


# --- helpers --------------------------------------------------------------------------------------------------------


class Response:
    """A parsed raw HTTP/1.x response."""

    def __init__(self, status_line: str, headers: list[tuple[str, str]], body: bytes, complete: bool) -> None:
        self.status_line = status_line
        self.status = int(status_line.split()[1])
        self.headers = headers
        self.body = body
        self.complete = complete
        self.trailing = b''

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(data: bytes, head_only: bool = False) -> Response:
    """Parse the first response in `data`; bytes after it are kept in `.trailing` (see `parse_responses`)."""
    return parse_responses(data, head_only, limit=1)[0]


def parse_responses(data: bytes, head_only: bool = False, limit: int = 0) -> list[Response]:
    """Parse the responses in `data`, in order (at most `limit` of them if given).

    `complete` is False when a chunked body lacks its last chunk or fewer than Content-Length bytes arrived.
    A response without Content-Length or chunked framing runs to the end of `data`. With `head_only` (answers to
    HEAD) a response has no body. Unparsed bytes after the last response are kept in its `.trailing`.
    """
    assert data, 'the server sent nothing'
    responses: list[Response] = []
    rest = data
    while rest and not (limit and len(responses) == limit):
        head, sep, rest = rest.partition(b'\r\n\r\n')
        assert sep, f'no complete response head in {head[:300]!r}'
        lines = head.decode('latin-1').split('\r\n')
        headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(':') for line in lines[1:])]
        response = Response(lines[0], headers, b'', True)
        responses.append(response)
        if head_only:
            continue
        if (response.header('Transfer-Encoding') or '').lower() == 'chunked':
            body = bytearray()
            response.complete = False
            while True:
                size_line, sep, after = rest.partition(b'\r\n')
                if not sep:
                    rest = b''
                    break
                size = int(size_line.split(b';')[0], 16)
                if size == 0:
                    response.complete = after.startswith(b'\r\n')
                    rest = after[2:]
                    break
                body += after[:size]
                if len(after) < size + 2:
                    rest = b''
                    break
                rest = after[size + 2 :]
            response.body = bytes(body)
        elif response.header('Content-Length') is not None:
            length = int(response.header('Content-Length') or '0')
            response.body = rest[:length]
            response.complete = len(rest) >= length
            rest = rest[length:]
        else:
            response.body = rest
            rest = b''
    responses[-1].trailing = rest
    return responses


def request(
    port: int,
    target: str,
    headers: tuple[str, ...] = (),
    *,
    method: str = 'GET',
    body: bytes | None = None,
    version: str = 'HTTP/1.1',
    close: bool = True,
) -> Response:
    """Send one request over a fresh connection and parse the answer (read until the server closes)."""
    lines = [f'{method} {target} {version}', 'Host: 127.0.0.1', *headers]
    if body is not None:
        lines.append(f'Content-Length: {len(body)}')
    if close:
        lines.append('Connection: close')
    data = raw_request(port, ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + (body or b''), timeout=10)
    return parse_response(data, head_only=method == 'HEAD')


def get(port: int, target: str, headers: tuple[str, ...] = (), **kwargs: Any) -> Response:
    """GET `target` (see `request`)."""
    return request(port, target, headers, **kwargs)


def post(port: int, target: str, body: bytes, headers: tuple[str, ...] = ()) -> Response:
    """POST `body` with a Content-Length (see `request`)."""
    return request(port, target, headers, method='POST', body=body)


def environ_of(port: int, target: str = '/', headers: tuple[str, ...] = (), **kwargs: Any) -> dict[str, Any]:
    """The environ the app saw, as {key: {'type', 'value'}} (plus the full dump under '_dump')."""
    response = request(port, target, headers, **kwargs)
    assert response.status == 200, response.body
    dump = response.json()
    env = dict(dump['environ'])
    env['_dump'] = dump
    return env


def wait_for(predicate: Callable[[], Any], what: str | Callable[[], str], timeout: float = EVENT_WAIT) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` (or what it returns) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f'timed out waiting for {what() if callable(what) else what}')


class EventLog:
    """The JSON-lines file the pep apps append their events to (passed to the server as PEP_EVENT_LOG)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text('')

    @property
    def env(self) -> dict[str, str]:
        return {'PEP_EVENT_LOG': str(self.path)}

    def events(self, tag: str, event: str | None = None) -> list[dict[str, Any]]:
        lines = self.path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [item for item in found if item.get('tag') == tag and (event is None or item['event'] == event)]

    def wait(self, tag: str, event: str, timeout: float = EVENT_WAIT) -> list[dict[str, Any]]:
        """Wait until at least one `event` with `tag` was recorded, and return all of them."""
        return wait_for(lambda: self.events(tag, event), f'{event!r} event for tag {tag!r} in {self.path}', timeout)


@pytest.fixture
def events(tmp_path: Path) -> EventLog:
    """A fresh event log file."""
    return EventLog(tmp_path / 'events.jsonl')


def settle(port: int) -> None:
    """One full request/response on a single-threaded server: the previous request is completely finished after it."""
    assert get(port, '/environ').status == 200


# --- environ --------------------------------------------------------------------------------------------------------


def test_environ_types(serve: Callable[..., Any]) -> None:
    """Every environ key is a str; every non-wsgi.* value is a str; wsgi.* values have their PEP 3333 types."""
    served = serve('pep:environ_app')
    env = environ_of(served.port, '/types?x=1', ('Content-Type: text/plain',), method='POST', body=b'abc')
    dump = env.pop('_dump')
    assert dump['is_dict'] is True
    assert dump['key_types'] == ['str']
    for key, item in env.items():
        if not key.startswith('wsgi.'):
            assert item['type'] == 'str', f'{key} is {item}'
    assert env['wsgi.version'] == {'type': 'tuple', 'value': [1, 0]}
    assert env['wsgi.url_scheme'] == {'type': 'str', 'value': 'http'}
    for flag in ('wsgi.multithread', 'wsgi.multiprocess', 'wsgi.run_once'):
        assert env[flag]['type'] == 'bool', flag
    assert env['wsgi.multiprocess']['value'] is False
    assert env['wsgi.run_once']['value'] is False
    assert env['wsgi.input_terminated'] == {'type': 'bool', 'value': True}
    assert 'wsgi.file_wrapper' in env
    assert dump['input_methods'] == ['__iter__', 'read', 'readline', 'readlines']
    assert dump['errors_methods'] == ['flush', 'write', 'writelines']
    for key in ('REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_NAME', 'SERVER_PORT'):
        assert key in env, key
    assert env['REQUEST_METHOD']['value'] == 'POST'
    assert env['SCRIPT_NAME']['value'] == ''
    assert env['PATH_INFO']['value'] == '/types'
    assert env['QUERY_STRING']['value'] == 'x=1'
    assert env['CONTENT_LENGTH'] == {'type': 'str', 'value': '3'}
    assert env['CONTENT_TYPE'] == {'type': 'str', 'value': 'text/plain'}
    assert dump['body'] == 'abc'


def test_content_headers_without_http_prefix(serve: Callable[..., Any]) -> None:
    """Content-Type and Content-Length become CONTENT_TYPE/CONTENT_LENGTH (str), never HTTP_CONTENT_*."""
    served = serve('pep:environ_app')
    response = post(served.port, '/', b'hello=world', ('Content-Type: application/x-www-form-urlencoded',))
    assert response.status == 200
    dump = response.json()
    env = dump['environ']
    assert env['CONTENT_TYPE'] == {'type': 'str', 'value': 'application/x-www-form-urlencoded'}
    assert env['CONTENT_LENGTH'] == {'type': 'str', 'value': '11'}
    assert 'HTTP_CONTENT_TYPE' not in env
    assert 'HTTP_CONTENT_LENGTH' not in env
    assert dump['body'] == 'hello=world'


def test_get_without_body_has_no_http_content_length(serve: Callable[..., Any]) -> None:
    """A GET without a body: CONTENT_LENGTH is absent or empty or '0', and wsgi.input reads b''."""
    served = serve('pep:environ_app')
    env = environ_of(served.port, '/')
    assert env.get('CONTENT_LENGTH', {'value': ''})['value'] in ('', '0')
    assert 'HTTP_CONTENT_LENGTH' not in env
    assert env['_dump']['body'] == ''


@pytest.mark.parametrize(
    ('target', 'path_info', 'query_string'),
    [
        ('/caf%C3%A9', '/caf\u00c3\u00a9', ''),
        ('/a%20b/c%2Fd', '/a b/c/d', ''),
        ('/plus+sign', '/plus+sign', ''),
        ('/%7Etilde/%25percent', '/~tilde/%percent', ''),
        ('/q?a=1&b=%20x+y&c=caf%C3%A9&d', '/q', 'a=1&b=%20x+y&c=caf%C3%A9&d'),
        ('/empty-query?', '/empty-query', ''),
        ('/?%2F=%2F', '/', '%2F=%2F'),
    ],
)
def test_path_info_decoded_latin1_query_raw(
    serve: Callable[..., Any], target: str, path_info: str, query_string: str
) -> None:
    """PATH_INFO is percent-decoded and the bytes read as latin-1; QUERY_STRING is passed through raw."""
    served = serve('pep:environ_app')
    env = environ_of(served.port, target)
    assert env['PATH_INFO'] == {'type': 'str', 'value': path_info}
    assert env['QUERY_STRING'] == {'type': 'str', 'value': query_string}
    assert env['SCRIPT_NAME']['value'] == ''


def test_latin1_header_value(serve: Callable[..., Any]) -> None:
    """A header value with non-ASCII bytes (obs-text) reaches the app decoded as latin-1."""
    served = serve('pep:environ_app')
    data = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Name: caf\u00e9\r\nConnection: close\r\n\r\n'.encode()
    response = parse_response(raw_request(served.port, data))
    assert response.status == 200
    assert response.json()['environ']['HTTP_X_NAME'] == {'type': 'str', 'value': 'caf\u00c3\u00a9'}


def test_remote_and_server_addresses(serve: Callable[..., Any]) -> None:
    """REMOTE_ADDR/REMOTE_PORT name the client socket; SERVER_NAME/SERVER_PORT the listener; protocol is exact."""
    served = serve('pep:environ_app')
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b'GET / HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n')
        data = b''
        while chunk := sock.recv(65536):
            data += chunk
    env = parse_response(data).json()['environ']
    assert env['REMOTE_ADDR'] == {'type': 'str', 'value': '127.0.0.1'}
    assert env['REMOTE_PORT'] == {'type': 'str', 'value': str(client_port)}
    assert env['SERVER_NAME'] == {'type': 'str', 'value': '127.0.0.1'}
    assert env['SERVER_PORT'] == {'type': 'str', 'value': str(served.port)}
    assert env['SERVER_PROTOCOL'] == {'type': 'str', 'value': 'HTTP/1.1'}
    assert env['HTTP_HOST'] == {'type': 'str', 'value': 'example.com:8080'}
    assert env['wsgi.url_scheme']['value'] == 'http'


def test_server_protocol_http10(serve: Callable[..., Any]) -> None:
    """An HTTP/1.0 request is seen as SERVER_PROTOCOL 'HTTP/1.0'."""
    served = serve('pep:environ_app')
    env = environ_of(served.port, '/', version='HTTP/1.0')
    assert env['SERVER_PROTOCOL']['value'] == 'HTTP/1.0'


@pytest.mark.parametrize('method', ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
def test_request_method(serve: Callable[..., Any], method: str) -> None:
    """REQUEST_METHOD is the method as sent."""
    served = serve('pep:environ_app')
    body = b'' if method in ('POST', 'PUT', 'PATCH') else None
    env = environ_of(served.port, '/', method=method, body=body)
    assert env['REQUEST_METHOD'] == {'type': 'str', 'value': method}


def test_header_mapping(serve: Callable[..., Any]) -> None:
    """Header names become HTTP_ + upper case with '-' → '_'; repeated headers are joined with ', '."""
    served = serve('pep:environ_app')
    env = environ_of(
        served.port,
        '/',
        ('x-Mixed-case: v', 'X-Dup: first', 'Accept: text/html', 'X-Dup: second', 'X-Dup: third'),
    )
    assert env['HTTP_X_MIXED_CASE'] == {'type': 'str', 'value': 'v'}
    assert env['HTTP_X_DUP'] == {'type': 'str', 'value': 'first, second, third'}
    assert env['HTTP_ACCEPT'] == {'type': 'str', 'value': 'text/html'}
    assert env['HTTP_HOST'] == {'type': 'str', 'value': '127.0.0.1'}


def test_header_names_with_underscore_dropped(serve: Callable[..., Any]) -> None:
    """`X_Auth_User` must not be able to pose as `X-Auth-User`: names containing '_' are dropped."""
    served = serve('pep:environ_app')
    env = environ_of(served.port, '/', ('X_Auth_User: evil', 'X-Auth-User: good', 'X_Only_Underscore: evil'))
    assert env['HTTP_X_AUTH_USER'] == {'type': 'str', 'value': 'good'}
    assert 'HTTP_X_ONLY_UNDERSCORE' not in env
    assert not any('evil' in str(item['value']) for item in env.values() if isinstance(item, dict) and 'value' in item)


@pytest.mark.parametrize(('threads', 'expected'), [('2', True), ('1', False)])
def test_multithread_flag(serve: Callable[..., Any], threads: str, expected: bool) -> None:
    """wsgi.multithread reflects --threads; wsgi.multiprocess is False for a single process."""
    served = serve('pep:environ_app', '--threads', threads)
    env = environ_of(served.port)
    assert env['wsgi.multithread'] == {'type': 'bool', 'value': expected}
    assert env['wsgi.multiprocess'] == {'type': 'bool', 'value': False}


def test_process_environment_not_copied(serve: Callable[..., Any]) -> None:
    """The server's os.environ does not leak into the WSGI environ."""
    marker = 'pep3333-env-leak-marker-5a1f'
    served = serve('pep:environ_app', env={'RUSTWSGI_TEST_MARKER': marker, 'PEP_LEAK_CHECK': marker})
    env = environ_of(served.port)
    env.pop('_dump')
    for key, item in env.items():
        assert 'RUSTWSGI_TEST_MARKER' not in key
        assert 'PEP_LEAK_CHECK' not in key
        assert marker not in str(item['value']), key
    for name in ('PATH', 'HOME', 'PYTHONPATH'):
        assert name not in env


def test_wsgi_errors_reaches_server_log(serve: Callable[..., Any]) -> None:
    """Text written to wsgi.errors (write, writelines, flush) lands in the server's stderr."""
    served = serve('pep:app')
    response = get(served.port, '/errors?text=errors-stream-marker-9b2')
    assert response.status == 200
    log = served.wait_for_log('errors-stream-marker-9b2 (writelines)')
    assert 'errors-stream-marker-9b2\n' in log


# --- wsgi.input -----------------------------------------------------------------------------------------------------

BODY = b'first line\nsecond\n\nfourth line is longer\nno newline at end'
LINES = ['first line\n', 'second\n', '\n', 'fourth line is longer\n', 'no newline at end']


@pytest.mark.parametrize(
    ('ops', 'expected'),
    [
        ('read:5,read:6,read', ['first', ' line\n', BODY[11:].decode()]),
        ('read,read,read:10', [BODY.decode(), '', '']),
        ('read:1000,read:1', [BODY.decode(), '']),
        ('readline,readline,readline,readline,readline,readline', [*LINES, '']),
        ('readline:5,readline:100,readline:3,readline:0,readline', ['first', ' line\n', 'sec', '', 'ond\n']),
        ('readlines', [LINES]),
        ('read:3,readlines,readlines', ['fir', ['st line\n', *LINES[1:]], []]),
        ('iter', [LINES]),
        ('read:2,readline,iter,read', ['fi', 'rst line\n', LINES[1:], '']),
    ],
)
def test_wsgi_input_methods(serve: Callable[..., Any], ops: str, expected: list[object]) -> None:
    """read(n), read(), readline(), readline(size), readlines() and iteration follow io semantics."""
    served = serve('pep:app')
    response = post(served.port, f'/input?ops={ops}', BODY)
    assert response.status == 200, response.body
    assert response.json()['results'] == expected


def test_wsgi_input_readlines_hint(serve: Callable[..., Any]) -> None:
    """readlines(hint) may stop early (or ignore the hint), but never splits or loses a line."""
    served = serve('pep:app')
    response = post(served.port, '/input?ops=readlines:15,readlines', BODY)
    assert response.status == 200, response.body
    first, second = response.json()['results']
    assert first
    assert first + second == LINES


def test_wsgi_input_empty_body(serve: Callable[..., Any]) -> None:
    """Every read on an empty input returns b'' (or an empty list)."""
    served = serve('pep:app')
    response = post(served.port, '/input?ops=read:10,read,readline,readline:5,readlines,iter', b'')
    assert response.status == 200, response.body
    assert response.json()['results'] == ['', '', '', '', [], []]


def _lined_body(size: int) -> bytes:
    """About `size` bytes of lines of varying length (some longer than any readline size used)."""
    out = bytearray()
    index = 0
    while len(out) < size:
        out += hashlib.sha256(str(index).encode()).hexdigest().encode() * (index % 7) + b'\n'
        index += 1
    return bytes(out)


@pytest.mark.parametrize('size', [10_000, 1_500_000])
@pytest.mark.parametrize(('mode', 'chunk'), [('read', 65536), ('read', 1000), ('readline', 100), ('iter', 0)])
def test_wsgi_input_whole_body(serve: Callable[..., Any], size: int, mode: str, chunk: int) -> None:
    """Small (buffered) and large (streamed) bodies read back intact by read(n), readline(size) and iteration."""
    body = _lined_body(size)
    served = serve('pep:app')
    with requests.post(f'{served.url}/digest?mode={mode}&size={chunk or 65536}', data=body, timeout=30) as response:
        assert response.status_code == 200, response.text
        result = response.json()
    assert result['size'] == len(body)
    assert result['sha256'] == hashlib.sha256(body).hexdigest()
    assert result['after_eof'] == ''
    if mode == 'readline':
        pieces = sum(max(1, -(-len(line) // chunk)) for line in body.splitlines(keepends=True))
        assert result['max_len'] <= chunk
        assert result['calls'] == pieces
    if mode == 'iter':
        assert result['calls'] == body.count(b'\n') + (0 if body.endswith(b'\n') else 1)


@pytest.mark.parametrize('size', [5_000, 1_500_000])
def test_wsgi_input_chunked_request(serve: Callable[..., Any], size: int) -> None:
    """A chunked request body (no Content-Length) is decoded; reading until b'' is safe (input_terminated)."""
    body = _lined_body(size)
    served = serve('pep:app')

    def pieces() -> Any:
        for start in range(0, len(body), 30_000):
            yield body[start : start + 30_000]

    with requests.post(f'{served.url}/digest?mode=read&size=65536', data=pieces(), timeout=30) as response:
        assert response.request.headers.get('Transfer-Encoding') == 'chunked'
        assert response.status_code == 200, response.text
        result = response.json()
    assert result['size'] == len(body)
    assert result['sha256'] == hashlib.sha256(body).hexdigest()


def test_read_past_content_length_is_eof(serve: Callable[..., Any]) -> None:
    """Reads never go past CONTENT_LENGTH: the next pipelined request is not swallowed into the body."""
    served = serve('pep:app')
    first = b'POST /input?ops=read:100,read:100 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello'
    second = b'GET /input?ops=read HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    one, two = parse_responses(raw_request(served.port, first + second, timeout=10))
    assert one.status == 200
    assert one.json()['results'] == ['hello', '']
    assert two.status == 200
    assert two.json()['results'] == ['']


# --- write() --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('variant', 'expected'),
    [('plain', b'one,two,three'), ('cl', b'one,two,three!'), ('gen', b'one,two,three'), ('only', b'one,two,three')],
)
def test_write_callable(serve: Callable[..., Any], variant: str, expected: bytes) -> None:
    """Data passed to write() goes out first, then the returned iterable."""
    served = serve('pep:app')
    response = get(served.port, f'/write?variant={variant}')
    assert response.status == 200
    assert response.complete
    assert response.body == expected
    if variant == 'cl':
        assert response.header('Content-Length') == '14'


def test_write_callable_http10(serve: Callable[..., Any]) -> None:
    """write() on HTTP/1.0: the body is delimited by connection close and arrives whole."""
    served = serve('pep:app')
    response = get(served.port, '/write?variant=gen', version='HTTP/1.0')
    assert response.status_line.startswith('HTTP/1.0 200')
    assert response.body == b'one,two,three'


# --- exc_info and start_response ------------------------------------------------------------------------------------


@pytest.mark.parametrize('target', ['/exc-before', '/exc-gen-before'])
def test_exc_info_replaces_unsent_headers(serve: Callable[..., Any], target: str) -> None:
    """start_response(..., exc_info) before anything was sent: the second status and headers win."""
    served = serve('pep:app')
    response = get(served.port, target)
    assert response.status_line.split(' ', 1)[1] == '503 Replaced Status'
    assert response.header('X-Second') == 'yes'
    assert response.header('X-First') is None
    assert response.body in (b'replaced body', b'replaced in generator')
    assert response.complete


def test_exc_info_after_headers_sent_reraises(serve: Callable[..., Any], events: EventLog) -> None:
    """start_response(..., exc_info) after the body started: it re-raises, the response is cut, the server lives."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/exc-after?tag=late', close=False)
    assert response.status == 200
    assert response.body.startswith(b'first chunk\n')
    assert b'should-not-appear' not in response.body
    assert not response.complete, 'a response aborted by an exception must not look complete'
    (event,) = events.wait('late', 'exc_after')
    assert event == {'event': 'exc_after', 'tag': 'late', 'reraised': True, 'same': True, 'type': 'LookupError'}
    served.wait_for_log('exc-after marker')
    assert get(served.port, '/environ').status == 200


def test_start_response_twice_without_exc_info_is_an_error(serve: Callable[..., Any], events: EventLog) -> None:
    """A second start_response without exc_info raises inside the app; the app lets it escape: 500."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/start-twice?tag=twice')
    assert response.status == 500
    assert response.header('X-First') is None
    (event,) = events.wait('twice', 'twice')
    assert event['raised'] is True


def test_start_response_during_first_iteration(serve: Callable[..., Any]) -> None:
    """A generator app calls start_response only when first iterated."""
    served = serve('pep:app')
    response = get(served.port, '/lazy-start')
    assert response.status_line.split(' ', 1)[1] == '201 Lazy Created'
    assert response.header('X-Lazy') == 'yes'
    assert response.body == b'lazy body'


def test_reason_phrase_passed_through(serve: Callable[..., Any]) -> None:
    """The status line carries the app's own reason phrase."""
    served = serve('pep:app')
    with requests.get(f'{served.url}/exc-before', timeout=10) as response:
        assert response.status_code == 503
        assert response.reason == 'Replaced Status'


# --- close() --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('mode', 'body'),
    [('ok', b'alpha,beta,gamma'), ('list', b'list-body'), ('write', b'written,alpha,beta,gamma')],
)
def test_close_called_once_on_success(serve: Callable[..., Any], events: EventLog, mode: str, body: bytes) -> None:
    """After a normal response, close() is called exactly once (also for a list subclass and with write())."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, f'/close/{mode}?tag={mode}')
    assert response.status == 200
    assert response.body == body
    events.wait(mode, 'close')
    settle(served.port)
    closes = events.events(mode, 'close')
    assert len(closes) == 1, closes
    assert closes[0]['exhausted'] is True


def test_close_called_once_for_head(serve: Callable[..., Any], events: EventLog) -> None:
    """HEAD sends no body, but the iterable is still closed, once."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/close/ok?tag=head', method='HEAD')
    assert response.status == 200
    assert response.trailing == b'', 'a HEAD response must not carry a body'
    events.wait('head', 'close')
    settle(served.port)
    assert len(events.events('head', 'close')) == 1


def test_close_called_once_when_content_length_reached(serve: Callable[..., Any], events: EventLog) -> None:
    """The app declares Content-Length 8 but yields more: exactly 8 bytes go out and close() is called once."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/close/cl-short?tag=cl')
    assert response.status == 200
    assert response.header('Content-Length') == '8'
    assert response.body == b'alpha,be'
    assert response.trailing == b'', 'more than Content-Length bytes were sent'
    events.wait('cl', 'close')
    settle(served.port)
    assert len(events.events('cl', 'close')) == 1


def test_close_called_once_when_first_next_raises(serve: Callable[..., Any], events: EventLog) -> None:
    """The iterable raises before producing anything: 500, close() once, traceback logged, server alive."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/close/raise-first?tag=first')
    assert response.status == 500
    events.wait('first', 'close')
    served.wait_for_log('close-raise-first marker')
    settle(served.port)
    closes = events.events('first', 'close')
    assert len(closes) == 1, closes
    assert closes[0]['yielded'] == 0


def test_close_called_once_when_iteration_fails_midway(serve: Callable[..., Any], events: EventLog) -> None:
    """The iterable raises after one chunk was sent: the response is cut, close() once, server alive."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/close/raise-mid?tag=mid', close=False)
    assert response.status == 200
    assert response.body.startswith(b'alpha,')
    assert not response.complete
    events.wait('mid', 'close')
    served.wait_for_log('close-raise-mid marker')
    settle(served.port)
    closes = events.events('mid', 'close')
    assert len(closes) == 1, closes
    assert closes[0]['yielded'] == 1


def test_close_called_once_when_client_goes_away(serve: Callable[..., Any], events: EventLog) -> None:
    """The client disconnects mid-stream: the server stops iterating and calls close() once."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        sock.sendall(b'GET /close/stream?tag=gone HTTP/1.1\r\nHost: a\r\n\r\n')
        received = b''
        while len(received) < 200_000:
            chunk = sock.recv(65536)
            assert chunk, 'server closed the stream early'
            received += chunk
        assert received.startswith(b'HTTP/1.1 200')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    (close,) = events.wait('gone', 'close', timeout=30)
    assert close['exhausted'] is False, 'the server kept iterating a response nobody reads'
    settle(served.port)
    assert len(events.events('gone', 'close')) == 1


# --- wsgi.file_wrapper ----------------------------------------------------------------------------------------------


def _content(size: int) -> bytes:
    out = bytearray()
    index = 0
    while len(out) < size:
        out += hashlib.sha256(index.to_bytes(4, 'big')).digest()
        index += 1
    return bytes(out[:size])


@pytest.mark.parametrize(
    ('size', 'query', 'start', 'stop'),
    [
        (300_001, '', 0, None),
        (300_001, '&offset=1000', 1000, None),
        (300_001, '&offset=10&cl=5000', 10, 5010),
        (7, '&blksize=2', 0, None),
        (0, '', 0, None),
    ],
)
def test_file_wrapper_real_file(
    serve: Callable[..., Any], events: EventLog, tmp_path: Path, size: int, query: str, start: int, stop: int | None
) -> None:
    """wsgi.file_wrapper sends a real file from its current position (up to Content-Length) and closes it once."""
    data = _content(size)
    path = tmp_path / 'served.bin'
    path.write_bytes(data)
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, f'/file?path={quote(str(path))}&tag=real{query}')
    assert response.status == 200
    assert response.complete
    assert response.body == data[start:stop]
    assert response.trailing == b''
    events.wait('real', 'file_close')
    settle(served.port)
    assert len(events.events('real', 'file_close')) == 1


def test_file_wrapper_file_shorter_than_its_content_length_ends_in_a_close(
    serve: Callable[..., Any], events: EventLog, tmp_path: Path
) -> None:
    """A file holding less than the app's Content-Length: what it has is sent, then the connection closes, so that
    the client neither waits for bytes that never come nor reads a next response as the rest of this body."""
    data = _content(10_000)
    path = tmp_path / 'short.bin'
    path.write_bytes(data)
    # Idle connections are kept longer than the client waits: only the end of this response may close it.
    served = serve('pep:app', '--threads', '1', '--keep-alive', '60', env=events.env)
    with socket.create_connection(('127.0.0.1', served.port), timeout=5) as sock:
        sock.sendall(f'GET /file?path={quote(str(path))}&tag=short&cl=20000 HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        received = b''
        # A server that kept the connection open would make this recv time out.
        while chunk := sock.recv(65536):
            received += chunk
    response = parse_response(received)
    assert response.status == 200
    assert response.header('Content-Length') == '20000'
    assert not response.complete
    assert response.body == data
    events.wait('short', 'file_close')
    assert get(served.port, '/file?size=10&tag=after').body == _pattern(10)


def test_file_wrapper_file_like_without_fileno(serve: Callable[..., Any], events: EventLog) -> None:
    """wsgi.file_wrapper also serves a file-like object with no descriptor (read loop), then closes it."""
    served = serve('pep:app', '--threads', '1', env=events.env)
    response = get(served.port, '/file?size=100000&offset=3&blksize=4096&tag=bytesio')
    assert response.status == 200
    assert response.complete
    assert response.body == _pattern(100000)[3:]
    events.wait('bytesio', 'file_close')
    settle(served.port)
    assert len(events.events('bytesio', 'file_close')) == 1


def _pattern(size: int) -> bytes:
    """Same bytes as pep.pattern()."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, 'big')).digest()
        counter += 1
    return bytes(out[:size])


# --- bad apps -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('target', ['/str', '/str-direct'])
def test_app_returning_str_gets_500_and_a_clear_error(serve: Callable[..., Any], target: str) -> None:
    """An app yielding str instead of bytes: 500, an error line saying str was returned where bytes were due."""
    served = serve('pep:app')
    response = get(served.port, target)
    assert response.status == 500
    assert b'hello from a' not in response.body

    def says_str_not_bytes() -> list[str]:
        lines = [line for line in served.log().splitlines() if '[ERROR]' in line]
        return [line for line in lines if re.search(r'\bstr\b', line) and re.search(r'\bbytes\b', line)]

    wait_for(says_str_not_bytes, lambda: f'an error line saying str was returned, not bytes, in:\n{served.log()}', 10)
    assert get(served.port, '/environ').status == 200


def test_app_exception_gets_500_traceback_and_server_survives(serve: Callable[..., Any]) -> None:
    """An app that raises: 500 with Connection handling intact, a traceback in the error log, next request served."""
    served = serve('pep:app')
    response = get(served.port, '/raise')
    assert response.status == 500
    assert b'pep boom marker' not in response.body, 'the exception text must not leak to the client'
    log = served.wait_for_log('RuntimeError: pep boom marker')
    assert 'Traceback (most recent call last)' in log
    for _ in range(3):
        assert get(served.port, '/environ').status == 200
    with requests.get(f'{served.url}/raise', timeout=10) as again:
        assert again.status_code == 500


def test_validator_runs_clean(serve: Callable[..., Any], events: EventLog) -> None:
    """An app wrapped in wsgiref.validate.validator sees no spec violation across several kinds of requests."""
    served = serve('pep:validated_app', '--threads', '1', env=events.env)
    url = served.url
    with requests.Session() as session:
        assert session.get(f'{url}/', timeout=10).text == 'plain'
        assert session.get(f'{url}/gen', timeout=10).text == 'generated'
        assert session.get(f'{url}/write', timeout=10).text == 'via write'
        assert session.get(f'{url}/closing?tag=validated', timeout=10).text == 'closing iterable'
        no_content = session.get(f'{url}/no-content', timeout=10)
        assert no_content.status_code == 204
        assert no_content.content == b''
        head = session.head(f'{url}/', timeout=10)
        assert head.status_code == 200
        assert head.content == b''
        body = b'abcdefgh\nline two\nline three\ntail'
        posted = session.post(f'{url}/post', data=body, timeout=10)
        assert posted.status_code == 200
        assert posted.content == b'abcd|efgh\n|line two\nline three\ntail|'
        chunked = session.post(f'{url}/post', data=iter([body[:10], body[10:]]), timeout=10)
        assert chunked.status_code == 200
        assert chunked.content == b'abcd|efgh\n|line two\nline three\ntail|'
        empty = session.post(f'{url}/post', data=b'', timeout=10)
        assert empty.content == b'|||'
        assert session.get(f'{url}/errors?text=validator-done-7c1', timeout=10).text == 'flushed'
    events.wait('validated', 'close')
    log = served.wait_for_log('validator-done-7c1')
    for needle in ('Warning', 'AssertionError', 'Traceback', 'garbage collected', 'Exception ignored', '[ERROR]'):
        assert needle not in log, f'{needle!r} in server log:\n{log}'


def test_thread_local_survives_across_requests(serve: Callable[..., Any]) -> None:
    """With one worker thread, threading.local data persists from one request to the next."""
    served = serve('pep:app', '--threads', '1')
    seen = [get(served.port, '/thread-local').json() for _ in range(4)]
    assert len({item['thread'] for item in seen}) == 1
    assert [item['count'] for item in seen] == [1, 2, 3, 4]


def test_streaming_sends_each_chunk_before_the_next(serve: Callable[..., Any]) -> None:
    """A generator's first chunk reaches the client while the generator is still blocked on the next one."""
    served = serve('pep:app', '--threads', '2')
    with socket.create_connection(('127.0.0.1', served.port), timeout=15) as sock:
        sock.sendall(b'GET /gated?gate=g1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
        received = b''
        while b'before-gate' not in received:
            chunk = sock.recv(65536)
            assert chunk, f'connection closed before the first chunk: {received!r}'
            received += chunk
        assert b'released' not in received
        assert get(served.port, '/release?gate=g1').body == b'released'
        while chunk := sock.recv(65536):
            received += chunk
    response = parse_response(received)
    assert response.body == b'before-gate\nreleased\n'
    assert response.complete
