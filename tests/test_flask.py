"""A real Flask app (`tests/apps/flask_app.py`) served unchanged by `rustwsgi serve`."""

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
def flask_url(serve: Callable[..., Any]) -> str:
    """Base URL of a running `rustwsgi serve flask_app:app`."""
    return serve('flask_app:app').url


def test_json_get(flask_url: str) -> None:
    """A JSON GET over a keep-alive session, several times on the same connection."""
    with requests.Session() as session:
        for index in range(3):
            response = session.get(f'{flask_url}/json', params={'q': f'caf\u00e9 {index}'}, timeout=TIMEOUT)
            assert response.status_code == 200
            assert response.headers['Content-Type'] == 'application/json'
            assert response.json() == {'hello': 'world', 'method': 'GET', 'q': f'caf\u00e9 {index}'}
            assert int(response.headers['Content-Length']) == len(response.content)


def test_form_post(flask_url: str) -> None:
    """An urlencoded form POST, with repeated and non-ASCII fields."""
    fields = [('name', 'Zo\u00eb'), ('n', '42'), ('tag', 'a'), ('tag', 'b&c=d')]
    response = requests.post(f'{flask_url}/form', data=fields, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {
        'fields': {'name': ['Zo\u00eb'], 'n': ['42'], 'tag': ['a', 'b&c=d']},
        'content_type': 'application/x-www-form-urlencoded',
    }


@pytest.mark.parametrize('size', [1, 70_000, 3 * 1024 * 1024 + 17])
def test_multipart_upload(flask_url: str, size: int) -> None:
    """A multipart upload arrives byte for byte (size + sha256), small and large (streamed) alike."""
    data = os.urandom(size - 4) + b'\r\n--' if size > 4 else os.urandom(size)
    files = {'file': ('data.bin', data, 'application/octet-stream')}
    response = requests.post(f'{flask_url}/upload', files=files, data={'note': 'hi there'}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {
        'filename': 'data.bin',
        'size': len(data),
        'sha256': hashlib.sha256(data).hexdigest(),
        'note': 'hi there',
    }


@pytest.mark.parametrize('size', [10, 2 * 1024 * 1024])
def test_chunked_request_body(flask_url: str, size: int) -> None:
    """A chunked request body (no Content-Length) is read whole by Werkzeug (needs wsgi.input_terminated)."""
    data = os.urandom(size)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 50_000):
            yield data[start : start + 50_000]

    response = requests.post(f'{flask_url}/body', data=pieces(), timeout=60)
    assert response.request.headers['Transfer-Encoding'] == 'chunked'
    assert response.status_code == 200
    assert response.json() == {'size': size, 'sha256': hashlib.sha256(data).hexdigest()}


def test_redirect(flask_url: str) -> None:
    """A redirect: 302 with a Location, which a client can follow to the JSON view."""
    response = requests.get(f'{flask_url}/redirect', allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    assert response.headers['Location'] == '/json?q=redirected'
    followed = requests.get(f'{flask_url}/redirect', timeout=TIMEOUT)
    assert followed.status_code == 200
    assert [r.status_code for r in followed.history] == [302]
    assert followed.json()['q'] == 'redirected'


def test_several_cookies(flask_url: str) -> None:
    """Three Set-Cookie headers arrive as three separate header lines, attributes intact."""
    response = httpx.get(f'{flask_url}/cookies', timeout=TIMEOUT)
    assert response.status_code == 200
    cookies = response.headers.get_list('set-cookie')
    assert len(cookies) == 3
    assert cookies[0].startswith('alpha=1;')
    assert cookies[1].startswith('beta=2;')
    assert 'HttpOnly' in cookies[1]
    assert cookies[2].startswith('gamma=3;')
    assert 'Max-Age=120' in cookies[2]
    assert 'SameSite=Lax' in cookies[2]
    assert dict(response.cookies) == {'alpha': '1', 'beta': '2', 'gamma': '3'}


def test_not_found(flask_url: str) -> None:
    """An unknown URL gets Flask's 404 page."""
    response = requests.get(f'{flask_url}/no/such/page', timeout=TIMEOUT)
    assert response.status_code == 404
    assert 'Not Found' in response.text


def test_streaming_response(flask_url: str) -> None:
    """A stream_with_context generator response arrives complete, chunked, in order."""
    response = requests.get(f'{flask_url}/stream', params={'n': '50'}, stream=True, timeout=TIMEOUT)
    with response:
        assert response.status_code == 200
        assert response.headers['Transfer-Encoding'] == 'chunked'
        assert 'Content-Length' not in response.headers
        lines = list(response.iter_lines(decode_unicode=True))
    assert lines == [f'line {index} of 50 for /stream' for index in range(50)]


def test_streaming_response_is_incremental(serve: Callable[..., Any]) -> None:
    """The first streamed chunk reaches the client while the generator still waits for another request."""
    served = serve('flask_app:app', '--threads', '2')
    with socket.create_connection(('127.0.0.1', served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b'GET /gated-stream?gate=f1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
        received = b''
        while b'before-gate' not in received:
            chunk = sock.recv(65536)
            assert chunk, f'connection closed before the first chunk: {received!r}'
            received += chunk
        release = requests.get(f'{served.url}/release', params={'gate': 'f1'}, timeout=TIMEOUT)
        assert release.text == 'released'
        while chunk := sock.recv(65536):
            received += chunk
    assert b'released\n' in received
    assert b'gate-timeout' not in received


def test_send_file(flask_url: str, tmp_path: Path) -> None:
    """send_file (through wsgi.file_wrapper) sends the whole file."""
    data = os.urandom(1024 * 1024 + 3)
    path = tmp_path / 'download.bin'
    path.write_bytes(data)
    response = requests.get(f'{flask_url}/file', params={'path': str(path)}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers['Content-Length'] == str(len(data))
    assert response.content == data


def test_send_file_range(flask_url: str, tmp_path: Path) -> None:
    """send_file with a Range header: 206 and exactly the requested bytes."""
    data = os.urandom(100_000)
    path = tmp_path / 'ranged.bin'
    path.write_bytes(data)
    headers = {'Range': 'bytes=1000-2999'}
    response = requests.get(f'{flask_url}/file', params={'path': str(path)}, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 206
    assert response.headers['Content-Range'] == f'bytes 1000-2999/{len(data)}'
    assert response.content == data[1000:3000]


def test_exception_gives_500_and_logs_traceback(serve: Callable[..., Any]) -> None:
    """A view raising: Flask's 500 page, the traceback in the server log, and the server keeps serving."""
    served = serve('flask_app:app')
    with requests.Session() as session:
        response = session.get(f'{served.url}/error', timeout=TIMEOUT)
        assert response.status_code == 500
        assert 'flask boom marker' not in response.text
        log = served.wait_for_log('RuntimeError: flask boom marker')
        assert 'Traceback (most recent call last)' in log
        assert session.get(f'{served.url}/json', timeout=TIMEOUT).status_code == 200
