"""Regression tests for framing bugs found in review, each over a kept-alive connection so a stray byte would show
up as a broken second response."""

from __future__ import annotations

import socket
import time


def read_chunked_response(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """Read one chunked HTTP/1.1 response; return its decoded body and whatever followed it."""
    while b'\r\n\r\n' not in buffer:
        buffer += sock.recv(65536)
    head, rest = buffer.split(b'\r\n\r\n', 1)
    assert b'Transfer-Encoding: chunked' in head, head
    body = b''
    while True:
        while b'\r\n' not in rest:
            rest += sock.recv(65536)
        size_line, rest = rest.split(b'\r\n', 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        if size == 0:
            assert rest[:2] == b'\r\n'
            return body, rest[2:]
        body, rest = body + rest[:size], rest[size + 2 :]


def test_write_then_list_ends_the_chunked_body_once(serve):
    served = serve('regress:write_then_list')
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        sock.sendall(b'GET /one HTTP/1.1\r\nHost: t\r\n\r\n')
        body, leftover = read_chunked_response(sock, b'')
        assert body == b'from write, from the list'
        sock.sendall(b'GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        rest = leftover
        while chunk := sock.recv(65536):
            rest += chunk
    # The second response starts right away: no stray terminator from the first one in front of it.
    assert rest.startswith(b'HTTP/1.1 200 OK\r\n'), rest[:60]


def test_a_response_write_does_not_wait_for_a_body_read_in_another_thread(serve):
    """A helper thread waiting on wsgi.input for body bytes must not hold the connection: the request thread's
    first block reaches the client while the body is still incomplete (before the fix both threads hung)."""
    served = serve('regress:input_read_by_another_thread')
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        sock.sendall(
            b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n' + b'a' * 70_000
        )
        received = b''
        while b'first block\n' not in received:
            chunk = sock.recv(65536)  # times out after 10 s if the write is stuck behind the read
            assert chunk, received
            received += chunk
        sock.sendall(b'b' * 30_000)
        while chunk := sock.recv(65536):
            received += chunk
    assert received.endswith(b'read 100000 bytes\n\r\n0\r\n\r\n'), received[-80:]


def test_keep_alive_requests_to_one_busy_thread_are_all_answered(serve):
    """With one app thread and requests that wait (so the watcher polls in its place), each next request on a
    kept connection is answered: a request the watcher queued while the thread rested once waited forever."""
    served = serve('ops:nap', '--threads', '1')
    with socket.create_connection(('127.0.0.1', served.port), timeout=5) as sock:
        for i in range(20):
            sock.sendall(b'GET /?seconds=0.005 HTTP/1.1\r\nHost: t\r\n\r\n')
            response = b''
            while not response.endswith(b'\r\n\r\n' + str(served.proc.pid).encode()):
                chunk = sock.recv(65536)  # a stuck request times out here after 5 s
                assert chunk, f'connection closed at request {i}: {response!r}'
                response += chunk
            assert response.startswith(b'HTTP/1.1 200 OK\r\n'), response[:80]


def test_a_block_staged_before_the_app_fails_still_reaches_the_client(serve):
    """A small block an iterable yields is staged; when the iterable then raises, the response is cut there, but
    the block must still be sent before the connection closes. Before the fix it was sent only if the watcher
    happened to flush it first; otherwise the client got nothing and the connection stayed open. Many fresh
    connections make that race show."""
    served = serve('regress:block_then_raise', '--threads', '1')
    for attempt in range(40):
        with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
            sock.sendall(b'GET / HTTP/1.1\r\nHost: t\r\n\r\n')
            received = b''
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b'HTTP/1.1 200 OK\r\n'), (attempt, received[:80])
        assert b'first block\n' in received, (attempt, received[-80:])
        # The failure cut the chunked body short: no last chunk, so the client cannot take it for complete.
        assert not received.endswith(b'0\r\n\r\n'), (attempt, received[-20:])


def expected_blocks(n: int, size: int, seed: int) -> bytes:
    return b''.join(bytes([97 + (i + seed) % 26]) * size for i in range(n))


def test_streamed_responses_on_one_connection_reuse_and_release_the_staging_buffer(serve):
    """Small streamed responses keep their staging buffer for the next response, a large one gives it up, and an
    idle connection's buffer is freed by the once-a-second sweep: every response still carries exactly its own
    bytes, in order, across those transitions."""
    served = serve('regress:blocks')
    plan = [(4, 1024), (8, 100), (40, 1024), (4, 1024), None, (3, 2000), (4, 1024)]
    with socket.create_connection(('127.0.0.1', served.port), timeout=10) as sock:
        leftover = b''
        for seed, step in enumerate(plan):
            if step is None:
                time.sleep(2.2)  # idle past the sweep's one-second threshold
                continue
            n, size = step
            sock.sendall(f'GET /?n={n}&size={size}&seed={seed} HTTP/1.1\r\nHost: t\r\n\r\n'.encode())
            body, leftover = read_chunked_response(sock, leftover)
            assert body == expected_blocks(n, size, seed), (seed, len(body))
        assert leftover == b''
