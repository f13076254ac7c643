"""Behind a proxy: --forwarded-allow-ips (X-Forwarded-*, Forwarded), --root-path and --health-path.

The test client connects from 127.0.0.1, trusted by default, so it plays the proxy; other trust lists make it an
untrusted peer. The health tests show the check is answered without the application, even with every thread busy,
and turns to 503 once the server drains.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Served, raw_request
from support import run_cli, wait_for_lines

APP = 'proxied:app'
TIMEOUT = 30


def whoami(served: Served, headers: dict[str, str] | None = None, path: str = '/whoami') -> dict[str, Any]:
    with requests.get(f'{served.url}{path}', headers=headers or {}, timeout=TIMEOUT) as response:
        assert response.status_code == 200, response.text
        return response.json()


FORWARDED_HEADERS = {
    'X-Forwarded-For': '203.0.113.9',
    'X-Forwarded-Proto': 'https',
    'X-Forwarded-Host': 'shop.example',
}


# --- trusted proxies --------------------------------------------------------------------------------------------------


def test_trusted_by_default_from_localhost(serve: Callable[..., Served]) -> None:
    """127.0.0.1 is trusted by default: X-Forwarded-For/-Proto/-Host set REMOTE_ADDR, the scheme and the host."""
    seen = whoami(serve(APP), FORWARDED_HEADERS)
    assert seen['REMOTE_ADDR'] == '203.0.113.9'
    assert seen['wsgi.url_scheme'] == 'https'
    assert seen['HTTP_HOST'] == 'shop.example'
    assert seen['HTTP_X_FORWARDED_FOR'] == '203.0.113.9', 'the header itself stays visible to the app'


def test_without_forwarding_headers_nothing_changes(serve: Callable[..., Served]) -> None:
    """A trusted peer that sends no forwarding header is the client."""
    served = serve(APP)
    seen = whoami(served)
    assert seen['REMOTE_ADDR'] == '127.0.0.1'
    assert seen['wsgi.url_scheme'] == 'http'
    assert seen['HTTP_HOST'] == f'127.0.0.1:{served.port}'


@pytest.mark.parametrize('allow', ['10.0.0.1', '10.0.0.0/8,::1', ''])
def test_untrusted_peer_headers_are_ignored(serve: Callable[..., Served], allow: str) -> None:
    """When 127.0.0.1 is not in the list (or the list is empty), the headers change nothing."""
    served = serve(APP, '--forwarded-allow-ips', allow)
    seen = whoami(served, FORWARDED_HEADERS)
    assert seen['REMOTE_ADDR'] == '127.0.0.1'
    assert seen['wsgi.url_scheme'] == 'http'
    assert seen['HTTP_HOST'] == f'127.0.0.1:{served.port}'
    assert seen['HTTP_X_FORWARDED_FOR'] == '203.0.113.9'


def test_rightmost_untrusted_hop_is_the_client(serve: Callable[..., Served]) -> None:
    """Walking X-Forwarded-For from the right, trusted proxies (CIDR too) are skipped; what the client wrote
    on the left (a spoofed address) is never reached."""
    served = serve(APP, '--forwarded-allow-ips', '127.0.0.1,10.0.0.0/8')
    seen = whoami(served, {'X-Forwarded-For': '198.51.100.66, 203.0.113.9, 10.1.2.3'})
    assert seen['REMOTE_ADDR'] == '203.0.113.9'


def test_star_trusts_every_hop(serve: Callable[..., Served]) -> None:
    """With `*` every hop is trusted, so the left-most address is taken."""
    served = serve(APP, '--forwarded-allow-ips', '*')
    assert whoami(served, {'X-Forwarded-For': '198.51.100.66, 203.0.113.9'})['REMOTE_ADDR'] == '198.51.100.66'


def test_rfc7239_forwarded_header(serve: Callable[..., Served]) -> None:
    """`Forwarded: for=...;proto=...;host=...` (RFC 7239) is understood and wins over X-Forwarded-For."""
    headers = {
        'Forwarded': 'for="[2001:db8::17]:4711";proto=https;host=api.example',
        'X-Forwarded-For': '198.51.100.1',
    }
    seen = whoami(serve(APP), headers)
    assert seen['REMOTE_ADDR'] == '2001:db8::17'
    assert seen['wsgi.url_scheme'] == 'https'
    assert seen['HTTP_HOST'] == 'api.example'


def test_gunicorn_environment_variable(serve: Callable[..., Served]) -> None:
    """FORWARDED_ALLOW_IPS (gunicorn's name) is read; RUSTWSGI_FORWARDED_ALLOW_IPS wins over it."""
    untrusted = serve(APP, env={'FORWARDED_ALLOW_IPS': '10.9.9.9'})
    assert whoami(untrusted, FORWARDED_HEADERS)['REMOTE_ADDR'] == '127.0.0.1'
    both = {'FORWARDED_ALLOW_IPS': '10.9.9.9', 'RUSTWSGI_FORWARDED_ALLOW_IPS': '127.0.0.0/8'}
    assert whoami(serve(APP, env=both), FORWARDED_HEADERS)['REMOTE_ADDR'] == '203.0.113.9'


def test_unix_socket_peer_is_trusted(serve: Callable[..., Served], tmp_path: Path) -> None:
    """A unix-socket peer is always trusted (only this machine can connect), whatever the list says."""
    path = tmp_path / 'app.sock'
    serve(APP, '--forwarded-allow-ips', '', bind=f'unix:{path}')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(
            b'GET /whoami HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.5\r\n'
            b'X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n'
        )
        data = b''
        while chunk := sock.recv(65536):
            data += chunk
    seen = json.loads(data.split(b'\r\n\r\n', 1)[1])
    assert seen['REMOTE_ADDR'] == '203.0.113.5'
    assert seen['wsgi.url_scheme'] == 'https'


@pytest.mark.parametrize('value', ['localhost', '10.0.0.0/33', '10.0.0.0/255.0.0.0', '1.2.3'])
def test_bad_trust_list_exits_2(value: str) -> None:
    """Anything but addresses, CIDR blocks and `*`: one line, exit status 2."""
    result = run_cli('serve', APP, '--bind', '127.0.0.1:0', '--forwarded-allow-ips', value)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert 'forwarded-allow-ips' in result.stderr


# --- root path --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('root', ['/app', '/app/'])
def test_root_path_sets_script_name(serve: Callable[..., Served], root: str) -> None:
    """--root-path becomes SCRIPT_NAME (no trailing slash) and is removed from the front of PATH_INFO."""
    served = serve(APP, '--root-path', root)
    seen = whoami(served, path='/app/whoami')
    assert (seen['SCRIPT_NAME'], seen['PATH_INFO']) == ('/app', '/whoami')


def test_root_path_when_the_proxy_strips_the_prefix(serve: Callable[..., Served]) -> None:
    """A proxy that already removed the prefix sends /whoami: PATH_INFO stays, SCRIPT_NAME still says /app."""
    seen = whoami(serve(APP, '--root-path', '/app'), path='/whoami')
    assert (seen['SCRIPT_NAME'], seen['PATH_INFO']) == ('/app', '/whoami')


def test_root_path_matches_whole_segments(serve: Callable[..., Served], tmp_path: Path) -> None:
    """/application is not under /app; /app alone is the mount point itself (PATH_INFO empty)."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--root-path', '/app', '--access-logfile', str(log), '--access-logformat', '%({PATH_INFO}e)s')
    for path in ('/app', '/application/x'):
        requests.get(f'{served.url}{path}', timeout=TIMEOUT).close()
    assert sorted(wait_for_lines(log, 2)) == ['-', '/application/x']


def test_no_root_path_by_default(serve: Callable[..., Served]) -> None:
    seen = whoami(serve(APP), path='/whoami')
    assert (seen['SCRIPT_NAME'], seen['PATH_INFO']) == ('', '/whoami')


@pytest.mark.parametrize('value', ['app', '/a b', '/a?b'])
def test_bad_root_path_exits_2(value: str) -> None:
    result = run_cli('serve', APP, '--bind', '127.0.0.1:0', '--root-path', value)
    assert result.returncode == 2, result.stderr
    assert 'root-path' in result.stderr


# --- health checks ----------------------------------------------------------------------------------------------------


def test_health_path_answered_without_the_app(serve: Callable[..., Served]) -> None:
    """GET and HEAD of the health path get 200 `ok` from the server core: the app's call counter does not move."""
    served = serve(APP, '--health-path', '/healthz')
    before = whoami(served)['calls']
    for _ in range(3):
        with requests.get(f'{served.url}/healthz', timeout=TIMEOUT) as response:
            assert (response.status_code, response.text) == (200, 'ok\n')
    with requests.head(f'{served.url}/healthz', timeout=TIMEOUT) as response:
        assert response.status_code == 200
    assert whoami(served)['calls'] == before + 1
    # Other paths, and the health path with a query, still reach the app.
    with requests.get(f'{served.url}/healthz?full=1', timeout=TIMEOUT) as response:
        assert response.text == 'hello'


def test_no_health_path_by_default(serve: Callable[..., Served]) -> None:
    with requests.get(f'{serve(APP).url}/healthz', timeout=TIMEOUT) as response:
        assert response.text == 'hello'


def _start_held_request(port: int, events: Path) -> socket.socket:
    """Send the head and half the body of a large upload to /hold, and wait until the app is reading it."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
    sock.sendall(b'POST /hold HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n' + b'x' * 100_000)
    wait_for_lines(events, 1)
    return sock


def _finish_held_request(sock: socket.socket) -> bytes:
    sock.sendall(b'x' * 100_000)
    data = b''
    while b'"length": 200000' not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_health_answered_while_every_thread_is_busy(serve: Callable[..., Served], tmp_path: Path) -> None:
    """With --threads 1 and that thread inside the app, the health check is still answered."""
    events = tmp_path / 'events'
    served = serve(APP, '--threads', '1', '--health-path', '/healthz', env={'EVENT_FILE': str(events)})
    with _start_held_request(served.port, events) as held:
        response = raw_request(served.port, b'GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
        assert response.startswith(b'HTTP/1.1 200'), response
        assert response.endswith(b'\r\n\r\nok\n'), response
        assert b'"length": 200000' in _finish_held_request(held)


def test_health_turns_503_while_draining(serve: Callable[..., Served], tmp_path: Path) -> None:
    """After SIGTERM, with a request still in flight, a health check on an open connection gets 503 `draining`."""
    events = tmp_path / 'events'
    served = serve(APP, '--health-path', '/healthz', env={'EVENT_FILE': str(events)})
    with (
        _start_held_request(served.port, events) as held,
        socket.create_connection(('127.0.0.1', served.port), timeout=TIMEOUT) as probe,
    ):
        # An unfinished request head keeps this connection open through the start of the shutdown.
        probe.sendall(b'GET /healthz HTTP/1.1\r\nHost: a\r\n')
        served.proc.send_signal(signal.SIGTERM)
        served.wait_for_log('Received SIGTERM')
        probe.sendall(b'\r\n')
        data = b''
        while chunk := probe.recv(65536):
            data += chunk
        assert data.startswith(b'HTTP/1.1 503'), data
        assert data.endswith(b'\r\n\r\ndraining\n'), data
        assert b'"length": 200000' in _finish_held_request(held)
    # The held request was the last one: the server exits by itself.
    assert served.proc.wait(TIMEOUT) == 0
