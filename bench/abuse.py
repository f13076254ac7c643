"""Latency of a normal client while the server is under abuse, for rustwsgi alone: 1000 connections trickling one
header byte per second and 100 clients that never read their (200 KB) responses, with the default settings.

    python bench/abuse.py [--requests 300]

Prints p50/p99/max of the normal client's request time (one new connection per request). Run it with the bench
virtualenv's python (rustwsgi installed). Traffic goes to 127.0.0.1 only; the run is bounded (about 30 s).
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

APP = """
BIG = b"x" * 200_000
def app(environ, start_response):
    body = BIG if environ["PATH_INFO"] == "/big" else b"small"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def measure(port: int, requests: int) -> list[float]:
    """Milliseconds per request of a normal client, one new connection each."""
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
            sock.sendall(b'GET /small HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n')
            data = b''
            while chunk := sock.recv(4096):
                data += chunk
        if not data.endswith(b'small'):
            raise SystemExit(f'unexpected answer: {data[:100]!r}')
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--requests', type=int, default=300)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix='rustwsgi-abuse-'))
    (workdir / 'abuse_app.py').write_text(APP)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    rustwsgi = Path(sys.executable).parent / 'rustwsgi'
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [str(rustwsgi), 'serve', 'abuse_app:app', '--bind', f'127.0.0.1:{port}'],
        cwd=workdir,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    hogs: list[socket.socket] = []
    tricklers: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(100):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(('127.0.0.1', port))
            sock.sendall(b'GET /big HTTP/1.1\r\nHost: b\r\n\r\n' * 3)
            hogs.append(sock)
        tricklers.extend(socket.create_connection(('127.0.0.1', port)) for _ in range(1000))
        head = b'GET / HTTP/1.1\r\nHost: b\r\nX-Slow: ' + b'z' * 64

        def trickle() -> None:
            position = 0
            while not stop.is_set() and position < len(head):
                for sock in tricklers:
                    sock.sendall(head[position : position + 1])
                position += 1
                stop.wait(1.0)

        threading.Thread(target=trickle, daemon=True).start()
        times = measure(port, args.requests)
        times.sort()
        p99 = times[int(len(times) * 0.99) - 1]
        print(
            f'normal client, {len(times)} requests under abuse (1000 tricklers, 100 non-readers): '
            f'p50 {statistics.median(times):.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms'
        )
    finally:
        stop.set()
        # Abusive clients left open would hold a graceful shutdown up to the head and write timeouts.
        for sock in hogs + tricklers:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


if __name__ == '__main__':
    main()
