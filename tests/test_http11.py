"""HTTP/1.1 framing and connection management (RFC 9112), checked byte for byte over raw sockets.

The `Conn` client below is deliberately strict: it parses exactly one response at a time with the framing rules of
RFC 9112 §6.3, so a server that sends a stray body byte, a wrong chunk or an extra response makes the *next* read fail.
`test_malformed.py` and `test_corpus.py` import it from here.
"""

from __future__ import annotations

import email.utils
import importlib.util
import json
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Served

APPS_DIR = Path(__file__).parent / 'apps'


def load_app_module(name: str) -> ModuleType:
    """Import `tests/apps/<name>.py` (on the server's PYTHONPATH, not on the test process's sys.path)."""
    spec = importlib.util.spec_from_file_location(f'apps_{name}', APPS_DIR / f'{name}.py')
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


proto = load_app_module('proto')
HELLO = proto.HELLO
STREAM_CHUNKS = proto.STREAM_CHUNKS

HOST = '127.0.0.1'
# Sent after a response on a connection the server should have closed: a live connection would answer it.
PROBE = b'GET /probe-after-close HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n'
STATUS_LINE = re.compile(rb'(HTTP/1\.[01]) ([1-5][0-9][0-9]) ([\t \x21-\x7e\x80-\xff]*)')
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb'[\t \x21-\x7e\x80-\xff]*')
CHUNK_SIZE_LINE = re.compile(rb'([0-9A-Fa-f]+)(;[^\r\n]*)?')
IMF_FIXDATE = re.compile(
    r'(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} '
    r'\d\d:\d\d:\d\d GMT'
)


