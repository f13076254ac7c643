"""The bundled demo app, `rustwsgi.demo:app`, served by `rustwsgi serve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

TIMEOUT = 15


def test_demo_shows_the_request_path(serve: Callable[..., Any]) -> None:
    """The demo answers any path with an HTML page that shows the path and query it got."""
    served = serve('rustwsgi.demo:app')
    with requests.Session() as session:
        for path in ('/', '/some/deep/path-42', '/another.html'):
            response = session.get(f'{served.url}{path}', params={'probe': 'q-7f1'}, timeout=TIMEOUT)
            assert response.status_code == 200
            assert response.headers['Content-Type'].startswith('text/html')
            assert f'>{path}<' in response.text
            assert 'probe=q-7f1' in response.text


def test_demo_shows_method(serve: Callable[..., Any]) -> None:
    """A POST shows up as such, with its path."""
    served = serve('rustwsgi.demo:app')
    response = requests.post(f'{served.url}/form', data={'message': 'hello'}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert 'POST' in response.text
    assert '>/form<' in response.text


def test_demo_escapes_what_it_shows(serve: Callable[..., Any]) -> None:
    """The demo reflects the request back, so it must HTML-escape it: no markup injection through the URL."""
    served = serve('rustwsgi.demo:app')
    response = requests.get(f'{served.url}/%3Cscript%3Ealert(1)%3C/script%3E', timeout=TIMEOUT)
    assert response.status_code == 200
    assert '<script>' not in response.text
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in response.text


def test_demo_head(serve: Callable[..., Any]) -> None:
    """HEAD gets the headers of the page and no body."""
    served = serve('rustwsgi.demo:app')
    response = requests.head(f'{served.url}/x', timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers['Content-Type'].startswith('text/html')
    assert response.content == b''
