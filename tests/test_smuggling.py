"""Request-smuggling classes fixed in other servers' advisories (gunicorn CVE-2024-1135 and CVE-2024-6827,
waitress CVE-2022-24761, CVE-2024-49768 and CVE-2024-49769, the HTTP Garden findings): each is refused with its
status and `Connection: close`, never reaches the app, and nothing sent after it on the connection is served."""

from __future__ import annotations

import socket

import pytest
from conftest import raw_request

FOLLOW_UP = b'GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n'


def post(*headers: str, body: bytes = b'', version: str = 'HTTP/1.1') -> bytes:
    head = '\r\n'.join([f'POST /x {version}', 'Host: t', *headers]) + '\r\n\r\n'
    return head.encode('latin-1') + body


def chunked(body: bytes) -> bytes:
    return post('Transfer-Encoding: chunked', body=body)


CASES = [
    ('te-on-http10', post('Transfer-Encoding: chunked', body=b'5\r\nhello\r\n0\r\n\r\n', version='HTTP/1.0'), 400),
    ('cl-leading-zeros', post('Content-Length: 005', body=b'hello'), 400),
    ('cl-identical-duplicates', post('Content-Length: 5', 'Content-Length: 5', body=b'hello'), 400),
    ('cl-identical-list', post('Content-Length: 5, 5', body=b'hello'), 400),
    ('cl-huge', post('Content-Length: 99999999999999999999', body=b'hello'), 400),
    ('te-chunked-then-identity-header', post('Transfer-Encoding: chunked', 'Transfer-Encoding: identity'), 400),
    ('te-with-space-inside', post('Transfer-Encoding: chun ked', body=b'0\r\n\r\n'), 400),
    ('chunk-size-underscore', chunked(b'1_0\r\n' + b'x' * 16 + b'\r\n0\r\n\r\n'), 400),
    ('chunk-size-empty', chunked(b'\r\nhello\r\n0\r\n\r\n'), 400),
    ('chunk-size-leading-space', chunked(b' 5\r\nhello\r\n0\r\n\r\n'), 400),
    ('chunk-size-17-digits', chunked(b'00000000000000005\r\nhello\r\n0\r\n\r\n'), 400),
    ('chunk-missing-crlf-after-data', chunked(b'5\r\nhelloX\r\n0\r\n\r\n'), 400),
    ('chunk-bare-cr-after-size', chunked(b'5\rhello\r\n0\r\n\r\n'), 400),
    ('chunk-extension-too-long', chunked(b'5;' + b'e' * 5000 + b'\r\nhello\r\n0\r\n\r\n'), 400),
    ('chunk-extension-with-ctl', chunked(b'5;a\x01b\r\nhello\r\n0\r\n\r\n'), 400),
    ('trailers-too-large', chunked(b'0\r\n' + b'X-T: ' + b'v' * 9000 + b'\r\n\r\n'), 431),
    ('trailer-obs-fold', chunked(b'0\r\nX-T: a\r\n b\r\n\r\n'), 400),
    ('version-http-2', b'GET / HTTP/2.0\r\nHost: t\r\n\r\n', 400),
    ('version-http-9-9', b'GET / HTTP/9.9\r\nHost: t\r\n\r\n', 400),
    ('version-http-1-2', b'GET / HTTP/1.2\r\nHost: t\r\n\r\n', 400),
    ('method-only', b'GET\r\nHost: t\r\n\r\n', 400),
    ('method-with-slash', b'GE/T / HTTP/1.1\r\nHost: t\r\n\r\n', 400),
    ('target-relative', b'GET foo HTTP/1.1\r\nHost: t\r\n\r\n', 400),
    ('target-asterisk-for-get', b'GET * HTTP/1.1\r\nHost: t\r\n\r\n', 400),
    ('target-bad-scheme', b'GET ftp://x/y HTTP/1.1\r\nHost: t\r\n\r\n', 400),
    ('request-line-absurd', b'\x00\x01\x02 \xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n', 400),
    ('request-line-huge', b'GET /' + b'a' * 70000 + b' HTTP/1.1\r\nHost: t\r\n\r\n', 414),
]


@pytest.fixture(scope='module')
def server():
    from conftest import start_server

    served = start_server('proto:record')
    yield served
    served.stop()


@pytest.mark.parametrize(('name', 'request_bytes', 'status'), CASES, ids=[c[0] for c in CASES])
def test_smuggling_class_is_refused_and_nothing_after_it_is_served(server, name, request_bytes, status):
    response = raw_request(server.port, request_bytes + FOLLOW_UP, timeout=10)
    head = response.split(b'\r\n\r\n', 1)[0]
    assert head.startswith(f'HTTP/1.1 {status} '.encode()), f'{name}: {response[:120]!r}'
    assert b'\r\nConnection: close' in head
    # Exactly one response: the request behind the refused one is never served.
    assert response.count(b'HTTP/1.1 ') == 1, response
    assert 'APP-RAN POST /x' not in server.log()
    assert 'APP-RAN GET /smuggled' not in server.log()


BIG_CHUNK = b'%x\r\n' % 70_000 + b'x' * 70_000 + b'\r\n'  # past the 64 KiB read before the app runs

STREAMED_CASES = [
    ('streamed-chunk-size-underscore', BIG_CHUNK + b'1_0\r\n' + b'x' * 16 + b'\r\n0\r\n\r\n', 400),
    ('streamed-chunk-missing-crlf-after-data', BIG_CHUNK + b'5\r\nhelloX\r\n0\r\n\r\n', 400),
    ('streamed-chunk-size-17-digits', BIG_CHUNK + b'00000000000000005\r\nhello\r\n0\r\n\r\n', 400),
    ('streamed-over-the-body-limit', BIG_CHUNK * 2 + b'0\r\n\r\n', 413),
]


@pytest.mark.parametrize(('name', 'body', 'status'), STREAMED_CASES, ids=[c[0] for c in STREAMED_CASES])
def test_framing_error_in_a_streamed_body_is_refused_and_ends_the_connection(serve, name, body, status):
    """A chunked body too large to read up front fails the app's read where its framing breaks: the client gets
    the framing error's status (not 500), the log says why without a traceback, and nothing after it is served."""
    served = serve('proto:record', '--limit-request-body', '100000')
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        # The first chunk alone, so the app is already reading when the broken part arrives.
        sock.sendall(chunked(BIG_CHUNK))
        served.wait_for_log('APP-RAN POST /x')
        sock.sendall(body[len(BIG_CHUNK) :] + FOLLOW_UP)
        response = b''
        while chunk := sock.recv(65536):
            response += chunk
    head = response.split(b'\r\n\r\n', 1)[0]
    assert head.startswith(f'HTTP/1.1 {status} '.encode()), f'{name}: {response[:120]!r}'
    assert b'\r\nConnection: close' in head
    assert response.count(b'HTTP/1.1 ') == 1, response[:300]
    log = served.wait_for_log('Request body of POST /x failed: invalid request body')
    assert 'Traceback' not in log
