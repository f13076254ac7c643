"""A real single-file Django app (`tests/apps/django_app.py`) served unchanged by `rustwsgi serve`."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

TIMEOUT = 15


@pytest.fixture
def django_url(serve: Callable[..., Any]) -> str:
    """Base URL of a running `rustwsgi serve django_app` (the target names no attribute: `application` is used)."""
    return serve('django_app').url


def test_json_get(django_url: str) -> None:
    """A JsonResponse over a keep-alive session, several times on the same connection."""
    with requests.Session() as session:
        for index in range(3):
            response = session.get(f'{django_url}/json/', params={'q': f'caf\u00e9 {index}'}, timeout=TIMEOUT)
            assert response.status_code == 200
            assert response.headers['Content-Type'] == 'application/json'
            assert response.json() == {'hello': 'world', 'method': 'GET', 'q': f'caf\u00e9 {index}'}


def test_append_slash_redirect(django_url: str) -> None:
    """CommonMiddleware's APPEND_SLASH sees the right PATH_INFO and redirects."""
    response = requests.get(f'{django_url}/json?q=1', allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 301
    assert response.headers['Location'] == '/json/?q=1'


def test_form_post_csrf_exempt(django_url: str) -> None:
    """An urlencoded form POST to a csrf_exempt view, with repeated and non-ASCII fields."""
    fields = [('name', 'Zo\u00eb'), ('n', '42'), ('tag', 'a'), ('tag', 'b&c=d')]
    response = requests.post(f'{django_url}/form/', data=fields, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {
        'fields': {'name': ['Zo\u00eb'], 'n': ['42'], 'tag': ['a', 'b&c=d']},
        'content_type': 'application/x-www-form-urlencoded',
    }


def test_form_post_without_csrf_token_is_rejected(django_url: str) -> None:
    """The CSRF middleware runs: the same POST to a protected view gets 403."""
    response = requests.post(f'{django_url}/protected-form/', data={'a': '1'}, timeout=TIMEOUT)
    assert response.status_code == 403


@pytest.mark.parametrize('size', [1, 70_000, 3 * 1024 * 1024 + 17])
def test_multipart_upload(django_url: str, size: int) -> None:
    """A multipart upload through request.FILES arrives byte for byte (in memory and spooled to disk)."""
    data = os.urandom(size - 4) + b'\r\n--' if size > 4 else os.urandom(size)
    files = {'file': ('data.bin', data, 'application/octet-stream')}
    response = requests.post(f'{django_url}/upload/', files=files, data={'note': 'hi there'}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {
        'filename': 'data.bin',
        'size': len(data),
        'sha256': hashlib.sha256(data).hexdigest(),
        'note': 'hi there',
    }


def test_small_chunked_request_body(django_url: str) -> None:
    """A small chunked body reaches request.body (Django needs CONTENT_LENGTH; the server sets it when it buffers)."""
    data = os.urandom(3000)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    response = requests.post(f'{django_url}/body/', data=pieces(), timeout=TIMEOUT)
    assert response.request.headers['Transfer-Encoding'] == 'chunked'
    assert response.status_code == 200
    assert response.json() == {'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()}


def test_redirect(django_url: str) -> None:
    """HttpResponseRedirect: 302 with a Location, which a client can follow."""
    response = requests.get(f'{django_url}/redirect/', allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    assert response.headers['Location'] == '/json/?q=redirected'
    followed = requests.get(f'{django_url}/redirect/', timeout=TIMEOUT)
    assert followed.status_code == 200
    assert [r.status_code for r in followed.history] == [302]
    assert followed.json()['q'] == 'redirected'


def test_several_cookies(django_url: str) -> None:
    """Three Set-Cookie headers arrive as three separate header lines, attributes intact."""
    response = httpx.get(f'{django_url}/cookies/', timeout=TIMEOUT)
    assert response.status_code == 200
    cookies = sorted(response.headers.get_list('set-cookie'))
    assert len(cookies) == 3
    assert cookies[0].startswith('alpha=1;')
    assert cookies[1].startswith('beta=2;')
    assert 'HttpOnly' in cookies[1]
    assert cookies[2].startswith('gamma=3;')
    assert 'Max-Age=120' in cookies[2]
    assert 'SameSite=Lax' in cookies[2]
    assert dict(response.cookies) == {'alpha': '1', 'beta': '2', 'gamma': '3'}


@pytest.mark.parametrize('path', ['/no/such/page/', '/missing/'])
def test_not_found(django_url: str, path: str) -> None:
    """An unknown URL and a view raising Http404 both get Django's 404."""
    response = requests.get(f'{django_url}{path}', timeout=TIMEOUT)
    assert response.status_code == 404
    assert 'Not Found' in response.text


def test_streaming_response(django_url: str) -> None:
    """A StreamingHttpResponse arrives complete, chunked, in order."""
    response = requests.get(f'{django_url}/stream/', params={'n': '50'}, stream=True, timeout=TIMEOUT)
    with response:
        assert response.status_code == 200
        assert response.headers['Transfer-Encoding'] == 'chunked'
        assert 'Content-Length' not in response.headers
        lines = list(response.iter_lines(decode_unicode=True))
    assert lines == [f'line {index} of 50' for index in range(50)]


def test_streaming_response_is_incremental(serve: Callable[..., Any]) -> None:
    """The first streamed chunk reaches the client while the generator still waits for another request."""
    served = serve('django_app', '--threads', '2')
    with socket.create_connection(('127.0.0.1', served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b'GET /gated-stream/?gate=d1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
        received = b''
        while b'before-gate' not in received:
            chunk = sock.recv(65536)
            assert chunk, f'connection closed before the first chunk: {received!r}'
            received += chunk
        release = requests.get(f'{served.url}/release/', params={'gate': 'd1'}, timeout=TIMEOUT)
        assert release.text == 'released'
        while chunk := sock.recv(65536):
            received += chunk
    assert b'released\n' in received
    assert b'gate-timeout' not in received


def test_file_response(django_url: str, tmp_path: Path) -> None:
    """FileResponse (handed to wsgi.file_wrapper by Django) sends the whole file."""
    data = os.urandom(1024 * 1024 + 3)
    path = tmp_path / 'download.bin'
    path.write_bytes(data)
    response = requests.get(f'{django_url}/file/', params={'path': str(path)}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers['Content-Length'] == str(len(data))
    assert response.content == data


def test_exception_gives_500_and_logs_traceback(serve: Callable[..., Any]) -> None:
    """A view raising: Django's 500, the traceback in the server log, and the server keeps serving."""
    served = serve('django_app')
    with requests.Session() as session:
        response = session.get(f'{served.url}/error/', timeout=TIMEOUT)
        assert response.status_code == 500
        assert 'django boom marker' not in response.text
        log = served.wait_for_log('RuntimeError: django boom marker')
        assert 'Traceback (most recent call last)' in log
        assert session.get(f'{served.url}/json/', timeout=TIMEOUT).status_code == 200


def test_thread_local_survives_across_requests(serve: Callable[..., Any]) -> None:
    """With --threads 1, a module-level threading.local keeps its value from request to request on that thread."""
    served = serve('django_app', '--threads', '1')
    seen = []
    for _ in range(5):
        # A new connection each time: thread affinity must not depend on the connection.
        response = requests.get(f'{served.url}/thread-local/', timeout=TIMEOUT)
        assert response.status_code == 200
        seen.append(response.json())
    assert len({item['thread'] for item in seen}) == 1, seen
    assert [item['count'] for item in seen] == [1, 2, 3, 4, 5]


def test_request_finished_signal_fires_per_request(serve: Callable[..., Any]) -> None:
    """Django sends request_finished from the response's close(): the server must call it for every request."""
    served = serve('django_app', '--threads', '1')
    url = served.url
    with requests.Session() as session:
        before = session.get(f'{url}/finished/', timeout=TIMEOUT).json()['finished']
        assert session.get(f'{url}/json/', timeout=TIMEOUT).status_code == 200
        assert session.get(f'{url}/stream/', timeout=TIMEOUT).status_code == 200
        assert session.get(f'{url}/no/such/page/', timeout=TIMEOUT).status_code == 404
        assert session.get(f'{url}/error/', timeout=TIMEOUT).status_code == 500
        after = session.get(f'{url}/finished/', timeout=TIMEOUT).json()['finished']
    # The first /finished/ and the four requests in between have all been closed by the time the last one runs.
    assert after - before == 5
