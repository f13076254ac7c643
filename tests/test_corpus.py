"""The request corpus (`tests/requests/valid|invalid`), fed to a real server whole, in random splits and byte by byte.

Valid requests go to `proto:environ_dump`, which answers with the environ it saw; the `.json` next to each `.http`
lists what must be in it. Invalid requests must get the listed status, `Connection: close`, and a closed connection.
Splits are seeded per file and mode, so a failure reproduces; the client sets TCP_NODELAY and pauses briefly between
pieces so the server really sees partial input.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Served, start_server
from test_http11 import Conn, stop_server

REQUESTS_DIR = Path(__file__).parent / 'requests'
VALID = sorted((REQUESTS_DIR / 'valid').glob('*.http'))
INVALID = sorted((REQUESTS_DIR / 'invalid').glob('*.http'))
MODES = ['whole', 'random-1', 'random-2', 'random-3', 'head-only-cuts', 'bytewise']
PAUSE = 0.002
BYTEWISE_PREFIX = 2048
CGI_KEYS = ('REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_PROTOCOL', 'CONTENT_TYPE')


def split(data: bytes, mode: str, seed: str) -> tuple[list[bytes], float]:
    """The pieces to send for `mode` and the pause between them."""
    if mode == 'whole':
        return [data], 0.0
    if mode == 'bytewise':
        # Every byte of the head (and the start of the body) on its own; the rest of a large body in one piece.
        head, rest = data[:BYTEWISE_PREFIX], data[BYTEWISE_PREFIX:]
        return [head[i : i + 1] for i in range(len(head))] + ([rest] if rest else []), 0.0
    rng = random.Random(f'{seed}:{mode}')  # noqa: S311 - reproducible test input, not cryptography
    end = len(data) if mode != 'head-only-cuts' else data.find(b'\r\n\r\n') + 4
    if end < 2:
        end = len(data)
    cuts = sorted(rng.sample(range(1, end), min(end - 1, rng.randint(1, 8))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a], PAUSE


def header_names(data: bytes) -> list[str]:
    """Field names in the head of a raw request (the corpus's valid requests are well formed)."""
    head = data.split(b'\r\n\r\n', 1)[0]
    return [line.split(b':', 1)[0].decode('latin-1') for line in head.split(b'\r\n')[1:]]


def environ_key(name: str) -> str:
    """The CGI key a header name maps to."""
    key = name.upper().replace('-', '_')
    return key if key in ('CONTENT_TYPE', 'CONTENT_LENGTH') else f'HTTP_{key}'


def header_value(data: bytes, name: str) -> str:
    """The (first) value of header `name` in a raw request."""
    head = data.split(b'\r\n\r\n', 1)[0]
    for line in head.split(b'\r\n')[1:]:
        key, _, value = line.partition(b':')
        if key.decode('latin-1') == name:
            return value.strip(b' \t').decode('latin-1')
    raise KeyError(name)


@pytest.fixture(scope='module')
def server() -> Iterator[Served]:
    """One `proto:environ_dump` server for the whole corpus."""
    served = start_server('proto:environ_dump')
    yield served
    stop_server(served)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('path', VALID, ids=[p.stem for p in VALID])
def test_valid_request(server, path, mode):
    data = path.read_bytes()
    expected = json.loads(path.with_suffix('.json').read_text())
    pieces, pause = split(data, mode, path.stem)
    assert b''.join(pieces) == data
    with Conn(server.port, timeout=20) as conn:
        assert conn.send_pieces(pieces, pause), 'the server closed the connection before the request was sent'
        _, response = conn.read_final()
    assert response.status == 200, response
    payload = json.loads(response.body)
    environ = payload['environ']
    assert environ['REQUEST_METHOD'] == expected['method']
    assert environ.get('PATH_INFO', '') == expected['path']
    assert environ.get('QUERY_STRING', '') == expected['query']
    assert environ['SERVER_PROTOCOL'] == expected['version']
    for key, value in expected['headers'].items():
        assert environ.get(key) == value, key
    assert payload['body'] == expected['body']

    # Rules that hold for every request.
    assert payload['input_terminated'] is True
    for key, type_name in payload['types'].items():
        if key.startswith('HTTP_') or key in CGI_KEYS or key == 'CONTENT_LENGTH':
            assert type_name == 'str', f'{key} is a {type_name}'
    assert 'HTTP_CONTENT_TYPE' not in environ
    assert 'HTTP_CONTENT_LENGTH' not in environ
    names = header_names(data)
    for name in names:
        if '_' not in name:
            continue
        key = environ_key(name)
        # A name with `_` is dropped; its key may only exist if a dash-spelled header maps to the same key.
        spoofed = header_value(data, name)
        legit = [other for other in names if '_' not in other and environ_key(other) == key]
        if not legit:
            assert key not in environ or environ[key] == '', f'{name} reached environ as {key}'
        else:
            assert spoofed not in environ[key], f'{name} leaked into {key}={environ[key]!r}'


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('path', INVALID, ids=[p.stem for p in INVALID])
def test_invalid_request(server, path, mode):
    data = path.read_bytes()
    status = json.loads(path.with_suffix('.json').read_text())['status']
    pieces, pause = split(data, mode, path.stem)
    with Conn(server.port, timeout=20) as conn:
        # The server may answer and close before everything was sent; that is fine.
        conn.send_pieces(pieces, pause)
        _, response = conn.read_final()
        assert response.status == status, f'expected {status}, got {response.status} {response.reason}'
        assert 'close' in response.tokens('Connection'), response.headers
        conn.assert_closed()


def test_corpus_is_complete():
    assert len(VALID) >= 25
    assert len(INVALID) >= 30
    for path in [*VALID, *INVALID]:
        assert path.with_suffix('.json').is_file(), path
        data = path.read_bytes()
        # Lines end in CRLF: .gitattributes keeps git from touching the bytes.
        assert b'\r\n\r\n' in data, path
    for path in VALID:
        expected = json.loads(path.with_suffix('.json').read_text())
        assert set(expected) == {'method', 'path', 'query', 'version', 'headers', 'body'}, path
    for path in INVALID:
        assert set(json.loads(path.with_suffix('.json').read_text())) == {'status'}, path
