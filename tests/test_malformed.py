"""Malformed and ambiguous requests: the right status, `Connection: close`, a closed socket and an app that never ran.

Every case is sent over a raw socket to a real `rustwsgi serve proto:record` process. The `record` app writes
`APP-RAN <method> <path>` to stderr, so after each case a sentinel request proves both that the server still serves and
that the rejected request never reached the app.

Transfer-Encoding decisions (RFC 9112):
  * §6.3 rule 4: a request whose Transfer-Encoding does not end in `chunked` cannot be framed; the server MUST answer
    400 and close. That covers `chunked, gzip`, `identity` and a lone unknown coding such as `zzz` (§6.1's 501 is only
    a SHOULD, the 400 here is a MUST, so the MUST wins when both apply).
  * §7.1: chunked must not be applied twice, so `chunked, chunked` is malformed: 400.
  * §6.1: when the framing is known (final coding `chunked`) but an earlier coding is one rustwsgi does not implement
    (`gzip, chunked`, `foo, chunked`: it implements only chunked), the server SHOULD answer 501 Not Implemented.
  * §6.1 / §6.3 rule 3: Transfer-Encoding together with Content-Length is a smuggling vector; rustwsgi rejects with 400.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Served, start_server
from test_http11 import Conn, chunk, get, proto, stop_server

APP_RAN = proto.APP_RAN
H = 'Host: t'


def req(*lines: str | bytes, body: bytes = b'') -> bytes:
    """Join request lines with CRLF, end the head, append `body`."""
    raw = b''.join((line if isinstance(line, bytes) else line.encode('latin-1')) + b'\r\n' for line in lines)
    return raw + b'\r\n' + body


def post(*headers: str | bytes, body: bytes = b'') -> bytes:
    """A POST to /PATH with a Host header and the given extra header lines."""
    return req('POST /PATH HTTP/1.1', H, *headers, body=body)


def chunked_post(body: bytes) -> bytes:
    """A chunked POST to /PATH whose (possibly broken) chunked body is `body`."""
    return post('Transfer-Encoding: chunked', body=body)


# (id, request with `/PATH` as the target, status, whether the error is visible in the head alone)
CASES = [
    # Request line syntax.
    ('request-line-http09', req('GET /PATH'), 400, True),
    ('request-line-double-space', req('GET  /PATH HTTP/1.1', H), 400, True),
    ('request-line-lowercase-version', req('GET /PATH http/1.1', H), 400, True),
    ('request-line-bad-version-digits', req('GET /PATH HTTP/1.x', H), 400, True),
    ('request-line-missing-target', req('GET HTTP/1.1', H), 400, True),
    ('request-line-bad-method-token', req('G@T /PATH HTTP/1.1', H), 400, True),
    ('request-line-space-in-target', req('GET /PATH/a b HTTP/1.1', H), 400, True),
    ('request-line-nul-in-target', req(b'GET /PATH\x00 HTTP/1.1', H), 400, True),
    ('request-line-ctl-in-target', req(b'GET /PATH\x1b HTTP/1.1', H), 400, True),
    ('request-line-bare-lf', req(b'GET /PATH HTTP/1.1\nHost: t'), 400, True),
    ('tls-handshake-bytes', b'\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + bytes(32) + b'\r\n\r\n', 400, True),
    # Header syntax.
    ('header-without-colon', req('GET /PATH HTTP/1.1', H, 'X-Bad'), 400, True),
    ('header-empty-name', req('GET /PATH HTTP/1.1', H, ': value'), 400, True),
    ('header-name-bad-char', req('GET /PATH HTTP/1.1', H, 'X@Bad: 1'), 400, True),
    ('header-name-nul', req(b'GET /PATH HTTP/1.1', H, b'X\x00Bad: 1'), 400, True),
    # RFC 9112 §5.1: no whitespace is allowed between the field name and the colon; a server MUST reject with 400.
    ('space-before-colon', req('GET /PATH HTTP/1.1', H, 'X-Bad : 1'), 400, True),
    ('tab-before-colon', req('GET /PATH HTTP/1.1', H, 'X-Bad\t: 1'), 400, True),
    ('bare-cr-in-header-value', req('GET /PATH HTTP/1.1', H, b'X-Bad: a\rb'), 400, True),
    ('bare-cr-as-line-end', req('GET /PATH HTTP/1.1', b'Host: t\rX-Bad: 1'), 400, True),
    ('bare-lf-as-line-end', req('GET /PATH HTTP/1.1', b'Host: t\nX-Bad: 1'), 400, True),
    ('obs-fold-space', req('GET /PATH HTTP/1.1', H, 'X-Folded: one', ' two'), 400, True),
    ('obs-fold-tab', req('GET /PATH HTTP/1.1', H, 'X-Folded: one', '\ttwo'), 400, True),
    ('whitespace-line-before-first-header', req('GET /PATH HTTP/1.1', ' Host: t'), 400, True),
    ('nul-in-header-value', req('GET /PATH HTTP/1.1', H, b'X-Bad: a\x00b'), 400, True),
    ('ctl-in-header-value', req('GET /PATH HTTP/1.1', H, b'X-Bad: a\x01b'), 400, True),
    ('esc-in-header-value', req('GET /PATH HTTP/1.1', H, b'X-Bad: a\x1bb'), 400, True),
    ('del-in-header-value', req('GET /PATH HTTP/1.1', H, b'X-Bad: a\x7fb'), 400, True),
    # Host (RFC 9112 §3.2: 400 for a 1.1 request without Host, with more than one, or with an invalid value).
    ('missing-host', req('GET /PATH HTTP/1.1'), 400, True),
    ('duplicate-host-differ', req('GET /PATH HTTP/1.1', 'Host: a', 'Host: b'), 400, True),
    ('duplicate-host-identical', req('GET /PATH HTTP/1.1', H, H), 400, True),
    ('host-invalid-value', req('GET /PATH HTTP/1.1', 'Host: a b'), 400, True),
    # Content-Length (RFC 9112 §6.3 rule 5: invalid -> 400 and close).
    ('cl-and-te', post('Content-Length: 5', 'Transfer-Encoding: chunked', body=chunk(b'hello')), 400, True),
    ('te-and-cl', post('Transfer-Encoding: chunked', 'Content-Length: 5', body=chunk(b'hello')), 400, True),
    ('cl-duplicates-differ', post('Content-Length: 5', 'Content-Length: 6', body=b'hello!'), 400, True),
    ('cl-list-differs', post('Content-Length: 5, 6', body=b'hello!'), 400, True),
    ('cl-negative', post('Content-Length: -5', body=b'hello'), 400, True),
    ('cl-plus-sign', post('Content-Length: +5', body=b'hello'), 400, True),
    ('cl-non-digit', post('Content-Length: 5x', body=b'hello'), 400, True),
    ('cl-hex', post('Content-Length: 0x5', body=b'hello'), 400, True),
    ('cl-empty', post('Content-Length:', body=b'hello'), 400, True),
    ('cl-inner-space', post('Content-Length: 1 2', body=b'x' * 12), 400, True),
    # Chunked framing (RFC 9112 §7.1).
    ('chunk-size-not-hex', chunked_post(b'zz\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-size-negative', chunked_post(b'-5\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-size-hex-prefix', chunked_post(b'0x5\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-size-overflow', chunked_post(b'fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-size-missing', chunked_post(b'\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-size-bare-lf', chunked_post(b'5\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-data-longer-than-size', chunked_post(b'3\r\nhello\r\n0\r\n\r\n'), 400, False),
    ('chunk-data-without-crlf', chunked_post(b'5\r\nhelloXX0\r\n\r\n'), 400, False),
    # Transfer codings: see the module docstring for 400 versus 501.
    ('te-chunked-not-final', post('Transfer-Encoding: chunked, gzip', body=chunk(b'hello')), 400, True),
    ('te-unknown-only', post('Transfer-Encoding: zzz', body=b'hello'), 400, True),
    ('te-identity-only', post('Transfer-Encoding: identity', body=b'hello'), 400, True),
    ('te-chunked-twice', post('Transfer-Encoding: chunked, chunked', body=chunk(b'hello')), 400, True),
    ('te-gzip-then-chunked', post('Transfer-Encoding: gzip, chunked', body=chunk(b'hello')), 501, True),
    ('te-unknown-then-chunked', post('Transfer-Encoding: foo, chunked', body=chunk(b'hello')), 501, True),
    # Default limits: request line 8190 bytes, one field 8190 bytes, 100 fields.
    ('request-line-too-long', req('GET /PATH/' + 'a' * 9000 + ' HTTP/1.1', H), 414, True),
    ('header-field-too-large', req('GET /PATH HTTP/1.1', H, 'X-Big: ' + 'b' * 9000), 431, True),
    ('too-many-header-fields', req('GET /PATH HTTP/1.1', H, *[f'X-H-{i}: {i}' for i in range(120)]), 431, True),
]


@pytest.fixture(scope='module')
def server() -> Iterator[Served]:
    """One `proto:record` server with default settings, shared by the table-driven tests of this module."""
    served = start_server('proto:record')
    yield served
    stop_server(served)


@pytest.fixture(scope='module')
def limited() -> Iterator[Served]:
    """A `proto:record` server started with small request limits."""
    served = start_server(
        'proto:record',
        '--limit-request-body',
        '100',
        '--limit-request-line',
        '200',
        '--limit-request-field_size',
        '200',
        '--limit-request-fields',
        '10',
    )
    yield served
    stop_server(served)


def assert_rejected(conn: Conn, status: int) -> None:
    """The next response has `status` and `Connection: close`, and the server then closes the connection."""
    response = conn.read_response()
    assert response.status == status, f'expected {status}, got {response.status} {response.reason}'
    assert 'close' in response.tokens('Connection'), f'no Connection: close in {response.headers}'
    # RFC 9110 §6.6.1: an origin server with a clock MUST send Date in every 2xx, 3xx and 4xx response.
    if status < 500:
        assert response.get('Date'), f'no Date in {response.headers}'
    conn.assert_closed()


def assert_app_never_saw(served: Served, path: str, sentinel: str) -> None:
    """The server still answers (sentinel request) and its app was never called for `path`."""
    with Conn(served.port) as conn:
        conn.send(get(sentinel, 'HTTP/1.1', 'Connection: close'))
        response = conn.read_response()
        assert (response.status, response.get('X-Path')) == (200, sentinel)
    log = served.wait_for_log(f'{APP_RAN} GET {sentinel}\n')
    assert f' {path}\n' not in log, f'the app ran for the rejected request {path}'


@pytest.mark.parametrize(
    ('request_bytes', 'status', 'head_error'), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_request_is_rejected_and_closed(server, request, request_bytes, status, head_error):
    case = request.node.callspec.id
    path = f'/bad/{case}'
    with Conn(server.port) as conn:
        conn.send_pieces([request_bytes.replace(b'/PATH', path.encode())])
        assert_rejected(conn, status)
    if head_error:
        assert_app_never_saw(server, path, f'/sentinel/{case}')


@pytest.mark.parametrize(
    ('request_bytes', 'status', 'head_error'), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_request_after_a_valid_one_on_the_same_connection(server, request, request_bytes, status, head_error):
    case = request.node.callspec.id
    path = f'/bad-second/{case}'
    with Conn(server.port) as conn:
        conn.send_pieces([get(f'/ok/{case}') + request_bytes.replace(b'/PATH', path.encode())])
        first = conn.read_response()
        assert (first.status, first.get('X-Path')) == (200, f'/ok/{case}')
        assert_rejected(conn, status)
    if head_error:
        assert_app_never_saw(server, path, f'/sentinel-second/{case}')


# Ambiguously framed requests followed, in the same write, by a request that must never be served.
SMUGGLED = b'GET /SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n'
SMUGGLING = [
    ('cl-te', post('Content-Length: 5', 'Transfer-Encoding: chunked', body=b'0\r\n\r\n'), 400),
    ('te-cl', post('Transfer-Encoding: chunked', 'Content-Length: 3', body=b'8\r\nSMUGGLED\r\n0\r\n\r\n'), 400),
    ('cl-cl', post('Content-Length: 0', 'Content-Length: 38'), 400),
    ('cl-plus', post('Content-Length: +0'), 400),
    ('te-xchunked-cl', post('Transfer-Encoding: xchunked', 'Content-Length: 5', body=b'0\r\n\r\n'), 400),
    ('te-space-before-colon', post('Transfer-Encoding : chunked', 'Content-Length: 5', body=b'0\r\n\r\n'), 400),
    ('te-obs-fold', post('Transfer-Encoding:', ' chunked', 'Content-Length: 5', body=b'0\r\n\r\n'), 400),
    ('te-vertical-tab', post(b'Transfer-Encoding: \x0bchunked', 'Content-Length: 5', body=b'0\r\n\r\n'), 400),
    ('te-chunked-identity', post('Transfer-Encoding: chunked', 'Transfer-Encoding: identity', body=b'0\r\n\r\n'), 400),
    ('chunk-size-overflow', chunked_post(b'10000000000000005\r\nhello\r\n0\r\n\r\n'), 400),
    ('chunk-ext-bare-lf', chunked_post(b'5;a\nb\r\nhello\r\n0\r\n\r\n'), 400),
    ('last-chunk-bare-lf', chunked_post(b'5\r\nhello\r\n0\n\n'), 400),
]


@pytest.mark.parametrize(('request_bytes', 'status'), [c[1:] for c in SMUGGLING], ids=[c[0] for c in SMUGGLING])
def test_request_after_ambiguous_framing_is_never_served(server, request, request_bytes, status):
    case = request.node.callspec.id
    smuggled = f'/smuggled/{case}'
    with Conn(server.port) as conn:
        conn.send(
            request_bytes.replace(b'/PATH', f'/front/{case}'.encode())
            + SMUGGLED.replace(b'/SMUGGLED', smuggled.encode())
        )
        assert_rejected(conn, status)
    assert_app_never_saw(server, smuggled, f'/sentinel-smuggling/{case}')


# -- limits set on the command line ---------------------------------------------------------------------------------


def test_body_over_limit_by_content_length_is_413_before_the_app_runs(limited):
    # Only the head is sent: the declared length alone must trigger 413, without the app being called.
    with Conn(limited.port) as conn:
        conn.send(b'POST /too-big HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n')
        assert_rejected(conn, 413)
    assert_app_never_saw(limited, '/too-big', '/sentinel/too-big')


def test_body_over_limit_chunked_is_413_before_the_app_runs(limited):
    with Conn(limited.port) as conn:
        conn.send(b'POST /too-big-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n')
        conn.send_pieces([chunk(b'a' * 60, b'b' * 41)])
        assert_rejected(conn, 413)
    assert_app_never_saw(limited, '/too-big-chunked', '/sentinel/too-big-chunked')


@pytest.mark.parametrize(
    ('target', 'headers', 'status'),
    [
        ('/line/' + 'a' * 300, [], 414),
        ('/field', ['X-Big: ' + 'b' * 300], 431),
        ('/fields', [f'X-H-{i}: {i}' for i in range(20)], 431),
    ],
    ids=['request-line', 'field-size', 'field-count'],
)
def test_configured_head_limits(limited, request, target, headers, status):
    with Conn(limited.port) as conn:
        conn.send_pieces([get(target, 'HTTP/1.1', *headers)])
        assert_rejected(conn, status)
    assert_app_never_saw(limited, target, f'/sentinel/{request.node.callspec.id}')


@pytest.mark.parametrize(
    'request_bytes',
    [
        get('/line/' + 'a' * 120),
        get('/field', 'HTTP/1.1', 'X-Big: ' + 'b' * 120),
        get('/fields', 'HTTP/1.1', *[f'X-H-{i}: {i}' for i in range(6)]),
        get('/body', 'HTTP/1.1', method='POST', body=b'x' * 100),
        b'POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk(b'a' * 60, b'b' * 40),
    ],
    ids=['request-line', 'field-size', 'field-count', 'body-content-length', 'body-chunked'],
)
def test_requests_within_configured_limits_are_served(limited, request_bytes):
    with Conn(limited.port) as conn:
        conn.send(request_bytes)
        response = conn.read_response()
        assert response.status == 200
        expected = request_bytes.partition(b'\r\n\r\n')[2]
        if b'chunked' in request_bytes:
            expected = b'a' * 60 + b'b' * 40
        assert response.body == expected
        # Still keep-alive: nothing was wrong.
        conn.send(get('/again'))
        assert conn.read_response().status == 200


@pytest.mark.parametrize(
    'request_bytes',
    [
        get('/line/' + 'a' * 8000),
        get('/field', 'HTTP/1.1', 'X-Big: ' + 'b' * 8000),
        get('/fields', 'HTTP/1.1', *[f'X-H-{i}: {i}' for i in range(90)]),
    ],
    ids=['request-line', 'field-size', 'field-count'],
)
def test_requests_within_default_limits_are_served(server, request_bytes):
    with Conn(server.port) as conn:
        conn.send(request_bytes)
        assert conn.read_response().status == 200