@dataclass
class Response:
    """One parsed HTTP response."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b''
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def get_all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        """The values of header `name` joined with ', ', or None when absent."""
        values = self.get_all(name)
        return ', '.join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """Lower-cased comma-separated tokens of a list header such as Connection."""
        return {part.strip().lower() for value in self.get_all(name) for part in value.split(',') if part.strip()}


class Conn:
    """A blocking raw-socket HTTP/1.x client that keeps unread bytes between responses."""

    def __init__(self, port: int, timeout: float = 10.0, host: str = HOST) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.eof = False

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client side."""
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send all of `data`."""
        self.sock.sendall(data)

    def send_pieces(self, pieces: Iterable[bytes], pause: float = 0.0) -> bool:
        """Send `pieces` one by one (pausing between them); False if the server closed before all were sent."""
        for piece in pieces:
            try:
                self.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return False
            if pause:
                time.sleep(pause)
        return True

    def _recv(self) -> bytes:
        if self.eof:
            return b''
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f'timed out waiting for the server; unread bytes: {self.buf[:300]!r}') from None
        except ConnectionResetError:
            chunk = b''
        if not chunk:
            self.eof = True
        return chunk

    def _fill(self, what: str) -> None:
        chunk = self._recv()
        if not chunk:
            raise AssertionError(f'connection closed while reading {what}; unread bytes: {self.buf[:300]!r}')
        self.buf += chunk

    def read_until(self, separator: bytes, what: str = 'a line') -> bytes:
        """Bytes up to and including `separator`."""
        while separator not in self.buf:
            self._fill(what)
        index = self.buf.index(separator) + len(separator)
        data, self.buf = self.buf[:index], self.buf[index:]
        return data

    def read_exact(self, size: int, what: str = 'a body') -> bytes:
        """Exactly `size` bytes."""
        while len(self.buf) < size:
            self._fill(what)
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_to_eof(self) -> bytes:
        """Everything until the server closes; fails if it does not close within the socket timeout."""
        while not self.eof:
            self.buf += self._recv()
        data, self.buf = self.buf, b''
        return data

    def at_eof(self) -> bool:
        """True when the server closed and no unread byte is left; waits for at least one byte otherwise."""
        if not self.buf:
            self.buf += self._recv()
        return self.eof and not self.buf

    def read_head(self) -> Response:
        """Status line and header fields of the next response; checks their syntax."""
        head = self.read_until(b'\r\n\r\n', 'a response head')
        lines = head[:-4].split(b'\r\n')
        match = STATUS_LINE.fullmatch(lines[0])
        assert match, f'malformed status line {lines[0]!r}'
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b':')
            assert colon and TOKEN.fullmatch(name), f'malformed response header line {line!r}'
            value = value.strip(b' \t')
            assert FIELD_VALUE.fullmatch(value), f'bad bytes in response header value {line!r}'
            headers.append((name.decode('latin-1'), value.decode('latin-1')))
        return Response(match[1].decode(), int(match[2]), match[3].decode('latin-1'), headers)

    def read_response(self, method: str = 'GET') -> Response:
        """The next response (interim 1xx ones included), with its body framed per RFC 9112 §6.3."""
        response = self.read_head()
        te = response.tokens('Transfer-Encoding')
        lengths = response.get_all('Content-Length')
        # RFC 9112 §6.2: a sender MUST NOT send Content-Length together with Transfer-Encoding.
        assert not (te and lengths), f'response has both Transfer-Encoding and Content-Length: {response.headers}'
        assert len(set(lengths)) <= 1, f'conflicting Content-Length in response: {lengths}'
        if method == 'HEAD' or response.status < 200 or response.status in (204, 304):
            return response
        if te:
            assert response.get_all('Transfer-Encoding')[-1].lower().split(',')[-1].strip() == 'chunked', response
            assert response.version == 'HTTP/1.1', 'chunked response on an HTTP/1.0 status line'
            response.chunked = True
            response.body, response.trailers = self._read_chunked()
        elif lengths:
            assert lengths[0].isdigit(), f'bad Content-Length {lengths[0]!r}'
            response.body = self.read_exact(int(lengths[0]))
        else:
            response.body = self.read_to_eof()
        return response

    def read_final(self, method: str = 'GET') -> tuple[list[Response], Response]:
        """Interim (1xx) responses and the final one."""
        interim = []
        while True:
            response = self.read_response(method)
            if response.status >= 200:
                return interim, response
            interim.append(response)

    def _read_chunked(self) -> tuple[bytes, list[tuple[str, str]]]:
        parts = []
        while True:
            line = self.read_until(b'\r\n', 'a chunk size line')[:-2]
            match = CHUNK_SIZE_LINE.fullmatch(line)
            assert match, f'malformed chunk size line {line!r}'
            size = int(match[1], 16)
            if size == 0:
                break
            parts.append(self.read_exact(size, 'chunk data'))
            assert self.read_exact(2, 'the CRLF after chunk data') == b'\r\n', 'chunk data not followed by CRLF'
        trailers = []
        while True:
            line = self.read_until(b'\r\n', 'a trailer line')[:-2]
            if not line:
                return b''.join(parts), trailers
            name, colon, value = line.partition(b':')
            assert colon and TOKEN.fullmatch(name), f'malformed trailer {line!r}'
            trailers.append((name.decode('latin-1'), value.strip(b' \t').decode('latin-1')))

    def assert_closed(self) -> None:
        """The server must have closed: no byte is left and a probe request gets no answer, only EOF."""
        try:
            self.sock.sendall(PROBE)
        except (BrokenPipeError, ConnectionResetError):
            pass
        rest = self.read_to_eof()
        assert rest == b'', f'server kept the connection open and sent {rest[:300]!r}'


def stop_server(served: Served) -> None:
    """Stop a server started with `conftest.start_server` and close its stderr pipe (no ResourceWarning)."""
    served.stop()
    if served.proc.stderr is not None:
        served.proc.stderr.close()


def get(path: str = '/', version: str = 'HTTP/1.1', *headers: str, method: str = 'GET', body: bytes = b'') -> bytes:
    """Build a request; `Host` is added for HTTP/1.1, `Content-Length` when a body is given."""
    lines = [f'{method} {path} {version}']
    if version == 'HTTP/1.1':
        lines.append('Host: test.local')
    if body:
        lines.append(f'Content-Length: {len(body)}')
    lines.extend(headers)
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


def chunk(*parts: bytes, trailer: bytes = b'') -> bytes:
    """Encode `parts` with the chunked transfer coding."""
    out = b''.join(b'%x\r\n%s\r\n' % (len(part), part) for part in parts)
    return out + b'0\r\n' + trailer + b'\r\n'


# -- keep-alive and pipelining ------------------------------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_connection(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        for _ in range(2):
            conn.send(get('/'))
            response = conn.read_response()
            assert (response.version, response.status, response.body) == ('HTTP/1.1', 200, HELLO)
            assert 'close' not in response.tokens('Connection')
        assert conn.buf == b''


def test_keep_alive_zero_answers_one_request_per_connection(serve):
    """`--keep-alive 0` turns keep-alive off: even a pipelined second request is not served on the connection."""
    served = serve('proto:echo', '--keep-alive', '0')
    with Conn(served.port) as conn:
        conn.send(get('/first') + get('/second'))
        response = conn.read_response()
        assert (response.status, response.get('X-Path')) == (200, '/first')
        assert 'close' in response.tokens('Connection')
        conn.assert_closed()


def test_keep_alive_many_sequential_requests_with_bodies(serve):
    served = serve('proto:echo')
    with Conn(served.port) as conn:
        for i in range(25):
            body = f'request number {i}'.encode() * (i + 1)
            conn.send(get(f'/n/{i}', 'HTTP/1.1', method='POST', body=body))
            response = conn.read_response()
            assert response.status == 200
            assert response.get('X-Path') == f'/n/{i}'
            assert response.body == body


def test_pipelined_requests_answered_in_order(serve):
    served = serve('proto:echo')
    requests = get('/first') + get('/second', 'HTTP/1.1', method='POST', body=b'xyz') + get('/third?x=1')
    with Conn(served.port) as conn:
        conn.send(requests)
        responses = [conn.read_response() for _ in range(3)]
        assert [r.get('X-Path') for r in responses] == ['/first', '/second', '/third']
        assert [r.get('X-Method') for r in responses] == ['GET', 'POST', 'GET']
        assert [r.body for r in responses] == [b'', b'xyz', b'']
        # The connection is still usable after the pipeline drained.
        conn.send(get('/fourth'))
        assert conn.read_response().get('X-Path') == '/fourth'


def test_pipelined_responses_keep_order_when_the_first_is_slow(serve):
    served = serve('proto:slow', '--threads', '4')
    with Conn(served.port) as conn:
        conn.send(get('/slow') + get('/fast-1') + get('/fast-2'))
        assert [conn.read_response().body for _ in range(3)] == [b'/slow', b'/fast-1', b'/fast-2']


def test_unread_request_body_does_not_become_the_next_request(serve):
    # The `slow` app answers with its path and never reads the body. The server must skip (drain) that body or
    # close the connection: never parse it as the next request.
    served = serve('proto:slow')
    sneaky = b'GET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n'
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.1', method='POST', body=sneaky) + get('/again'))
        first = conn.read_response()
        assert (first.status, first.body) == (200, b'/')
        if 'close' in first.tokens('Connection'):
            conn.assert_closed()
            return
        second = conn.read_response()
        assert (second.status, second.body) == (200, b'/again')


# -- request bodies -----------------------------------------------------------------------------------------------


def test_chunked_request_body_is_decoded_and_input_terminated(serve):
    served = serve('proto:environ_dump')
    body = chunk(b'hello', b', ', b'chunked world', trailer=b'X-Checksum: abc\r\n')
    request = b'POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' + body
    with Conn(served.port) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == 200
        payload = json.loads(response.body)
        assert payload['body'] == 'hello, chunked world'
        assert payload['input_terminated'] is True
        assert payload['environ']['REQUEST_METHOD'] == 'POST'


def test_chunked_request_with_extensions_then_pipelined_request(serve):
    served = serve('proto:echo')
    body = b'4;ext=1\r\nabcd\r\n3 ; q="x;y"\r\nefg\r\n0\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n'
    request = b'POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' + body
    with Conn(served.port) as conn:
        conn.send(request + get('/after'))
        first = conn.read_response()
        assert (first.status, first.body, first.get('X-Path')) == (200, b'abcdefg', '/c')
        second = conn.read_response()
        assert (second.status, second.body, second.get('X-Path')) == (200, b'', '/after')


def test_large_chunked_request_body(serve):
    served = serve('proto:echo')
    data = bytes(range(256)) * 1024  # 256 KiB: more than any in-memory buffering threshold
    parts = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    with Conn(served.port, timeout=30) as conn:
        conn.send(b'POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk(*parts))
        response = conn.read_response()
        assert response.status == 200
        assert response.body == data


def test_large_content_length_request_body(serve):
    served = serve('proto:echo')
    data = b'0123456789abcdef' * 65536  # 1 MiB
    with Conn(served.port, timeout=30) as conn:
        conn.send(get('/big', 'HTTP/1.1', method='POST', body=data))
        response = conn.read_response()
        assert (response.status, len(response.body)) == (200, len(data))
        assert response.body == data


def test_expect_100_continue_gets_interim_response_before_body_is_sent(serve):
    served = serve('proto:echo')
    with Conn(served.port) as conn:
        conn.send(b'POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n')
        interim = conn.read_response()
        assert (interim.version, interim.status) == ('HTTP/1.1', 100)
        assert interim.reason == 'Continue'
        conn.send(b'hello there')
        final = conn.read_response()
        assert (final.status, final.body) == (200, b'hello there')
        conn.send(get('/next'))
        assert conn.read_response().get('X-Path') == '/next'


def test_expect_100_continue_when_the_app_never_reads_the_body(serve):
    # `slow` answers with its path and ignores the body. Whether or not 100 Continue is sent, the body the client
    # then sends must be discarded (or the connection closed): it must never be parsed as a request.
    served = serve('proto:slow')
    sneaky = b'GET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n'
    with Conn(served.port) as conn:
        conn.send(
            b'POST /first HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n'
            + f'Content-Length: {len(sneaky)}\r\n\r\n'.encode()
        )
        response = conn.read_response()
        if response.status == 100:
            conn.send(sneaky)
            response = conn.read_response()
        else:
            conn.send_pieces([sneaky])
        assert (response.status, response.body) == (200, b'/first')
        conn.send_pieces([get('/second')])
        if 'close' in response.tokens('Connection'):
            assert conn.read_to_eof() == b''
            return
        following = conn.read_response()
        assert (following.status, following.body) == (200, b'/second')


def test_expect_100_continue_with_chunked_body(serve):
    served = serve('proto:echo')
    with Conn(served.port) as conn:
        conn.send(b'PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n')
        assert conn.read_response().status == 100
        conn.send(chunk(b'abc', b'def'))
        final = conn.read_response()
        assert (final.status, final.body) == (200, b'abcdef')


def test_expect_100_continue_is_ignored_for_http10(serve):
    # RFC 9110 §10.1.1: a server that receives 100-continue in an HTTP/1.0 request MUST ignore that expectation.
    served = serve('proto:echo')
    with Conn(served.port) as conn:
        conn.send(b'POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody')
        response = conn.read_response()
        assert (response.version, response.status, response.body) == ('HTTP/1.0', 200, b'body')


# -- response framing ---------------------------------------------------------------------------------------------


def test_sized_response_uses_content_length_not_chunked(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        conn.send(get('/'))
        response = conn.read_response()
        assert response.get('Content-Length') == str(len(HELLO))
        assert response.get('Transfer-Encoding') is None
        assert response.body == HELLO


def test_unsized_generator_response_is_chunked_on_http11(serve):
    served = serve('proto:stream')
    with Conn(served.port) as conn:
        conn.send(get('/'))
        response = conn.read_response()
        assert response.status == 200
        assert response.chunked
        assert response.get('Content-Length') is None
        # A zero-size chunk for the app's empty item would end the body early; the rest would then fail to parse.
        assert response.body == b''.join(STREAM_CHUNKS)
        conn.send(get('/again'))
        assert conn.read_response().body == b''.join(STREAM_CHUNKS)


@pytest.mark.parametrize('connection', [None, 'keep-alive'])
def test_unsized_generator_response_is_close_delimited_on_http10(serve, connection):
    # HTTP/1.0 has no chunked coding: the body ends when the connection closes, even if keep-alive was asked for.
    served = serve('proto:stream')
    extra = [f'Connection: {connection}'] if connection else []
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.0', *extra))
        head = conn.read_head()
        assert (head.version, head.status) == ('HTTP/1.0', 200)
        assert head.get('Transfer-Encoding') is None
        assert head.get('Content-Length') is None
        assert 'keep-alive' not in head.tokens('Connection')
        assert conn.read_to_eof() == b''.join(STREAM_CHUNKS)


def test_head_response_has_no_body_and_connection_stays_usable(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.1', method='HEAD') + get('/'))
        head = conn.read_response('HEAD')
        assert head.status == 200
        # RFC 9110 §9.3.2: Content-Length may be sent for HEAD, and then must equal what GET would send.
        assert head.get('Content-Length') in (None, str(len(HELLO)))
        following = conn.read_response()
        assert (following.status, following.body) == (200, HELLO)


def test_head_on_generator_response_sends_no_chunk_framing(serve):
    served = serve('proto:stream')
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.1', method='HEAD'))
        assert conn.read_response('HEAD').status == 200
        conn.send(get('/'))
        following = conn.read_response()
        assert (following.status, following.body) == (200, b''.join(STREAM_CHUNKS))


@pytest.mark.parametrize('code', [204, 304])
def test_204_and_304_responses_carry_no_body(serve, code):
    served = serve('proto:status')
    with Conn(served.port) as conn:
        conn.send(get(f'/{code}') + get('/200'))
        response = conn.read_response()
        assert response.status == code
        if code == 204:
            # RFC 9110 §8.6 and RFC 9112 §6.1: no Content-Length or Transfer-Encoding in a 204.
            assert response.get('Content-Length') is None
            assert response.get('Transfer-Encoding') is None
        following = conn.read_response()
        assert following.status == 200
        assert following.body == b'this body must never reach the client'


@pytest.mark.parametrize(('method', 'path'), [('HEAD', '/200/head'), ('GET', '/204/x'), ('GET', '/304/x')])
def test_bodiless_responses_still_close_the_iterable(serve, method, path):
    served = serve('proto:tracked')
    with Conn(served.port) as conn:
        conn.send(get(path, 'HTTP/1.1', method=method) + get('/200/after'))
        assert conn.read_response(method).body == b''
        assert conn.read_response().body == b'tracked body'
    served.wait_for_log(f'CLOSED {method} {path}\n')


def test_head_with_start_response_called_inside_the_generator(serve):
    served = serve('proto:lazy')
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.1', method='HEAD') + get('/'))
        head = conn.read_response('HEAD')
        assert (head.status, head.get('X-Lazy')) == (200, 'yes')
        following = conn.read_response()
        assert (following.status, following.body) == (200, b'lazy body')


def test_empty_generator_response_then_keep_alive(serve):
    served = serve('proto:stream')
    with Conn(served.port) as conn:
        conn.send(get('/empty') + get('/'))
        empty = conn.read_response()
        assert (empty.status, empty.body) == (200, b'')
        assert conn.read_response().body == b''.join(STREAM_CHUNKS)


def test_never_more_bytes_than_content_length_single_chunk(serve):
    served = serve('proto:overflow')
    with Conn(served.port) as conn:
        conn.send(get('/one', 'HTTP/1.1', 'Connection: close'))
        head = conn.read_head()
        assert head.get('Content-Length') == str(proto.OVER_DECLARED)
        assert conn.read_to_eof() == proto.OVER_BODY


def test_never_more_bytes_than_content_length_generator(serve):
    served = serve('proto:overflow')
    with Conn(served.port) as conn:
        conn.send(get('/gen', 'HTTP/1.1', 'Connection: close'))
        head = conn.read_head()
        assert head.get('Content-Length') == str(proto.OVER_DECLARED)
        assert conn.read_to_eof() == proto.OVER_BODY


@pytest.mark.parametrize('path', ['/one', '/gen'])
def test_content_length_overflow_does_not_corrupt_keep_alive(serve, path):
    served = serve('proto:overflow')
    with Conn(served.port) as conn:
        conn.send(get(path) + get(path, 'HTTP/1.1', 'Connection: close'))
        first = conn.read_response()
        assert (first.status, first.body) == (200, proto.OVER_BODY)
        # Closing after truncating is allowed; otherwise the next bytes must be the second response, not the extra.
        if not conn.at_eof():
            second = conn.read_response()
            assert (second.status, second.body) == (200, proto.OVER_BODY)
            assert conn.read_to_eof() == b''


def test_content_length_shortfall_closes_the_connection(serve):
    served = serve('proto:shortfall')
    with Conn(served.port) as conn:
        conn.send(get('/'))
        head = conn.read_head()
        assert head.get('Content-Length') == str(proto.SHORT_DECLARED)
        assert conn.read_exact(len(proto.SHORT_BODY)) == proto.SHORT_BODY
        conn.assert_closed()


# -- HTTP/1.0 and Connection handling -----------------------------------------------------------------------------


def test_http10_request_gets_http10_status_line_and_close(serve, raw):
    served = serve('proto:hello')
    # The second request is pipelined: a server that wrongly keeps a 1.0 connection alive would answer it too.
    data = raw(served.port, get('/', 'HTTP/1.0') + get('/again', 'HTTP/1.0'))
    assert data.startswith(b'HTTP/1.0 200 ')
    assert data.count(b'HTTP/1.') == 1
    assert data.endswith(b'\r\n\r\n' + HELLO)


def test_http10_without_keep_alive_closes(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.0'))
        response = conn.read_response()
        assert (response.version, response.status, response.body) == ('HTTP/1.0', 200, HELLO)
        assert 'keep-alive' not in response.tokens('Connection')
        conn.assert_closed()


def test_http10_keep_alive_on_request(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        for _ in range(3):
            conn.send(get('/', 'HTTP/1.0', 'Connection: keep-alive'))
            response = conn.read_response()
            assert (response.version, response.status, response.body) == ('HTTP/1.0', 200, HELLO)
            # RFC 9112 §9.3 / RFC 2068 §19.7.1: an HTTP/1.0 persistent response says keep-alive explicitly.
            assert 'keep-alive' in response.tokens('Connection')
        conn.send(get('/', 'HTTP/1.0'))
        assert conn.read_response().body == HELLO
        conn.assert_closed()


def test_client_connection_close_is_honoured(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        # The pipelined second request must never be answered.
        conn.send(get('/', 'HTTP/1.1', 'Connection: close') + get('/second'))
        response = conn.read_response()
        assert (response.status, response.body) == (200, HELLO)
        # RFC 9112 §9.6: the server SHOULD send "close" in its final response; rustwsgi always does.
        assert 'close' in response.tokens('Connection')
        conn.assert_closed()


def test_connection_close_token_in_a_list(serve):
    served = serve('proto:hello')
    with Conn(served.port) as conn:
        conn.send(get('/', 'HTTP/1.1', 'Connection: TE, Close'))
        assert conn.read_response().body == HELLO
        conn.assert_closed()


def test_app_connection_close_is_honoured(serve):
    served = serve('proto:closing')
    with Conn(served.port) as conn:
        conn.send(get('/'))
        response = conn.read_response()
        assert (response.status, response.body) == (200, b'bye!\r\n')
        assert 'close' in response.tokens('Connection')
        assert 'keep-alive' not in response.tokens('Connection')
        conn.assert_closed()


# -- standard response headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize('app', ['hello', 'stream'])
def test_date_and_server_headers(serve, app):
    served = serve(f'proto:{app}')
    with Conn(served.port) as conn:
        conn.send(get('/'))
        response = conn.read_response()
    dates = response.get_all('Date')
    assert len(dates) == 1
    assert IMF_FIXDATE.fullmatch(dates[0]), dates[0]
    assert email.utils.parsedate_to_datetime(dates[0]).utcoffset().total_seconds() == 0
    servers = response.get_all('Server')
    assert len(servers) == 1
    assert servers[0].startswith('rustwsgi')


def test_status_reason_phrase_is_kept(serve):
    served = serve('proto:status')
    with Conn(served.port) as conn:
        conn.send(get('/204'))
        response = conn.read_response()
        assert (response.status, response.reason) == (204, 'No Content')
