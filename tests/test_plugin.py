"""The pytest plugin (`rustwsgi_server` fixture, a `pytest11` entry point) and `rustwsgi.serve_in_background()`."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import rustwsgi
from conftest import APPS_DIR

pytest_plugins = ('pytester',)

TIMEOUT = 30


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f'{environ["SCRIPT_NAME"]}|{environ["PATH_INFO"]}|{environ["wsgi.multithread"]}'.encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def refused(url: str) -> bool:
    """True when nothing accepts connections at `url` any more."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_entry_point_is_registered() -> None:
    """Installing rustwsgi registers the plugin with pytest."""
    found = [ep for ep in entry_points(group='pytest11') if ep.name == 'rustwsgi']
    assert [ep.value for ep in found] == ['rustwsgi.pytest_plugin']


def test_fixture_serves_a_callable(rustwsgi_server: Callable[..., str]) -> None:
    """A WSGI callable is served from a thread of this process on a free 127.0.0.1 port, with the options given."""
    url = rustwsgi_server(hello, threads=1, root_path='/app')
    assert urlsplit(url).hostname == '127.0.0.1'
    assert urlsplit(url).port not in (None, 0)
    with requests.get(f'{url}/app/page', timeout=TIMEOUT) as response:
        assert response.text == '/app|/page|False'


def test_fixture_serves_a_target_in_a_subprocess(
    rustwsgi_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 'module:attr' string is served by `rustwsgi serve`; the test's sys.path reaches the subprocess."""
    monkeypatch.syspath_prepend(str(APPS_DIR))
    url = rustwsgi_server('proxied:app', health_path='/hz', forwarded_allow_ips=[])
    with requests.get(f'{url}/whoami', headers={'X-Forwarded-For': '203.0.113.1'}, timeout=TIMEOUT) as response:
        seen = response.json()
    assert seen['REMOTE_ADDR'] == '127.0.0.1', 'forwarded_allow_ips=[] reached the subprocess'
    assert seen['pid'] != os.getpid()
    with requests.get(f'{url}/hz', timeout=TIMEOUT) as response:
        assert response.text == 'ok\n'


def test_fixture_rejects_bad_options(rustwsgi_server: Callable[..., str]) -> None:
    with pytest.raises(rustwsgi.ConfigError, match='threads'):
        rustwsgi_server(hello, threads=0)
    with pytest.raises(rustwsgi.ConfigError, match='threads'):
        rustwsgi_server('proxied:app', threads=0)


def test_plugin_in_a_fresh_pytest_run(pytester: pytest.Pytester) -> None:
    """A user's test suite gets the fixture from the entry point alone; servers are stopped at teardown."""
    urls = pytester.path / 'urls.txt'
    pytester.makepyfile(
        test_user=f"""
        import urllib.request

        def app(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [b'served ' + environ['PATH_INFO'].encode()]

        def remember(url):
            with open({str(urls)!r}, 'a') as handle:
                handle.write(url + '\\n')

        def test_one(rustwsgi_server):
            url = rustwsgi_server(app)
            remember(url)
            assert urllib.request.urlopen(url + '/one', timeout=30).read() == b'served /one'

        def test_two(rustwsgi_server):
            first, second = rustwsgi_server(app), rustwsgi_server(app, threads=2)
            remember(first)
            remember(second)
            assert first != second
            assert urllib.request.urlopen(second + '/two', timeout=30).read() == b'served /two'
        """
    )
    result = pytester.runpytest_subprocess('-p', 'no:cacheprovider')
    result.assert_outcomes(passed=2)
    served = urls.read_text().split()
    assert len(served) == 3
    assert all(refused(url) for url in served), 'every server is stopped after its test'


def test_serve_in_background_context_manager() -> None:
    """The API under the fixture: started on return, stopped (and the port closed) when the block ends."""
    with rustwsgi.serve_in_background(hello, threads=2) as server:
        assert server.url == server.urls[0]
        with requests.get(f'{server.url}/x', timeout=TIMEOUT) as response:
            assert response.text == '|/x|True'
    assert refused(server.url)


def test_serve_in_background_bind_error() -> None:
    """A failure to bind is raised in the caller's thread."""
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(rustwsgi.BindError, match=str(port)):
            rustwsgi.serve_in_background(hello, bind=f'127.0.0.1:{port}')


def test_serve_in_background_refuses_supervisor_settings() -> None:
    with pytest.raises(rustwsgi.ConfigError, match='process of their own'):
        rustwsgi.serve_in_background(hello, workers=2)
