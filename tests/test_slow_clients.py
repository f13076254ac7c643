"""Slow and greedy clients must not starve a normal one: trickled heads stay in the event loop, and responses to
clients that stop reading are parked for the event loop instead of holding the only application thread."""

from __future__ import annotations

import socket
import time

from conftest import raw_request
from support import socket_count

# Generous on purpose (the machine is shared); the normal answer takes milliseconds.
PROMPT = 1.0


def ask_small(port: int) -> bytes:
    return raw_request(port, b'GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n', timeout=PROMPT)


def test_clients_that_never_read_do_not_block_a_normal_client(serve):
    served = serve('sized:app', '--threads', '1')
    hogs = []
    try:
        for _ in range(100):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(('127.0.0.1', served.port))
            sock.sendall(b'GET /big HTTP/1.1\r\nHost: t\r\n\r\n' * 3)
            hogs.append(sock)
        response = ask_small(served.port)
        assert response.startswith(b'HTTP/1.1 200 OK\r\n')
        assert response.endswith(b'\r\n\r\nsmall')
        # A hog that starts reading gets all three responses, whole and in order.
        hog = hogs[0]
        hog.settimeout(10)
        received = b''
        while len(received) < 3 * 200_000:
            chunk = hog.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        assert received.count(b'HTTP/1.1 200 OK\r\n') == 3
        assert received.count(b'x') == 3 * 200_000
    finally:
        for sock in hogs:
            sock.close()


def test_trickling_heads_do_not_block_a_normal_client(serve):
    served = serve('sized:app', '--threads', '1')
    tricklers = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(('127.0.0.1', served.port))
            sock.sendall(b'G')
            tricklers.append(sock)
        head = b'ET / HTTP/1.1\r\nHost: t\r\n'
        for i in range(3):
            for sock in tricklers:
                sock.sendall(head[i : i + 1])
            response = ask_small(served.port)
            assert response.startswith(b'HTTP/1.1 200 OK\r\n'), response[:80]
            time.sleep(1)
    finally:
        for sock in tricklers:
            sock.close()


def test_header_timeout_closes_a_connection_that_never_finishes_its_head(serve):
    served = serve('sized:app', '--header-timeout', '1')
    with socket.create_connection(('127.0.0.1', served.port), timeout=15) as sock:
        sock.sendall(b'GET / HTTP/1.1\r\nHost: t\r\n')
        # The server closes the connection (the clock ticks in seconds, so within about 2 s); recv sees EOF.
        assert sock.recv(4096) == b''
    assert ask_small(served.port).startswith(b'HTTP/1.1 200 OK\r\n')


def test_write_timeout_drops_a_client_that_takes_nothing(serve):
    served = serve('sized:app', '--write-timeout', '1', '--threads', '1')
    baseline = socket_count(served.proc.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(('127.0.0.1', served.port))
    sock.sendall(b'GET /big HTTP/1.1\r\nHost: t\r\n\r\n' * 20)
    deadline = time.monotonic() + 15
    opened = False
    while time.monotonic() < deadline:
        count = socket_count(served.proc.pid)
        opened = opened or count > baseline
        if opened and count == baseline:
            break
        time.sleep(0.1)
    else:
        raise AssertionError('the server kept the connection of a client that reads nothing')
    sock.close()
    assert ask_small(served.port).startswith(b'HTTP/1.1 200 OK\r\n')


def test_header_timeout_counts_from_the_first_byte_not_the_last(serve):
    served = serve('sized:app', '--header-timeout', '2')
    with socket.create_connection(('127.0.0.1', served.port), timeout=15) as sock:
        sock.settimeout(0.5)
        head = b'GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ' + b'a' * 100
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(4096) == b'':
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        # 100+ bytes at one per 0.5 s would take over 50 s: the server ends it after about 2 s of trickling.
        assert closed, 'a head trickled in byte by byte was allowed to take longer than --header-timeout'


# ---- request bodies the application reads (larger than the 64 KiB the event loop reads first) ----

BODY = 200_000
FIRST = 70_000  # past the 64 KiB the event loop buffers, so the rest is read by the application


def start_upload(port: int) -> socket.socket:
    sock = socket.create_connection(('127.0.0.1', port), timeout=15)
    sock.sendall(b'POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n' % BODY + b'a' * FIRST)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(15)
    data = b''
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_body_timeout_answers_408_to_a_body_that_stops(serve):
    served = serve('proto:echo', '--body-timeout', '1')
    with start_upload(served.port) as sock:
        started = time.monotonic()
        response = read_response(sock)
        waited = time.monotonic() - started
    assert response.startswith(b'HTTP/1.1 408 Request Timeout\r\n'), response[:80]
    assert b'Connection: close\r\n' in response
    assert response.endswith(b'\r\n\r\nrequest body timed out\n')
    # Without the timeout the read would wait forever; 15 s is the socket's own limit above.
    assert waited < 10
    log = served.wait_for_log('Request body of POST /echo failed: client paused longer than the body timeout')
    assert 'Traceback' not in log
    assert ask_small(served.port).startswith(b'HTTP/1.1 200 OK\r\n')


def trickle(sock: socket.socket, seconds: float) -> bytes:
    """Send 1000 body bytes every 0.25 s (4 KB/s, never pausing long) for `seconds`; what the server answered."""
    sock.settimeout(0.25)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(b'b' * 1000)
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        return answer + read_response(sock)
    return b''


def test_body_min_rate_answers_408_to_a_body_that_trickles(serve):
    # Allowed waiting: 2 s plus one second per 50 KB received; at 4 KB/s the body falls behind after about 3 s.
    served = serve('proto:echo', '--body-timeout', '2', '--body-min-rate', '50000')
    with start_upload(served.port) as sock:
        response = trickle(sock, seconds=12)
    assert response.startswith(b'HTTP/1.1 408 Request Timeout\r\n'), response[:80]
    assert response.endswith(b'\r\n\r\nrequest body arrived too slowly\n')
    served.wait_for_log('Request body of POST /echo failed: client sent the body slower than the minimum rate')


def test_without_a_min_rate_a_trickling_body_is_only_held_to_the_pause_limit(serve):
    served = serve('proto:echo', '--body-timeout', '2', '--body-min-rate', '0')
    with start_upload(served.port) as sock:
        # Longer than the trickle that the min-rate rule ends above; no pause reaches 2 s, so nothing is answered.
        assert trickle(sock, seconds=5) == b''
        sent = FIRST + 1000 * round(5 / 0.25)
        sock.settimeout(15)
        sock.sendall(b'c' * (BODY - sent))
        response = read_response_with_length(sock)
    assert response.startswith(b'HTTP/1.1 200 OK\r\n'), response[:80]
    assert response.endswith(b'c' * 1000)


def read_response_with_length(sock: socket.socket) -> bytes:
    """One response on a kept connection, read up to its Content-Length."""
    data = b''
    while b'\r\n\r\n' not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b'\r\n\r\n')
    length = int(head.lower().split(b'content-length: ')[1].split(b'\r\n')[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, 'connection closed mid-response'
        body += chunk
    return head + b'\r\n\r\n' + body
