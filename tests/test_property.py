"""Property: how a request is cut into TCP writes never changes what the application sees.

Every valid request of the corpus (`tests/requests/valid`) is sent once whole to `proto:environ_dump`; hypothesis
then draws cut points and sends the same bytes in pieces over a fresh connection. The environ (every `str` value and
the type of every value) and the body the app saw must equal the whole-request run, apart from REMOTE_PORT, which
belongs to the connection. Cuts are drawn both anywhere in the request and inside the head, so large bodies do not
keep the head whole. The client sets TCP_NODELAY and pauses briefly between pieces so the server sees partial input.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Served, start_server
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from test_http11 import Conn, stop_server

VALID = sorted((Path(__file__).parent / 'requests' / 'valid').glob('*.http'))
PAUSE = 0.002
MAX_CUTS = 8
# Per connection, not per request.
VOLATILE_KEYS = ('REMOTE_PORT',)


@pytest.fixture(scope='module')
def server() -> Iterator[Served]:
    """One `proto:environ_dump` server for the whole module."""
    served = start_server('proto:environ_dump')
    yield served
    stop_server(served)


def app_view(port: int, pieces: list[bytes], pause: float) -> dict[str, Any]:
    """Send `pieces` on a new connection; what the app saw (environ dump and body), minus per-connection keys."""
    with Conn(port, timeout=20) as conn:
        assert conn.send_pieces(pieces, pause), 'the server closed the connection before the request was sent'
        _, response = conn.read_final()
    assert response.status == 200, response
    payload = json.loads(response.body)
    for key in VOLATILE_KEYS:
        payload['environ'].pop(key, None)
        payload['types'].pop(key, None)
    return payload


def differences(expected: dict[str, Any], seen: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(whole, split) for every value that differs, environ and types entries flattened into `section.key`."""
    diff = {}
    for section in sorted(set(expected) | set(seen)):
        left, right = expected.get(section), seen.get(section)
        if isinstance(left, dict) and isinstance(right, dict):
            for key in sorted(set(left) | set(right)):
                if left.get(key) != right.get(key):
                    diff[f'{section}.{key}'] = (left.get(key), right.get(key))
        elif left != right:
            diff[section] = (f'{len(left)} chars', f'{len(right)} chars') if section == 'body' else (left, right)
    return diff


@pytest.fixture(scope='module')
def whole(server: Served) -> dict[Path, dict[str, Any]]:
    """What the app saw for each corpus request sent in one piece."""
    return {path: app_view(server.port, [path.read_bytes()], 0.0) for path in VALID}


def draw_cuts(data: st.DataObject, raw: bytes) -> list[int]:
    """Sorted, distinct offsets strictly inside `raw`: some inside the head, some anywhere in the request."""
    head_end = raw.index(b'\r\n\r\n') + 4
    in_head = st.lists(st.integers(min_value=1, max_value=min(head_end, len(raw) - 1)), max_size=MAX_CUTS // 2)
    anywhere = st.lists(st.integers(min_value=1, max_value=len(raw) - 1), max_size=MAX_CUTS // 2)
    cuts = sorted({*data.draw(in_head, label='cuts in head'), *data.draw(anywhere, label='cuts anywhere')})
    return cuts or [data.draw(st.integers(min_value=1, max_value=len(raw) - 1), label='single cut')]


@pytest.mark.parametrize('path', VALID, ids=[p.stem for p in VALID])
# No shrinking: replaying a split does not replay how the server's reads interleave with it, so a shrunk case
# need not fail the same way.
@settings(max_examples=20, deadline=None, database=None, phases=(Phase.explicit, Phase.generate))
@given(data=st.data())
def test_split_request_matches_whole(
    server: Served, whole: dict[Path, dict[str, Any]], path: Path, data: st.DataObject
) -> None:
    raw = path.read_bytes()
    cuts = draw_cuts(data, raw)
    bounds = [0, *cuts, len(raw)]
    pieces = [raw[start:end] for start, end in itertools.pairwise(bounds)]
    assert b''.join(pieces) == raw
    seen = app_view(server.port, pieces, PAUSE)
    if seen != whole[path]:
        # Also printed: when a replay does not fail again, hypothesis reports a flaky test instead of this assertion,
        # and the captured output is what still shows the difference.
        print(f'{path.stem}: split at {cuts}: {differences(whole[path], seen)}')
    assert seen == whole[path], f'split at {cuts}: {differences(whole[path], seen)}'


def test_corpus_present() -> None:
    assert len(VALID) >= 25
