"""Clients that vanish mid-upload or mid-download: the iterable is closed every time, and the server ends with as
many sockets and about as much memory as it started with."""

from __future__ import annotations

import socket

import requests
from support import socket_count, wait_until


def rss_kib(pid: int) -> int:
    with open(f'/proc/{pid}/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmRSS:'))


def closes(url: str) -> int:
    return int(requests.get(f'{url}/closes', timeout=10).text)


def vanish_mid_upload(port: int) -> None:
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(b'POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n')
        sock.sendall(b'y' * 300_000)


def vanish_mid_download(port: int) -> None:
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(b'GET /download HTTP/1.1\r\nHost: t\r\n\r\n')
        received = 0
        while received < 2_000_000:
            received += len(sock.recv(65536))


def test_vanishing_clients_close_every_iterable_and_leak_nothing(serve):
    served = serve('faults:app', '--threads', '2')
    pid = served.proc.pid
    baseline_sockets = socket_count(pid)
    rounds = 0
    for vanish in (vanish_mid_upload, vanish_mid_download):
        for _ in range(20):
            vanish(served.port)
            rounds += 1
            # Each vanished request's iterable is closed (the /closes request itself is a list: never counted).
            wait_until(lambda n=rounds: closes(served.url) == n, f'close() to be called after round {rounds}')
    wait_until(lambda: socket_count(pid) == baseline_sockets, 'the sockets to be closed')
    warm_rss = rss_kib(pid)
    for _ in range(60):
        vanish_mid_upload(served.port)
        vanish_mid_download(served.port)
        rounds += 2
    wait_until(lambda: closes(served.url) == rounds, f'close() to be called {rounds} times')
    wait_until(lambda: socket_count(pid) == baseline_sockets, 'the sockets to be closed')
    # 120 more vanished requests moved 240 MiB: memory must not grow with them.
    assert rss_kib(pid) - warm_rss < 16 * 1024
    assert served.proc.poll() is None, 'the server is still running'
