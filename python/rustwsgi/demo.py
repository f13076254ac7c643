"""A small WSGI application that shows the request it received: `rustwsgi serve rustwsgi.demo:app`.

Pure standard library. Everything taken from the request is HTML-escaped before it is shown.
"""

from __future__ import annotations

import html
import platform
from collections.abc import Callable, Iterable
from typing import Any

from ._version import __version__

__all__ = ['app']

CHUNK = 65536  # the body is read in pieces of this size and counted, never kept

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rustwsgi demo</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }}
th, td {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ width: 14rem; font-weight: 600; }}
td {{ font-family: ui-monospace, monospace; word-break: break-all; }}
form {{ margin-top: 1rem; }}
</style>
</head>
<body>
<h1>rustwsgi {version} is serving this page</h1>
<p>The request it received:</p>
<table>
{request_rows}
</table>
<h2>Headers</h2>
<table>
{header_rows}
</table>
<form method="post" action="?submitted=1">
<input name="message" value="hello"> <button type="submit">POST a form</button>
</form>
<p><small>Python {python} &middot; served by {software}</small></p>
</body>
</html>
"""


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    return '\n'.join(f'<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>' for k, v in pairs)


def _body_length(environ: dict[str, Any]) -> int:
    stream = environ.get('wsgi.input')
    if stream is None:
        return 0
    total = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return total
        total += len(chunk)


def _header_name(key: str) -> str:
    name = key[5:] if key.startswith('HTTP_') else key
    return '-'.join(part.capitalize() for part in name.split('_'))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answer any request with an HTML page describing that request."""
    body_length = _body_length(environ)
    path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
    request_rows = _rows(
        [
            ('Method', environ.get('REQUEST_METHOD', '')),
            ('Path', path),
            ('Query string', environ.get('QUERY_STRING', '')),
            ('Protocol', environ.get('SERVER_PROTOCOL', '')),
            ('Client', f'{environ.get("REMOTE_ADDR", "")}:{environ.get("REMOTE_PORT", "")}'.strip(':')),
            ('Body length', f'{body_length} bytes'),
        ]
    )
    headers = sorted(
        (_header_name(key), str(value))
        for key, value in environ.items()
        if key.startswith('HTTP_') or key in ('CONTENT_TYPE', 'CONTENT_LENGTH')
    )
    page = _PAGE.format(
        version=html.escape(__version__),
        request_rows=request_rows,
        header_rows=_rows(headers) or '<tr><td>(none)</td></tr>',
        python=html.escape(platform.python_version()),
        software=html.escape(str(environ.get('SERVER_SOFTWARE', 'an unknown server'))),
    ).encode('utf-8')
    start_response(
        '200 OK',
        [
            ('Content-Type', 'text/html; charset=utf-8'),
            ('Content-Length', str(len(page))),
            ('Cache-Control', 'no-store'),
        ],
    )
    return [page]
